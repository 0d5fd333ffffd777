"""Bridge configuration: the schema of ``firmware_configs/bridges/*.toml`` (``[bridge]`` files).

One `BridgeConfig` per bridge process: which directory an interrogator writes, which files in
it are DAS (read with DASCore) or DTS (text/CSV), what the streams must look like (channel
count, rate, spacing: a file that differs is refused with a per-file error), how frames are
encoded, and the site broker (the gateway's `BrokerConfig`: credentials and TLS)::

    [bridge]   site, gateway, watch_dir, state_file, poll_s, settle_s, marker_suffix,
               incomplete_timeout_s, delete_published, commit_frames, allow_insecure
    [broker]   host, port, username, password_env | password_file, tls, ca_file, cert_file,
               key_file (the gateway's `BrokerConfig`; the interrogators' login)
    [das]      format, patterns, first_channel, channels, sample_rate_hz, spacing_m,
               fiber_offset_m, gauge_length_m, units, dtype, scale, frame_samples
    [dts]      format, patterns, first_channel, channels, sample_rate_hz, frame_samples

Errors name the file and the field, like the gateway's: ``br.toml: das.channels: ...``.
"""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_agent.config import BrokerConfig, ConfigError, format_validation_error, load_toml
from edge_agent.topics import check_name

#: DAS formats the bridge reads through DASCore; "auto" lets DASCore tell the format.
DAS_FORMATS = ("auto", "PRODML", "DASDAE", "TDMS", "SILIXA_H5", "FEBUS", "TERRA15", "OPTODAS",
               "DASHDF5", "H5SIMPLE", "APSENSING", "SINTELA_BINARY", "NEUBREXDAS")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BridgeIdentity(_Strict):
    site: str
    gateway: str = Field(description="the gateway whose raw/{stream} topics the frames go to")
    watch_dir: Path = Field(description="the directory the interrogator writes")
    state_file: Path = Field(description="SQLite file: files and time published")
    poll_s: float = Field(1.0, gt=0, le=60, description="seconds between directory scans")
    settle_s: float = Field(
        2.0, ge=0, le=3600, description="a file is complete when its size and mtime have not "
        "changed for this long (unless marker_suffix is set)")
    marker_suffix: str | None = Field(
        None, description="a file is complete when FILE + this suffix exists (e.g. '.done')")
    incomplete_timeout_s: float = Field(
        600.0, gt=0, description="a file still unreadable this long after its last change is "
        "a per-file error (a truncated file)")
    delete_published: bool = Field(
        False, description="delete the interrogator's file (and its marker) once published")
    commit_frames: int = Field(8, ge=1, le=10_000,
                               description="frames published between position commits")
    max_file_bytes: int = Field(8 * 1024**3, ge=1024, description="larger files are refused")
    allow_insecure: bool = Field(
        False, description="dev only: a broker without TLS and credentials, on loopback")

    @field_validator("site", "gateway")
    @classmethod
    def _topic_safe(cls, v: str) -> str:
        return check_name(v)


class DasInput(_Strict):
    format: str = Field("auto", description="DASCore format name, or 'auto'")
    patterns: list[str] = Field(default_factory=lambda: ["*.h5", "*.hdf5", "*.tdms"])
    first_channel: int = Field(0, ge=0)
    channels: int = Field(ge=1, le=65_536)
    sample_rate_hz: float = Field(gt=0, le=100_000)
    spacing_m: float = Field(1.0, gt=0, le=100)
    fiber_offset_m: float = 0.0
    gauge_length_m: float | None = Field(None, gt=0, description="refuse files with another")
    units: str | None = Field(None, description="convert the data to these units (pint), "
                              "e.g. '1/s' (strain rate) or 'rad' (phase); None keeps them")
    dtype: Literal["auto", "float32", "int16"] = Field(
        "auto", description="auto: int16 for integer data that fits, else float32")
    scale: float = Field(1.0, gt=0, description="int16 frames: physical value = raw * scale")
    frame_samples: int = Field(100, ge=1, le=100_000)

    @field_validator("format")
    @classmethod
    def _known(cls, v: str) -> str:
        if v.upper() not in {f.upper() for f in DAS_FORMATS}:
            raise ValueError(f"unknown DAS format {v!r}; one of {', '.join(DAS_FORMATS)}")
        return "auto" if v.lower() == "auto" else v.upper()

    @field_validator("sample_rate_hz", "spacing_m", "fiber_offset_m", "scale")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class DtsInput(_Strict):
    format: Literal["csv"] = "csv"
    patterns: list[str] = Field(default_factory=lambda: ["*.csv"])
    first_channel: int = Field(0, ge=0)
    channels: int = Field(ge=1, le=65_536)
    sample_rate_hz: float = Field(gt=0, le=1.0, description="traces per second")
    frame_samples: int = Field(1, ge=1, le=10_000, description="traces per frame")


class BridgeConfig(_Strict):
    bridge: BridgeIdentity
    broker: BrokerConfig = BrokerConfig()
    das: DasInput | None = None
    dts: DtsInput | None = None

    @model_validator(mode="after")
    def _usable(self) -> BridgeConfig:
        if self.das is None and self.dts is None:
            raise ValueError("configure at least one of [das] and [dts]")
        b = self.broker
        if not (b.tls and b.username) and not self.bridge.allow_insecure:
            raise ValueError("broker: tls = true and a username are required (set "
                             "bridge.allow_insecure = true for a loopback dev broker)")
        if not (b.tls and b.username) and not _loopback(b.host):
            raise ValueError(f"broker.host {b.host!r}: an insecure broker must be on loopback")
        if self.das and self.dts and set(self.das.patterns) & set(self.dts.patterns):
            raise ValueError("das.patterns and dts.patterns overlap")
        return self

    def inputs(self) -> list[DasInput | DtsInput]:
        return [s for s in (self.das, self.dts) if s is not None]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_bridge_config(path: Path | str) -> BridgeConfig:
    """Load and validate a bridge config; relative paths resolve against the file's folder."""
    p = Path(path)
    try:
        cfg = BridgeConfig.model_validate(load_toml(p))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(p, exc)) from None
    root = p.parent

    def fix(v: Path | None) -> Path | None:
        return v if v is None or v.is_absolute() else (root / v).resolve()

    ident = cfg.bridge.model_copy(update={"watch_dir": fix(cfg.bridge.watch_dir),
                                          "state_file": fix(cfg.bridge.state_file)})
    b = cfg.broker
    broker = b.model_copy(update={k: fix(getattr(b, k)) for k in
                                  ("ca_file", "cert_file", "key_file", "password_file")})
    return cfg.model_copy(update={"bridge": ident, "broker": broker})
