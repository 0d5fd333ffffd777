"""Store against a fake InfluxDB: queries built, rows typed, waterfall grid computed."""

from __future__ import annotations

import base64
import math
import time
from typing import Any

import numpy as np
import pytest

from cloud import codec, schema, window
from cloud.store import MAX_CELLS, Store, UnknownEvent

S = 1_000_000_000


class FakeInflux:
    def __init__(self) -> None:
        self.queries: list[str] = []
        self.tables: list[list[Any]] = []  # rows for query_table
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.writes: list[tuple[str, list[str], str | None]] = []

    def rows(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        self.queries.append(q)
        if q.startswith("SHOW RETENTION POLICIES"):
            return [{"name": "raw", "duration": "24h0m0s"}]
        for key, rows in self.responses.items():
            if key in q:
                return [dict(r) for r in rows]
        return []

    def query_table(self, q: str, db: str | None = None) -> tuple[list[str], list[list[Any]]]:
        self.queries.append(q)
        cols = ["name", "tags", "time", "ch_start", "group_size", "n", "fmt"]
        history = '"count"' in q
        if history:
            cols.append("count")
        cols.append("score")
        rows = [r if history else r[:7] + r[-1:] for r in self.tables]
        return (cols, rows) if rows else ([], [])

    def write(self, db: str, lines: list[str], rp: str | None = None) -> None:
        self.writes.append((db, lines, rp))

    def ping(self) -> bool:
        return True


def summary_row(t: int, values: list[float], ch_start: int = 0, group: int = 1,
                count: int | None = None) -> list[Any]:
    row = ["features", "", str(t), str(ch_start), str(group), str(len(values)), "1"]
    return row + [str(count) if count is not None else ""] + [codec.pack(values, "<f2")]


# --- grid math ----------------------------------------------------------------------------

def test_plan_times_hour_at_2000() -> None:
    start = 1_700_000_000 * S + 123
    t0, step, ncols = window.plan_times(start, start + 3600 * S, 2000)
    assert step == 2 * S and ncols <= 2000 and t0 % step == 0 and t0 <= start
    assert t0 + ncols * step >= start + 3600 * S


@pytest.mark.parametrize("max_times", [1, 2, 7, 600, 5000])
def test_plan_times_never_exceeds_max_times(max_times: int) -> None:
    for span_s in (1, 59, 61, 3599, 86400):
        start = 1_700_000_003 * S + 5
        t0, step, ncols = window.plan_times(start, start + span_s * S, max_times)
        assert 1 <= ncols <= max_times and step % S == 0


def test_channel_rows_and_gather_with_two_layouts() -> None:
    firsts = window.channel_rows(5, 20, ref_start=0, group_size=4)
    assert firsts.tolist() == [4, 8, 12, 16, 20]
    m = np.arange(6, dtype=np.float32)[None, :]  # groups of 4 from channel 0
    np.testing.assert_array_equal(window.gather(m, 0, 4, firsts), [[1, 2, 3, 4, 5]])
    other = window.gather(np.array([[7.0, 9.0]], dtype=np.float32), 8, 8, firsts)
    np.testing.assert_array_equal(other, [[np.nan, 7, 7, 9, 9]])  # 8-wide groups from ch 8


def test_reduce_columns_max_and_weighted_mean() -> None:
    cols = np.array([0, 0, 2])
    vals = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)
    w = np.array([1, 3, 1])
    np.testing.assert_array_equal(window.reduce_columns(cols, vals, w, 3, "max"),
                                  [[3, np.nan, 5], [4, np.nan, 6]])
    mean = window.reduce_columns(cols, vals, w, 3, "mean")
    np.testing.assert_allclose(mean, [[2.5, np.nan, 5], [4, np.nan, 6]])


def test_to_lists_puts_none_in_gaps() -> None:
    g = np.array([[1.0, np.nan], [2.0, 3.0]], dtype=np.float32)
    assert window.to_lists(g) == [[1.0, None], [2.0, 3.0]]


# --- Store.window -------------------------------------------------------------------------

def test_window_grid_from_packed_rows() -> None:
    fake = FakeInflux()
    now = time.time_ns() // (10 * S) * (10 * S)
    start = now - 60 * S
    fake.tables = [summary_row(start + i * S, [i, 10 + i, 20 + i, 30 + i], ch_start=0, group=2)
                   for i in range(60)]
    w = Store(fake).window(site="s1", gateway="g1", stream="das", start_ns=start, end_ns=now,
                           ch_start=2, ch_end=5, max_times=30)
    assert w["source"] == "raw" and w["group_size"] == 2 and w["channels"] == [2, 4]
    assert w["resolution_s"] == 2.0 and len(w["times_ns"]) == 30
    assert w["values"] == [[float(10 + 2 * k + 1) for k in range(30)],  # max of each 2 s
                           [float(20 + 2 * k + 1) for k in range(30)]]
    q = fake.queries[-1]
    assert q.startswith('SELECT "ch_start", "group_size", "n", "fmt", "score" FROM '
                        '"fiberwatch"."raw"."features" WHERE "site" = \'s1\'')
    assert "\"gateway\" = 'g1'" in q and f"time < {now}" in q


