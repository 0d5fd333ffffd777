"""Interrogator configuration: the schema of ``firmware_configs/interrogators/*.toml``.

One file per interrogator (one stream of frames). The file says what the unit is, which
site and gateway it feeds, what its frames carry, and where it publishes them::

    [interrogator]   id, vendor, model, serial, site, gateway
    [stream]         kind (das|dts), first_channel, channels, spacing_m, fiber_offset_m,
                     sample_rate_hz, gauge_length_m (DAS only), frame_samples, dtype, scale
    [fiber]          length_m
    [mqtt]           host, port, qos, topic, username, password_env

The `[stream]` names are the gateway's `[[streams]]` names, so the two can be compared
field by field (`firmware_configs.check`). Cross-field problems are reported against the
field that is wrong, e.g. ``stream.gauge_length_m``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from edge_agent import topics, wire

#: Frames of a DTS are temperature traces: one every second at the very fastest.
DTS_MAX_SAMPLE_RATE_HZ = 1.0
DAS_MAX_SAMPLE_RATE_HZ = 100_000.0
_ITEMSIZE = {"int16": 2, "float32": 4}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InterrogatorIdentity(_Strict):
    id: str
    vendor: str = Field(min_length=1)
    model: str = Field(min_length=1)
    serial: str | None = None
    site: str
    gateway: str = Field(description="id of the gateway whose broker and agent take its frames")

    @field_validator("id", "site", "gateway")
    @classmethod
    def _topic_safe(cls, v: str, info: ValidationInfo) -> str:
        return topics.check_name(v, str(info.field_name))


class InterrogatorStream(_Strict):
    kind: Literal["das", "dts"]
    first_channel: int = Field(0, ge=0)
    channels: int = Field(ge=1, le=wire.MAX_CHANNELS)
    spacing_m: float = Field(gt=0, le=100, description="fiber distance between channels")
    fiber_offset_m: float = Field(
        0.0, description="distance reported for channel 0: a reference shift, e.g. negative "
        "when the wellhead lies past the first channels"
    )
    sample_rate_hz: float = Field(gt=0, le=DAS_MAX_SAMPLE_RATE_HZ)
    gauge_length_m: float | None = Field(None, gt=0, le=500, description="DAS only")
    frame_samples: int = Field(ge=1, le=wire.MAX_SAMPLES, description="samples per frame")
    dtype: Literal["int16", "float32"] = "float32"
    scale: float = Field(1.0, gt=0, description="physical value = raw * scale (int16 only)")

    @field_validator("sample_rate_hz", "scale", "spacing_m", "fiber_offset_m")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @property
    def frame_bytes(self) -> int:
        return self.frame_samples * self.channels * _ITEMSIZE[self.dtype]

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Cross-field problems as ``(field path, message)``; empty when consistent."""
        out: list[tuple[tuple[str, ...], str]] = []
        if self.kind == "dts" and self.sample_rate_hz > DTS_MAX_SAMPLE_RATE_HZ:
            out.append((("sample_rate_hz",), f"a DTS samples at most {DTS_MAX_SAMPLE_RATE_HZ:g} "
                        f"Hz (one trace per second), got {self.sample_rate_hz:g}"))
        if self.kind == "das" and self.gauge_length_m is None:
            out.append((("gauge_length_m",), "required for a DAS stream"))
        if self.kind == "dts" and self.gauge_length_m is not None:
            out.append((("gauge_length_m",), "only a DAS has a gauge length; remove it"))
        if self.gauge_length_m is not None and self.gauge_length_m < self.spacing_m:
            out.append((("gauge_length_m",), f"{self.gauge_length_m:g} m is shorter than "
                        f"spacing_m {self.spacing_m:g} m: stretches of fiber would be unsensed"))
        if self.dtype == "float32" and self.scale != 1.0:
            out.append((("scale",), "applies to int16 frames only; must be 1.0 for float32"))
        if self.frame_bytes > wire.MAX_PAYLOAD:
            out.append((("frame_samples",), f"{self.frame_samples} x {self.channels} channels "
                        f"of {self.dtype} is {self.frame_bytes} bytes, over the frame limit "
                        f"of {wire.MAX_PAYLOAD}"))
        return out

    def end_m(self) -> float:
        """Length of fiber from the interrogator to just past the last channel."""
        return (self.first_channel + self.channels) * self.spacing_m


class FiberConfig(_Strict):
    length_m: float = Field(gt=0, le=200_000)
    label: str | None = Field(None, description="cable or fiber name, free text")


class InterrogatorMqtt(_Strict):
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    qos: Literal[0, 1] = 0
    topic: str | None = Field(None, description="default: the gateway's raw topic")
    username: str | None = None
    password_env: str | None = Field(None, description="name of the env var holding the password")
    tls: bool = False


class InterrogatorConfig(_Strict):
    interrogator: InterrogatorIdentity
    stream: InterrogatorStream
    fiber: FiberConfig
    mqtt: InterrogatorMqtt = InterrogatorMqtt()

    @property
    def id(self) -> str:
        return self.interrogator.id

    @property
    def topic(self) -> str:
        """Where frames are published: the raw topic of the gateway it feeds."""
        ident = self.interrogator
        return self.mqtt.topic or topics.raw(ident.site, ident.gateway, self.stream.kind)

    @model_validator(mode="after")
    def _consistent(self) -> InterrogatorConfig:
        found = [(("stream", *loc), msg) for loc, msg in self.stream.problems()]
        s = self.stream
        if s.end_m() > self.fiber.length_m:
            found.append((("stream", "channels"), f"channels {s.first_channel}.."
                           f"{s.first_channel + s.channels - 1} at {s.spacing_m:g} m reach "
                           f"{s.end_m():g} m, beyond fiber.length_m {self.fiber.length_m:g} m"))
        ident = self.interrogator
        expected = topics.raw(ident.site, ident.gateway, s.kind)
        if self.mqtt.topic is not None and self.mqtt.topic != expected:
            found.append((("mqtt", "topic"), f"{self.mqtt.topic!r} is not where gateway "
                          f"{ident.gateway!r} listens; use {expected!r} or leave it out"))
        if found:
            raise _errors(found)
        return self


def _errors(found: list[tuple[tuple[str, ...], str]]) -> ValidationError:
    """A ValidationError whose entries point at the offending fields (pydantic keeps the loc)."""
    return ValidationError.from_exception_data(
        "InterrogatorConfig",
        [
            InitErrorDetails(
                type=PydanticCustomError("inconsistent", "{detail}", {"detail": msg}),
                loc=loc,
                input=None,
            )
            for loc, msg in found
        ],
    )
