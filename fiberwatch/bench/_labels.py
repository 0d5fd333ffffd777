"""The label-effect scenario shared by `fiberwatch.bench.labels` and its integration test.

A site of ``gateways`` simulated gateways runs an int8 model trained on their normal rows.
Then a valve (`sensors_sim` kind ``valve``: benign, recurring) starts stroking on gateway 0;
the model flags the strokes, the gateway journals the flagged rows (as `edge_agent.pipeline`
does: every row of a flagged channel group) and the operator labels the first events false
alarms. The operator also confirmed a leak and a sand event (labelled anomalies). Then one
federated round over real Flower SuperNodes continues from the running model with the
labels (`fiberwatch.label_round.next_round`), and both int8 packages are scored on *fresh*
runs: later valve strokes (does the recurring false alarm stop?) and leak and sand events
(is recall kept?). Thresholds are each package's score quantile at `LEVEL` (the gateway's
default ``threshold.floor_quantile``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LEVEL = 0.9999
GROUP = 8  # channels per threshold group (the gateway's default group_size)


@dataclass(frozen=True)
class Plan:
    channels: int = 32
    gateways: int = 2
    normal_s: float = 60.0  # each gateway's normal buffer
    history_s: float = 60.0  # valve strokes the operator sees (and labels the first of)
    labelled_events: int = 3
    eval_s: float = 80.0  # fresh strokes, after the round
    anomaly_s: float = 45.0  # fresh leak and sand runs: 3 events each
    period_s: float = 15.0
    valve_ch: tuple[int, int] = (10, 17)
    epochs: int = 5  # `fiberwatch.label_round.LABEL_ROUND` (measured, see BENCHMARKS.md)
    lr: float = 0.01
    label_share: float = 0.5
    init_epochs: int = 20


QUICK = Plan()
#: a full run: twice the channels and longer runs. With 3 gateways (only one of which has the
#: labels) FedAvg diluted the labelled gateway's update: the valve still alerted on all 10
#: fresh strokes (flagged windows 50 -> 29; without labels 50 -> 42), see the report
FULL = Plan(channels=64, gateways=2, normal_s=120.0, history_s=90.0, labelled_events=4,
            eval_s=150.0, anomaly_s=90.0, valve_ch=(20, 29))


def _sim(plan: Plan, seed: int, seconds: float, scenarios: tuple[Any, ...] = ()) -> Any:
    """One simulated run; every seed starts at its own hour (runs never overlap in time, as
    a gateway's history does not)."""
    from federation.model.datasets import simulate
    from sensors_sim.config import DEFAULT_START_NS, SimConfig

    return simulate(SimConfig(channels=plan.channels, seconds=seconds, streams=("das",),
                              scenarios=scenarios, start_ns=DEFAULT_START_NS + seed * 3600 * 10**9),
                    seed=seed)


def valve_run(plan: Plan, seed: int, seconds: float) -> Any:
    from sensors_sim.config import Scenario

    lo, hi = plan.valve_ch
    return _sim(plan, seed, seconds, (Scenario(
        "valve", 1.0, seconds - 1.0, ch_start=lo, ch_end=hi,
        params={"period": plan.period_s, "on": 2.0}),))


def anomaly_run(plan: Plan, seed: int, kind: str, n: int, seconds: float) -> Any:
    from sensors_sim.config import Scenario

    gap, c = seconds / n, plan.channels

    def where(k: int) -> dict[str, Any]:
        if kind == "leak":
            return {"channel": 6 + (k * 7) % (c - 12)}
        lo = 4 + (k * 7) % (c - 16)
        return {"ch_start": lo, "ch_end": lo + 7}

    scs = tuple(Scenario(kind, round(2.0 + k * gap, 3), min(8.0, gap - 3), intensity=0.8,
                         **where(k)) for k in range(n))
    return _sim(plan, seed, seconds, scs)


class Int8:
    """A package's int8 scorer and its threshold (score quantile at `LEVEL`)."""

    def __init__(self, package: bytes) -> None:
        from edge_agent.inference import LiteRTDetector
        from edge_agent.package import read_package

        self.det = LiteRTDetector(read_package(package, None))
        q = self.det.threshold_quantiles
        self.threshold = float(q[min(q, key=lambda lv: abs(lv - LEVEL))])

    def grid(self, fs: Any, floor: np.ndarray | None = None) -> np.ndarray:
        """``(windows, channels)``: True where a row scores over the threshold (and over
        its group's false-alarm floor, `edge_agent.fa_calibration`, when given)."""
        level = self.threshold if floor is None else \
            np.maximum(self.threshold, np.repeat(floor, GROUP)[:fs.n_channels])
        return np.asarray(fs.grid(self.det.score(fs.rows)) > level)

    def fa_floor(self, book_path: Path, channels: int) -> np.ndarray | None:
        """The gateway's false-alarm floor per group for this package (its label book)."""
        from edge_agent.fa_calibration import FalseAlarmFloor
        from edge_agent.labels import LabelBook
        from federation.model.datasets import DAS_SPEC

        with LabelBook(book_path) as book:
            return FalseAlarmFloor(book, "das", dim=DAS_SPEC.dim, first_channel=0,
                                   channels=channels, group_size=GROUP
                                   ).floor(self.det, self.det.version)


def flagged_events(over: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Flagged groups ``(windows, groups)`` and events: runs of windows with a flagged group,
    as ``(first window, last window, first group, last group)``."""
    w, c = over.shape
    groups = np.logical_or.reduceat(over, np.arange(0, c, GROUP), axis=1)
    events: list[tuple[int, int, int, int]] = []
    hit = np.asarray(groups.any(1), bool)
    i = 0
    while i < w:
        if not hit[i]:
            i += 1
            continue
        j = i
        while j + 1 < w and hit[j + 1]:
            j += 1
        g = np.flatnonzero(groups[i:j + 1].any(0))
        events.append((i, j, int(g[0]), int(g[-1])))
        i = j + 1
    return groups, events


def journal_and_label(book: Any, fs: Any, scorer: Int8, *, label: str, kind: str = "",
                      first: int | None = None, site: str = "site", gateway: str = "gw0") -> int:
    """What the gateway and the operator do: journal every flagged group's rows
    (`edge_agent.labels.LabelBook.record_flagged`) and label the first ``first`` events
    (`edge_agent.labels.Label`, as `cloud.labels` publishes it); the events labelled."""
    from edge_agent.labels import Label

    groups, events = flagged_events(scorer.grid(fs))
    mask = np.repeat(groups, GROUP, axis=1)[:, :fs.n_channels]
    rows = fs.rows.reshape(fs.n_windows, fs.n_channels, -1)
    for w in np.flatnonzero(mask.any(1)):
        ch = np.flatnonzero(mask[w])
        book.record_flagged("das", int(fs.t_start_ns[w]), int(fs.t_end_ns[w]),
                            fs.first_channel + ch, rows[w, ch])
    picked = events[:first] if first is not None else events
    for i, (w0, w1, g0, g1) in enumerate(picked):
        c0 = fs.first_channel + g0 * GROUP
        c1 = min(fs.first_channel + (g1 + 1) * GROUP - 1, fs.first_channel + fs.n_channels - 1)
        book.add(Label(id=f"{kind or label}-{i}:{int(fs.t_start_ns[w0])}",
                       event_id=f"{kind or label}-{i}", site=site, gateway=gateway, stream="das",
                       start_ns=int(fs.t_start_ns[w0]), end_ns=int(fs.t_end_ns[w1]),
                       ch_start=c0, ch_end=c1, label=label, kind=kind, user="operator"))
    return len(picked)


def prepare(work: Path, plan: Plan) -> dict[str, Any]:
    """Gateways' normal buffers and label books, the running model (weights ``.npz`` and
    int8 package) and the journaled, labelled history; seconds spent."""
    from edge_agent.labels import LabelBook
    from edge_agent.normal_buffer import NormalBuffer
    from federation.model import task
    from federation.model.datasets import DAS_SPEC
    from federation.registry.package import package_model

    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    normal = [_sim(plan, 100 + i, plan.normal_s).normal_rows() for i in range(plan.gateways)]
    gws = []
    for i, rows in enumerate(normal):
        buf, book_path = work / f"gw{i}-normal.fwnb", work / f"gw{i}-labels.db"
        with NormalBuffer(buf, dim=DAS_SPEC.dim, spec_hash=DAS_SPEC.hash,
                          max_rows=len(rows)) as b:
            b.append(rows)
        gws.append({"normal-buffer": str(buf), "labels": str(book_path),
                    "gateway-id": f"site/gw{i}"})
    allrows = np.concatenate(normal)
    model, _ = task.prepare_and_fit(allrows, epochs=plan.init_epochs, seed=0)
    np.savez(work / "running.npz", *task.get_weights(model))
    package, _ = package_model(model, DAS_SPEC, rows=allrows, version="das-running")
    scorer = Int8(package)
    with LabelBook(Path(gws[0]["labels"])) as book:
        n_fa = journal_and_label(book, valve_run(plan, 200, plan.history_s), scorer,
                                 label="false_alarm", first=plan.labelled_events)
        for k, kind in enumerate(("leak", "sand")):
            journal_and_label(book, anomaly_run(plan, 210 + k, kind, 1, 20.0), scorer,
                              label="anomaly", kind=kind)
    return {"gateways": gws, "init_weights": work / "running.npz", "package": package,
            "labelled_false_alarms": n_fa, "prepare_s": time.perf_counter() - t0}


def label_round(work: Path, plan: Plan, prep: dict[str, Any]) -> dict[str, Any]:
    """One federated round with the labels on real Flower SuperNodes (loopback); the run's
    summary (``labels``: its own report; ``version``) and the new package."""
    from federation.flower.deployment import GatewayNode, SuperLink, start_all
    from federation.registry.keys import save_pair
    from federation.registry.store import Registry
    from fiberwatch.label_round import next_round

    work.mkdir(parents=True, exist_ok=True)
    save_pair(work / "sign.pem", work / "sign.pub")
    with SuperLink(work / "link", insecure=True) as link:
        nodes = [GatewayNode(work / f"node{i}", link.address, insecure=True, node_config=cfg)
                 for i, cfg in enumerate(prep["gateways"])]
        try:
            start_all(nodes)
            t0 = time.perf_counter()
            summary = next_round(link.control, work / "results", init_weights=prep["init_weights"],
                                 min_nodes=len(nodes), registry_dir=work / "registry",
                                 signing_key=work / "sign.pem", epochs=plan.epochs,
                                 label_share=plan.label_share, lr=plan.lr,
                                 wait_nodes_s=60.0, timeout_s=300.0)
            summary["round_s"] = time.perf_counter() - t0
        finally:
            for n in nodes:
                n.stop()
    summary["package"] = Registry(work / "registry").package_bytes(summary["version"])
    return summary


def _recall(scorer: Int8, fs: Any, floor: np.ndarray | None = None) -> tuple[int, int]:
    """(events, events with a flagged row in their channels while they last)."""
    over = scorer.grid(fs, floor)
    hit = 0
    for lb in fs.labels:
        w = (fs.t_start_ns < lb.end_ns) & (fs.t_end_ns > lb.start_ns)
        c0, c1 = lb.ch_start - fs.first_channel, lb.ch_end - fs.first_channel
        hit += bool(over[w, c0:c1 + 1].any())
    return len(fs.labels), hit


def evaluate(plan: Plan, before: bytes, after: bytes,
             book: Path | None = None) -> dict[str, Any]:
    """Both packages on fresh runs: valve strokes (false alarms) and leak/sand recall.
    With the labelled gateway's ``book``, also as that gateway runs them with its
    false-alarm calibration (`edge_agent.fa_calibration`): ``label`` (the running model
    and the floor, right after the label) and ``calibrated`` (the round's model and its
    floor)."""
    a, b = Int8(before), Int8(after)
    valve = valve_run(plan, 300, plan.eval_s)
    out: dict[str, Any] = {"threshold_before": a.threshold, "threshold_after": b.threshold}
    g0, g1 = plan.valve_ch[0] // GROUP, plan.valve_ch[1] // GROUP
    runs: list[tuple[str, Int8, np.ndarray | None]] = [("before", a, None), ("after", b, None)]
    if book is not None:
        runs += [("label", a, a.fa_floor(book, plan.channels)),
                 ("calibrated", b, b.fa_floor(book, plan.channels))]
    for tag, sc, floor in runs:
        groups, events = flagged_events(sc.grid(valve, floor))
        out[f"fa_events_{tag}"] = sum(e[3] >= g0 and e[2] <= g1 for e in events)
        out[f"fa_windows_{tag}"] = int(groups[:, g0:g1 + 1].any(1).sum())
        out[f"other_windows_{tag}"] = int(np.delete(groups, range(g0, g1 + 1), 1).any(1).sum())
    strokes = int(np.ceil((plan.eval_s - 1.0) / plan.period_s))
    out["valve_strokes"] = strokes
    out["recall"] = {}
    for k, kind in enumerate(("leak", "sand")):
        fs = anomaly_run(plan, 310 + k, kind, 3, plan.anomaly_s)
        r = {tag: _recall(sc, fs, floor) for tag, sc, floor in runs}
        out["recall"][kind] = {"events": r["before"][0],
                               **{tag: hit / n for tag, (n, hit) in r.items()}}
    return out


def run(work: Path, plan: Plan) -> dict[str, Any]:
    """The whole scenario; the figures (`fiberwatch.bench.labels` keys)."""
    prep = prepare(work, plan)
    summary = label_round(work, plan, prep)
    figures = evaluate(plan, prep["package"], summary["package"],
                       Path(prep["gateways"][0]["labels"]))
    return {"plan": {k: getattr(plan, k) for k in plan.__dataclass_fields__},
            "labelled_false_alarms": prep["labelled_false_alarms"], **figures,
            "round_report": summary.get("labels", {}), "round_s": summary["round_s"],
            "prepare_s": prep["prepare_s"], "version": summary["version"]}
