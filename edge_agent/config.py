"""Gateway configuration: the schema of ``firmware_configs/gateways/*.toml``.

One `GatewayConfig` per agent process, loaded by `load_gateway_config` and passed down
explicitly. Errors name the file and the field: ``gw.toml: streams.0.hop_s: ...``.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge_agent.features import (
    DEFAULT_DAS_BANDS,
    MAX_SAMPLE_RATE_HZ,
    FeatureSpec,
    FeatureSpecError,
)
from edge_agent.topics import check_name


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    # allow_inf_nan=False: TOML has inf and nan literals; no field of ours means them
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GatewayIdentity(_Strict):
    site: str
    id: str
    data_dir: Path = Field(description="outbox, models, normal-window buffer")

    @field_validator("site", "id")
    @classmethod
    def _topic_safe(cls, v: str) -> str:
        return check_name(v)


class BrokerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    source_username: str | None = Field(
        None, description="username of the raw-frame subscription (default: username); a "
        "broker with use_username_as_clientid needs one of its own (`fiberwatch deploy`)")
    password_env: str | None = Field(None, description="name of the env var holding the password")
    password_file: Path | None = Field(None, description="file holding the password")
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)

    @model_validator(mode="after")
    def _one_password_source(self) -> BrokerConfig:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("set password_env or password_file, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS)")
        return self


class StreamConfig(_Strict):
    kind: Literal["das", "dts"]
    interrogator: str = ""
    first_channel: int = Field(0, ge=0, le=2**32 - 1)
    channels: int = Field(ge=1, le=65536)
    spacing_m: float = Field(1.0, gt=0, le=1000)
    fiber_offset_m: float = Field(0.0, ge=-1e7, le=1e7)
    sample_rate_hz: float = Field(gt=0, le=MAX_SAMPLE_RATE_HZ)
    window_s: float = Field(gt=0, le=3600)
    hop_s: float = Field(gt=0, le=3600)
    bands_hz: list[tuple[float, float]] = Field(default_factory=lambda: list(DEFAULT_DAS_BANDS))
    context_radius: int = Field(4, ge=0, le=64)
    baseline_alpha: float = Field(0.02, gt=0, le=1)
    group_size: int = Field(8, ge=1, le=65536,
                            description="channels per threshold group / summary cell")
    profile: Literal["das", "dts", "raw", "mv"] | None = Field(
        None, description="feature profile (default: the kind's own). mv = multivariate "
        "process data: one model over all channels (columns), one score per window, one "
        "threshold group; window_s = the lags it sees, hop_s usually one sample")
    feature_version: Literal[1, 2, 3] = Field(
        3, description="feature spec version (edge_agent.features): 3 = 2 plus slow "
        "low-band features over the last seconds (periodicity: slugging), 2 = spectra per hop "
        "(each sample transformed once), 1 = per window; must match the model package's spec")

    @field_validator("hop_s")
    @classmethod
    def _hop_within_window(cls, v: float, info: ValidationInfo) -> float:
        window = info.data.get("window_s")
        if window is not None and v > window:
            raise ValueError("hop_s must not exceed window_s (windows would skip samples)")
        return v

    @field_validator("fiber_offset_m")
    @classmethod
    def _finite_offset(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("fiber_offset_m must be finite")
        return v

    @model_validator(mode="after")
    def _spec_is_computable(self) -> StreamConfig:
        try:
            self.feature_spec()
        except FeatureSpecError as exc:
            raise ValueError(str(exc)) from exc
        return self

    def feature_spec(self) -> FeatureSpec:
        profile = self.profile or self.kind
        if profile == "mv":  # context and baselines do not apply: fixed in the spec
            return FeatureSpec(profile="mv", sample_rate_hz=self.sample_rate_hz,
                               window_s=self.window_s, hop_s=self.hop_s, bands_hz=(),
                               context_radius=0, channels=self.channels)
        return FeatureSpec(
            profile=profile,
            sample_rate_hz=self.sample_rate_hz,
            window_s=self.window_s,
            hop_s=self.hop_s,
            bands_hz=tuple(self.bands_hz) if profile == "das" else (),
            context_radius=self.context_radius,
            baseline_alpha=self.baseline_alpha,
            version=self.feature_version,
        )

    def distance_m(self, channel: int) -> float:
        return self.fiber_offset_m + channel * self.spacing_m


class ModelConfig(_Strict):
    package: Path | None = Field(None, description="initial model package; none = statistical")
    public_key: Path | None = Field(
        None, description="Ed25519 public key that signs packages (required unless "
        "allow_unsigned)")
    allow_unsigned: bool = Field(
        False, description="DEVELOPMENT ONLY: run without a public key and install unsigned "
        "packages (health and the log say so)")
    latency_budget_ms: float = Field(20.0, gt=0, le=60_000)
    smoke_windows: int = Field(8, ge=1, le=1000)


#: an mv stream's per-window false-alarm rate when none is configured (99 % control limit)
MV_DEFAULT_RATE = 0.01


class ThresholdConfig(_Strict):
    """The threshold stage (`edge_agent.thresholds`). The defaults are the operating point
    the model evaluation measures (`federation.model.evaluate`, ``docs/model/README.md``)."""

    false_alarm_rate: float = Field(1e-6, gt=0, lt=0.5, description="per group per window")
    false_alarms_per_day: float | None = Field(
        None, gt=0, description="THE operating-point knob: target false alarms per day per "
        "threshold group (a group of group_size fibre channels; a whole mv stream). Set, it "
        "replaces false_alarm_rate by per_day x hop_s / 86400 (at most 0.1 per window); a "
        "package with held-back calibration scores maps it to its threshold "
        "(`edge_agent.thresholds.calibrated_threshold`). Unset on an mv stream with no "
        "false_alarm_rate either: 1 % of windows, the 99 % control limit of process monitoring")
    warmup_windows: int = Field(40, ge=1, le=1_000_000)
    warmup_s: float = Field(
        300.0, ge=0, le=86400 * 7,
        description="warm-up: an adaptive group raises no flag (so no event) before its "
        "history holds this much stream time of normal scores (warmup_s / hop_s windows, at "
        "least warmup_windows, at most history_windows): a tail fitted to a few dozen windows "
        "is extrapolated to the false-alarm rate far too low. 0 = warmup_windows alone, as when "
        "only warmup_windows is set; not for mv streams (calibrated on held-back rows)")
    history_windows: int = Field(2000, ge=50, le=1_000_000)
    quarantine_windows: int = Field(
        10, ge=0, le=100_000,
        description="a group's normal score joins its history only after this many "
        "more windows without a flag: the rising edge of an anomaly, still below threshold, "
        "is dropped instead of raising the threshold (0 = learn at once)")
    neighbour_groups: int = Field(
        0, ge=0, le=64,
        description="a warm group's threshold is the largest fitted threshold of the warm "
        "groups within this many groups of it (0 = each group its own fit): a rare normal "
        "transient of one zone of the fiber (surface activity near a wellhead) seen by one "
        "group's history counts for its neighbours. Fewer false alarms there, but the zone "
        "takes its noisiest group's threshold: on the simulator 1 removed the wellhead "
        "false alarms and missed 18 of 20 weak wellhead leaks (docs/model/README.md)")
    heavy_tail_cap: float | None = Field(
        2.0, ge=1, le=1e6,
        description="a group whose score tail is heavier than the GPD fit accepts gets a "
        "threshold of at most this many times the largest score in its history (never below "
        "an exponential tail fitted to it; 1 = that exponential tail). Extrapolated with a "
        "heavy shape from 2,000 windows to 1e-6 the threshold lands 20-1,000x above the "
        "history and grows with every weak anomaly it lets through (on the simulator's "
        "wellhead groups 800 to 33,000, where weak leaks score 100-300). 0 = uncapped")
    min_threshold: float = Field(0.0, ge=0, le=1e12,
                                 description="floor under every group threshold")
    floor_quantile: float | None = Field(
        0.9999, gt=0, le=1,
        description="raise the floor to this quantile of the model's training scores (the "
        "package manifest's threshold.quantiles): floor = max(min_threshold, "
        "quantiles[floor_quantile]), set again for every model swapped in. A package without "
        "this level uses its nearest higher level (else its highest), logged as a warning. "
        "Detectors without a package (the statistical start-up detector), and 0 or None "
        "(no quantile floor): min_threshold alone")

    def rate_per_window(self, hop_s: float, profile: str = "das") -> float:
        """The per-group, per-window exceedance rate in force for windows ``hop_s`` apart.

        Without the knob and without ``false_alarm_rate`` set, an ``mv`` (process) stream
        uses `MV_DEFAULT_RATE`: the 99 % control limit of multivariate process monitoring."""
        if self.false_alarms_per_day is not None:
            return min(0.1, self.false_alarms_per_day * hop_s / 86400.0)
        if profile == "mv" and "false_alarm_rate" not in self.model_fields_set:
            return MV_DEFAULT_RATE
        return self.false_alarm_rate

    def for_hop(self, hop_s: float, profile: str = "das") -> ThresholdConfig:
        """This config with ``false_alarm_rate`` resolved (`rate_per_window`) and the
        warm-up in windows (``warmup_s`` / ``hop_s``, see ``warmup_s``)."""
        rate = self.rate_per_window(hop_s, profile)
        own = profile == "mv" or ("warmup_windows" in self.model_fields_set
                                   and "warmup_s" not in self.model_fields_set)
        warm = self.warmup_windows if own else max(
            self.warmup_windows, math.ceil(self.warmup_s / hop_s - 1e-9))
        return self.model_copy(update={"false_alarm_rate": rate, "warmup_windows": min(
            warm, max(self.warmup_windows, self.history_windows))})

    @field_validator("heavy_tail_cap", "floor_quantile", mode="before")
    @classmethod
    def _zero_is_off(cls, v: object) -> object:
        return None if v == 0 else v  # TOML has no null: 0 = uncapped, no quantile floor


class EventConfig(_Strict):
    merge_gap_channels: int = Field(2, ge=0, le=65536)
    merge_gap_s: float = Field(
        5.0, ge=0, le=86400,
        description="an open event stays open this long (stream time, whole hops, "
        "never less than one quiet window) after its last flagged window: flags that come "
        "back sooner at the same channels (a periodic slug, a pulsing leak) continue it")
    max_open_s: float = Field(60.0, gt=0, le=86400,
                              description="emit a long event at least this often")
    announce_s: float | None = Field(
        2.0, gt=0, le=86400, description="announce open events at once, then re-send this "
        "often while they change; None = only when they close")
    min_windows: int = Field(
        2, ge=1, le=10_000, description="raise (announce, emit) an event only once it holds "
        "flags in this many windows: a lone flagged window (one hop of one channel group) is "
        "noise at the default false-alarm rate, anomalies last seconds (1 and on_delay_s = 0: "
        "every flag)")
    on_delay_s: float = Field(
        2.0, ge=0, le=3600, description="alarm on-delay: raise an event only once it holds "
        "flags in on_delay_s / hop_s + 1 windows (5 at das's 0.5 s hop, never fewer than "
        "min_windows; `confirm_windows`), unless confirm_ratio raises it sooner. A noise "
        "excursion of a group at its threshold lasts a window or two, an anomaly seconds "
        "(docs/model/README.md); 0 = min_windows alone")
    confirm_ratio: float | None = Field(
        3.0, gt=1, le=1e6, description="a window whose peak score is at least this multiple "
        "of its group's threshold raises its event at once, before the on-delay (a clear "
        "anomaly is announced in its first window); 0 or None = always wait for the on-delay")

    def confirm_windows(self, hop_ns: int) -> int:
        """Flagged windows an event needs before it is raised (`on_delay_s`, `min_windows`),
        for a stream whose windows are ``hop_ns`` apart.

        >>> EventConfig().confirm_windows(500_000_000)  # das: 2 s at a 0.5 s hop
        5
        >>> EventConfig().confirm_windows(36_000_000_000)  # a slow process stream
        2
        >>> EventConfig(on_delay_s=0, min_windows=1).confirm_windows(500_000_000)
        1
        """
        return max(self.min_windows, round(self.on_delay_s * 1e9 / max(hop_ns, 1)) + 1)

    @field_validator("confirm_ratio", mode="before")
    @classmethod
    def _zero_is_off(cls, v: object) -> object:
        return None if v == 0 else v  # TOML has no null: 0 turns the ratio off

    def merge_gap_hops(self, hop_ns: int) -> int:
        """The merge gap in hops of a stream: an open event closes at the first window that
        ends this many hops after its last flagged window."""
        return max(2, round(self.merge_gap_s * 1e9) // hop_ns)


class OutboxConfig(_Strict):
    max_events: int = Field(100_000, ge=1, le=100_000_000)
    max_age_s: float = Field(7 * 86400, gt=0, le=10 * 365 * 86400,
                             description="age on the outbox's monotonic clock, not the wall "
                             "clock (edge_agent.store_forward)")
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024, le=2**40,
                           description="most payload bytes queued; the oldest are evicted")


class UplinkConfig(_Strict):
    summary_interval_s: float = Field(1.0, gt=0, le=3600)
    summary_format: Literal["packed", "json"] = Field(
        "packed", description="feature summaries as packed arrays (schema 2) or JSON "
        "(schema 1, for a cloud that reads no packed summaries yet)")
    health_interval_s: float = Field(5.0, gt=0, le=3600)


class IngestConfig(_Strict):
    queue_frames: int = Field(256, ge=1, le=1_000_000)
    queue_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024, le=2**36)
    backpressure: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    max_clock_skew_s: float | None = Field(
        300.0, gt=0, le=10 * 365 * 86400,
        description="frames dated further ahead of the gateway clock are dropped "
        "(clock_skew) until a run of them re-synchronises the stream; 0 = no check")

    @field_validator("max_clock_skew_s", mode="before")
    @classmethod
    def _skew_zero_is_off(cls, v: object) -> object:
        return None if v == 0 else v  # TOML has no null


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal (``127.0.0.0/8``, ``::1``), brackets allowed."""
    from ipaddress import ip_address

    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ip_address(h).is_loopback
    except ValueError:
        return False


