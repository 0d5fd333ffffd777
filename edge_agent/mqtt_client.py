"""Build a configured paho-mqtt 2.x client from a `BrokerConfig`.

Shared by the uplink (`edge_agent.uplink`) and the ingest source. The client comes back with
`connect_async` already called (nothing is sent until ``loop_start()``), so callers only set
their callbacks and start the loop; paho then reconnects with exponential backoff.

- Auth: ``username`` plus the password read from the environment variable named by
  ``password_env`` or from the file ``password_file`` (never from the config itself); a named
  but unset variable or an unreadable file is an error.
- TLS: ``tls = true`` uses ``ca_file`` (system CAs if unset) and, for mutual TLS,
  ``cert_file``/``key_file``.
- Every MQTT client of the project builds its `BrokerConfig` here: from a gateway config,
  from ``FIBERWATCH_MQTT_*`` environment variables (`broker_from_env`) or from command-line
  flags (`edge_agent.mqtt_args.add_broker_args`, then `broker_from_args`), so credentials
  and TLS work the same way everywhere. `for_gateway` fills ``{site}``/``{gateway}``
  templates (one login per interrogator in the simulator).
- Protocol: MQTT v5 by default. With v5 a broker that denies a publish says so in the PUBACK
  (Mosquitto: "Not authorized"); with 3.1.1 the publish is acknowledged and silently dropped,
  so the uplink, which deletes on PUBACK, must use v5.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import BrokerConfig
from edge_agent.mqtt_args import PASSWORD_ENV

if TYPE_CHECKING:
    import argparse

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
        If a variable is named but not set, or the password file cannot be read.
    """
    if broker.password_file is not None:
        try:
            return broker.password_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise MqttConfigError(
                f"broker.password_file: cannot read {broker.password_file}: {exc}") from None
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
    username: str | None = None,
    manual_ack: bool = False,
    receive_maximum: int | None = None, client_class: type[mqtt.Client] = mqtt.Client,
) -> mqtt.Client:
    """Create a paho client for ``broker``, ready for ``loop_start()`` (``connect_async``
    called, no network traffic yet).

    - `client_id`: unique on the broker (a duplicate kicks the older client); brokers with
      ``use_username_as_clientid`` replace it with the login.
    - `protocol`: MQTT ``"v5"`` or ``"v311"``; `clean`: clean start / clean session (False
      keeps the broker-side session, for `session_expiry_s` after a disconnect with v5).
    - `will`: last will; `reconnect_delay_s`: (min, max) of paho's exponential backoff;
      `max_inflight`: unacknowledged QoS>0 messages out, more wait in paho's queue.
    - `username`: log in as this user instead of ``broker.username`` (same password: the
      gateway's raw-frame subscription uses ``broker.source_username``).
    - `manual_ack`: acknowledge QoS>0 messages with ``client.ack`` (after storing them);
      `receive_maximum` (v5): QoS>0 messages the broker may send before we acknowledge.
    - `client_class`: the paho ``Client`` (sub)class to build (`cloud.ingest.fastread`).

    Raises `MqttConfigError` if the password or a TLS file cannot be read.
    """
    v5 = protocol == "v5"
    client = client_class(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else clean, manual_ack=manual_ack,
    )
    user = username or broker.username
    if user is not None:
        client.username_pw_set(user, broker_password(broker))
    if broker.tls:
        _set_tls(client, broker)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    client.reconnect_delay_set(*reconnect_delay_s)  # type: ignore[arg-type]
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)  # unbounded: callers bound what they hand to paho
    paho_log = logging.getLogger(f"{__name__}.paho.{client_id}")
    paho_log.addFilter(_drop_not_connected)
    client.enable_logger(paho_log)
    properties = _connect_properties(v5, clean, session_expiry_s, receive_maximum)
    client.connect_async(
        broker.host, broker.port, keepalive=broker.keepalive_s,
        clean_start=clean if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
    )
    log.debug("mqtt client id=%s host=%s port=%d protocol=%s tls=%s", client_id, broker.host,
              broker.port, protocol, broker.tls)
    return client


