"""Long normal runs of `fiberwatch bench model`: false alarms per 1,000 channel-hours.

Thousands of channel-hours of normal simulated operation (the simulator's noise, flow drift,
pumps, surface transients, int16 interrogator frames and a few dropped frames) go through the
gateway's own fast path (`edge_agent.offline.OfflineScorer`: validation, windows, streaming
features, the int8 LiteRT package, the adaptive thresholds at the gateway's default
`ThresholdConfig`, the event builder), one cold-started pipeline per shard, as a gateway
boots: the threshold warm-up is inside the count. Every event is a false alarm.

Shards (``channels`` x ``seconds`` each, seeds ``seed + k``) run in worker processes; the
simulator and the pipeline of a shard stream frame by frame (nothing is held in memory). The
seeds are evaluation seeds, apart from the training seeds (0, 1), the family evaluation's
(1000..) and the validation seeds used while developing (`VALIDATION_SEEDS`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from typing import Any

#: seeds of the runs used to develop the features and the operating point (never evaluated)
VALIDATION_SEEDS = (20_000, 20_001, 20_002, 20_003)
#: training runs (`federation.model.train.sim_training_rows`) and the family evaluation
TRAIN_SEEDS, FAMILY_SEED = (0, 1), 1000


@dataclass(frozen=True)
class LongPlan:
    """``shards`` runs of ``channels`` x ``seconds`` of normal operation, frames lost with
    probability ``drop_p`` (an interrogator artefact), seeds ``seed + k``."""

    shards: int = 4
    channels: int = 512
    seconds: float = 5400.0
    drop_p: float = 1e-3
    seed: int = 50_000

    @property
    def channel_hours(self) -> float:
        return self.shards * self.channels * self.seconds / 3600.0


QUICK_LONG = LongPlan(shards=2, channels=128, seconds=120.0)


def shard_config(plan: LongPlan, k: int) -> Any:
    """The simulator config of shard ``k``: normal operation plus dropped frames."""
    from sensors_sim import Scenario, SimConfig

    drops = (Scenario("dropped", 0.0, plan.seconds, intensity=plan.drop_p),) \
        if plan.drop_p > 0 else ()
    return SimConfig(channels=plan.channels, streams=("das",), gateway=f"long{k}",
                     seconds=plan.seconds, scenarios=drops)


def run_shard(pkg_bytes: bytes, plan: LongPlan, k: int, done: Any = None) -> dict[str, Any]:
    """One shard through the gateway path; ``done`` (a shared counter) gets the simulated
    channel-seconds as they pass. Returns the shard's events and sizes."""
    from edge_agent.config import EventConfig, ThresholdConfig
    from edge_agent.features import FeatureSpec
    from edge_agent.inference import LiteRTDetector
    from edge_agent.offline import OfflineScorer, stream_config_for
    from edge_agent.package import read_package
    from sensors_sim import Simulator

    pkg = read_package(pkg_bytes, None)
    spec = FeatureSpec.from_dict(pkg.manifest["feature_spec"])
    scorer = OfflineScorer(LiteRTDetector(pkg), stream_config_for(spec, channels=plan.channels),
                           thresholds=ThresholdConfig(), events=EventConfig())
    sim = Simulator(shard_config(plan, k), seed=plan.seed + k)
    t0, step, pending = time.perf_counter(), sim.config.frame_s * plan.channels, 0.0
    for _, frame in sim.frames():
        scorer.feed(frame)
        pending += step
        if done is not None and pending >= 50 * step:
            with done.get_lock():
                done.value += pending
            pending = 0.0
    events = scorer.finish()
    if done is not None:
        with done.get_lock():
            done.value += pending
    m = scorer.metrics.snapshot()
    return {"shard": k, "seed": plan.seed + k,
            "channel_hours": plan.channels * plan.seconds / 3600.0,
            "counters": {c: m.get(c, 0) for c in ("frames", "windows", "gaps", "resets")},
            "events": [_event_summary(e, sim.config.start_ns) for e in events],
            "seconds": round(time.perf_counter() - t0, 1)}


def _event_summary(e: Any, start_ns: int) -> dict[str, Any]:
    return {"t_s": round((e.start_ns - start_ns) / 1e9, 2),
            "duration_s": round((e.end_ns - e.start_ns) / 1e9, 2),
            "ch": [e.ch_start, e.ch_end], "severity": str(e.severity),
            "kind": e.kind or e.class_hint, "threshold": float(e.threshold),
            "peak_score": float(e.peak_score)}


@dataclass
class Running:
    """Shards started by `start`: `finish` waits for them."""

    plan: LongPlan
    pool: Any
    jobs: list[Any]
    done: Any
    workers: int
    t0: float


def start(pkg_bytes: bytes, plan: LongPlan, *, workers: int = 2) -> Running:
    """Start every shard of ``plan`` in ``workers`` processes (they run while the caller
    does other work)."""
    ctx = mp.get_context("spawn")
    done = ctx.Value("d", 0.0)
    pool = ctx.Pool(min(workers, plan.shards), initializer=_init, initargs=(done,))
    jobs = [pool.apply_async(_worker, (pkg_bytes, plan, k)) for k in range(plan.shards)]
    return Running(plan, pool, jobs, done, workers, time.perf_counter())


def finish(r: Running, *, progress: bool = True) -> dict[str, Any]:
    """Wait for the shards (a progress bar over channel-hours); the pooled false alarms per
    1,000 channel-hours and each shard's events."""
    from tqdm import tqdm

    total = r.plan.channel_hours
    try:
        with tqdm(total=round(total), unit="ch-h", desc="long normal runs",
                  disable=not progress, mininterval=5.0) as bar:
            while not all(j.ready() for j in r.jobs):
                time.sleep(1.0)
                bar.update(round(r.done.value / 3600.0) - bar.n)
            bar.update(round(total) - bar.n)
        shards = [j.get() for j in r.jobs]
    finally:
        r.pool.terminate()
    n_fa = sum(len(s["events"]) for s in shards)
    ch_h = sum(s["channel_hours"] for s in shards)
    return {"plan": asdict(r.plan), "false_alarms": n_fa, "channel_hours": ch_h,
            "fa_per_1000_ch_h": n_fa / ch_h * 1000 if ch_h else float("nan"),
            "shards": shards, "seconds": round(time.perf_counter() - r.t0, 1),
            "workers": r.workers}


def run(pkg_bytes: bytes, plan: LongPlan, *, workers: int = 2,
        progress: bool = True) -> dict[str, Any]:
    """`start` then `finish`."""
    return finish(start(pkg_bytes, plan, workers=workers), progress=progress)


_DONE: Any = None


def _init(done: Any) -> None:
    global _DONE
    _DONE = done
    logging.getLogger("edge_agent").setLevel(logging.ERROR)  # dropped frames: gap warnings


def _worker(pkg_bytes: bytes, plan: LongPlan, k: int) -> dict[str, Any]:
    return run_shard(pkg_bytes, plan, k, _DONE)