def split_host_port(address: str) -> tuple[str, str]:
    """``HOST:PORT`` (IPv6 in brackets, or bare with the last colon as the separator)."""
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]"), port


def default_feature_threads() -> int:
    """The cores, 1 to 4. The processing thread is the agent's bottleneck, not its total CPU:
    it works one share of a window's channel blocks itself while ``threads - 1`` others work
    the rest, and those run in numpy/pocketfft without the GIL. On 2 cores, 2 threads cut
    the processing thread's CPU per 2,048 x 2,000 window from ~15 to ~10 ms for ~3 % more
    CPU in all (2,048 x 2 kHz bench frames); the MQTT reader and the uplink need little."""
    return max(1, min(4, os.cpu_count() or 1))


class ProcessingConfig(_Strict):
    feature_threads: int = Field(
        default_factory=default_feature_threads, ge=1, le=64,
        description="threads computing one window's features (channel blocks in parallel); "
        "default: the gateway's cores, 1 to 4. The rows do not depend on it")


class FederationConfig(_Strict):
    enabled: bool = False
    superlink: str = "127.0.0.1:9092"
    normal_buffer_windows: int = Field(4000, ge=10, le=1_000_000)
    insecure: bool = Field(False, description="plain HTTP to the SuperLink: loopback only")
    root_certificates: Path | None = Field(None, description="CA that signed the SuperLink's "
                                           "certificate (TLS)")
    auth_key: Path | None = Field(None, description="this gateway's SuperNode authentication "
                                  "private key (ECDSA, `fiberwatch fl keys`)")

    @model_validator(mode="after")
    def _insecure_on_loopback_only(self) -> FederationConfig:
        host = split_host_port(self.superlink)[0]
        if self.insecure and not is_loopback_host(host):
            raise ValueError(f"insecure = true is accepted only for a loopback SuperLink, not "
                             f"{host!r}: set root_certificates (TLS) and auth_key")
        return self


