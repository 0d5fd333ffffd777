"""Mutated frames for the frame fuzzer (`fiberwatch.bench._chaos_edge.run_frame_fuzz`).

`Mutator.batch` returns frames of these kinds (weights in `_KINDS`), all derived from a valid
small frame of the fuzzed stream's layout (8 samples x 64 channels, float32):

- ``field``: one header field set to a hostile value, checksum recomputed, so the decoder's
  field checks (not the checksum) must catch it;
- ``sequence``: a fully valid frame with a hostile sequence number and first-sample time
  (2**64 - 1, 0, far future, far past, around now): the validator's sequence logic;
- ``samples``: a valid frame whose samples are NaN, inf, +-3e38 or noise;
- ``truncated``: a valid frame cut short; ``flipped``: 1-8 random bytes changed (half with the
  checksum recomputed); ``random``: 0-300 random bytes.
"""

from __future__ import annotations

import random
import struct
import time
import zlib
from typing import Any

import numpy as np

from edge_agent import wire

CH = 64
SAMPLES = 8
RATE = 2000.0
_KINDS = (("field", 30), ("sequence", 20), ("samples", 10), ("truncated", 15),
          ("flipped", 15), ("random", 10))
_U64 = 2**64 - 1
_I64 = 2**63 - 1
_U32 = 2**32 - 1
_NAN, _INF = float("nan"), float("inf")


def _payloads() -> list[bytes]:
    rng = np.random.default_rng(0)
    shape = (SAMPLES, CH)
    arrays = [np.zeros(shape), rng.normal(size=shape), np.full(shape, np.nan),
              np.full(shape, np.inf), np.full(shape, -3e38), rng.normal(size=shape) * 1e30]
    mixed = rng.normal(size=shape)
    mixed[::2, ::3] = np.nan
    mixed[1::2, ::5] = -np.inf
    arrays.append(mixed)
    return [np.ascontiguousarray(a, dtype="<f4").tobytes() for a in arrays]


class Mutator:
    """Deterministic (per seed) source of mutated frames for one 64-channel DAS stream."""

    def __init__(self, seed: int = 0) -> None:
        self._r = random.Random(seed)
        self._now = time.time_ns()
        self._payloads = _payloads()
        self._plen = len(self._payloads[0])
        self._kinds = [k for k, w in _KINDS for _ in range(w)]
        self._fields: dict[str, list[Any]] = {
            "magic": [b"FWFX", b"\0\0\0\0", b"RFWF"], "version": [0, 2, 255],
            "kind": [0, 2, 3, 255], "dtype": [0, 1, 3, 255], "flags": [1, 128, 255],
            "seq": [0, 1, _U64, 2**63, _U64 - 1],
            "t0": [0, -1, -(2**63), _I64, 2**62, -(2**62)],
            "rate": [0.0, -1.0, _NAN, _INF, -_INF, 1e-300, 1e300, RATE * (1 + 1e-5), 5e-324],
            "first_ch": [1, _U32, _U32 - CH + 1, 2**31], "n_ch": [0, 1, CH - 1, CH + 1, 65_537,
                                                                 _U32],
            "n_samp": [0, 1, SAMPLES + 1, 1_000_001, _U32],
            "scale": [0.0, -1.0, _NAN, _INF, 1e-45, 3.4e38],
            "payload_len": [0, 1, self._plen - 1, self._plen + 1, _U32, 64 * 1024 * 1024 + 4],
        }
        self._names = list(self._fields)

    def _header(self, **over: object) -> bytes:
        f = {"magic": wire.MAGIC, "version": wire.VERSION, "kind": 1, "dtype": 2, "flags": 0,
             "seq": self._r.getrandbits(64), "t0": self._now, "rate": RATE, "first_ch": 0,
             "n_ch": CH, "n_samp": SAMPLES, "scale": 1.0, "payload_len": self._plen, **over}
        return wire.HEADER.pack(f["magic"], f["version"], f["kind"], f["dtype"], f["flags"],
                                f["seq"], f["t0"], f["rate"], f["first_ch"], f["n_ch"],
                                f["n_samp"], f["scale"], f["payload_len"])

    @staticmethod
    def _seal(body: bytes) -> bytes:
        return body + struct.pack("<I", zlib.crc32(body))

    def _valid(self, **over: object) -> bytes:
        payload = over.pop("payload", None) or self._payloads[1]
        return self._seal(self._header(**over) + payload)  # type: ignore[operator]

    def one(self) -> bytes:
        r = self._r
        kind = r.choice(self._kinds)
        if kind == "field":
            name = r.choice(self._names)
            return self._seal(self._header(**{name: r.choice(self._fields[name])})
                              + self._payloads[0])
        if kind == "sequence":
            return self._valid(seq=r.choice([_U64, 0, r.getrandbits(64), r.getrandbits(20)]),
                               t0=r.choice([2**62, self._now + r.randint(-10**12, 10**12),
                                            r.randint(-(2**63), _I64), self._now]))
        if kind == "samples":
            return self._valid(payload=r.choice(self._payloads), seq=r.getrandbits(64))
        if kind == "truncated":
            f = self._valid()
            return f[:r.randrange(len(f))]
        if kind == "flipped":
            b = bytearray(self._valid())
            for _ in range(r.randint(1, 8)):
                b[r.randrange(len(b))] = r.getrandbits(8)
            return self._seal(bytes(b[:-4])) if r.random() < 0.5 else bytes(b)
        return r.randbytes(r.randint(0, 300))

    def batch(self, n: int) -> list[bytes]:
        return [self.one() for _ in range(n)]
