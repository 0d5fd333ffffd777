"""The frozen int8 model on the gateway: `LiteRTDetector` (a `Detector`).

Score of a feature row ``x`` (D features)::

    z     = (x - mean) / std                       # manifest normalization
    recon = dequantize(model(quantize(z)))         # int8 autoencoder, LiteRT
    score = mean_d( ((z - recon) / error_scale)^2 )

so a normal row scores about 1 and each feature counts in units of its own typical
reconstruction error. The residual uses the unclipped ``z``: values beyond the int8 input
range (never seen in training) raise the score instead of being clipped away.
Rows with non-finite features score NaN; the caller decides what that means.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from edge_agent.features import FeatureSpec, column_blocks
from edge_agent.package import ModelPackage, PackageError
from edge_agent.smoothing import MAX_SPAN

log = logging.getLogger(__name__)

#: rows per interpreter call; larger batches run in chunks of this size
CHUNK_ROWS = 8192


class Int8AutoencoderScorer:
    """Scores rows with a ``.tflite`` and a manifest dict (no signature checks: see
    `LiteRTDetector`). Not thread-safe on its own."""

    def __init__(self, tflite: bytes, manifest: dict[str, Any], *, num_threads: int = 1) -> None:
        self.dim = int(manifest["dim"])
        try:
            self._it = Interpreter(model_content=bytes(tflite), num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            raise PackageError("model", f"LiteRT cannot load the model: {exc}") from None
        inp, out = self._it.get_input_details(), self._it.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise PackageError("model", "the model must have one input and one output")
        self._in, self._out = int(inp[0]["index"]), int(out[0]["index"])
        for det, side in ((inp[0], "input"), (out[0], "output")):
            if det["dtype"] != np.int8:
                raise PackageError("model", f"{side} tensor is {det['dtype']}, expected int8")
            if int(det["shape_signature"][-1]) != self.dim:
                raise PackageError("model", f"{side} width {det['shape_signature']} != {self.dim}")
            scale, zp = det["quantization"]
            want = manifest[side]
            if not (np.isclose(scale, want["scale"], rtol=1e-6) and zp == want["zero_point"]):
                raise PackageError("model", f"{side} quantization differs from the manifest")
        self._dynamic = int(inp[0]["shape_signature"][0]) == -1
        self._batch = int(inp[0]["shape"][0])
        self._allocated = False
        s_in, z_in = inp[0]["quantization"]
        s_out, z_out = out[0]["quantization"]
        self._s_out, self._z_out = np.float32(s_out), np.float32(z_out)
        mean = np.asarray(manifest["normalization"]["mean"], np.float64)
        std = np.asarray(manifest["normalization"]["std"], np.float64)
        inv_err = 1.0 / np.asarray(manifest["error_scale"], np.float64)
        # z = x*a + b; quantized input = rint(z / s_in + z_in); residual r = x*A + q_out*B + C
        self._a = (1.0 / std).astype(np.float32)
        self._b = (-mean / std).astype(np.float32)
        self._qa = (1.0 / (std * s_in)).astype(np.float32)
        self._qb = (z_in - mean / (std * s_in)).astype(np.float32)
        self._ra = (inv_err / std).astype(np.float32)
        self._rb = (-s_out * inv_err).astype(np.float32)
        self._rc = (-mean / std * inv_err + z_out * s_out * inv_err).astype(np.float32)
        self._inv_dim = np.float32(1.0 / self.dim)

    def _invoke(self, q: np.ndarray) -> np.ndarray:
        """Run int8 rows ``q`` (n <= batch size in use); returns int8 output rows."""
        n = q.shape[0]
        if self._dynamic and n != self._batch:
            self._it.resize_tensor_input(self._in, [n, self.dim], strict=False)
            self._batch = n
            self._allocated = False
        elif n < self._batch:  # fixed-batch model: pad
            q = np.concatenate([q, np.zeros((self._batch - n, self.dim), np.int8)])
        if not self._allocated:
            self._it.allocate_tensors()
            self._allocated = True
        self._it.set_tensor(self._in, q)
        self._it.invoke()
        return self._it.get_tensor(self._out)[:n]

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        qf = np.multiply(x, self._qa)
        qf += self._qb
        np.rint(qf, out=qf)
        np.fmax(qf, -128.0, out=qf)  # fmax/fmin also map NaN and inf into int8 range
        np.fmin(qf, 127.0, out=qf)
        return qf.astype(np.int8)

    def _chunks(self, n: int) -> tuple[int, bool]:
        """(chunk rows, pad the last chunk): one tensor size per call, no re-allocation
        between calls of the same size."""
        if not self._dynamic:
            return self._batch, True
        return (n, False) if n <= CHUNK_ROWS else (CHUNK_ROWS, True)

    def score(self, rows: np.ndarray) -> np.ndarray:
        x = self._check(rows)
        n = x.shape[0]
        out = np.empty(n, np.float32)
        if n == 0:
            return out
        chunk, pad = self._chunks(n)
        for i in range(0, n, chunk):
            xs = x[i:i + chunk]
            q = self._quantize(xs)
            if pad and q.shape[0] < chunk:
                q = np.concatenate([q, np.zeros((chunk - q.shape[0], self.dim), np.int8)])
            y = self._invoke(q)[: xs.shape[0]]
            r = np.multiply(xs, self._ra)
            r += self._rc
            r += y * self._rb  # int8 * float32 -> float32
            out[i:i + chunk] = np.einsum("ij,ij->i", r, r) * self._inv_dim
        return out

    def parts(self, rows: np.ndarray) -> np.ndarray:
        """``(N, D)`` per-feature terms of the score (``score = parts.sum(axis=1)``)."""
        x = self._check(rows)
        chunk, _ = self._chunks(x.shape[0])
        out = np.empty(x.shape, np.float32)
        for i in range(0, x.shape[0], chunk):
            xs = x[i:i + chunk]
            r = np.multiply(xs, self._ra)
            r += self._rc
            r += self._invoke(self._quantize(xs)) * self._rb
            out[i:i + chunk] = r * r * self._inv_dim
        return out

    def saturation(self, rows: np.ndarray) -> tuple[int, int]:
        """(input values clipped to the int8 range, rows with any clipped value)."""
        x = self._check(rows)
        qf = x * self._qa + self._qb
        out = ~((qf >= -128.5) & (qf <= 127.5))  # NaN counts as out of range
        return int(np.count_nonzero(out)), int(np.count_nonzero(out.any(axis=1)))

    def reconstruct(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(z, recon)`` in normalised units, for diagnostics and parity checks."""
        x = self._check(rows)
        chunk, _ = self._chunks(x.shape[0])
        recon = np.concatenate([
            (self._invoke(self._quantize(x[i:i + chunk])).astype(np.float32) - self._z_out)
            * self._s_out for i in range(0, x.shape[0], chunk)
        ]) if x.shape[0] else np.empty((0, self.dim), np.float32)
        return x * self._a + self._b, recon

    def _check(self, rows: np.ndarray) -> np.ndarray:
        x = np.asarray(rows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"rows must be (N, {self.dim}), got shape {x.shape}")
        return x


