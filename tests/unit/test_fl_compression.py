"""Update compression: round trips, byte counts, malformed payloads."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord

from federation.flower import compression as c

# the shapes of the default autoencoder on DAS rows (24 -> 32 -> 8 -> 32 -> 24), buffers first
SHAPES = [(24,), (24,), (24,), (32, 24), (32,), (8, 32), (8,), (32, 8), (32,), (24, 32), (24,)]
N_PARAMS = 2144


def _deltas(seed: int = 0, scale: float = 0.01) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    d = [(scale * rng.standard_normal(s)).astype(np.float32) for s in SHAPES]
    for i in range(3):  # normalisation buffers: fit never changes them
        d[i][:] = 0
    return d


@pytest.mark.parametrize("scheme", c.SCHEMES)
def test_round_trip_error_is_bounded(scheme: str) -> None:
    d = _deltas()
    blob, meta = c.encode(d, scheme)
    back = c.decode(blob, c.Meta.from_config(meta.to_config()), SHAPES)
    assert meta.tensors == tuple(range(3, len(SHAPES)))
    for a, b in zip(d, back, strict=True):
        assert b.shape == a.shape and b.dtype == np.float32
        if scheme == "fp32":
            assert np.array_equal(a, b)
        elif scheme == "fp16":
            assert np.allclose(a, b, rtol=1e-3, atol=1e-6)
        else:  # symmetric int8: at most half a step per value
            step = np.abs(a).max() / 127 if a.size else 0
            assert np.abs(a - b).max() <= step / 2 + 1e-7


def test_per_channel_scales_are_finer_than_per_tensor() -> None:
    d = _deltas()
    d[3][0] *= 100  # one row with a large update
    errs = {}
    for scheme in ("int8", "int8-channel"):
        blob, meta = c.encode(d, scheme)
        errs[scheme] = np.abs(c.decode(blob, meta, SHAPES)[3][1:] - d[3][1:]).max()
    assert errs["int8-channel"] < errs["int8"] / 10


def test_byte_counts() -> None:
    d = _deltas()
    sizes = {s: len(c.encode(d, s)[0]) for s in c.SCHEMES}
    assert sizes["fp32"] == 4 * N_PARAMS
    assert sizes["fp16"] == 2 * N_PARAMS
    assert sizes["int8"] == N_PARAMS + 4 * 8  # one float32 scale per tensor
    n_scales = 32 + 8 + 32 + 24 + 4  # rows of the 4 weight matrices, one per bias
    assert sizes["int8-channel"] == N_PARAMS + 4 * n_scales
    full = 4 * sum(int(np.prod(s)) for s in SHAPES)  # fp32 full weights, buffers included
    assert sizes["int8"] / full <= 0.30
    assert sizes["int8-channel"] / full <= 0.30


def test_wire_bytes_compressed_vs_fp32_records() -> None:
    weights = [np.ones(s, np.float32) for s in SHAPES]
    plain = c.wire_bytes(ArrayRecord(weights))  # what a stock FedAvg client sends
    packed = c.wire_bytes(ConfigRecord({"update": c.pack_weights(weights)}))
    blob, meta = c.encode(_deltas(), "int8")
    up = c.wire_bytes(ConfigRecord({"update": blob, **meta.to_config()}))
    assert packed < plain
    assert up <= 0.30 * packed
    assert len(blob) < up < len(blob) + 300  # framing: one record


def test_unchanged_update_carries_nothing() -> None:
    blob, meta = c.encode([np.zeros(s, np.float32) for s in SHAPES], "int8-channel")
    assert blob == b"" and meta.tensors == ()
    cfg = meta.to_config()
    back = c.decode(blob, c.Meta.from_config(cfg), SHAPES)
    assert all(not b.any() for b in back)


def test_pack_weights_round_trip_and_size_check() -> None:
    w = [np.arange(np.prod(s), dtype=np.float32).reshape(s) for s in SHAPES]
    blob = c.pack_weights(w)
    assert all(np.array_equal(a, b) for a, b in zip(w, c.unpack_weights(blob, SHAPES),
                                                     strict=True))
    with pytest.raises(c.CompressionError, match="needs"):
        c.unpack_weights(blob[:-4], SHAPES)


@pytest.mark.parametrize("scheme", ["fp16", "int8", "int8-channel"])
def test_decode_rejects_truncated_or_mismatched(scheme: str) -> None:
    blob, meta = c.encode(_deltas(), scheme)
    with pytest.raises(c.CompressionError, match="bytes"):
        c.decode(blob[:-1], meta, SHAPES)
    with pytest.raises(c.CompressionError, match="do not fit"):
        c.decode(blob, c.Meta(scheme, (0, 99)), SHAPES)


def test_unknown_scheme_and_nonfinite_scales() -> None:
    with pytest.raises(c.CompressionError, match="unknown scheme"):
        c.encode(_deltas(), "int4")
    with pytest.raises(c.CompressionError, match="unknown scheme"):
        c.Meta.from_config({"scheme": "zip", "tensors": [1], "n": 1})
    blob, meta = c.encode(_deltas(), "int8")
    n = N_PARAMS
    bad = blob[:n] + np.full(8, np.inf, np.float32).tobytes()
    with pytest.raises(c.CompressionError, match="non-finite"):
        c.decode(bad, meta, SHAPES)


def test_fp16_clips_instead_of_overflowing() -> None:
    d = _deltas()
    d[3][0, 0] = 1e6
    blob, meta = c.encode(d, "fp16")
    assert np.isfinite(c.decode(blob, meta, SHAPES)[3]).all()