def _connect_properties(v5: bool, clean: bool, session_expiry_s: int,
                        receive_maximum: int | None) -> Properties | None:
    if not v5 or (clean and not receive_maximum):
        return None
    properties = Properties(PacketTypes.CONNECT)
    if not clean:
        properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        properties.ReceiveMaximum = receive_maximum
    return properties


def _set_tls(client: mqtt.Client, broker: BrokerConfig) -> None:
    try:
        client.tls_set(
            ca_certs=str(broker.ca_file) if broker.ca_file else None,
            certfile=str(broker.cert_file) if broker.cert_file else None,
            keyfile=str(broker.key_file) if broker.key_file else None,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        files = ", ".join(str(f) for f in (broker.ca_file, broker.cert_file, broker.key_file) if f)
        raise MqttConfigError(f"broker TLS files ({files}): {exc}") from None


def describe(broker: BrokerConfig) -> str:
    """A short, secret-free summary for status lines: ``tls+password``, ``plain+anonymous``."""
    auth = "password" if broker.username else "anonymous"
    if broker.cert_file:
        auth += "+client-cert"
    return f"{'tls' if broker.tls else 'plain'}+{auth}"


def for_gateway(broker: BrokerConfig, site: str, gateway: str) -> BrokerConfig:
    """Fill ``{site}`` and ``{gateway}`` in the username and the password/cert/key file names."""
    def fill(v: object) -> object:
        if v is None:
            return None
        text = str(v).replace("{site}", site).replace("{gateway}", gateway)
        return Path(text) if isinstance(v, Path) else text

    keys = ("username", "source_username", "password_file", "cert_file", "key_file")
    return broker.model_copy(update={k: fill(getattr(broker, k)) for k in keys})


#: Environment variables `broker_from_env` reads (flags of `broker_from_args` win over them).
ENV = {"host": "FIBERWATCH_MQTT_HOST", "port": "FIBERWATCH_MQTT_PORT",
       "username": "FIBERWATCH_MQTT_USERNAME", "password_file": "FIBERWATCH_MQTT_PASSWORD_FILE",
       "ca_file": "FIBERWATCH_MQTT_CA", "cert_file": "FIBERWATCH_MQTT_CERT",
       "key_file": "FIBERWATCH_MQTT_KEY"}


def broker_from_env(base: BrokerConfig | None = None, **override: object) -> BrokerConfig:
    """`base` (default: loopback:1883) with ``FIBERWATCH_MQTT_*`` and then `override` applied.

    TLS is on when a CA file is given; with a username and no password file the password
    comes from ``FIBERWATCH_MQTT_PASSWORD``.

    Raises
    ------
    MqttConfigError
        A value does not fit the schema (the message names the variable or field).
    """
    from pydantic import ValidationError

    data = (base or BrokerConfig()).model_dump()
    for field, var in ENV.items():
        if os.environ.get(var):
            data[field] = os.environ[var]
    data.update({k: v for k, v in override.items() if v is not None})
    if data.get("ca_file"):
        data["tls"] = True
    if data.get("username") and not data.get("password_file") and not data.get("password_env"):
        data["password_env"] = PASSWORD_ENV
    if data.get("password_file"):
        data["password_env"] = None
    try:
        return BrokerConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise MqttConfigError(f"broker {where}: {first['msg']} (flags or "
                              f"{', '.join(ENV.values())})") from None


def broker_from_args(args: argparse.Namespace, host: str | None = None,
                     port: int | None = None) -> BrokerConfig:
    """`BrokerConfig` from `edge_agent.mqtt_args.add_broker_args`' flags, the environment and
    the given address."""
    return broker_from_env(
        host=host, port=port, username=args.mqtt_username,
        password_file=args.mqtt_password_file, ca_file=args.mqtt_ca,
        cert_file=args.mqtt_cert, key_file=args.mqtt_key)


def _drop_not_connected(record: logging.LogRecord) -> bool:
    """paho 2.2 logs "Client is not connected" at ERROR after every failed reconnect attempt
    and at a clean disconnect; both are normal here (disconnects are logged by the user)."""
    return not str(record.msg).startswith("Client is not connected")
