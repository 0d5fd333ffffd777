"""MQTT topic layout (version 1): a public contract.

Everything lives under ``fiberwatch/v1/{site}/{gateway}/``:

=====================  =========  ======  =====================================================
suffix                 payload    QoS     meaning
=====================  =========  ======  =====================================================
``raw/{stream}``       frame      0       interrogator frames (`edge_agent.wire`), stream das|dts
``events``             JSON       1       anomaly events (`edge_agent.events.Event`)
``features/{stream}``  JSON       0       ~1 Hz downsampled scores and energies per channel group
``health``             JSON       1, ret  heartbeat (`edge_agent` health), retained
``model``              package    1, ret  model announcement: the signed package bytes, retained
``model_state``        JSON       1, ret  which model the gateway serves and why, retained
``labels/{key}``       JSON       1, ret  operator labels of this gateway's events, one
                                          retained topic per label (`edge_agent.labels`);
                                          written by the cloud only
=====================  =========  ======  =====================================================
"""

from __future__ import annotations

import re

ROOT = "fiberwatch/v1"
STREAMS = ("das", "dts")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_name(value: str, what: str = "name") -> str:
    """Site and gateway ids become topic levels: no wildcards, slashes or spaces."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):  # "$" matches before "\n"
        raise ValueError(f"{what} {value!r} must match {_NAME.pattern}")
    return value


def base(site: str, gateway: str) -> str:
    return f"{ROOT}/{check_name(site, 'site')}/{check_name(gateway, 'gateway')}"


def raw(site: str, gateway: str, stream: str) -> str:
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}")
    return f"{base(site, gateway)}/raw/{stream}"


def events(site: str, gateway: str) -> str:
    return f"{base(site, gateway)}/events"


def features(site: str, gateway: str, stream: str) -> str:
    return f"{base(site, gateway)}/features/{stream}"


def health(site: str, gateway: str) -> str:
    return f"{base(site, gateway)}/health"


def model(site: str, gateway: str) -> str:
    return f"{base(site, gateway)}/model"


def model_state(site: str, gateway: str) -> str:
    return f"{base(site, gateway)}/model_state"


def label(site: str, gateway: str, key: str) -> str:
    """One operator label's retained topic (``key``: `edge_agent.labels.Label.key`)."""
    return f"{base(site, gateway)}/labels/{check_name(key, 'label key')}"


def labels(site: str, gateway: str) -> str:
    """The gateway's subscription to its labels."""
    return f"{base(site, gateway)}/labels/+"


#: Cloud-side subscriptions to every gateway.
ALL_EVENTS = f"{ROOT}/+/+/events"
ALL_FEATURES = f"{ROOT}/+/+/features/+"
ALL_HEALTH = f"{ROOT}/+/+/health"
ALL_MODEL_STATE = f"{ROOT}/+/+/model_state"


def parse(topic: str) -> tuple[str, str, str]:
    """Split a topic into (site, gateway, suffix); raise ValueError if not ours."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != ROOT:
        raise ValueError(f"not a fiberwatch/v1 topic: {topic!r}")
    return parts[2], parts[3], "/".join(parts[4:])
