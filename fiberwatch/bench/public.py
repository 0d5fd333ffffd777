"""`fiberwatch bench model`, public-data section: labelled multivariate process faults.

Data: the revised Tennessee Eastman process (Bathelt, Ricker & Jelali 2015, ``temexd_mod``)
as packaged by ``tep-studio`` (BSD-3-Clause, installed by the project's ``bench`` extra),
simulated here under its decentralised closed-loop control with its measurement noise: no
file is downloaded. The 22 continuous measurements (XMEAS 1-22) sampled every 36 s.

Protocol (fixed before any result was seen, the same for every detector):
- one training file: ``train_rows`` normal rows (seed 1); the last 20 % are held back to
  calibrate every detector's threshold at the same per-row false-alarm target ``ALPHA``;
- per fault IDV(k): a run (seed 100 + k) of ``normal_rows`` normal rows, then the fault
  switched on for ``fault_rows`` rows; rows after the onset are labelled anomalous;
- point-wise precision, recall, F1 and false-alarm rate (flagged normal rows / normal rows),
  per fault and pooled over all faults; nothing is tuned on these runs.
Our model runs through the CLI exactly as a user would (``model train --csv`` -> ``model
convert`` -> ``score --false-alarms-per-day``). Baselines: IsolationForest and PCA with
Hotelling T^2 + SPE (components to 90 % variance), both on the robust-scaled columns.
"""

from __future__ import annotations

import contextlib
import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np

ALPHA = 0.01  # per-row false-alarm target of every detector (held-back calibration)
COLUMNS = 22  # XMEAS 1-22: the continuous measurements
EVERY = 20  # record every 20th control step of 1.8 s: 36 s
FAULTS = tuple(range(1, 21))
QUICK_FAULTS = (1, 2, 4, 5, 6, 7)


def available() -> str | None:
    """None when tep-studio can be imported, else why not."""
    try:
        import tep_studio  # noqa: F401
    except ImportError as exc:
        return f"tep-studio is not installed ({exc}); pip install -e '.[bench]'"
    return None


