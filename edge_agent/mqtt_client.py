"""Build a configured paho-mqtt 2.x client from a `BrokerConfig`.

Shared by the uplink (`edge_agent.uplink`) and the ingest source. The client comes back with
`connect_async` already called (nothing is sent until ``loop_start()``), so callers only set
their callbacks and start the loop; paho then reconnects with exponential backoff.

- Auth: ``username`` plus the password read from the environment variable named by
  ``password_env`` (never from the file); a named but unset variable is an error.
- TLS: ``tls = true`` uses ``ca_file`` (system CAs if unset) and, for mutual TLS,
  ``cert_file``/``key_file``.
- Protocol: MQTT v5 by default. With v5 a broker that denies a publish says so in the PUBACK
  (Mosquitto: "Not authorized"); with 3.1.1 the publish is acknowledged and silently dropped,
  so the uplink, which deletes on PUBACK, must use v5.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import BrokerConfig

log = logging.getLogger(__name__)

Protocol = Literal["v5", "v311"]


class MqttConfigError(ValueError):
    """The broker settings cannot be turned into a client (e.g. password variable unset)."""


@dataclass(frozen=True, slots=True)
class Will:
    """Last will: published by the broker if the client vanishes without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def broker_password(broker: BrokerConfig) -> str | None:
    """Return the password from the environment variable ``broker.password_env`` names.

    Raises
    ------
    MqttConfigError
        If a variable is named but not set.
    """
    if broker.password_env is None:
        return None
    value = os.environ.get(broker.password_env)
    if value is None:
        raise MqttConfigError(
            f"broker.password_env: environment variable {broker.password_env} is not set"
        )
    return value


def make_client(
    broker: BrokerConfig,
    client_id: str,
    *,
    protocol: Protocol = "v5",
    clean: bool = True,
    session_expiry_s: int = 3600,
    will: Will | None = None,
    reconnect_delay_s: tuple[float, float] = (0.5, 30.0),
    max_inflight: int = 100,
) -> mqtt.Client:
    """Create a paho client for ``broker``, ready for ``loop_start()``.

    Parameters
    ----------
    broker : BrokerConfig
        Host, port, credentials, TLS and keepalive.
    client_id : str
        MQTT client id (must be unique on the broker; a duplicate kicks the older client).
    protocol : {"v5", "v311"}
        MQTT protocol version.
    clean : bool
        Clean start (v5) / clean session (3.1.1). ``False`` keeps the broker-side session.
    session_expiry_s : int
        v5 only, with ``clean=False``: how long the broker keeps the session after a
        disconnect (0 = not after the network connection closes).
    will : Will, optional
        Last will message.
    reconnect_delay_s : (float, float)
        Minimum and maximum delay of paho's exponential reconnect backoff.
    max_inflight : int
        QoS>0 messages paho lets be unacknowledged at once; more wait in paho's queue.

    Returns
    -------
    paho.mqtt.client.Client
        Configured, with ``connect_async`` called; no network traffic yet.
    """
    v5 = protocol == "v5"
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else clean,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker_password(broker))
    if broker.tls:
        client.tls_set(
            ca_certs=str(broker.ca_file) if broker.ca_file else None,
            certfile=str(broker.cert_file) if broker.cert_file else None,
            keyfile=str(broker.key_file) if broker.key_file else None,
        )
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    lo, hi = reconnect_delay_s
    client.reconnect_delay_set(min_delay=lo, max_delay=hi)  # type: ignore[arg-type]
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)  # unbounded: callers bound what they hand to paho
    paho_log = logging.getLogger(f"{__name__}.paho.{client_id}")
    paho_log.addFilter(_drop_not_connected)
    client.enable_logger(paho_log)
    properties = None
    if v5 and not clean:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry_s
    client.connect_async(
        broker.host, broker.port, keepalive=broker.keepalive_s,
        clean_start=clean if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
    )
    log.debug("mqtt client id=%s host=%s port=%d protocol=%s tls=%s", client_id, broker.host,
              broker.port, protocol, broker.tls)
    return client


def _drop_not_connected(record: logging.LogRecord) -> bool:
    """paho 2.2 logs "Client is not connected" at ERROR after every failed reconnect attempt
    and at a clean disconnect; both are normal here (disconnects are logged by the user)."""
    return not str(record.msg).startswith("Client is not connected")
