"""Model health: PSI against training quantiles, saturation, out-of-range, fallback; the
cloud's validation and line protocol of the heartbeat's ``model_health``."""

from __future__ import annotations

import numpy as np
import pytest

from cloud import model_health as cloud_mh
from edge_agent.model_health import ModelHealth, psi

LEVELS = (0.5, 0.9, 0.99, 0.999, 1.0)


class Det:
    """A detector stand-in: training scores are exponential(1)."""

    version = "v1"

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        train = rng.exponential(1.0, 200_000)
        self.threshold_quantiles = {q: float(np.quantile(train, q)) for q in LEVELS}

    def saturation(self, rows: np.ndarray) -> tuple[int, int]:
        out = np.abs(rows) > 4
        return int(out.sum()), int(out.any(axis=1).sum())


def test_same_distribution_is_stable_a_shift_is_not() -> None:
    rng = np.random.default_rng(1)
    det, rows = Det(), np.zeros((1000, 4), np.float32)
    mh = ModelHealth()
    for _ in range(10):
        mh.observe(det, rows, rng.exponential(1.0, 1000).astype(np.float32), fallback=False)
    (same,) = mh.take()
    assert same["score_psi"] < 0.05 and same["windows"] == 10
    assert same["saturation_rate"] == 0.0 and same["fallback_rate"] == 0.0
    assert mh.take() == []  # reset per interval
    rows[:50, 0] = 9.0  # 5 % of rows out of range, one value each
    for k in range(4):
        mh.observe(det, rows, rng.exponential(3.0, 1000).astype(np.float32), fallback=k < 1)
    (shifted,) = mh.take()
    assert shifted["score_psi"] > 0.25
    assert shifted["out_of_range_rate"] == pytest.approx(0.05)
    assert shifted["saturation_rate"] == pytest.approx(50 / 4000)
    assert shifted["fallback_rate"] == 0.25


def test_builtin_detectors_report_no_psi_or_saturation() -> None:
    class Plain:
        version = "builtin"

    mh = ModelHealth()
    mh.observe(Plain(), np.zeros((3, 2), np.float32), np.ones(3, np.float32), fallback=False)
    (r,) = mh.take()
    assert r["score_psi"] is None and r["saturation_rate"] is None


def test_psi_of_identical_shares_is_zero() -> None:
    assert psi(np.array([50, 40, 10]), np.array([0.5, 0.4, 0.1])) == pytest.approx(0.0)


def test_cloud_validates_and_writes_points() -> None:
    good = {"das": [{"model_version": "v1", "windows": 3, "rows": 30, "score_psi": 0.4,
                     "saturation_rate": None, "out_of_range_rate": 0.0,
                     "fallback_rate": 0.0}]}
    assert cloud_mh.valid(good) and cloud_mh.valid({})
    for bad in ({"xx": []}, {"das": [{"model_version": "v1"}]}, {"das": "x"},
                {"das": [{**good["das"][0], "score_psi": float("nan")}]},
                {"das": [{**good["das"][0], "windows": True}]}):
        assert not cloud_mh.valid(bad), bad
    (line,) = cloud_mh.lines({"site": "s", "gateway": "g", "t_ns": 5, "model_health": good})
    assert line.startswith("model_health,gateway=g,model_version=v1,site=s,stream=das ")
    assert "score_psi=0.4" in line and "saturation_rate" not in line and line.endswith(" 5")


def test_precision_per_kind_from_operator_labels() -> None:
    from fastapi.testclient import TestClient

    from cloud.api import sample
    from cloud.api.memory import MemoryStore
    from cloud.main import API_PREFIX, create_app
    from cloud.settings import CloudSettings, TokenInfo

    store = MemoryStore()
    events = [e for e, _ in sample.sample_events(10**18 + 10**12)]
    for e in events:
        store.add_event(e)
    leak = [e for e in events if e.class_hint == "leak"]
    assert len(leak) >= 2
    store.add_label(leak[0].id, label="confirmed", note="", user="a")
    store.add_label(leak[1].id, label="confirmed", note="", user="a")
    store.add_label(leak[1].id, label="false_alarm", note="on second look", user="b")
    store.add_label(events[-1].id, label="note", note="just a note", user="a")
    token = "viewer-token-0123456789abcdef"
    settings = CloudSettings(tokens={token: TokenInfo(name="v", role="viewer")})
    with TestClient(create_app(settings, store=store)) as c:
        r = c.get(f"{API_PREFIX}/model-health/precision", params={"start": "0"},
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.json()["kinds"] == {"leak": {"confirmed": 1, "false_alarm": 1, "labelled": 2,
                                          "precision": 0.5}}
