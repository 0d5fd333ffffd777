"""Centralised training and checkpoints (the CLI's ``model train`` / ``model convert``).

A checkpoint is one ``torch.save`` file holding the model's state dict, its architecture,
the feature spec, the training summary and the training rows (so that conversion calibrates
on the whole training set, as `federation.model.convert` needs) or, with ``keep_rows=False``,
only their `task.feature_stats` (conversion then calibrates on synthesised rows).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_agent.features import FeatureSpec
from federation.model import task
from federation.model.autoencoder import AutoEncoder

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


def sim_training_rows(
    *, stream: str = "das", channels: int = 512, seconds: float = 120.0, runs: int = 2,
    seed: int = 0, geometry: str = "well", spec: FeatureSpec | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, FeatureSpec, dict[str, Any]]:
    """Normal rows from ``runs`` simulator runs (seeds ``seed .. seed+runs-1``)."""
    from federation.model.datasets import simulate
    from sensors_sim import SimConfig

    parts, fs = [], None
    cfg = SimConfig(channels=channels, seconds=seconds, geometry=geometry, streams=(stream,))
    for r in range(runs):
        fs = simulate(replace(cfg, gateway=f"train{r}"), seed=seed + r, stream=stream, spec=spec)
        parts.append(fs.normal_rows())
        if progress is not None:
            progress(r + 1)
    assert fs is not None
    source = {"kind": "sim", "stream": stream, "channels": channels, "seconds": seconds,
              "runs": runs, "seed": seed, "geometry": geometry}
    return np.concatenate(parts), fs.spec, source


#: fewest rows held back to calibrate thresholds; fewest optimiser steps on small data
MIN_VALIDATION_ROWS, MIN_STEPS = 20, 1500


class TooLittleData(ValueError):
    """Normal data too short to train and calibrate on (the message says how much)."""


def split_validation(rows: np.ndarray, fraction: float, gap: int = 0,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(fit rows, held-back rows)``: the last ``fraction`` of the rows (time order) is held
    back, after dropping ``gap`` rows at the boundary (overlapping windows share samples)."""
    if fraction <= 0:
        return rows, rows[:0]
    n_val = max(MIN_VALIDATION_ROWS, round(fraction * len(rows)))
    cut = len(rows) - n_val
    return rows[:max(0, cut - gap)], rows[max(0, cut):]


def small_data_schedule(n: int, batch_size: int, epochs: int) -> tuple[int, int]:
    """``(batch size, epochs)`` giving at least `MIN_STEPS` optimiser steps on few rows."""
    batch = min(batch_size, max(32, n // 8))
    steps = -(-n // batch)
    return batch, max(epochs, -(-MIN_STEPS // steps))


def train(
    rows: np.ndarray, *, arch: str = "ae-32-8", epochs: int = 30, lr: float = 3e-3,
    batch_size: int = 512, seed: int = 0, progress: Callable[[int, float], None] | None = None,
    validation: float = 0.0, gap: int = 0, robust: bool = False, min_rows: int = 100,
    columns: int = 0,
) -> tuple[AutoEncoder, dict[str, Any], np.ndarray]:
    """Normalise, fit and set the error scale on the first rows; the last ``validation``
    fraction is held back (`split_validation`) to calibrate thresholds. Returns ``(model,
    training summary, held-back rows)``. On few rows the batch shrinks and the epochs grow
    (`small_data_schedule`). ``columns``: input columns of lagged (mv) rows, for the
    ``pca`` arch's latent width (`task.fit_linear`)."""
    rows = np.asarray(rows, np.float32)
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D, got {rows.shape}")
    fit_rows, held = split_validation(rows, validation, gap)
    if len(fit_rows) < min_rows or (validation > 0 and len(held) < MIN_VALIDATION_ROWS):
        raise TooLittleData(
            f"too little normal data: {len(rows)} feature rows; need at least {min_rows} to "
            f"train" + (f" plus {MIN_VALIDATION_ROWS} (and {validation:.0%}) held back to "
                        f"calibrate the threshold, got {len(fit_rows)} + {len(held)}"
                        if validation > 0 else f", got {len(fit_rows)}"))
    if validation > 0:
        batch_size, epochs = small_data_schedule(len(fit_rows), batch_size, epochs)
    t0 = time.perf_counter()
    if arch in task.FITTED_ARCHS:  # closed form: no epochs, no seed
        model, fit = task.fit_linear(fit_rows, robust=robust, columns=columns)
    else:
        model, fit = task.prepare_and_fit(fit_rows, arch=arch, epochs=epochs, lr=lr,
                                          batch_size=batch_size, seed=seed,
                                          progress=progress, robust=robust)
    ev = task.evaluate(model, fit_rows)
    summary = {"arch": arch, "rows": int(len(fit_rows)), "held_back_rows": int(len(held)),
               "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
               "normalization": "robust" if robust else "mean_std", "final_loss": fit["loss"],
               "score_mean": ev["score_mean"], "score_p99": ev["score_p99"],
               "seconds": round(time.perf_counter() - t0, 2)}
    if "latent" in fit:
        summary.update(latent=fit["latent"], explained_variance=fit["explained_variance"],
                       t2_weight=fit["t2_weight"], epochs=0)  # fitted, not trained
    if len(held):
        summary["held_back_score_p99"] = float(np.quantile(task.score_rows(model, held), 0.99))
    log.info("trained arch=%s rows=%d held=%d loss=%.4f seconds=%.1f", arch, len(fit_rows),
             len(held), fit["loss"], summary["seconds"])
    return model, summary, held


def save_checkpoint(path: Path, model: AutoEncoder, spec: FeatureSpec, *,
                    rows: np.ndarray | None, training: dict[str, Any],
                    source: dict[str, Any] | None = None, keep_rows: bool = True,
                    held_back: np.ndarray | None = None) -> None:
    if spec.dim != model.dim:
        raise ValueError(f"model width {model.dim} != feature spec width {spec.dim}")
    blob = {
        "format": CHECKPOINT_FORMAT, "dim": model.dim, "hyper": model.hyper,
        "state": model.state_dict(), "spec": spec.to_dict(), "training": training,
        "source": source or {},
        "stats": task.feature_stats(rows) if rows is not None else None,
        "rows": torch.from_numpy(np.ascontiguousarray(rows, np.float32))
        if rows is not None and keep_rows else None,
        "held_back": torch.from_numpy(np.ascontiguousarray(held_back, np.float32))
        if held_back is not None and len(held_back) else None,
    }
    tmp = Path(f"{path}.tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``{"model", "spec", "rows" (or None), "held_back" (or None), "stats", "training",
    "source"}``."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such checkpoint") from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a model checkpoint ({exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a fiberwatch model checkpoint")
    hyper = dict(blob["hyper"])
    hyper["hidden"] = tuple(hyper["hidden"])
    model = AutoEncoder(int(blob["dim"]), **hyper)
    model.load_state_dict(blob["state"])
    model.eval()
    rows = blob["rows"].numpy() if blob.get("rows") is not None else None
    held = blob["held_back"].numpy() if blob.get("held_back") is not None else None
    return {"model": model, "spec": FeatureSpec.from_dict(blob["spec"]), "rows": rows,
            "held_back": held,
            "stats": blob.get("stats"), "training": blob.get("training", {}),
            "source": blob.get("source", {})}