def test_window_without_data_is_all_none_per_channel() -> None:
    now = time.time_ns()
    w = Store(FakeInflux()).window(site="s1", gateway=None, stream="dts", start_ns=now - 10 * S,
                                   end_ns=now, ch_start=3, ch_end=5, max_times=100,
                                   field="energy")
    assert w["channels"] == [3, 4, 5] and w["group_size"] == 1
    assert all(v is None for row in w["values"] for v in row)
    assert len(w["values"][0]) == len(w["times_ns"])


def test_coarse_or_old_windows_read_history() -> None:
    fake = FakeInflux()
    now = time.time_ns()
    day = 86400 * S
    fake.tables = [summary_row(now - day + 10 * S, [1.0, 2.0], count=10)]
    w = Store(fake).window(site="s1", gateway="g1", stream="das", start_ns=now - day,
                           end_ns=now, ch_start=0, ch_end=1, max_times=2000)
    assert w["source"] == "history" and w["resolution_s"] % 10 == 0
    hist, tail = [q for q in fake.queries if q.startswith("SELECT")][-2:]
    assert '"fiberwatch"."history"."features_10s"' in hist
    assert '"fiberwatch"."raw"."features"' in tail and f"time >= {now - 60 * S}" in tail
    old = Store(fake).window(site="s1", gateway="g1", stream="das", start_ns=now - 2 * day,
                             end_ns=now - 2 * day + 60 * S, ch_start=0, ch_end=1, max_times=60)
    assert old["source"] == "history"


@pytest.mark.parametrize("kw", [
    {"stream": "xyz"}, {"field": "nope"}, {"end_ns": 0}, {"ch_start": -1},
    {"ch_end": 0, "ch_start": 5}, {"max_times": 0}, {"site": "a/b"}, {"gateway": "+"},
])
def test_window_rejects_bad_requests(kw: dict[str, Any]) -> None:
    now = time.time_ns()
    args: dict[str, Any] = dict(site="s1", gateway="g1", stream="das", start_ns=now - S,
                                end_ns=now, ch_start=0, ch_end=10, max_times=10)
    args.update(kw)
    with pytest.raises(ValueError):
        Store(FakeInflux()).window(**args)


def test_window_refuses_too_many_cells() -> None:
    now = time.time_ns()
    with pytest.raises(ValueError, match="too large"):
        Store(FakeInflux()).window(site="s1", gateway="g1", stream="das", start_ns=now - 3600 * S,
                                   end_ns=now, ch_start=0, ch_end=MAX_CELLS // 1000,
                                   max_times=2000)


# --- events, labels, fleet, rounds --------------------------------------------------------

EVENT_ROW = {"time": 100, "id": "e1", "site": "s1", "gateway": "g1", "stream": "das",
             "severity": "high", "class_hint": "leak", "model_version": "1", "start_ns": 100,
             "end_ns": 200, "ch_start": 1, "ch_end": 9, "dist_start_m": 5, "dist_end_m": 7.5,
             "peak_score": 3, "mean_score": 2.5, "threshold": 1, "n_windows": 2,
             "model_hash": "h", "detected_ns": 150, "schema": 1, "received_ns": 160}


def test_anomalies_query_and_types() -> None:
    fake = FakeInflux()
    fake.responses['"event"'] = [EVENT_ROW, {**EVENT_ROW, "received_ns": 170, "severity": "low"}]
    fake.responses['"label"'] = [{"time": 5, "event_id": "e1", "label": "note", "note": "x",
                                  "user": "al"}]
    out = Store(fake).anomalies(site="s1", severity="high", start_ns=50, end_ns=300, ch_min=3,
                                ch_max=4, dist_min=6.0, dist_max=8.0, limit=10, offset=20)
    q = next(q for q in fake.queries if '"event"' in q)
    for part in ("\"site\" = 's1'", "\"severity\" = 'high'", "time <= 300", '"end_ns" >= 50',
                 '"ch_end" >= 3', '"ch_start" <= 4',
                 '("dist_start_m" >= 6.0 OR "dist_end_m" >= 6.0)',
                 "ORDER BY time DESC LIMIT 10 OFFSET 20"):
        assert part in q
    assert len(out) == 1 and out[0]["received_ns"] == 170  # one row per id: the last received
    e = out[0]
    assert isinstance(e["peak_score"], float) and isinstance(e["dist_start_m"], float)
    assert isinstance(e["ch_start"], int) and e["schema"] == 1
    assert e["labels"] == [{"event_id": "e1", "label": "note", "note": "x", "user": "al",
                            "time_ns": 5, "kind": ""}]