def quantile_levels(quantiles: dict[str, Any]) -> dict[float, float]:
    """Manifest ``threshold.quantiles`` (``{"0.9999": 9.3, "1": 41.0}``) keyed by level."""
    out = {}
    for k, v in quantiles.items():
        try:
            level = float(k)
        except ValueError:
            raise PackageError("manifest",
                               f"threshold.quantiles: level {k!r} is not a number") from None
        if not 0 < level <= 1:
            raise PackageError("manifest", f"threshold.quantiles: level {k!r} not in (0, 1]")
        out[level] = float(v)
    return out


def calibration_scores(threshold: dict[str, Any]) -> np.ndarray:
    """Manifest ``threshold.calibration.scores`` (sorted, finite, >= 0) as float64."""
    cal = threshold.get("calibration")
    if not cal:
        return np.empty(0)
    try:
        s = np.sort(np.asarray(cal["scores"], np.float64))
    except (KeyError, TypeError, ValueError):
        raise PackageError("manifest", "threshold.calibration.scores must be numbers") from None
    if s.ndim != 1 or s.size < 2 or not np.isfinite(s).all() or s[0] < 0:
        raise PackageError("manifest", "threshold.calibration.scores: >= 2 finite numbers >= 0")
    return s


def smoothing_span(threshold: dict[str, Any]) -> int:
    """Manifest ``threshold.smoothing.span`` (an ``mv`` package's EWMA of its score in rows,
    `edge_agent.smoothing`); 1 (none) when absent."""
    sm = threshold.get("smoothing")
    if not sm:
        return 1
    span = sm.get("span") if isinstance(sm, dict) else None
    if sm.get("method", "ewma") != "ewma" or not isinstance(span, int) or \
            isinstance(span, bool) or not 1 <= span <= MAX_SPAN:
        raise PackageError("manifest", f"threshold.smoothing: an ewma span in [1, {MAX_SPAN}]")
    return span


