"""Event-level evaluation on labelled simulator scenarios, the model against its peers.

Every detector (the int8 package, each peer, any extra) scores the same frames through its
own `edge_agent.offline.OfflineScorer`, i.e. the gateway's validation, windows, features,
adaptive thresholds and event builder: only the detector differs. Each scorer first runs a
normal warm-up (`datasets.EvalPlan.warm_s`; its thresholds learn, nothing is counted); every
family's run then starts from a fork of that warmed state.

Metrics per family and detector (`event_metrics`):

* an event *matches* a label when their channel ranges overlap within ``tol_ch`` channels
  and the event overlaps the label in time (end extended by ``tol_s``);
* recall = labels matched / labels; precision = events matching a label / events; F1;
* false alarms = events matching no label, per 1,000 channel-hours of the run;
* delay = end of the first flagged window of the earliest matching event - label start;
* raised = when the gateway first announced a matching event (its first emission: after the
  alarm on-delay, `edge_agent.config.EventConfig.on_delay_s`) - label start;
* localisation = |event centre - label centre| (channels) of the matching event with the
  highest peak (fiber break: |event start - break point|);
* row AUC: ROC AUC of the per-window, per-channel scores against the label grid.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from edge_agent.config import EventConfig, StreamConfig, ThresholdConfig
from edge_agent.events import Event
from edge_agent.offline import OfflineScorer, stream_config_for
from edge_agent.thresholds import threshold_floor
from edge_agent.types import Scored
from federation.model import datasets

log = logging.getLogger(__name__)

#: the evaluation's main operating point IS the gateway's default threshold config (false-alarm
#: rate per group and window, floor at the package's ``floor_quantile`` training-score
#: quantile): change it in `edge_agent.config.ThresholdConfig`, not here
MAIN_POINT = ThresholdConfig()
#: a stricter second point: the floor at this quantile instead
STRICT_FLOOR_QUANTILE = 0.99999


@dataclass
class DetectorRun:
    """What one detector produced on one run."""

    events: list[Event]
    scores: np.ndarray  # (W, C) float32
    t_start_ns: np.ndarray  # (W,)
    t_end_ns: np.ndarray
    raised_ns: dict[str, int] = field(default_factory=dict)  # event id -> first emission


class _Grid:
    def __init__(self) -> None:
        self.scores: list[np.ndarray] = []
        self.times: list[tuple[int, int]] = []

    def __call__(self, s: Scored) -> None:
        self.scores.append(s.scores.copy())
        self.times.append((s.window.t_start_ns, s.window.t_end_ns))

    def run(self, events: list[Event], emitted: Iterable[Event] = ()) -> DetectorRun:
        t = np.asarray(self.times, np.int64).reshape(-1, 2)
        raised: dict[str, int] = {}
        for e in emitted:  # in order: the first emission of an id is when it was raised
            raised.setdefault(e.id, e.detected_ns)
        return DetectorRun(events, np.asarray(self.scores, np.float32), t[:, 0], t[:, 1],
                           raised)


class SharedFeatures:
    """One streaming feature extractor shared by pipelines that see the same windows in the
    same order: the rows of a window are computed once (keyed by the window's bytes) and
    handed to every pipeline. For the stateless das profile only."""

    def __init__(self, spec: Any) -> None:
        from edge_agent.feature_stream import StreamingFeatures
        from edge_agent.features import FeatureExtractor

        if spec.profile != "das":
            raise ValueError("shared features need the stateless das profile")
        self.spec = spec
        self._fx = StreamingFeatures(FeatureExtractor(spec))
        self._cache: dict[tuple[Any, ...], np.ndarray] = {}

    def rows(self, w: Any) -> np.ndarray:
        window = w.data
        key = (window.shape, zlib.crc32(np.ascontiguousarray(window).data), float(window[0, 0]))
        rows = self._cache.get(key)
        if rows is None:
            if len(self._cache) >= 16:  # the pipelines are in step: older ones are done
                self._cache.pop(next(iter(self._cache)))
            rows = self._cache[key] = self._fx.rows(w)
        return rows


def feed(scorers: dict[str, OfflineScorer], frames: Iterable[bytes]) -> None:
    """The same frames to every scorer; their pipelines share one feature extractor."""
    shared = SharedFeatures(next(iter(scorers.values())).pipeline.extractor.spec)
    for sc in scorers.values():
        sc.pipeline.features = shared  # type: ignore[assignment]
    for f in frames:
        for sc in scorers.values():
            sc.feed(f)


def score_run(warm: dict[str, OfflineScorer], frames: Iterable[bytes]) -> dict[str, DetectorRun]:
    """Fork every warmed scorer, feed them the same frames, return each one's run."""
    grids = {k: _Grid() for k in warm}
    scorers = {k: sc.fork(on_window=grids[k]) for k, sc in warm.items()}
    feed(scorers, frames)
    return {k: grids[k].run(sc.finish(), sc.emitted) for k, sc in scorers.items()}


def truth_grid(labels: list, run: DetectorRun, first_channel: int, n_channels: int) -> np.ndarray:
    g = np.zeros((len(run.t_start_ns), n_channels), bool)
    for lb in labels:
        w = (run.t_start_ns < lb.end_ns) & (run.t_end_ns > lb.start_ns)
        c0 = max(lb.ch_start - first_channel, 0)
        c1 = min(lb.ch_end - first_channel, n_channels - 1)
        g[w, c0:c1 + 1] = True
    return g


def _matches(ev: Event, lb: Any, tol_ch: int, tol_ns: int) -> bool:
    return (ev.ch_start <= lb.ch_end + tol_ch and ev.ch_end >= lb.ch_start - tol_ch
            and ev.start_ns < lb.end_ns + tol_ns and ev.end_ns > lb.start_ns)


def event_metrics(run: DetectorRun, labels: list, *, n_channels: int, hop_ns: int,
                  tol_ch: int = 10, tol_s: float = 2.0) -> dict[str, Any]:
    """Event-level precision, recall, F1, false alarms, delay and localisation."""
    tol_ns = round(tol_s * 1e9)
    evs = run.events
    matched = [any(_matches(e, lb, tol_ch, tol_ns) for lb in labels) for e in evs]
    delays, locs, raised = [], [], []
    for lb in labels:
        hits = [e for e in evs if _matches(e, lb, tol_ch, tol_ns)]
        if not hits:
            continue
        first = min(hits, key=lambda e: e.start_ns)
        delays.append(max(0.0, (first.start_ns + hop_ns - lb.start_ns) / 1e9))
        r = [run.raised_ns[e.id] for e in hits if e.id in run.raised_ns]
        if r:
            raised.append(max(0.0, (min(r) - lb.start_ns) / 1e9))
        best = max(hits, key=lambda e: e.peak_score)
        locs.append(abs(best.ch_start - lb.ch_start) if lb.kind == "fiber_break" else
                    abs((best.ch_start + best.ch_end) / 2 - (lb.ch_start + lb.ch_end) / 2))
    n_fa = len(evs) - sum(matched)
    span = int(run.t_end_ns[-1] - run.t_start_ns[0]) if len(run.t_end_ns) else 0
    ch_hours = span / 3.6e12 * n_channels
    recall = len(delays) / len(labels) if labels else float("nan")
    precision = sum(matched) / len(evs) if evs else (1.0 if labels else float("nan"))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "labels": len(labels), "detected": len(delays), "events": len(evs),
        "false_alarms": n_fa, "recall": recall, "precision": precision, "f1": f1,
        "fa_per_1000_ch_h": n_fa / ch_hours * 1000 if ch_hours > 0 else float("nan"),
        "channel_hours": ch_hours,
        "delay_s_median": float(np.median(delays)) if delays else float("nan"),
        "delay_s_p90": float(np.quantile(delays, 0.9)) if delays else float("nan"),
        "raised_s_median": float(np.median(raised)) if raised else float("nan"),
        "raised_s_p90": float(np.quantile(raised, 0.9)) if raised else float("nan"),
        "loc_err_ch_median": float(np.median(locs)) if locs else float("nan"),
        "loc_within_5ch": float(np.mean(np.asarray(locs) <= 5)) if locs else float("nan"),
    }