def test_injection_is_quoted() -> None:
    fake = FakeInflux()
    Store(fake).anomaly("x' OR '1'='1")
    assert "\"id\" = 'x\\' OR \\'1\\'=\\'1'" in fake.queries[0]


def test_add_label_validates_and_writes() -> None:
    fake = FakeInflux()
    store = Store(fake)
    with pytest.raises(ValueError):
        store.add_label("e1", label="great", note="", user="u")
    with pytest.raises(ValueError):
        store.add_label("e1", label="note", note="x" * 2001, user="u")
    with pytest.raises(UnknownEvent):
        store.add_label("e1", label="note", note="", user="u")
    fake.responses['"event"'] = [EVENT_ROW]
    a = store.add_label("e1", label="confirmed", note="leak seen", user="al")
    b = store.add_label("e1", label="confirmed", note="again", user="al")
    assert b["time_ns"] > a["time_ns"] and a["label"] == "confirmed"
    db, lines, rp = fake.writes[0]
    assert rp == schema.RP_EVENTS and lines[0].startswith("label,event_id=e1,label=confirmed ")


def test_fleet_and_rounds() -> None:
    fake = FakeInflux()
    fake.responses['"fleet"'] = [{"time": 0, "site": "s1", "gateway": "g2", "status": "ok",
                                  "frames_per_s": 10, "received_ns": 99, "drops_json": '{"a":1}',
                                  "drops_total": 1}]
    fake.responses['"fl_round"'] = [{"time": 5, "round": 3, "run_id": "r", "loss": 0.1}]
    store = Store(fake)
    (g,) = store.fleet()
    assert g["last_seen_ns"] == 99 and g["frames_per_s"] == 10.0 and g["drops"] == {"a": 1}
    assert g["rss_mb"] is None  # never reported: present, null
    assert g["latency_p99_ms_by_stream"] == g["latency_p50_ms_by_stream"] == {}  # older agent
    assert store.rounds(limit=5) == [{"time_ns": 5, "round": 3, "run_id": "r", "loss": 0.1}]
    assert "LIMIT 5" in fake.queries[-1]
    assert store.ping()


def test_fleet_latency_per_stream() -> None:
    fake = FakeInflux()
    fake.responses['"fleet"'] = [{"time": 0, "site": "s1", "gateway": "well-a", "status": "ok",
                                  "latency_p99_ms": 3162, "latency_p50_ms": 200.5,
                                  "latency_p99_ms_das": 481, "latency_p50_ms_das": 120.0,
                                  "latency_p99_ms_dts": 4030.0, "latency_p50_ms_dts": 2512}]
    (g,) = Store(fake).fleet()
    assert g["latency_p99_ms"] == 3162.0 and g["latency_p50_ms"] == 200.5
    assert g["latency_p99_ms_by_stream"] == {"das": 481.0, "dts": 4030.0}
    assert g["latency_p50_ms_by_stream"] == {"das": 120.0, "dts": 2512.0}
    assert all(isinstance(v, float) for v in g["latency_p99_ms_by_stream"].values())
    assert "latency_p99_ms_das" not in g


def test_to_lists_float16_table_matches_tolist() -> None:
    rng = np.random.default_rng(0)
    g = rng.gamma(2.0, 0.3, (64, 100)).astype(np.float16).astype(np.float32)
    g[3, :5] = [np.nan, np.inf, -np.inf, -0.0, 65504.0]
    g[7] = np.nan
    fast, slow = window.to_lists(g, float16=True), window.to_lists(g)
    assert fast == slow and fast[3][0] is None and all(v is None for v in fast[7])
    assert math.copysign(1.0, fast[3][3]) == -1.0  # -0.0 kept
    assert all(type(v) is float for v in fast[0])


def test_unpack_float16_table_is_numpy_conversion() -> None:
    bits = np.arange(1 << 16, dtype=np.uint16)
    raw = bits.tobytes()
    text = base64.b64encode(raw + b"\0" * (-len(raw) % 3)).decode()
    got = codec.unpack([text], len(bits), "<f2")[0]
    want = bits.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