class GatewayConfig(_Strict):
    gateway: GatewayIdentity
    broker: BrokerConfig = BrokerConfig()
    streams: list[StreamConfig] = Field(min_length=1)
    model: ModelConfig = ModelConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    events: EventConfig = EventConfig()
    outbox: OutboxConfig = OutboxConfig()
    uplink: UplinkConfig = UplinkConfig()
    ingest: IngestConfig = IngestConfig()
    processing: ProcessingConfig = ProcessingConfig()
    federation: FederationConfig = FederationConfig()

    @model_validator(mode="after")
    def _key_or_dev_flag(self) -> GatewayConfig:
        m = self.model
        if m.public_key is None and not m.allow_unsigned:
            raise ValueError("model.public_key is required: a gateway installs only model "
                             "packages signed by this key (model.allow_unsigned = true for "
                             "development only)")
        if m.public_key is not None and m.allow_unsigned:
            raise ValueError("set model.public_key or model.allow_unsigned, not both")
        return self

    @model_validator(mode="after")
    def _one_per_kind(self) -> GatewayConfig:
        kinds = [s.kind for s in self.streams]
        if len(set(kinds)) != len(kinds):
            raise ValueError("at most one stream per kind (das, dts)")
        return self

    def stream(self, kind: str) -> StreamConfig | None:
        return next((s for s in self.streams if s.kind == kind), None)


