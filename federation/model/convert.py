"""Torch -> int8 ``.tflite`` with litert-torch's PT2E static quantisation.

Only `AutoEncoder.core` is converted (normalised rows in, normalised reconstruction out),
with a dynamic batch dimension and int8 input/output tensors. Calibration runs in batches
over the whole training set (measured: row-by-row calibration is 100x slower, and too few
rows clip the inputs; see docs/architecture.md); a server without data calibrates on rows
synthesised from federated `feature_stats` (`synth_rows`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from federation.model.autoencoder import AutoEncoder
from federation.model.task import one_thread

log = logging.getLogger(__name__)

CALIB_BATCH = 1024
MAX_BATCH = 1 << 20
#: a linear model's int8 ranges cover this many times the training rows' (normalised)
#: range: rows that drift beyond the training range after it (a process plant's slow
#: drifts) are then not clipped at the input, where the clipped part would reappear in the
#: residual and inflate a normal row's score (development runs: docs/model/README.md); a
#: linear map's ranges scale with its input's, and the coarser int8 step costs little
LINEAR_RANGE = 4.0


@dataclass(frozen=True)
class Converted:
    """The int8 model and how it was made."""

    tflite: bytes
    input_quant: dict[str, Any]
    output_quant: dict[str, Any]
    calibration_rows: int
    calibration_source: str  # "data" | "stats"
    seconds: float


def synth_rows(stats: dict[str, Any], n: int = 50_000, *, seed: int = 0) -> np.ndarray:
    """Raw-unit rows drawn from per-feature Gaussians (`feature_stats`), clipped to the seen
    min/max, with 1 % of rows at the extremes so the int8 input range covers them."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(stats["mean"], np.float64)
    std = np.sqrt(np.asarray(stats["m2"], np.float64) / max(int(stats["count"]), 1))
    lo, hi = np.asarray(stats["min"], np.float64), np.asarray(stats["max"], np.float64)
    rows = np.clip(rng.normal(mean, std, size=(n, mean.size)), lo, hi)
    k = max(n // 100, 2)
    rows[:k // 2] = np.where(rng.random((k // 2, mean.size)) < 0.5, lo, hi)
    rows[k // 2:k] = np.where(rng.random((k - k // 2, mean.size)) < 0.5, hi, lo)
    return rows.astype(np.float32)


class _ThirdPartyFilter(logging.Filter):
    """Drops log records raised from inside the converter's libraries."""

    NOISY = ("litert_torch", "torchao", "jax", "torch/_export", "torch/export")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f"/{n}" in record.pathname for n in self.NOISY)


@contextlib.contextmanager
def _quiet() -> Any:
    """litert-torch prints progress and warnings on stdout/stderr and the root logger; keep
    the CLI quiet (they go to the debug log instead)."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    buf = io.StringIO()
    flt = _ThirdPartyFilter()
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(flt)
    saved = os.dup(2)
    with tempfile.TemporaryFile() as native:  # C++ (absl) logs go straight to fd 2
        try:
            sys.stderr.flush()
            os.dup2(native.fileno(), 2)
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            for h in handlers:
                h.removeFilter(flt)
            native.seek(0)
            buf.write(native.read().decode(errors="replace"))
    if buf.getvalue().strip():
        log.debug("converter output: %s", buf.getvalue().strip()[-2000:])


def to_tflite(
    model: AutoEncoder,
    rows: np.ndarray | None = None,
    *,
    stats: dict[str, Any] | None = None,
    n_synth: int = 50_000,
    batch: int = CALIB_BATCH,
    per_channel: bool = False,
    observer: str = "minmax",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Converted:
    """Quantise and convert ``model.core``.

    Parameters
    ----------
    model : AutoEncoder
        Trained model with its normalisation buffers set.
    rows : ndarray, optional
        Raw training rows for calibration (all of them are used, in batches).
    stats : dict, optional
        `feature_stats` (or `combine_stats`) when there are no rows: calibration rows are
        synthesised with `synth_rows`.
    progress : callable, optional
        Called as ``progress(done_batches, total_batches)`` during calibration.
    """
    with _quiet():  # importing litert-torch/torchao logs warnings about optional kernels
        import litert_torch
        from litert_torch.quantize import pt2e_quantizer as pq
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    if rows is None and stats is None:
        raise ValueError("calibration needs training rows or feature statistics")
    source = "data" if rows is not None else "stats"
    calib = np.asarray(rows if rows is not None else synth_rows(stats or {}, n_synth, seed=seed),
                       np.float32)
    t0 = time.perf_counter()
    z = _normalized(model, calib)
    core = model.core.eval()
    sample = (z[: min(len(z), 64)].clone(),)
    dyn = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)
    with _quiet():
        graph = torch.export.export(core, sample, dynamic_shapes=dyn).module()
        quantizer = pq.PT2EQuantizer().set_global(_qconfig(per_channel, observer))
        graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
    _calibrate(graph, z, batch, progress)
    with _quiet():
        graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
        move_exported_model_to_eval(graph)
        qcfg = QuantConfig(pt2e_quantizer=quantizer)
        edge = litert_torch.convert(graph, sample, quant_config=qcfg, dynamic_shapes=dyn)
        flat = edge.model_content()
    in_q, out_q = tensor_quant(flat)
    seconds = time.perf_counter() - t0
    log.info("converted bytes=%d calib_rows=%d source=%s seconds=%.1f",
             len(flat), len(z), source, seconds)
    return Converted(flat, in_q, out_q, int(len(z)), source, seconds)


def _normalized(model: AutoEncoder, calib: np.ndarray) -> torch.Tensor:
    """The calibration rows in the model's normalised units (a linear model's also
    stretched `LINEAR_RANGE` times)."""
    model.eval()
    with torch.no_grad():
        z = model.normalize(torch.from_numpy(np.ascontiguousarray(calib)))
        return torch.cat([z, LINEAR_RANGE * z]) if model.linear else z


def _calibrate(graph: Any, z: torch.Tensor, batch: int,
               progress: Callable[[int, int], None] | None) -> None:
    """Run the normalised calibration rows ``z`` through the prepared graph's observers."""
    total = (len(z) + batch - 1) // batch
    with torch.no_grad(), one_thread():
        for b, i in enumerate(range(0, len(z), batch)):
            graph(z[i:i + batch])
            if progress is not None:
                progress(b + 1, total)


def _qconfig(per_channel: bool, observer: str) -> Any:
    """litert-torch's symmetric int8 config; ``observer="minmax"`` (the default here) swaps
    its activation observer, HistogramObserver, which clips rare extremes to cut rounding
    error, for MinMaxObserver, which covers every calibration value. Rare but normal rows
    (surface disturbances) then stay in range; clipped, they scored higher in int8 than in
    float and raised false alarms (docs/model/README.md)."""
    import dataclasses

    from litert_torch.quantize import pt2e_quantizer as pq
    from torchao.quantization.pt2e.observer import MinMaxObserver

    cfg = pq.get_symmetric_quantization_config(is_per_channel=per_channel)
    if observer == "histogram":
        return cfg
    if observer != "minmax":
        raise ValueError(f"observer must be 'histogram' or 'minmax', got {observer!r}")
    act = dataclasses.replace(cfg.input_activation,
                              observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    return dataclasses.replace(cfg, input_activation=act, output_activation=act)


def tensor_quant(tflite: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Input and output quantisation params as the manifest stores them."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tflite)
    out = []
    for det in (it.get_input_details()[0], it.get_output_details()[0]):
        if det["dtype"] != np.int8:
            raise ValueError(f"tensor {det['name']} is {det['dtype']}, expected int8")
        scale, zp = det["quantization"]
        out.append({"dtype": "int8", "scale": float(scale), "zero_point": int(zp),
                    "shape": [int(s) for s in det["shape_signature"]]})
    return out[0], out[1]
