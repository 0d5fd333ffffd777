"""The writer: batching, backoff while InfluxDB is down, acks only after the write."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import numpy as np
import pytest

from cloud import schema
from cloud.influx import InfluxError
from cloud.ingest.buffer import Backoff, Buffer, Item
from cloud.ingest.config import IngestSettings
from cloud.ingest.downsample import Downsampler
from cloud.ingest.parse import EventRecord, FeaturesRecord, HealthRecord, ModelStateRecord
from cloud.ingest.stats import IngestStats, RateLimitedLog
from cloud.ingest.writer import Writer
from federation.processes import wait_until
from tests.unit.test_cloud_ingest_parse import T, health_dict, make_event


def as_lines(body: list[str] | bytes) -> list[str]:
    """The lines of a write, as `InfluxClient.write` takes them: a list, or one joined body."""
    return body.decode().split("\n") if isinstance(body, bytes) else list(body)


class FakeInflux:
    """Records writes; fails with the queued errors first."""

    def __init__(self, errors: list[InfluxError] | None = None, forever: InfluxError | None = None):
        self.errors = list(errors or [])
        self.forever = forever
        self.writes: list[tuple[str, list[str]]] = []
        self.attempts = 0

    def write(self, db: str, lines: list[str] | bytes, rp: str | None = None,
              precision: str = "ns", timeout: float | None = None) -> None:
        self.attempts += 1
        lines = as_lines(lines)
        if self.forever is not None:
            raise self.forever
        if self.errors:
            raise self.errors.pop(0)
        self.writes.append((rp or "", list(lines)))


def features(t_ns: int, score: list[float] | None = None, gateway: str = "g1",
             ch_start: int = 0) -> FeaturesRecord:
    s = np.asarray(score or [0.1, 0.2], dtype=np.float64)
    return FeaturesRecord("s1", gateway, "das", t_ns, ch_start, 1, s, s * 2, s * 0 + 1,
                          "1.0.0", 0)


def item(record: Any, mid: int = 0, qos: int = 0, nbytes: int = 10) -> Item:
    return Item(record, T, mid, qos, nbytes, 1)


def make_writer(client: FakeInflux, **kw: Any) -> tuple[Writer, list[int], list[float]]:
    acked: list[int] = []
    waits: list[float] = []
    settings = IngestSettings(**{"drain_s": 0.5, **kw})
    w = Writer(client, Buffer(1 << 20), IngestStats(), settings, ack=acked.append,
               wait=waits.append, backoff=Backoff(0.2, 1.0, jitter=0.0))
    return w, acked, waits


UNAVAILABLE = InfluxError("/write: ConnectError", retryable=True)


@pytest.fixture(autouse=True)
def _dead_letters_in_tmp(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers built without a dead-letter dir put theirs under the temp dir: this test's."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


# --- buffer and backoff -------------------------------------------------------------------

def test_batch_closes_at_max_lines_and_bytes() -> None:
    b = Buffer(1000)
    for i in range(10):
        assert b.put(item(None, mid=i, nbytes=10))
    got = b.get_batch(max_lines=4, max_bytes=10**6, linger_s=5, idle_s=5, timeout=1)
    assert [i.mid for i in got] == [0, 1, 2, 3]
    got = b.get_batch(max_lines=100, max_bytes=25, linger_s=5, idle_s=5, timeout=1)
    assert [i.mid for i in got] == [4, 5, 6]
    got = b.get_batch(max_lines=100, max_bytes=10**6, linger_s=5, idle_s=0.01, timeout=1)
    assert [i.mid for i in got] == [7, 8, 9]  # nothing more came within idle_s
    assert b.get_batch(max_lines=1, max_bytes=1, linger_s=1, idle_s=1, timeout=0.01) == []


def test_a_batch_closes_after_the_quick_linger_once_no_write_is_in_flight() -> None:
    """While a write is in flight the batch fills for `linger_s` (here far beyond the test's
    wait); once none is and `wake` says so, it closes `quick_s` after its first item."""
    b = Buffer(1000)
    busy = threading.Event()
    busy.set()
    for i in range(3):
        b.put(item(None, mid=i))
    got: list[list[int]] = []
    t = threading.Thread(target=lambda: got.append([i.mid for i in b.get_batch(
        max_lines=100, max_bytes=10**6, linger_s=600, idle_s=600, timeout=1, quick_s=0.01,
        busy=busy.is_set)]))
    t.start()
    t.join(0.2)
    assert t.is_alive()  # a write is in flight: the batch keeps filling
    busy.clear()
    b.wake()
    t.join(30)
    assert not t.is_alive() and got == [[0, 1, 2]]


def test_batch_waits_for_the_first_item() -> None:
    b = Buffer(1000)
    threading.Timer(0.05, b.put, args=(item(None, mid=7),)).start()
    got = b.get_batch(max_lines=1, max_bytes=10**6, linger_s=1, idle_s=1, timeout=10)
    assert [i.mid for i in got] == [7]


def test_buffer_bounds_qos0_only() -> None:
    b = Buffer(25)
    assert b.put(item(None, nbytes=20))
    assert not b.put(item(None, nbytes=10))  # QoS0 over the bound: refused
    assert b.put(item(None, qos=1, mid=3, nbytes=10))  # QoS1: flow-controlled by the broker
    assert len(b) == 2 and b.nbytes == 30
    assert [i.nbytes for i in b.drain()] == [20, 10] and b.nbytes == 0


def test_backoff_doubles_caps_and_resets() -> None:
    b = Backoff(0.1, 1.0, jitter=0.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.1
    jittered = Backoff(1.0, 1.0, jitter=0.1)
    assert all(0.9 <= jittered.next() <= 1.1 for _ in range(50))


# --- writer -------------------------------------------------------------------------------

def test_batch_written_per_retention_policy_then_acked_in_order() -> None:
    client = FakeInflux()
    w, acked, _ = make_writer(client)
    items = [item(EventRecord(make_event()), mid=1, qos=1), item(features(T)),
             item(None, mid=2, qos=1), item(HealthRecord(health_dict()), mid=3, qos=1)]
    assert w.process(items)
    assert [rp for rp, _ in client.writes] == [schema.RP_EVENTS, schema.RP_RAW, schema.RP_HISTORY]
    events_lines = client.writes[0][1]
    assert events_lines[0].startswith("event,") and events_lines[1].startswith("fleet,")
    assert acked == [1, 2, 3]
    snap = w.stats.snapshot()
    assert snap["lines"] == {"events": 2, "raw": 1, "history": 1}
    assert snap["acked"] == 3 and snap["messages_written"] == 3


def test_bodies_are_built_with_the_batch_and_sent_whole_until_a_split() -> None:
    """The writer thread joins each policy's lines (`build`), so the commit thread only
    sends; once InfluxDB refuses a body, its halves go as lines."""
    sent: list[object] = []

    class Recording(FakeInflux):
        def write(self, db: str, lines: list[str] | bytes, rp: str | None = None,
                  precision: str = "ns", timeout: float | None = None) -> None:
            sent.append(lines)
            super().write(db, lines, rp, precision, timeout)

    client = Recording(errors=[InfluxError("/write: HTTP 400: unable to parse", status=400)])
    w, acked, _ = make_writer(client)
    items = [item(features(T + k * 1_000_000_000), mid=k + 1, qos=1) for k in range(4)]
    built = w.build(items)
    assert built.bodies is not None
    assert built.bodies[schema.RP_RAW] == "\n".join(built.by_rp[schema.RP_RAW]).encode()
    assert w.commit(built) and acked == [1, 2, 3, 4]
    assert sent[0] == built.bodies[schema.RP_RAW]  # refused whole, then split in halves
    assert sent[1:3] == [built.by_rp[schema.RP_RAW][:2], built.by_rp[schema.RP_RAW][2:]]


def test_outage_retries_with_backoff_and_acks_only_after_the_write() -> None:
    client = FakeInflux(errors=[UNAVAILABLE] * 4)
    w, acked, waits = make_writer(client)

    def wait(seconds: float) -> None:
        assert acked == []  # nothing acknowledged while InfluxDB is down
        waits.append(seconds)

    w._wait = wait
    assert w.process([item(EventRecord(make_event()), mid=9, qos=1)])
    assert waits == pytest.approx([0.2, 0.4, 0.8, 1.0])
    assert acked == [9] and client.attempts == 5
    assert w.stats.snapshot()["write_retries"] == 4


def test_bad_data_is_not_retried() -> None:
    client = FakeInflux(errors=[InfluxError("/write: HTTP 400: partial write: field type "
                                            "conflict dropped=1", status=400)])
    w, acked, waits = make_writer(client)
    assert w.process([item(EventRecord(make_event()), mid=4, qos=1)])
    assert waits == [] and acked == [4]
    assert w.stats.snapshot()["dropped"] == {"dead_letter": 1}
    assert w.dead.count == 1 and '"reason": "http_400"' in w.dead.path.read_text()


def test_missing_database_is_recreated() -> None:
    client = FakeInflux(errors=[InfluxError('/write: HTTP 404: database not found: "fw"',
                                            status=404)])
    ensured: list[bool] = []
    w, acked, _ = make_writer(client)
    w._ensure_schema = lambda: ensured.append(True)
    assert w.process([item(EventRecord(make_event()), mid=4, qos=1)])
    assert ensured == [True] and acked == [4] and len(client.writes) == 1


def test_stop_during_an_outage_gives_up_after_drain_without_acking() -> None:
    client = FakeInflux(forever=UNAVAILABLE)
    acked: list[int] = []
    w = Writer(client, Buffer(1 << 20), IngestStats(), IngestSettings(drain_s=0.2, linger_s=0.01),
               ack=acked.append, backoff=Backoff(0.05, 0.05, jitter=0.0))
    w.buffer.put(item(EventRecord(make_event()), mid=1, qos=1))
    w.buffer.put(item(features(T)))
    w.start()
    stalled = threading.Event()
    deadline = threading.Timer(10, stalled.set)
    deadline.start()
    while client.attempts < 2 and not stalled.is_set():
        stalled.wait(0.01)  # poll: the writer is failing its first batch
    deadline.cancel()
    w.stop(timeout=10)
    assert w._thread is not None and not w._thread.is_alive()
    assert acked == []  # the QoS1 message stays at the broker for the next run
    assert w.stats.snapshot()["dropped"] == {"shutdown": 1}  # the QoS0 summary


class GatedInflux(FakeInflux):
    """Holds the first write until `release` is set; logs what it stores of the summaries
    (their numbers, ``t_ns - T``) and fails, in one `log` with the acks (the ``ingest``
    status point, in ``events``, is left out)."""

    def __init__(self, errors: list[InfluxError] | None = None) -> None:
        super().__init__(errors)
        self.entered, self.release = threading.Event(), threading.Event()
        self.log: list[str] = []

    def write(self, db: str, lines: list[str] | bytes, rp: str | None = None,
              precision: str = "ns", timeout: float | None = None) -> None:
        self.entered.set()
        self.release.wait(60)
        lines = as_lines(lines)
        try:
            super().write(db, lines, rp, precision, timeout)
        except InfluxError:
            self.log.append(f"failed {rp}")
            raise
        if rp != schema.RP_EVENTS:
            self.log.append(f"stored {rp} " + ",".join(str(int(ln.rsplit(" ", 1)[1]) - T)
                                                       for ln in lines))


def overlapped(client: GatedInflux, mids: list[int], threads: int = 1) -> Writer:
    """A started writer with two summaries a batch (QoS1, mid k timed T + k) queued, whose
    first write is held by `client` until the second batch has been taken and built."""
    w = Writer(client, Buffer(1 << 20), IngestStats(),
               IngestSettings(batch_lines=2, linger_s=0.01, drain_s=0.5, commit_threads=threads),
               ack=lambda mid: client.log.append(f"ack {mid}"), wait=lambda s: None)
    for mid in mids:
        w.buffer.put(item(features(T + mid), mid=mid, qos=1))
    w.start()
    wait_until(client.entered.is_set, 30, "the first write is in flight")
    wait_until(lambda: len(w.buffer) == 0, 30, "the next batch is taken while it is")
    assert client.log == []  # nothing stored, so nothing acked
    client.release.set()
    wait_until(lambda: sum(e.startswith("ack") for e in client.log) == len(mids), 30, "acks")
    w.stop(timeout=30)
    return w


def test_the_next_batch_is_built_during_a_write_and_acked_after_it() -> None:
    client = GatedInflux()
    overlapped(client, [1, 2, 3, 4, 5, 6])
    assert client.log[:9] == ["stored raw 1,2", "ack 1", "ack 2", "stored raw 3,4", "ack 3",
                              "ack 4", "stored raw 5,6", "ack 5", "ack 6"]


def test_a_failed_write_in_flight_holds_back_every_later_batch() -> None:
    client = GatedInflux(errors=[UNAVAILABLE, UNAVAILABLE])
    w = overlapped(client, [1, 2, 3, 4])
    assert client.log[:7] == ["failed raw", "failed raw", "stored raw 1,2", "ack 1", "ack 2",
                              "stored raw 3,4", "ack 3"]
    assert w.stats.snapshot()["write_retries"] == 2 and w.stats.snapshot()["acked"] == 4


def test_two_commit_threads_write_two_batches_at_once_and_ack_in_order() -> None:
    client = GatedInflux()
    in_flight, peak, lock = [0], [0], threading.Lock()
    write = client.write

    def counting(*a: Any, **kw: Any) -> None:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            if in_flight[0] == 2:
                client.release.set()  # both held at once: let them go
        try:
            write(*a, **kw)
        finally:
            with lock:
                in_flight[0] -= 1

    client.write = counting  # type: ignore[method-assign]
    client.entered = threading.Event()
    w = Writer(client, Buffer(1 << 20), IngestStats(),
               IngestSettings(batch_lines=2, linger_s=0.01, drain_s=0.5, commit_threads=2),
               ack=lambda mid: client.log.append(f"ack {mid}"), wait=lambda s: None)
    for mid in range(1, 9):
        w.buffer.put(item(features(T + mid), mid=mid, qos=1))
    w.start()
    wait_until(lambda: sum(e.startswith("ack") for e in client.log) == 8, 30, "acks")
    w.stop(timeout=30)
    assert peak[0] == 2  # the second batch was written while the first still was
    assert [e for e in client.log if e.startswith("ack")] == [f"ack {m}" for m in range(1, 9)]
    stored = sorted(e for e in client.log if e.startswith("stored raw"))
    assert stored == ["stored raw 1,2", "stored raw 3,4", "stored raw 5,6", "stored raw 7,8"]


def test_events_keep_the_batches_order_though_batches_are_written_at_once() -> None:
    """An event re-sent as it grows: the later version is written last even when the
    earlier batch's write is slow (the other commit thread waits for its turn), while
    summaries are stored in any order."""
    client = FakeInflux()
    write = client.write
    first_events, second_events = threading.Event(), threading.Event()

    def slow_first(db: str, lines: list[str] | bytes, rp: str | None = None, **kw: Any) -> None:
        if rp == schema.RP_EVENTS and not first_events.is_set():
            first_events.set()
            # the other thread has batch 2 by now: were its events written out of turn,
            # they would be written here, before these
            second_events.wait(0.5)
        elif rp == schema.RP_EVENTS:
            second_events.set()
        write(db, lines, rp, **kw)

    client.write = slow_first  # type: ignore[method-assign]
    acked: list[int] = []
    w = Writer(client, Buffer(1 << 20), IngestStats(),
               IngestSettings(batch_lines=2, linger_s=0.01, drain_s=0.5, commit_threads=2),
               ack=acked.append, wait=lambda s: None)
    early = make_event()
    grown = dataclasses.replace(early, peak_score=early.peak_score + 1.0)
    for k, ev in ((1, early), (2, grown)):
        w.buffer.put(item(EventRecord(ev), mid=2 * k - 1, qos=1))
        w.buffer.put(item(features(T + k), mid=2 * k, qos=1))
    w.start()
    wait_until(lambda: len(acked) == 4, 30, "acks")
    w.stop(timeout=30)
    assert acked == [1, 2, 3, 4]
    stored = [ln for rp, lines in client.writes if rp == schema.RP_EVENTS for ln in lines
              if ln.startswith("event,")]
    assert len(stored) == 2 and f"peak_score={grown.peak_score!r}" in stored[-1]


def test_with_two_threads_a_failed_batch_holds_back_the_acks_of_one_written_meanwhile(
) -> None:
    client = FakeInflux()
    write = client.write

    def first_fails(db: str, lines: list[str] | bytes, rp: str | None = None, **kw: Any) -> None:
        if rp == schema.RP_RAW and f" {T + 1}" in as_lines(lines)[0]:
            raise UNAVAILABLE
        write(db, lines, rp, **kw)

    client.write = first_fails  # type: ignore[method-assign]
    acked: list[int] = []
    w = Writer(client, Buffer(1 << 20), IngestStats(),
               IngestSettings(batch_lines=1, linger_s=0.01, drain_s=0.2, commit_threads=2),
               ack=acked.append, backoff=Backoff(0.05, 0.05, jitter=0.0))
    for k in (1, 2):
        w.buffer.put(item(features(T + k), mid=k, qos=1))
    w.start()
    wait_until(lambda: any(rp == schema.RP_RAW for rp, _ in client.writes), 30, "batch 2")
    w.stop(timeout=30)
    assert acked == []  # batch 2 is stored, but batch 1 is not: neither is acknowledged
    assert w.stats.snapshot()["write_retries"] >= 1


def test_stop_in_an_outage_acks_no_batch_built_behind_the_failed_one() -> None:
    client = FakeInflux(forever=UNAVAILABLE)
    acked: list[int] = []
    w = Writer(client, Buffer(1 << 20), IngestStats(),
               IngestSettings(batch_lines=1, drain_s=0.2, linger_s=0.01), ack=acked.append,
               backoff=Backoff(0.05, 0.05, jitter=0.0))
    for mid in range(1, 4):
        w.buffer.put(item(features(T + 2 * mid), mid=mid, qos=1))
        w.buffer.put(item(features(T + 2 * mid + 1)))
    w.start()
    wait_until(lambda: len(w.buffer) < 6 and client.attempts >= 2, 30, "failing the first")
    w.stop(timeout=30)
    assert w._thread is not None and not w._thread.is_alive()
    assert acked == [] and w.stats.snapshot()["dropped"]["shutdown"] == 3


def test_stale_health_does_not_overwrite_the_fleet_view() -> None:
    client = FakeInflux()
    w, _, _ = make_writer(client)
    w.process([item(HealthRecord(health_dict(t_ns=T + 10)))])
    w.process([item(HealthRecord(health_dict(t_ns=T)))])
    fleet_lines = [ln for rp, lines in client.writes for ln in lines if ln.startswith("fleet")]
    assert len(fleet_lines) == 1 and f"t_ns={T + 10}i" in fleet_lines[0]


def test_retained_model_state_replays_are_skipped() -> None:
    client = FakeInflux()
    w, _, _ = make_writer(client)
    state = {"model_version": "1", "model_hash": "h", "status": "serving"}
    for _ in range(3):
        w.process([item(ModelStateRecord("s1", "g1", state))])
    w.process([item(ModelStateRecord("s1", "g1", {**state, "status": "canary"}))])
    states = [ln for rp, lines in client.writes for ln in lines if ln.startswith("model_state")]
    assert len(states) == 2


# --- downsampler and rate-limited log -----------------------------------------------------

def test_downsampler_buckets_max_mean_and_late() -> None:
    now = [0.0]
    d = Downsampler(10, idle_s=30, clock=lambda: now[0])
    base = 1_700_000_000 * 10**9
    assert d.add(features(base + 1 * 10**9, [1.0, 5.0])) == []
    assert d.add(features(base + 2 * 10**9, [3.0, 2.0])) == []
    (line,) = d.add(features(base + 10 * 10**9, [0.0, 0.0]))  # next bucket closes the first
    assert line.startswith("features_10s,gateway=g1,site=s1,stream=das ")
    assert line.endswith(f" {base}") and "count=2i" in line and "score_max=5.0" in line
    assert d.add(features(base + 3 * 10**9)) == [] and d.late == 1  # too late for history
    now[0] = 31.0
    (idle,) = d.flush_idle()
    assert idle.endswith(f" {base + 10 * 10**9}")
    assert d.flush_all() == []


def test_downsampler_keeps_gateways_apart_and_flushes_all() -> None:
    d = Downsampler(10)
    d.add(features(T, gateway="g1"))
    d.add(features(T, gateway="g2"))
    assert sorted(line.split(",")[1] for line in d.flush_all()) == ["gateway=g1", "gateway=g2"]


def test_rate_limited_log(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t"), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        assert rl.log(logging.WARNING, "k", "event=x n=%d", 1)
        assert not rl.log(logging.WARNING, "k", "event=x n=%d", 2)
        assert rl.log(logging.WARNING, "other", "event=y")
        now[0] = 11
        assert rl.log(logging.WARNING, "k", "event=x n=%d", 3)
    assert [r.getMessage() for r in caplog.records] == [
        "event=x n=1 suppressed=0", "event=y suppressed=0", "event=x n=3 suppressed=1"]


@pytest.mark.parametrize("full", ["lines", "bytes"])
def test_a_filling_batch_is_woken_once_full(full: str) -> None:
    """`put` no longer wakes the batch for every item, but it does once the batch is full
    (a batch that slept through its 10-minute linger would fail the join)."""
    b = Buffer(10**6)
    b.put(item(None, mid=0, nbytes=10))
    got: list[list[int]] = []
    limits = {"max_lines": 5, "max_bytes": 10**6} if full == "lines" else {
        "max_lines": 10**6, "max_bytes": 45}
    t = threading.Thread(target=lambda: got.append([i.mid for i in b.get_batch(
        **limits, linger_s=600, idle_s=600, timeout=1)]))
    t.start()
    wait_until(lambda: b._wake_at != (1, 0), 30, "the batch waits")  # noqa: SLF001
    for mid in range(1, 5):
        b.put(item(None, mid=mid, nbytes=10))
    t.join(60)
    assert not t.is_alive() and got == [[0, 1, 2, 3, 4]]