def simulate(seed: int, idv: int | None, normal_rows: int, fault_rows: int = 0,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t_s, X (rows, 22), y)`` of one closed-loop run; IDV(idv) switches on after
    ``normal_rows`` rows. A run the plant shuts down ends early."""
    from tep_studio import ClosedLoopSimulation

    step_h = 0.0005 * EVERY
    onset_h = normal_rows * step_h

    def schedule(t_h: float) -> np.ndarray:
        v = np.zeros(28)
        if idv is not None and t_h >= onset_h:
            v[idv - 1] = 1.0
        return v

    sim = ClosedLoopSimulation(horizon=(normal_rows + fault_rows) * step_h)
    run = sim.run(seed=float(seed), disturbance_schedule=schedule, record_every=EVERY)
    x = np.array([r.measurements[:COLUMNS] for r in run.results], np.float64)
    t = np.array([r.time for r in run.results]) * 3600.0
    y = (t >= onset_h * 3600.0 - 1e-6).astype(bool) if idv is not None else np.zeros(len(t), bool)
    return t, x, y


def write_csv(path: Path, t: np.ndarray, x: np.ndarray) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time"] + [f"xmeas_{i + 1}" for i in range(x.shape[1])])
        for ti, row in zip(t, x, strict=True):
            w.writerow([f"{ti:.1f}"] + [f"{v:.6g}" for v in row])


def point_metrics(flag: np.ndarray, y: np.ndarray) -> dict[str, float]:
    tp = int((flag & y).sum())
    fp = int((flag & ~y).sum())
    fn = int((~flag & y).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": prec, "recall": rec,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "far": fp / max(1, int((~y).sum())), "tp": tp, "fp": fp, "fn": fn,
            "normal_rows": int((~y).sum()), "anomalous_rows": int(y.sum())}


class Baselines:
    """IsolationForest and PCA T^2 + SPE fitted on the training rows, thresholds at
    ``ALPHA`` on the held-back rows (T^2 and SPE at ``ALPHA / 2`` each)."""

    def __init__(self, x: np.ndarray, alpha: float = ALPHA, seed: int = 0) -> None:
        from sklearn.decomposition import PCA
        from sklearn.ensemble import IsolationForest

        from edge_agent.thresholds import calibrated_threshold
        from federation.task import robust_center_scale

        cut = int(0.8 * len(x))
        self.center, self.scale = (v.astype(np.float64) for v in robust_center_scale(x[:cut]))
        z_fit, z_val = self._z(x[:cut]), self._z(x[cut:])
        self.iforest = IsolationForest(n_estimators=200, random_state=seed).fit(z_fit)
        self.pca = PCA(n_components=0.9, svd_solver="full").fit(z_fit)
        t2, spe = self._pca(z_val)
        self.limits = {
            "iforest": calibrated_threshold(-self.iforest.score_samples(z_val), alpha),
            "t2": calibrated_threshold(t2, alpha / 2), "spe": calibrated_threshold(spe, alpha / 2)}

    def _z(self, x: np.ndarray) -> np.ndarray:
        return (x - self.center) / self.scale

    def _pca(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.pca.transform(z)
        t2 = (s * s / self.pca.explained_variance_).sum(axis=1)
        r = z - self.pca.inverse_transform(s)
        return t2, (r * r).sum(axis=1)

    def flags(self, x: np.ndarray) -> dict[str, np.ndarray]:
        z = self._z(x)
        t2, spe = self._pca(z)
        return {"iforest": -self.iforest.score_samples(z) > self.limits["iforest"],
                "pca_t2_spe": (t2 > self.limits["t2"]) | (spe > self.limits["spe"])}


def _cli(*argv: str) -> str:
    from fiberwatch.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(argv))
    if code != 0:
        raise RuntimeError(f"fiberwatch {' '.join(argv[:2])} exited {code}")
    return out.getvalue()


def model_flags(pkg: Path, test_csv: Path, out_csv: Path, per_day: float) -> np.ndarray:
    """`fiberwatch score` on a CSV; the ``flagged`` column, one value per input row."""
    _cli("score", "--model", str(pkg), "--input", str(test_csv), "--output", str(out_csv),
         "--false-alarms-per-day", f"{per_day:g}")
    with open(out_csv, newline="") as f:
        return np.array([r["flagged"] == "1" for r in csv.DictReader(f)])


def run(quick: bool, work: Path) -> dict[str, Any]:
    """The section's result object (see the module docstring for the protocol)."""
    why = available()
    if why is not None:
        return {"skipped": why}
    t_start = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    sizes = (400, 150, 250) if quick else (600, 200, 400)  # train, normal, fault rows
    t, x, _ = simulate(1, None, sizes[0])
    train_csv, ck, pkg = work / "tep-train.csv", work / "tep.ckpt", work / "tep.fwpkg"
    write_csv(train_csv, t, x)
    _cli("model", "train", "--csv", str(train_csv), "--out", str(ck))
    _cli("model", "convert", str(ck), "--out", str(pkg))
    per_day = ALPHA * 86400.0 / (0.0005 * EVERY * 3600.0)
    base = Baselines(x)
    faults: dict[str, Any] = {}
    pooled: dict[str, list[np.ndarray]] = {"model": [], "iforest": [], "pca_t2_spe": []}
    truth: list[np.ndarray] = []
    for k in QUICK_FAULTS if quick else FAULTS:
        tk, xk, yk = simulate(100 + k, k, sizes[1], sizes[2])
        test_csv = work / f"tep-idv{k:02d}.csv"
        write_csv(test_csv, tk, xk)
        flags = {"model": model_flags(pkg, test_csv, work / f"tep-idv{k:02d}-scores.csv",
                                      per_day), **base.flags(xk)}
        faults[f"idv{k:02d}"] = {name: point_metrics(f, yk) for name, f in flags.items()}
        for name, f in flags.items():
            pooled[name].append(f)
        truth.append(yk)
    y = np.concatenate(truth)
    return {"dataset": "tep-studio 0.2.0 (revised Tennessee Eastman, BSD-3-Clause)",
            "protocol": {"alpha": ALPHA, "false_alarms_per_day": per_day,
                         "sample_s": 0.0005 * EVERY * 3600.0, "columns": COLUMNS,
                         "train_rows": sizes[0], "normal_rows": sizes[1],
                         "fault_rows": sizes[2]},
            "faults": faults,
            "pooled": {n: point_metrics(np.concatenate(f), y) for n, f in pooled.items()},
            "quick": quick, "seconds": round(time.perf_counter() - t_start, 1)}