def row_auc(run: DetectorRun, truth: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y, s = truth.ravel(), run.scores.ravel()
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.nan_to_num(s, nan=0.0, posinf=1e30)))


def warm_scorers(detectors: dict[str, Any], plan: datasets.EvalPlan, stream: StreamConfig, *,
                 thresholds: ThresholdConfig | dict[str, ThresholdConfig],
                 events: EventConfig) -> dict[str, OfflineScorer]:
    """One scorer per detector (thresholds: one config, or one per detector), run over the
    plan's normal warm-up."""
    thr = thresholds if isinstance(thresholds, dict) else dict.fromkeys(detectors, thresholds)
    scorers = {k: OfflineScorer(d, stream, thresholds=thr[k], events=events)
               for k, d in detectors.items()}
    frames, _, _ = datasets.eval_run(plan, "warm", plan.seed)
    feed(scorers, frames)
    return scorers


@dataclass
class Evaluation:
    """`evaluate_runs`' answer: the JSON-able ``result`` and, per family, the raw ``runs``
    and ``truth`` grid a caller may plot (`fiberwatch.bench.model.write_plots`)."""

    result: dict[str, Any]
    raws: dict[str, Any]


def run_evaluation(pkg: Any, **kwargs: Any) -> dict[str, Any]:
    """`evaluate_runs` without the raw runs: the result dict only."""
    return evaluate_runs(pkg, **kwargs).result


