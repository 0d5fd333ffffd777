"""Synthetic but plausible data in a `MemoryStore`: a quick look at the API and the dashboard.

Used by the API tests, the dashboard's browser test and ``fiberwatch cloud serve
--sample-data``. One DAS fiber of 1024 channels (8 per group, 1.02 m each) on two gateways,
the last 30 minutes at 1 Hz, with a leak, sand ingress and a flow change scored above the
threshold, and the matching events.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from cloud.api.memory import MemoryModel, MemoryRegistry, MemoryStore
from edge_agent.events import Event, event_id
from edge_agent.summary import HEALTH_SCHEMA, FeatureSummary

SITE = "north-field"
GATEWAYS = ("gw-01", "gw-02")
CHANNELS = 1024
GROUP = 8
SPACING_M = 1.02
MODEL = "2026.05.3"
MODEL_HASH = "9c1e5a70" + "0" * 56
# (gateway, first channel, last channel, start s ago, end s ago, peak, severity, class hint)
_ANOMALIES = (
    ("gw-01", 400, 447, 600, 60, 3.6, "critical", "leak"),
    ("gw-01", 704, 727, 840, 700, 2.1, "high", "sand"),
    ("gw-01", 168, 191, 330, 290, 1.4, "medium", "flow"),
    ("gw-01", 880, 895, 1500, 1440, 1.2, "low", "unknown"),
    ("gw-02", 96, 127, 900, 780, 2.4, "high", "leak"),
)


def _background(ch: int, t: float, rng: random.Random) -> float:
    pump = 0.25 * math.exp(-(((ch - 300) / 40) ** 2)) * (1 + 0.3 * math.sin(t / 20))
    return 0.12 + pump + 0.08 * rng.random()


def sample_summaries(now_ns: int, minutes: int = 30, seed: int = 7) -> list[FeatureSummary]:
    """One summary per gateway and second, oldest first."""
    rng = random.Random(seed)
    groups = CHANNELS // GROUP
    out = []
    for gw in GATEWAYS:
        mine = [a for a in _ANOMALIES if a[0] == gw]
        for k in range(minutes * 60, -1, -1):
            t_ns = now_ns - k * 10**9
            score = [_background(g * GROUP, t_ns / 1e9, rng) for g in range(groups)]
            for _, c0, c1, s_ago, e_ago, peak, *_ in mine:
                if e_ago <= k <= s_ago:
                    ramp = min(1.0, (s_ago - k) / 30, (k - e_ago) / 30 + 0.4)
                    for g in range(c0 // GROUP, c1 // GROUP + 1):
                        edge = 1 - abs((g * GROUP - (c0 + c1) / 2) / (c1 - c0 + GROUP))
                        score[g] = max(score[g], peak * ramp * edge * (0.85 + 0.3 * rng.random()))
            out.append(FeatureSummary(
                site=SITE, gateway=gw, stream="das", t_ns=t_ns, ch_start=0, group_size=GROUP,
                score=score, energy=[-2.0 + 1.5 * s for s in score], threshold=[1.0] * groups,
                model_version=MODEL, flagged=[i for i, s in enumerate(score) if s > 1.0]))
    return out


def sample_events(now_ns: int, minutes: int = 30) -> list[tuple[Event, int]]:
    """(event, received_ns) for the anomalies that started in the last `minutes`."""
    out = []
    for gw, c0, c1, s_ago, e_ago, peak, severity, hint in _ANOMALIES:
        if s_ago > minutes * 60:
            continue
        start = now_ns - s_ago * 10**9
        out.append((Event(
            id=event_id(SITE, gw, "das", start, c0), site=SITE, gateway=gw, stream="das",
            start_ns=start, end_ns=now_ns - e_ago * 10**9, ch_start=c0, ch_end=c1,
            dist_start_m=round(c0 * SPACING_M, 2), dist_end_m=round(c1 * SPACING_M, 2),
            peak_score=peak, mean_score=round(peak * 0.7, 3), threshold=1.0, severity=severity,
            class_hint=hint, n_windows=max(1, (s_ago - e_ago) // 2), model_version=MODEL,
            model_hash=MODEL_HASH, detected_ns=start + 1_500_000_000,
        ), start + 1_700_000_000))
    return out


def sample_health(now_ns: int) -> list[dict[str, Any]]:
    """The latest health heartbeat of each gateway (`edge_agent.summary.HEALTH_KEYS`)."""
    return [{
        "schema": HEALTH_SCHEMA, "site": SITE, "gateway": gw, "t_ns": now_ns - (i * 4 + 1) * 10**9,
        "status": "ok" if i == 0 else "degraded", "uptime_s": 86400.0 - 3600 * i,
        "frames_per_s": 100.0, "samples_per_s": 102_400.0, "queue_depth": 2 * i,
        "drops": {"queue_full": 12 * i}, "gaps": i,
        "latency_ms": {"p50": 6.0 + 5 * i, "p99": 18.5 + 20 * i},
        # gw-02 also runs a dts stream (5 s hop): its frames wait seconds for their window
        "latency_ms_by_stream": {"das": {"p50": 6.0 + 3 * i, "p99": 18.5 + 3 * i},
                                 **({"dts": {"p50": 2512.0, "p99": 3981.0}} if i else {})},
        "outbox_depth": 3 * i,
        "outbox_evicted": 0, "model_version": MODEL, "model_hash": MODEL_HASH,
        "rss_mb": 142.0 + 9 * i,
        # gw-02: an operator labelled a recurring false alarm; its floor mutes 2 groups
        "fa_mutes_active": 2 * i, "fa_muted_windows": 37 * i, "fa_muted_groups": 52 * i,
    } for i, gw in enumerate(GATEWAYS)]


def sample_rounds(now_ns: int) -> list[dict[str, Any]]:
    """Twelve federated rounds, two minutes apart (as `Store.rounds` returns them)."""
    return [{
        "run_id": "fl-20260523", "strategy": "FedProx", "round": r, "participants": 2,
        "failures": int(r == 7), "loss": round(0.09 * math.exp(-r / 4) + 0.011, 4),
        "auc": round(0.975 - 0.12 * math.exp(-r / 3), 4), "bytes_up": 212_000,
        "bytes_down": 212_000, "duration_s": round(2.1 + 0.2 * (r % 3), 2),
        "model_version": MODEL if r == 12 else f"fl-r{r}",
        "time_ns": now_ns - (13 - r) * 120 * 10**9,
    } for r in range(1, 13)]


def sample_store(now_ns: int | None = None, minutes: int = 30, seed: int = 7) -> MemoryStore:
    """All of the above in a `MemoryStore`, ending at `now_ns` (default: now)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    now_ns -= now_ns % 10**9
    store = MemoryStore()
    for summary in sample_summaries(now_ns, minutes, seed):
        store.add_summary(summary)
    for event, received_ns in sample_events(now_ns, minutes):
        store.add_event(event, received_ns)
    for health in sample_health(now_ns):
        store.add_health(health)
    store.round_rows.extend(sample_rounds(now_ns))
    return store


def sample_registry() -> MemoryRegistry:
    registry = MemoryRegistry(
        MemoryModel("2026.05.1", None, metrics={"auc": 0.941, "f1": 0.82}),
        MemoryModel("2026.05.2", "2026.05.1", metrics={"auc": 0.957, "f1": 0.86}),
        MemoryModel(MODEL, "2026.05.2", metrics={"auc": 0.972, "f1": 0.89}),
        MemoryModel("2026.05.4", MODEL, metrics={"auc": 0.975, "f1": 0.9}),
    )
    for version, steps in (("2026.05.1", ("canary", "production")),
                           ("2026.05.2", ("canary", "production")),
                           (MODEL, ("canary", "production")),
                           ("2026.05.4", ("canary",))):
        for to in steps:
            registry.promote(version, to=to, reason="auto: metrics above gate", actor="federation")
    return registry
