"""Centralised training and checkpoints (the CLI's ``model train`` / ``model convert``).

A checkpoint is one ``torch.save`` file holding the model's state dict, its architecture,
the feature spec, the training summary and the training rows (so that conversion calibrates
on the whole training set, as DESIGN.md asks) or, with ``keep_rows=False``, only their
`task.feature_stats` (conversion then calibrates on synthesised rows).
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
from federation import task
from federation.model import AutoEncoder

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


def sim_training_rows(
    *, stream: str = "das", channels: int = 512, seconds: float = 120.0, runs: int = 2,
    seed: int = 0, geometry: str = "well", spec: FeatureSpec | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, FeatureSpec, dict[str, Any]]:
    """Normal rows from ``runs`` simulator runs (seeds ``seed .. seed+runs-1``)."""
    from federation.datasets import simulate
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


def train(
    rows: np.ndarray, *, arch: str = "ae-32-8", epochs: int = 30, lr: float = 3e-3,
    batch_size: int = 512, seed: int = 0, progress: Callable[[int, float], None] | None = None,
) -> tuple[AutoEncoder, dict[str, Any]]:
    """Normalise, fit and set the error scale; returns ``(model, training summary)``."""
    rows = np.asarray(rows, np.float32)
    if rows.ndim != 2 or len(rows) < 100:
        raise ValueError(f"need at least 100 training rows, got {rows.shape}")
    t0 = time.perf_counter()
    model, fit = task.prepare_and_fit(rows, arch=arch, epochs=epochs, lr=lr,
                                      batch_size=batch_size, seed=seed, progress=progress)
    ev = task.evaluate(model, rows)
    summary = {"arch": arch, "rows": int(len(rows)), "epochs": epochs, "lr": lr,
               "batch_size": batch_size, "seed": seed, "final_loss": fit["loss"],
               "score_mean": ev["score_mean"], "score_p99": ev["score_p99"],
               "seconds": round(time.perf_counter() - t0, 2)}
    log.info("trained arch=%s rows=%d loss=%.4f seconds=%.1f", arch, len(rows), fit["loss"],
             summary["seconds"])
    return model, summary


def save_checkpoint(path: Path, model: AutoEncoder, spec: FeatureSpec, *,
                    rows: np.ndarray | None, training: dict[str, Any],
                    source: dict[str, Any] | None = None, keep_rows: bool = True) -> None:
    if spec.dim != model.dim:
        raise ValueError(f"model width {model.dim} != feature spec width {spec.dim}")
    blob = {
        "format": CHECKPOINT_FORMAT, "dim": model.dim, "hyper": model.hyper,
        "state": model.state_dict(), "spec": spec.to_dict(), "training": training,
        "source": source or {},
        "stats": task.feature_stats(rows) if rows is not None else None,
        "rows": torch.from_numpy(np.ascontiguousarray(rows, np.float32))
        if rows is not None and keep_rows else None,
    }
    tmp = Path(f"{path}.tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``{"model", "spec", "rows" (or None), "stats", "training", "source"}``."""
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
    return {"model": model, "spec": FeatureSpec.from_dict(blob["spec"]), "rows": rows,
            "stats": blob.get("stats"), "training": blob.get("training", {}),
            "source": blob.get("source", {})}