def threshold_margin(threshold: dict[str, Any]) -> float:
    """Manifest ``threshold.margin``: the calibrated threshold is multiplied by it (the
    drift allowance, `edge_agent.thresholds.GroupThreshold.for_detector`); 1 when absent."""
    m = threshold.get("margin", 1.0)
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not 1.0 <= m <= 100.0:
        raise PackageError("manifest", "threshold.margin: a number in [1, 100]")
    return float(m)


class LiteRTDetector:
    """The packaged int8 autoencoder behind the `Detector` protocol.

    Parameters
    ----------
    pkg : ModelPackage
        A package from `edge_agent.package.read_package` (already verified).
    num_threads : int
        LiteRT CPU threads.

    `score` is pure and safe to call from several threads (calls are serialised).
    """

    def __init__(self, pkg: ModelPackage, *, num_threads: int = 1) -> None:
        self.version = pkg.version
        self.package_hash = pkg.sha256
        self.feature_spec_hash = pkg.feature_spec_hash
        self.dim = pkg.dim
        #: training-score quantiles by level (manifest ``threshold.quantiles``): the
        #: threshold floor (`edge_agent.thresholds.threshold_floor`)
        self.threshold_quantiles = quantile_levels(pkg.manifest["threshold"]["quantiles"])
        #: held-back normal scores (``threshold.calibration``) for a calibrated operating
        #: point (`edge_agent.thresholds.threshold_floor`); empty for older packages
        self.calibration_scores = calibration_scores(pkg.manifest["threshold"])
        #: the score's causal smoothing span (rows) and the calibrated threshold's margin
        self.smoothing_span = smoothing_span(pkg.manifest["threshold"])
        self.threshold_margin = threshold_margin(pkg.manifest["threshold"])
        spec = FeatureSpec.from_dict(pkg.manifest["feature_spec"])
        self._blocks = column_blocks(spec) if spec.profile == "mv" else None  # mv only
        self.columns = spec.channels
        self._scorer = Int8AutoencoderScorer(pkg.tflite, pkg.manifest, num_threads=num_threads)
        self._lock = threading.Lock()
        log.info("model=%s hash=%s dim=%d loaded", self.version, self.package_hash[:12], self.dim)

    def score(self, rows: np.ndarray) -> np.ndarray:
        """(N, D) float32 feature rows -> (N,) float32 scores (high = anomalous)."""
        with self._lock:
            return self._scorer.score(rows)

    def score_columns(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``mv`` packages: ``(scores (N,), contributions (N, columns))``, each column's
        share of its row's score (they sum to it). One model call."""
        if self._blocks is None:
            raise ValueError("per-column contributions need an mv package")
        with self._lock:
            p = self._scorer.parts(rows)
        contrib = p.reshape(p.shape[0], self.columns, -1).sum(axis=2)  # columns are blocks
        return contrib.sum(axis=1), contrib

    def saturation(self, rows: np.ndarray) -> tuple[int, int]:
        """(int8 input values clipped, rows with any clipped value): `edge_agent.model_health`."""
        return self._scorer.saturation(rows)
