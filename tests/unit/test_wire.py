"""The frame wire format: round trips, fuzzing, and the reason code of each malformed case."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_agent import wire
from edge_agent.wire import DType, FrameError, StreamKind

FIELDS = ("magic", "version", "kind", "dtype", "flags", "seq", "t0_ns", "sample_rate",
          "first_ch", "n_channels", "n_samples", "scale", "payload_len")
_OFFSETS = {}
_off = 0
for _name, _code in zip(FIELDS, ("4s", "B", "B", "B", "B", "Q", "q", "d", "I", "I", "I", "f", "I"),
                        strict=True):
    _OFFSETS[_name] = (_off, "<" + _code)
    _off += struct.calcsize("<" + _code)
assert _off == wire.HEADER_SIZE

shapes = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24)
kinds = st.sampled_from(list(StreamKind))
seqs = st.integers(0, 2**64 - 1)
t0s = st.integers(-(2**63), 2**63 - 1)
rates = st.floats(min_value=1e-3, max_value=1e9, allow_nan=False, allow_infinity=False)


def _valid(n_samples: int = 3, n_channels: int = 4, dtype: DType = DType.FLOAT32) -> bytes:
    data = np.arange(n_samples * n_channels, dtype=np.float32).reshape(n_samples, n_channels)
    return wire.encode(StreamKind.DAS, 7, 1_700_000_000_000_000_000, 2000.0, 10, data,
                       dtype=dtype, scale=0.5 if dtype is DType.INT16 else 1.0)


def _set(frame: bytes, name: str, value: object, fix_crc: bool = False) -> bytes:
    off, code = _OFFSETS[name]
    buf = bytearray(frame)
    struct.pack_into(code, buf, off, value)
    if fix_crc:
        struct.pack_into("<I", buf, len(buf) - 4, zlib.crc32(bytes(buf[:-4])))
    return bytes(buf)


def _decode_or_error(buf: bytes) -> wire.Frame | FrameError:
    """decode must return a Frame or raise FrameError; anything else fails the test."""
    try:
        return wire.decode(buf)
    except FrameError as exc:
        assert exc.reason and isinstance(exc.reason, str)
        return exc


# --- round trips -------------------------------------------------------------------------


@given(kind=kinds, seq=seqs, t0=t0s, rate=rates, data=hnp.arrays(np.float32, shapes),
       first=st.integers(0, 2**32 - 25))
def test_float32_round_trip_is_exact(kind, seq, t0, rate, data, first) -> None:
    frame = wire.decode(wire.encode(kind, seq, t0, rate, first, data))
    assert (frame.kind, frame.seq, frame.t0_ns, frame.first_channel) == (kind, seq, t0, first)
    assert frame.sample_rate == rate
    assert frame.data.dtype == np.float32 and frame.data.shape == data.shape
    assert frame.data.tobytes() == np.ascontiguousarray(data).tobytes()  # NaN bits included


@given(kind=kinds, seq=seqs, t0=t0s, rate=rates,
       raw=hnp.arrays(np.int16, shapes),
       scale=st.floats(min_value=1e-6, max_value=1e6).map(lambda s: float(np.float32(s))))
def test_int16_round_trip_gives_raw_times_scale(kind, seq, t0, rate, raw, scale) -> None:
    data = raw.astype(np.float64) * scale
    frame = wire.decode(wire.encode(kind, seq, t0, rate, 0, data, dtype=DType.INT16,
                                    scale=scale))
    assert (frame.seq, frame.t0_ns, frame.sample_rate) == (seq, t0, rate)
    np.testing.assert_array_equal(frame.data, raw.astype(np.float32) * np.float32(scale))


@given(data=hnp.arrays(np.float32, shapes, elements=st.floats(-1e6, 1e6, width=32)))
def test_int16_quantisation_error_is_at_most_half_a_step(data) -> None:
    scale = 1 / 64
    out = wire.decode(wire.encode(StreamKind.DAS, 0, 0, 1.0, 0, data, dtype=DType.INT16,
                                  scale=scale)).data
    clipped = np.clip(data, -32768 * scale, 32767 * scale)
    assert np.all(np.abs(out - clipped) <= scale / 2 + 1e-6 * np.abs(clipped))


def test_decode_accepts_bytearray_and_memoryview() -> None:
    frame = _valid()
    for buf in (bytearray(frame), memoryview(frame)):
        assert wire.decode(buf).seq == 7


def test_decoded_data_does_not_alias_the_buffer() -> None:
    buf = bytearray(_valid())
    frame = wire.decode(buf)
    before = frame.data.copy()
    buf[wire.HEADER_SIZE: -4] = bytes(len(buf) - wire.HEADER_SIZE - 4)
    np.testing.assert_array_equal(frame.data, before)


# --- fuzzing -----------------------------------------------------------------------------


@pytest.mark.timeout(120)  # "never hangs"
@settings(max_examples=150)
@given(st.binary(max_size=400))
@example(b"")
@example(wire.MAGIC + b"\x01" * 60)
def test_random_bytes_decode_or_raise_frame_error(buf) -> None:
    _decode_or_error(buf)


@settings(max_examples=150)
@given(st.binary(min_size=wire.HEADER_SIZE - 4, max_size=wire.HEADER_SIZE - 4),
       st.binary(max_size=200))
def test_random_header_after_valid_magic_decodes_or_raises(rest, tail) -> None:
    _decode_or_error(wire.MAGIC + rest + tail)


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    dtype = draw(st.sampled_from(list(DType)))
    data = draw(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8),
                           elements=st.floats(-100, 100, width=32)))
    return wire.encode(draw(kinds), draw(seqs), draw(t0s), draw(rates), 0, data, dtype=dtype,
                       scale=0.01 if dtype is DType.INT16 else 1.0)


@settings(max_examples=150)
@given(valid_frames(), st.data())
def test_any_single_bit_flip_is_rejected(frame, data) -> None:
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    buf = bytearray(frame)
    buf[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError):
        wire.decode(bytes(buf))


@pytest.mark.timeout(120)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(valid_frames(), st.data())
def test_mutated_frames_decode_or_raise_frame_error(frame, data) -> None:
    buf = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "extend", "field", "byte"]))
        if op == "flip" and buf:
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "truncate":
            del buf[data.draw(st.integers(0, len(buf))):]
        elif op == "extend":
            buf += data.draw(st.binary(min_size=1, max_size=64))
        elif op == "byte" and buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
        elif op == "field" and len(buf) >= wire.HEADER_SIZE:
            name = data.draw(st.sampled_from(FIELDS[1:]))
            off, code = _OFFSETS[name]
            raw = data.draw(st.binary(min_size=struct.calcsize(code),
                                      max_size=struct.calcsize(code)))
            buf[off: off + len(raw)] = raw
            if data.draw(st.booleans()):  # also make the checksum agree
                struct.pack_into("<I", buf, len(buf) - 4, zlib.crc32(bytes(buf[:-4])))
    _decode_or_error(bytes(buf))


@settings(max_examples=150)
@given(valid_frames(), st.sampled_from(FIELDS[1:]), st.data())
def test_field_corruption_with_fixed_crc_decodes_consistently_or_raises(frame, name, data) -> None:
    off, code = _OFFSETS[name]
    raw = data.draw(st.binary(min_size=struct.calcsize(code), max_size=struct.calcsize(code)))
    buf = bytearray(frame)
    buf[off: off + len(raw)] = raw
    struct.pack_into("<I", buf, len(buf) - 4, zlib.crc32(bytes(buf[:-4])))
    result = _decode_or_error(bytes(buf))
    if isinstance(result, wire.Frame):  # accepted: the header must describe the bytes
        itemsize = 2 if buf[6] == DType.INT16 else 4
        assert result.data.size * itemsize == len(buf) - wire.HEADER_SIZE - wire.CRC_SIZE
        assert np.isfinite(result.sample_rate) and result.sample_rate > 0


# --- reason codes ------------------------------------------------------------------------

NAN = float("nan")
MALFORMED = [
    ("short", lambda f: f[: wire.HEADER_SIZE + 3]),
    ("short", lambda f: b""),
    ("magic", lambda f: b"FWFX" + f[4:]),
    ("version", lambda f: _set(f, "version", 2)),
    ("kind", lambda f: _set(f, "kind", 0)),
    ("kind", lambda f: _set(f, "kind", 3)),
    ("dtype", lambda f: _set(f, "dtype", 3)),
    ("flags", lambda f: _set(f, "flags", 1)),
    ("sample_rate", lambda f: _set(f, "sample_rate", 0.0)),
    ("sample_rate", lambda f: _set(f, "sample_rate", -2000.0)),
    ("sample_rate", lambda f: _set(f, "sample_rate", NAN)),
    ("sample_rate", lambda f: _set(f, "sample_rate", float("inf"))),
    ("scale", lambda f: _set(f, "scale", 0.0)),
    ("scale", lambda f: _set(f, "scale", -1.0)),
    ("scale", lambda f: _set(f, "scale", NAN)),
    ("n_channels", lambda f: _set(f, "n_channels", 0)),
    ("n_channels", lambda f: _set(f, "n_channels", wire.MAX_CHANNELS + 1)),
    ("n_samples", lambda f: _set(f, "n_samples", 0)),
    ("n_samples", lambda f: _set(f, "n_samples", wire.MAX_SAMPLES + 1)),
    ("first_channel", lambda f: _set(f, "first_ch", 2**32 - 2)),
    ("payload_len", lambda f: _set(f, "payload_len", 47)),
    ("payload_len", lambda f: _set(f, "n_samples", 4)),
    ("payload_len", lambda f: _set(_set(f, "n_samples", wire.MAX_SAMPLES),
                                   "n_channels", wire.MAX_CHANNELS)),
    ("length", lambda f: f[:-1]),
    ("length", lambda f: f + b"\x00"),
    ("checksum", lambda f: f[:-4] + bytes(4)),
    ("checksum", lambda f: f[:60] + bytes([f[60] ^ 0x10]) + f[61:]),
    ("checksum", lambda f: _set(f, "seq", 8)),
    ("checksum", lambda f: _set(f, "t0_ns", 0)),
]


@pytest.mark.parametrize(("reason", "mutate"), MALFORMED,
                         ids=[f"{i}-{r}" for i, (r, _) in enumerate(MALFORMED)])
def test_malformed_frame_gives_its_reason(reason, mutate) -> None:
    frame = _valid(dtype=DType.INT16)
    with pytest.raises(FrameError) as info:
        wire.decode(mutate(frame))
    assert info.value.reason == reason


def test_header_change_with_matching_crc_is_accepted_as_written() -> None:
    frame = _set(_valid(), "seq", 99, fix_crc=True)
    assert wire.decode(frame).seq == 99  # the checksum, not the fields, guards the values


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"data": np.ones(3, np.float32)}, "2-D"),
    ({"data": np.ones((0, 3), np.float32)}, "out of range"),
    ({"data": np.ones((2, wire.MAX_CHANNELS + 1), np.float32)}, "out of range"),
    ({"scale": 0.0}, "scale"),
    ({"scale": NAN}, "scale"),
    ({"sample_rate": 0.0}, "sample_rate"),
    ({"sample_rate": float("inf")}, "sample_rate"),
])
def test_encode_rejects_bad_arguments(kwargs, match) -> None:
    args = {"kind": StreamKind.DAS, "seq": 0, "t0_ns": 0, "sample_rate": 10.0,
            "first_channel": 0, "data": np.ones((2, 3), np.float32)}
    scale = kwargs.pop("scale", 1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        wire.encode(**args, scale=scale)


# --- encode never produces what decode rejects -------------------------------------------


@pytest.mark.parametrize("case", ["scale-underflows-f32", "scale-overflows-f32",
                                  "first-channel-overflow", "seq-negative", "t0-too-big",
                                  "unknown-kind", "int16-nan", "rate-subnormal",
                                  "payload-too-big"])
def test_encode_only_produces_decodable_frames_or_raises_value_error(case, monkeypatch) -> None:
    d = np.ones((2, 3), np.float32)
    args: dict[str, object] = {"kind": StreamKind.DAS, "seq": 0, "t0_ns": 0,
                               "sample_rate": 10.0, "first_channel": 0, "data": d}
    extra: dict[str, object] = {}
    if case == "scale-underflows-f32":
        extra = {"dtype": DType.INT16, "scale": 1e-46}
    elif case == "scale-overflows-f32":
        extra = {"dtype": DType.INT16, "scale": 1e39}
    elif case == "first-channel-overflow":
        args["first_channel"] = 2**32 - 2
    elif case == "seq-negative":
        args["seq"] = -1
    elif case == "t0-too-big":
        args["t0_ns"] = 2**63
    elif case == "unknown-kind":
        args["kind"] = 9
    elif case == "int16-nan":
        args["data"] = np.full((2, 3), np.nan, np.float32)
        extra = {"dtype": DType.INT16}
    elif case == "rate-subnormal":
        args["sample_rate"] = 1e-320
    elif case == "payload-too-big":
        monkeypatch.setattr(wire, "MAX_PAYLOAD", 16)
    try:
        frame = wire.encode(**args, **extra)  # type: ignore[arg-type]
    except ValueError:
        return  # rejected with the documented exception type: fine
    decoded = wire.decode(frame)  # must not raise FrameError
    assert decoded.end_ns >= decoded.t0_ns  # and be usable
    assert np.isfinite(decoded.data).all() or case != "int16-nan"
    assert case != "int16-nan", "NaN silently became a number"


def test_int16_frames_are_finite_by_construction_unless_the_scale_overflows() -> None:
    x = np.array([[1.0, -2.0], [3.0, 32767.0]], np.float32)
    small = wire.decode(wire.encode(wire.StreamKind.DAS, 0, 1, 100.0, 0, x,
                                    dtype=wire.DType.INT16, scale=1.0))
    assert small.finite and np.isfinite(small.data).all()
    big = x.astype(np.float64) * 2e34  # 32767 * 2e34 = 6.6e38 > float32 max: inf on decode
    huge = wire.decode(wire.encode(wire.StreamKind.DAS, 0, 1, 100.0, 0, big,
                                   dtype=wire.DType.INT16, scale=2e34))
    assert not huge.finite and not np.isfinite(huge.data).all()
    assert not wire.decode(wire.encode(wire.StreamKind.DAS, 0, 1, 100.0, 0, x)).finite


@pytest.mark.parametrize("dtype", list(DType))
def test_parse_writes_the_same_values_as_decode_into_a_given_array(dtype: DType) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((7, 5)) * 300).astype(np.float32)
    x[2, 3] = np.nan if dtype is DType.FLOAT32 else x[2, 3]
    buf = wire.encode(StreamKind.DAS, 4, 10, 100.0, 2, x, dtype=dtype, scale=0.25)
    frame, raw = wire.decode(buf), wire.parse(buf)
    out = np.full((9, 5), -1.0, np.float32)  # e.g. a window buffer with rows around the frame
    raw.values_into(out[1:8])
    assert np.array_equal(out[1:8], frame.data, equal_nan=True)
    assert (out[0] == -1).all() and (out[8] == -1).all()
    assert (raw.kind, raw.seq, raw.t0_ns, raw.first_channel, raw.n_channels, raw.end_ns,
            raw.finite) == (frame.kind, frame.seq, frame.t0_ns, frame.first_channel,
                            frame.n_channels, frame.end_ns, frame.finite)


def test_the_checksum_is_zlibs_crc32() -> None:
    """The fast CRC (ISA-L when installed) is the contract's zlib.crc32, on every length."""
    rng = np.random.default_rng(5)
    for n in (0, 1, 7, 64, 4097, 409_652):
        blob = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert wire._crc32(blob) == zlib.crc32(blob)
        assert wire._crc32(memoryview(blob)[: n // 2]) == zlib.crc32(blob[: n // 2])