def evaluate_runs(
    pkg: Any, *, families: Iterable[str] = tuple(datasets.FAMILIES), peers: Iterable[str] = (),
    quick: bool = False, seed: int = 1000, train_checkpoint: Any = None,
    train_rows: np.ndarray | None = None, progress: bool = False,
    thresholds: ThresholdConfig | None = None, extra: dict[str, Any] | None = None,
    plan: datasets.EvalPlan | None = None,
    floor_quantile: float | None | Literal["config"] = "config",
) -> Evaluation:
    """Evaluate a package, the ``peers`` and ``extra`` detectors on every family.

    The result is ``{"config", "families": {family: {detector: metrics}}, "pooled",
    "summary"}``; ``pooled`` sums false alarms and channel-hours over every run of a detector.

    The operating point is ``thresholds``, by default `MAIN_POINT`: the gateway's default
    `ThresholdConfig`, one definition for both. ``floor_quantile`` overrides its
    ``floor_quantile`` (None: no quantile floor). The floor is the gateway's
    (`edge_agent.thresholds.threshold_floor`): a package's own manifest quantiles; a
    detector without them (peers, the float reference) gets the same quantile of its own
    scores on the training rows as ``min_threshold`` (the same calibration for everyone).
    """
    from edge_agent.features import FeatureSpec

    spec = FeatureSpec.from_dict(pkg.manifest["feature_spec"])
    if spec.profile != "das":
        raise ValueError("the scenario evaluation covers the das stream only")
    families = list(families)
    for f in families:
        if f not in datasets.FAMILIES:
            raise ValueError(f"unknown family {f!r}; choose from {', '.join(datasets.FAMILIES)}")
    plan = replace(plan or (datasets.QUICK_PLAN if quick else datasets.EvalPlan()), seed=seed)
    thr = thresholds or MAIN_POINT
    if floor_quantile != "config":
        thr = thr.model_copy(update={"floor_quantile": floor_quantile})
    peers = list(peers)
    detectors, rows = _detectors(pkg, spec, peers, extra or {}, thr, train_rows,
                                 train_checkpoint, progress)
    thr_by = {k: _with_floor(thr, d, rows) for k, d in detectors.items()}
    floors = {k: threshold_floor(thr_by[k], getattr(d, "threshold_quantiles", None))[0]
              for k, d in detectors.items()}
    stream = stream_config_for(spec, channels=plan.channels)
    warm = warm_scorers(detectors, plan, stream, thresholds=thr_by, events=EventConfig())
    result: dict[str, Any] = {
        "config": {"plan": asdict(plan), "false_alarm_rate": thr.false_alarm_rate,
                   "floor_quantile": thr.floor_quantile,
                   "min_threshold": floors,
                   "model": pkg.version, "package_sha256": pkg.sha256,
                   "detectors": list(detectors), "peers": peers},
        "families": {}, "score_corr_int8_float": {},
    }
    raws = _evaluate_families(result, warm, plan, families, round(spec.hop_s * 1e9), progress)
    result["pooled"] = pooled(result)
    result["summary"] = summary(result)
    return Evaluation(result, raws)


def _detectors(pkg: Any, spec: Any, peers: list[str], extra: dict[str, Any],
               thr: ThresholdConfig, rows: np.ndarray | None, train_checkpoint: Any,
               progress: bool) -> tuple[dict[str, Any], np.ndarray | None]:
    """The package's detector, the fitted ``peers`` and ``extra``; the training rows the
    peers (or a floor for an ``extra`` without package quantiles) needed, if any."""
    from tqdm import tqdm

    from edge_agent.inference import LiteRTDetector
    from federation.model import peers as peer_mod

    detectors: dict[str, Any] = {"model": LiteRTDetector(pkg)}
    needs_rows = thr.floor_quantile is not None and any(
        getattr(d, "threshold_quantiles", None) is None for d in extra.values())
    if peers or needs_rows:
        rows = rows if rows is not None else peer_mod.training_rows(pkg, train_checkpoint)
        for p in tqdm(peers, desc="fit peers", disable=not progress or None):
            detectors[p] = peer_mod.build(p, rows, spec)
    detectors.update(extra)
    return detectors, rows


