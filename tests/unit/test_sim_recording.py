"""The .fwrec container and ground-truth label files."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from edge_agent import wire
from sensors_sim import (
    RecordingError,
    SimConfig,
    Simulator,
    parse_scenario,
    read_frames,
    read_labels,
    read_meta,
    write_frames,
    write_labels,
)
from sensors_sim.recording import RecordingWriter, peek
from sensors_sim.runs import labels_path, record, summarise

CFG = SimConfig(channels=32, seconds=2.0, scenarios=(
    parse_scenario("leak:onset=0.5,duration=1,channel=10"),
    parse_scenario("dropped:onset=1,duration=0.2"),
))


def test_round_trip_is_byte_identical(tmp_path: Path) -> None:
    frames = [f for _, f in Simulator(CFG, 1).frames()]
    path = tmp_path / "run.fwrec"
    assert write_frames(path, frames, meta={"site": "well-a", "n": 1}) == len(frames)
    assert list(read_frames(path)) == frames
    assert read_meta(path) == {"site": "well-a", "n": 1}


def test_empty_recording_and_default_meta(tmp_path: Path) -> None:
    path = tmp_path / "empty.fwrec"
    assert write_frames(path, []) == 0
    assert list(read_frames(path)) == [] and read_meta(path) == {}


@pytest.mark.parametrize(("keep", "match"), [
    (lambda n, last: n - 1, r"record 2 cut short \("),  # last byte of the last frame
    (lambda n, last: n - last + 5, r"record 2 cut short \("),  # most of the last frame
    (lambda n, last: n - last - 2, "record 2 length cut short"),  # inside its length prefix
])
def test_truncated_recording_raises(tmp_path: Path, keep, match: str) -> None:
    path = tmp_path / "t.fwrec"
    frames = [f for _, f in Simulator(CFG, 1).frames()][:3]
    write_frames(path, frames)
    data = path.read_bytes()
    path.write_bytes(data[: keep(len(data), len(frames[-1]))])
    with pytest.raises(RecordingError, match=match):
        list(read_frames(path))


@pytest.mark.parametrize(("blob", "match"), [
    (b"", "too short"),
    (b"XXXX" + bytes(8), "not a recording"),
    (b"FWRC" + struct.pack("<HHI", 2, 0, 0), "version 2"),
    (b"FWRC" + struct.pack("<HHI", 1, 0, 10) + b"{}", "truncated metadata"),
    (b"FWRC" + struct.pack("<HHI", 1, 0, 2) + b"[]", "JSON object"),
    (b"FWRC" + struct.pack("<HHI", 1, 0, 2) + b"{x", "not JSON"),
    (b"FWRC" + struct.pack("<HHI", 1, 0, 0) + struct.pack("<I", 0), "impossible length"),
])
def test_malformed_recordings_raise(tmp_path: Path, blob: bytes, match: str) -> None:
    path = tmp_path / "bad.fwrec"
    path.write_bytes(blob)
    with pytest.raises(RecordingError, match=match):
        list(read_frames(path))


def test_writer_rejects_empty_frame(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path / "w.fwrec") as w, pytest.raises(ValueError):
        w.write(b"")


def test_peek_reads_the_header_only() -> None:
    _, frame = next(iter(Simulator(CFG, 1).frames()))
    kind, seq, t0, end = peek(frame)
    f = wire.decode(frame)
    assert (kind, seq, t0, end) == (f.kind, f.seq, f.t0_ns, f.end_ns)
    with pytest.raises(wire.FrameError):
        peek(b"nope" + frame[4:])
    with pytest.raises(wire.FrameError):
        peek(frame[:20])


def test_labels_round_trip(tmp_path: Path) -> None:
    labels = Simulator(CFG, 1).labels()
    path = tmp_path / "l.jsonl"
    assert write_labels(path, labels) == 2
    assert read_labels(path) == labels
    path.write_text(path.read_text() + "\n{\"kind\": 1}\n")
    with pytest.raises(ValueError, match=":4:"):
        read_labels(path)


def test_label_overlap_query() -> None:
    leak = Simulator(CFG, 1).labels()[0]
    mid = (leak.start_ns + leak.end_ns) // 2
    assert leak.overlaps("das", mid, mid + 1, leak.ch_end, leak.ch_end + 5)
    assert not leak.overlaps("das", leak.end_ns, leak.end_ns + 10, 0, 31)
    assert not leak.overlaps("das", mid, mid + 1, leak.ch_end + 1, 31)


def test_record_writes_frames_labels_and_meta_and_summarises(tmp_path: Path) -> None:
    sim = Simulator(CFG, 9)
    (w,) = record([sim], [tmp_path / "r.fwrec"])
    assert w.frames == len(list(sim.frames()))
    assert read_labels(labels_path(tmp_path / "r.fwrec")) == sim.labels()
    meta = read_meta(tmp_path / "r.fwrec")
    assert (meta["site"], meta["seed"], len(meta["labels"])) == ("well-a", 9, 2)
    s = summarise(tmp_path / "r.fwrec")
    assert s["streams"]["das"]["frames"] == 40 - 4 and s["streams"]["das"]["gaps"] == 4
    assert s["streams"]["dts"] == {**s["streams"]["dts"], "frames": 2, "gaps": 0}