def format_validation_error(path: Path | str, exc: ValidationError) -> str:
    """One line per problem: ``file: field.path: message``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{path}: {loc}: {err['msg']}")
    return "\n".join(lines)


def load_toml(path: Path | str) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None


def load_gateway_config(path: Path | str) -> GatewayConfig:
    """Load and validate a gateway config; relative paths resolve against the file's folder."""
    p = Path(path)
    data = load_toml(p)
    try:
        cfg = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(p, exc)) from None
    return _resolve_paths(cfg, p.parent)


def _resolve_paths(cfg: GatewayConfig, root: Path) -> GatewayConfig:
    def fix(v: Path | None) -> Path | None:
        return v if v is None or v.is_absolute() else (root / v).resolve()

    model = cfg.model.model_copy(
        update={"package": fix(cfg.model.package), "public_key": fix(cfg.model.public_key)}
    )
    fed = cfg.federation.model_copy(update={
        "root_certificates": fix(cfg.federation.root_certificates),
        "auth_key": fix(cfg.federation.auth_key)})
    gw = cfg.gateway.model_copy(update={"data_dir": fix(cfg.gateway.data_dir)})
    b = cfg.broker
    broker = b.model_copy(update={k: fix(getattr(b, k)) for k in
                                  ("ca_file", "cert_file", "key_file", "password_file")})
    return cfg.model_copy(update={"model": model, "gateway": gw, "broker": broker,
                                  "federation": fed})
