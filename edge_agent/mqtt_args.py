"""The MQTT credential and TLS flags every command shares (import-light: argparse only).

Parse them with `edge_agent.mqtt_client.broker_from_args`, which also reads the
``FIBERWATCH_MQTT_*`` environment.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PASSWORD_ENV = "FIBERWATCH_MQTT_PASSWORD"  # noqa: S105 - the variable's name, not a secret


def add_broker_args(p: argparse.ArgumentParser) -> None:
    """Add ``--mqtt-username/-password-file/-ca/-cert/-key`` (address flags stay the command's)."""
    g = p.add_argument_group("MQTT credentials and TLS (also FIBERWATCH_MQTT_* variables)")
    g.add_argument("--mqtt-username", metavar="USER",
                   help=f"broker login; the password comes from ${PASSWORD_ENV} or "
                        "--mqtt-password-file")
    g.add_argument("--mqtt-password-file", type=Path, metavar="FILE",
                   help="file holding the broker password")
    g.add_argument("--mqtt-ca", "--mqtt-tls-ca", dest="mqtt_ca", type=Path, metavar="FILE",
                   help="CA certificate of the broker: enables TLS")
    g.add_argument("--mqtt-cert", type=Path, metavar="FILE", help="client certificate (mTLS)")
    g.add_argument("--mqtt-key", type=Path, metavar="FILE", help="client key (mTLS)")
