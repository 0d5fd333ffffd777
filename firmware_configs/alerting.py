"""The alerting config (TOML): where alerts go and which events raise them.

A file with an ``[alerting]`` table::

    [alerting]
    state_db = "/var/lib/fiberwatch/alerts.sqlite"   # queue, alert states and audit trail
    poll_interval_s = 1.0                             # how often stored events are read
    lookback_s = 86400                                # events started within this are considered
    drift_psi = 0.25                                  # LOW "drift" alert past this score shift
    external_url = "https://fiberwatch.example/"      # the dashboard, linked from alerts

    [[receivers]]
    name = "ops"
    type = "webhook"                    # Alertmanager webhook JSON (version 4)
    url = "https://alerts.example/hook"
    bearer_token_env = "FIBERWATCH_ALERT_TOKEN"   # optional: Authorization: Bearer $VAR

    [[receivers]]
    name = "bus"
    type = "mqtt"
    topic = "fiberwatch/v1/alerts"      # the broker is the one the alerting process uses

    [[rules]]
    name = "leaks-and-sand"
    sites = ["demo"]                    # empty or absent: any site
    gateways = ["well-a"]               # empty or absent: any gateway
    min_severity = "medium"             # low | medium | high | critical
    kinds = ["leak", "sand"]            # event kinds (class_hint); empty: any kind
    receivers = ["ops", "bus"]

A webhook URL must be https unless it is on loopback (http://127.0.0.1, ::1, localhost).
"""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SEVERITIES = ("low", "medium", "high", "critical")
KINDS = ("leak", "sand", "flow", "fault", "unknown", "drift")
Severity = Literal["low", "medium", "high", "critical"]
_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


class AlertingSection(_Strict):
    state_db: Path = Path("alerts.sqlite")
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    lookback_s: float = Field(default=86400.0, gt=0, le=30 * 86400)
    external_url: str = Field(default="", max_length=512)
    retry_initial_s: float = Field(default=0.5, gt=0, le=60)
    retry_max_s: float = Field(default=30.0, gt=0, le=3600)
    # LOW "drift" alerts when a gateway's model-health figure passes one of these
    drift_psi: float = Field(default=0.25, gt=0)  # score PSI vs training quantiles
    drift_saturation_rate: float = Field(default=0.01, gt=0, le=1)  # int8 inputs clipped
    drift_out_of_range_rate: float = Field(default=0.05, gt=0, le=1)  # rows out of range
    drift_fallback_rate: float = Field(default=0.5, gt=0, le=1)  # windows on the fallback


class Receiver(_Strict):
    name: str = Field(pattern=_NAME)
    type: Literal["webhook", "mqtt"]
    url: str | None = Field(default=None, max_length=2048)
    bearer_token_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]{0,63}$")
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    topic: str | None = Field(default=None, min_length=1, max_length=256)
    qos: Literal[0, 1, 2] = 1

    @model_validator(mode="after")
    def _fits_type(self) -> Receiver:
        if self.type == "webhook":
            if not self.url:
                raise ValueError("a webhook receiver needs url")
            scheme = urlsplit(self.url).scheme
            if scheme not in ("http", "https") or not urlsplit(self.url).hostname:
                raise ValueError(f"url must be an http(s) URL, got {self.url!r}")
            if scheme == "http" and not is_loopback_url(self.url):
                raise ValueError("url must be https (plain http only on loopback)")
            if self.topic is not None:
                raise ValueError("topic is for mqtt receivers")
        else:
            if not self.topic or any(c in self.topic for c in "+#\0"):
                raise ValueError("an mqtt receiver needs a topic without wildcards")
            if self.url is not None:
                raise ValueError("url is for webhook receivers")
        return self


class Rule(_Strict):
    name: str = Field(pattern=_NAME)
    sites: list[str] = Field(default_factory=list)
    gateways: list[str] = Field(default_factory=list)
    min_severity: Severity = "low"
    kinds: list[str] = Field(default_factory=list)
    receivers: list[str] = Field(min_length=1)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: list[str]) -> list[str]:
        bad = [k for k in v if k not in KINDS]
        if bad:
            raise ValueError(f"unknown kind(s) {bad}: use {list(KINDS)}")
        return v

    def matches(self, site: str, gateway: str, severity: str, kind: str) -> bool:
        """Whether an event of this site/gateway/severity/kind raises this rule's alert."""
        if self.sites and site not in self.sites:
            return False
        if self.gateways and gateway not in self.gateways:
            return False
        if self.kinds and kind not in self.kinds:
            return False
        rank = SEVERITIES.index(severity) if severity in SEVERITIES else -1
        return rank >= SEVERITIES.index(self.min_severity)


class AlertingConfig(_Strict):
    alerting: AlertingSection
    receivers: list[Receiver] = Field(min_length=1)
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"receiver names must be unique, repeated: {dupes}")
        rules = [r.name for r in self.rules]
        if len(set(rules)) != len(rules):
            raise ValueError("rule names must be unique")
        for rule in self.rules:
            unknown = [n for n in rule.receivers if n not in names]
            if unknown:
                raise ValueError(f"rule {rule.name!r} names unknown receiver(s) {unknown}")
        return self

    def receiver(self, name: str) -> Receiver:
        return next(r for r in self.receivers if r.name == name)
