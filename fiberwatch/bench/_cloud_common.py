# ruff: noqa: S608 - InfluxQL here is built from constants of this module
"""Shared parts of `fiberwatch bench cloud`: constants, waiting, CPU, counts, payloads."""

from __future__ import annotations

from typing import Any

import numpy as np

from cloud.influx import InfluxClient
from edge_agent.summary import FeatureSummary
from federation.processes import cpu_seconds, wait_until

S = 1_000_000_000
GROUPS = 1024
GATEWAYS = ("gw1", "gw2", "gw3")
RATIO_GOAL, P95_GOAL_MS = 0.6, 300.0
_MARK = 1234567890123456789  # t_ns placeholder in the pre-encoded payloads


def _wait(cond: Any, timeout: float, what: str) -> None:
    wait_until(cond, timeout, f"bench cloud: {what}", max_interval=0.05, error=RuntimeError)


_cpu_s = cpu_seconds  # the one /proc CPU reader (`federation.processes`)


def _count(influx: InfluxClient, rp: str, meas: str, site: str) -> int:
    rows = influx.rows(f'SELECT count("n") FROM "fiberwatch"."{rp}"."{meas}" '
                       f"WHERE \"site\" = '{site}'")
    return int(rows[0]["count"]) if rows else 0


def _all_stored(influx: InfluxClient, site: str, t_last_ns: int, total: int) -> bool:
    """True once `total` summaries of `site` are stored. Asks first, cheaply, whether every
    gateway's last summary (at `t_last_ns`) is there, and counts all of them only then:
    the full count costs influxd ~1.2-1.5 ms of CPU per call at 9,000 points (the tail one
    ~0.4 ms, measured), and polled every 50 ms it was charged to ingestion alone."""
    rows = influx.rows(f'SELECT count("n") FROM "fiberwatch"."raw"."features" '
                       f"WHERE \"site\" = '{site}' AND time >= {int(t_last_ns)}")
    if not rows or int(rows[0]["count"]) < len(GATEWAYS):
        return False
    return _count(influx, "raw", "features", site) >= total


def _summaries(rng: np.random.Generator, gateway: str, variants: int = 4,
               site: str = "bench", packed: bool = True) -> list[bytes]:
    """Pre-encoded payload templates holding the t_ns placeholder (values to 4 decimals):
    packed summaries (schema 2, what gateways send), or JSON (schema 1) with `packed` off.
    The placeholder has as many digits as a real t_ns, so a packed header keeps its length."""
    out = []
    for _ in range(variants):
        s = FeatureSummary(
            site=site, gateway=gateway, stream="das", t_ns=_MARK, ch_start=0, group_size=1,
            score=np.round(rng.gamma(2.0, 0.3, GROUPS), 4).tolist(),
            energy=np.round(rng.normal(-2.0, 0.3, GROUPS), 4).tolist(),
            threshold=[1.5] * GROUPS, model_version="1.0.0", flagged=[3, 700])
        out.append(s.to_packed() if packed else s.to_json())
    return out