def _evaluate_families(result: dict[str, Any], warm: dict[str, OfflineScorer],
                       plan: datasets.EvalPlan, families: list[str], hop_ns: int,
                       progress: bool) -> dict[str, Any]:
    """Score every family's run into ``result``; return the raw runs and truth grids."""
    from tqdm import tqdm

    raws: dict[str, Any] = {}
    for i, fam in enumerate(tqdm(families, desc="evaluate", disable=not progress or None)):
        frames, labels, _ = datasets.eval_run(plan, fam, plan.seed + 1 + i)
        runs = score_run(warm, frames)
        truth = truth_grid(labels, next(iter(runs.values())), 0, plan.channels)
        metrics = {}
        for name, run in runs.items():
            metrics[name] = event_metrics(run, labels, n_channels=plan.channels, hop_ns=hop_ns)
            metrics[name]["row_auc"] = row_auc(run, truth)
        result["families"][fam] = metrics
        raws[fam] = {"runs": runs, "truth": truth}
        if "float" in runs:
            result["score_corr_int8_float"][fam] = _score_corr(runs["model"], runs["float"])
        log.info("evaluated family=%s %s", fam,
                 " ".join(f"{k}:f1={m['f1']:.2f}" for k, m in metrics.items()))
    return raws


def _score_corr(a_run: DetectorRun, b_run: DetectorRun) -> dict[str, float]:
    """Pearson and Spearman correlation of two detectors' finite scores on the same grid."""
    from scipy.stats import spearmanr

    a, b = a_run.scores.ravel(), b_run.scores.ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    return {"pearson": float(np.corrcoef(a[ok], b[ok])[0, 1]),
            "spearman": float(spearmanr(a[ok], b[ok]).statistic)}


def _with_floor(thr: ThresholdConfig, det: Any, rows: np.ndarray | None) -> ThresholdConfig:
    """``thr`` for one detector: a package floors itself in the pipeline (its manifest
    quantiles); any other detector gets ``min_threshold`` from its own training scores."""
    if thr.floor_quantile is None or getattr(det, "threshold_quantiles", None) is not None:
        return thr
    if rows is None:
        raise ValueError("a floor for detectors without package quantiles needs training rows")
    sample = rows[np.random.default_rng(0).permutation(len(rows))[:50_000]]
    q = float(np.quantile(np.nan_to_num(det.score(sample), nan=0.0), thr.floor_quantile))
    floor, _ = threshold_floor(thr, {thr.floor_quantile: max(0.0, q)})
    return thr.model_copy(update={"min_threshold": floor})


def pooled(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for by_det in result["families"].values():
        for name, m in by_det.items():
            p = out.setdefault(name, {"false_alarms": 0, "channel_hours": 0.0})
            p["false_alarms"] += m["false_alarms"]
            p["channel_hours"] += m["channel_hours"]
    for p in out.values():
        p["fa_per_1000_ch_h"] = p["false_alarms"] / p["channel_hours"] * 1000 \
            if p["channel_hours"] else float("nan")
    return out


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Per family: does the model beat every peer on F1; the leak/sand targets."""
    out: dict[str, Any] = {}
    pooled_fa = result["pooled"]["model"]["fa_per_1000_ch_h"]
    for fam, by_det in result["families"].items():
        if fam == "normal":
            continue
        m = by_det["model"]
        peer_f1 = {k: v["f1"] for k, v in by_det.items() if k in result["config"]["peers"]}
        out[fam] = {"model_f1": m["f1"],
                    "beats_every_peer": all(m["f1"] > f for f in peer_f1.values()),
                    "best_peer": max(peer_f1, key=lambda k: peer_f1[k]) if peer_f1 else None}
        if fam in ("leak", "sand"):
            out[fam]["meets_target"] = bool(m["recall"] >= 0.95 and pooled_fa <= 1.0
                                            and m["loc_within_5ch"] == 1.0)
    return out


def table(result: dict[str, Any]) -> str:
    """Markdown table: one row per family and detector, then pooled false alarms."""
    lines = ["| family | detector | recall | precision | F1 | FA/1000 ch-h (n) | delay s "
             "(med) | raised s (med) | loc err ch (med) | row AUC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for fam, by_det in result["families"].items():
        for name, m in by_det.items():
            lines.append(
                f"| {fam} | {name} | {m['recall']:.2f} ({m['detected']}/{m['labels']}) "
                f"| {m['precision']:.2f} | {m['f1']:.2f} | {m['fa_per_1000_ch_h']:.1f} "
                f"({m['false_alarms']}) | {m['delay_s_median']:.1f} "
                f"| {m.get('raised_s_median', float('nan')):.1f} "
                f"| {m['loc_err_ch_median']:.1f} | {m['row_auc']:.3f} |")
    lines += ["", "| detector | false alarms | channel-hours | FA/1000 ch-h (all runs) |",
              "|---|---|---|---|"]
    for name, p in result.get("pooled", {}).items():
        lines.append(f"| {name} | {p['false_alarms']} | {p['channel_hours']:.1f} "
                     f"| {p['fa_per_1000_ch_h']:.1f} |")
    return "\n".join(lines)
