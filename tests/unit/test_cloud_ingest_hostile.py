"""Hostile input to ingestion: nothing stalls on one message, nothing overwrites another
gateway's data, nothing from the future freezes a view; what can never be stored is kept
in bounded dead-letter files and counted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cloud import codec, schema
from cloud.influx import InfluxError
from cloud.ingest import mqtt as ingest_mqtt
from cloud.ingest.buffer import Backoff, Buffer, Item
from cloud.ingest.config import IngestSettings
from cloud.ingest.deadletter import NAME, DeadLetters
from cloud.ingest.limits import check_size, check_time, topic_kind
from cloud.ingest.parse import EventRecord, HealthRecord, Malformed, parse
from cloud.ingest.spool import Spool
from cloud.ingest.stats import IngestStats
from cloud.ingest.writer import Writer
from edge_agent import topics
from tests.unit.test_cloud_ingest_parse import T, health_dict, make_event, summary_dict

DAY = 86400 * 10**9


class LimitedInflux:
    """A fake influxd: bodies over `limit` bytes break the pipe (as influxd 1.6 does past
    its max-body-size), and a body holding a line with `poison` is refused with 400."""

    def __init__(self, limit: int = 10**9, poison: str = "\x00never", status: int = 400):
        self.limit, self.poison, self.status = limit, poison, status
        self.written: list[str] = []
        self.attempts = 0

    def write(self, db: str, lines: list[str] | bytes, rp: str | None = None,
              precision: str = "ns", timeout: float | None = None) -> None:
        self.attempts += 1
        lines = lines.decode().split("\n") if isinstance(lines, bytes) else lines
        if self.attempts > 10_000:
            raise AssertionError("the writer retries without end")
        if len("\n".join(lines).encode()) > self.limit:
            raise InfluxError("/write: BrokenPipeError: [Errno 32] Broken pipe", retryable=True)
        if any(self.poison in ln for ln in lines):
            raise InfluxError(f"/write: HTTP {self.status}: unable to parse", status=self.status)
        self.written += lines


def writer(client: Any, tmp_path: Path, **kw: Any) -> tuple[Writer, list[int]]:
    acked: list[int] = []
    settings = IngestSettings(**{"dead_letter_dir": str(tmp_path / "dl"), **kw})
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        assert len(waits) < 1000, "the writer retries without end"

    w = Writer(client, Buffer(1 << 20), IngestStats(), settings, ack=acked.append, wait=wait,
               backoff=Backoff(0.01, 0.01, jitter=0.0))
    return w, acked


def lines(n: int, size: int = 100) -> list[str]:
    return [f"m,k=a v=\"{'x' * size}\" {T + i}" for i in range(n)]


def test_a_body_is_never_larger_than_the_cap(tmp_path: Path) -> None:
    client = LimitedInflux(limit=25_000)  # influxd's limit, scaled down
    w, _ = writer(client, tmp_path, max_body_bytes=20_000)
    batch = lines(1000)  # ~110 kB in one batch
    assert w._write(schema.RP_RAW, batch)
    assert client.written == batch and w.dead.count == 0


def test_broken_pipe_on_a_large_body_splits_it(tmp_path: Path) -> None:
    client = LimitedInflux(limit=25_000)  # a server whose limit is below our cap
    w, _ = writer(client, tmp_path, max_body_bytes=1 << 20, broken_split_bytes=10_000)
    batch = lines(1000)
    assert w._write(schema.RP_RAW, batch)
    assert client.written == batch and w.dead.count == 0


def test_a_line_over_the_cap_goes_to_the_dead_letters_and_the_rest_is_written(
        tmp_path: Path) -> None:
    client = LimitedInflux(limit=25_000)
    w, _ = writer(client, tmp_path, max_body_bytes=20_000)
    big = lines(1, size=30_000)[0]
    batch = lines(10) + [big] + lines(10)
    assert w._write(schema.RP_HISTORY, batch)
    assert client.written == lines(10) + lines(10)
    assert w.dead.count == 1 and w.stats.snapshot()["dropped"] == {"dead_letter": 1}
    (rec,) = [json.loads(x) for x in w.dead.path.read_text().splitlines()]
    assert rec["reason"] == "too_large" and rec["where"] == "history"
    assert rec["bytes"] == len(big) and rec["data"] == big  # under the record cap: whole


def test_a_lone_line_that_always_breaks_the_pipe_is_not_retried_forever(tmp_path: Path) -> None:
    client = LimitedInflux(limit=25_000)
    w, _ = writer(client, tmp_path, max_body_bytes=1 << 20, broken_split_bytes=10_000,
                  broken_attempts=3)
    big = lines(1, size=30_000)[0]
    assert w._write(schema.RP_HISTORY, lines(5) + [big] + lines(5))
    assert client.written == lines(5) + lines(5)
    assert w.dead.count == 1 and "broken_pipe" in w.dead.path.read_text()


@pytest.mark.parametrize("status", [400, 413])
def test_a_refused_batch_is_split_until_only_the_bad_line_is_left(tmp_path: Path,
                                                                  status: int) -> None:
    client = LimitedInflux(poison="POISON", status=status)
    w, acked = writer(client, tmp_path)
    good = lines(40)
    bad = 'm,k=a v="POISON" 1'
    assert w._write(schema.RP_EVENTS, good[:17] + [bad] + good[17:])
    assert client.written == good  # every good line, in order
    assert w.dead.count == 1 and f"http_{status}" in w.dead.path.read_text()


def test_process_acks_a_message_whose_line_is_dead_lettered(tmp_path: Path) -> None:
    client = LimitedInflux(limit=2_000)
    w, acked = writer(client, tmp_path, max_body_bytes=1_500)
    big = health_dict(status="x" * 3_000)
    ok = health_dict(t_ns=T + 1)
    items = [Item(HealthRecord(big), T, 1, 1, 10, 2), Item(HealthRecord(ok), T + 1, 2, 1, 10, 2)]
    assert w.process(items)
    assert acked == [1, 2]  # nothing waits behind the message that can never be written
    assert any(f"t_ns={T + 1}i" in ln for ln in client.written)


def test_dead_letter_files_are_bounded_and_rotated(tmp_path: Path) -> None:
    d = DeadLetters(tmp_path, file_bytes=4_000, files=3, record_bytes=500)
    for i in range(100):
        d.add("too_large", "raw", f"{i:04d}" + "y" * 2_000)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [NAME, f"{NAME}.1", f"{NAME}.2"]
    assert all(p.stat().st_size <= 4_000 for p in tmp_path.iterdir())
    newest = [json.loads(x) for x in (tmp_path / NAME).read_text().splitlines()]
    assert newest[-1]["data"].startswith("0099") and newest[-1]["truncated"]
    assert newest[-1]["bytes"] == 2_004 and len(newest[-1]["data"]) == 500
    assert d.count == 100


def test_dead_letters_survive_a_disk_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    d = DeadLetters(blocker / "dl")
    d.add("too_large", "raw", "x")  # no exception: counted
    assert d.count == 1 and d.write_errors == 1


def test_the_status_point_carries_the_dead_letter_count(tmp_path: Path) -> None:
    client = LimitedInflux(poison="POISON")
    w, _ = writer(client, tmp_path)
    w._write(schema.RP_EVENTS, ['m v="POISON" 1'])
    w.write_status(force=True)
    (status,) = [ln for ln in client.written if ln.startswith(schema.INGEST)]
    assert "dead_letters=1i" in status and "client_id=anonymous" in status


# --- caps before parsing, times from the future ---------------------------------------------

def test_payload_caps_per_kind() -> None:
    s = IngestSettings(max_features_bytes=1000, max_message_bytes=100)
    assert topic_kind(topics.features("s", "g", "das")) == "features"
    assert topic_kind(topics.events("s", "g")) == "event"
    check_size(topics.features("s", "g", "das"), 1000, s)
    with pytest.raises(Malformed, match="features:too_large"):
        check_size(topics.features("s", "g", "das"), 1001, s)
    for topic, kind in ((topics.events("s", "g"), "event"), (topics.health("s", "g"), "health"),
                        (topics.model_state("s", "g"), "model_state")):
        with pytest.raises(Malformed, match=f"{kind}:too_large"):
            check_size(topic, 101, s)


class _Msg(SimpleNamespace):
    pass


def test_the_subscriber_refuses_an_oversized_message_without_parsing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parse(*a: Any) -> Any:
        raise AssertionError("an oversized payload was parsed")

    monkeypatch.setattr(ingest_mqtt, "parse", no_parse)
    s = IngestSettings(max_message_bytes=1000)
    stats, buf = IngestStats(), Buffer(1 << 20)
    dead = DeadLetters(tmp_path)
    sub = ingest_mqtt.Subscriber(s, buf, stats, dead=dead)
    sub._on_message(None, None, _Msg(topic=topics.health("s1", "g1"), payload=b"{" * 30_000,
                                     qos=1, mid=7))
    assert stats.snapshot()["malformed"] == {"health:too_large": 1}
    assert dead.count == 1 and "health:too_large" in dead.path.read_text()
    (queued,) = buf.drain()
    assert queued.record is None and queued.mid == 7  # acked in order, never stored


def test_future_times_are_refused() -> None:
    s = IngestSettings(max_future_s=300)
    future = HealthRecord(health_dict(t_ns=T + DAY))
    with pytest.raises(Malformed, match="health:future_time"):
        check_time(future, T, s)
    check_time(HealthRecord(health_dict(t_ns=T + 299 * 10**9)), T, s)
    with pytest.raises(Malformed, match="event:future_time"):
        check_time(EventRecord(make_event(end_ns=T + DAY)), T, s)


def test_a_future_heartbeat_does_not_freeze_the_fleet_row(tmp_path: Path) -> None:
    client = LimitedInflux()
    w, _ = writer(client, tmp_path)
    # even one that got past the skew check (a gateway clock a little ahead) ...
    w.process([Item(HealthRecord(health_dict(t_ns=T + 200 * 10**9, status="ahead")), T)])
    # ... does not make the next real heartbeats look old
    w.process([Item(HealthRecord(health_dict(t_ns=T + 10**9, status="later")), T + 10**9)])
    fleet = [ln for ln in client.written if ln.startswith("fleet")]
    assert len(fleet) == 2 and 'status="later"' in fleet[-1]


# --- the topic's gateway owns its event ids ------------------------------------------------

def test_a_gateway_cannot_overwrite_another_gateways_event() -> None:
    real = make_event()  # g1's event
    forged = make_event(gateway="g2", peak_score=0.1, severity="low")  # same id, from g2
    assert forged.id == real.id
    r1 = parse(topics.events("s1", "g1"), real.to_json())
    r2 = parse(topics.events("s1", "g2"), forged.to_json())
    assert isinstance(r1, EventRecord) and isinstance(r2, EventRecord)
    assert r1.event.id != r2.event.id
    assert r1.gateway_event_id == r2.gateway_event_id == real.id
    assert r1.event.id == codec.cloud_event_id("s1", "g1", real.id)
    again = parse(topics.events("s1", "g1"), real.to_json())  # re-sent: the same point
    assert isinstance(again, EventRecord) and again.event.id == r1.event.id
    line = codec.event_line(r1.event, T, r1.gateway_event_id)
    assert f'gateway_event_id="{real.id}"' in line and f"id={r1.event.id}" in line


# --- the QoS0 spool: summaries survive a SIGKILL of ingestion ------------------------------

def test_spool_replays_what_was_not_committed(tmp_path: Path) -> None:
    sp = Spool(tmp_path, segment_bytes=200)
    pos = [sp.append(f"t/{i}", b"p" * 50, T + i) for i in range(10)]
    sp.commit(pos[3])
    sp.close()  # as if killed: nothing else is written
    again = Spool(tmp_path, segment_bytes=200)
    got = list(again.replay())
    assert [(t, r) for t, _, r, _ in got] == [(f"t/{i}", T + i) for i in range(4, 10)]
    assert all(p == b"p" * 50 for _, p, _, _ in got)
    again.commit(got[-1][3])
    again.close()
    assert list(Spool(tmp_path).replay()) == []
    assert len(list(tmp_path.glob("spool-*.bin"))) <= 3  # finished segments are deleted


def test_spool_stops_at_a_torn_record_and_is_bounded(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "a")
    sp.append("t", b"x" * 10, T)
    sp.append("t", b"y" * 10, T + 1)
    sp.close()
    seg = next((tmp_path / "a").glob("spool-*.bin"))
    seg.write_bytes(seg.read_bytes()[:-3])  # killed mid-write
    assert [p for _, p, _, _ in Spool(tmp_path / "a").replay()] == [b"x" * 10]
    small = Spool(tmp_path / "b", max_bytes=1000, segment_bytes=300)
    for i in range(40):
        small.append("t", bytes([i]) * 100, T)
    total = sum(p.stat().st_size for p in (tmp_path / "b").glob("spool-*.bin"))
    assert total <= 1000 + 300 and small.dropped > 0


def test_a_killed_runs_summaries_come_back(tmp_path: Path) -> None:
    s = IngestSettings(spool_dir=str(tmp_path / "spool"), dead_letter_dir=str(tmp_path / "dl"))
    topic = topics.features("s1", "g1", "das")
    first = ingest_mqtt.Subscriber(s, Buffer(1 << 20), IngestStats(), spool=Spool(s.spool_path()))
    client = LimitedInflux()
    w, _ = writer(client, tmp_path, spool_dir=s.spool_dir)
    w.spool = first.spool
    for k in range(5):
        payload = json.dumps(summary_dict(t_ns=T + k * 10**9)).encode()
        first.handle(topic, payload, 0, 0, T + k * 10**9)
    w.process(first.buffer.get_batch(max_lines=2, max_bytes=1 << 30, linger_s=0, idle_s=0,
                                     timeout=1))  # two written, three only in memory ...
    assert first.spool is not None
    first.spool.close()  # ... when the process is killed
    second = ingest_mqtt.Subscriber(s, Buffer(1 << 20), IngestStats(),
                                    spool=Spool(s.spool_path()))
    assert second.replay() == 3
    replayed = second.buffer.drain()
    got = [i.record.t_ns for i in replayed]  # type: ignore[union-attr]
    assert got == [T + k * 10**9 for k in (2, 3, 4)]


def test_a_restarted_process_goes_on_counting_the_kept_dead_letters(tmp_path: Path) -> None:
    first = DeadLetters(tmp_path, file_bytes=500, files=3)
    for i in range(5):
        first.add("http_400", "events", f"line {i}" * 20)
    kept = sum(len(p.read_text().splitlines()) for p in tmp_path.iterdir())
    assert DeadLetters(tmp_path, file_bytes=500, files=3).count == kept > 0


# --- one point per event ----------------------------------------------------------------

def test_a_resent_event_with_other_tags_supersedes_its_old_point(tmp_path: Path) -> None:
    from cloud.ingest.supersede import Versions, delete_statement

    v = Versions(max_events=2)
    e = make_event()
    assert v.replace(e) is None and v.replace(e) is None  # the same point again: nothing
    grown = dataclasses.replace(e, severity="critical", start_ns=e.start_ns - 10)
    old = v.replace(grown)
    assert old is not None and old[1] == e.start_ns and ("severity", "high") in old[0]
    q = delete_statement(old)
    assert q.startswith('DELETE FROM "event" WHERE "id" = ') and "\"severity\" = 'high'" in q
    assert f"time >= {e.start_ns} AND time <= {e.start_ns}" in q
    for k in range(3):  # bounded: the oldest is forgotten
        v.replace(make_event(ch_start=k, id=f"id-{k}"))
    assert v.replace(dataclasses.replace(grown, severity="low")) is None


class QueryingInflux(LimitedInflux):
    def __init__(self) -> None:
        super().__init__()
        self.queries: list[str] = []

    def query(self, q: str, db: str | None = None) -> None:
        self.queries.append(q)


def test_the_writer_deletes_the_old_point_after_writing_the_new(tmp_path: Path) -> None:
    client = QueryingInflux()
    w, _ = writer(client, tmp_path)
    e = make_event()
    w.process([Item(EventRecord(e, e.id), T, 1, 1, 10, 1)])
    assert client.queries == []
    grown = dataclasses.replace(e, class_hint="sand")
    w.process([Item(EventRecord(grown, e.id), T, 2, 1, 10, 1)])
    assert len(client.queries) == 1 and "\"class_hint\" = 'leak'" in client.queries[0]
    assert 'class_hint=sand' in client.written[-1]


def test_merged_into_names_the_cloud_id_of_the_same_gateways_event() -> None:
    kept, withdrawn = make_event(), make_event(ch_start=12, id="g1-withdrawn")
    withdrawn = dataclasses.replace(withdrawn, merged_into=kept.id)
    r = parse(topics.events("s1", "g1"), withdrawn.to_json())
    assert isinstance(r, EventRecord)
    assert r.event.merged_into == codec.cloud_event_id("s1", "g1", kept.id)
