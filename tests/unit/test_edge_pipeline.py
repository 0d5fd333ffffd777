"""One stream's pipeline with fakes for the slot and the sink: detection, learning rules,
summaries, hot swap between windows, the chunked feature path."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_agent import wire
from edge_agent.config import EventConfig, StreamConfig, ThresholdConfig
from edge_agent.detectors.stats import RobustZDetector
from edge_agent.features import FeatureExtractor
from edge_agent.metrics import Metrics
from edge_agent.pipeline import StreamPipeline
from edge_agent.types import RawMessage

CH = 64
RATE = 2000.0
FRAME = 100  # samples per frame (50 ms)
T0 = 1_700_000_000 * 10**9
STREAM = StreamConfig(kind="das", channels=CH, sample_rate_hz=RATE, window_s=0.5, hop_s=0.25,
                      group_size=8, context_radius=4)
SPEC = STREAM.feature_spec()
HOP_NS = 250_000_000


def synth_frames(n_frames: int, *, leak: tuple[int, int, int] | None = None, seed: int = 0,
                 nan_channel: int | None = None) -> list[bytes]:
    """White noise; ``leak=(ch_lo, ch_hi, first_frame)`` adds 4x broadband energy there."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_frames):
        x = rng.normal(size=(FRAME, CH)).astype(np.float32)
        if leak is not None and k >= leak[2]:
            x[:, leak[0]:leak[1] + 1] += 4 * rng.normal(size=(FRAME, leak[1] - leak[0] + 1))
        if nan_channel is not None and k >= n_frames // 2:
            x[::7, nan_channel] = np.nan
        out.append(wire.encode(wire.StreamKind.DAS, k, T0 + k * FRAME * 500_000, RATE, 0, x))
    return out


class FakeSlot:
    def __init__(self, det) -> None:
        self.active = det
        self.pending = None
        self.latencies: list[float] = []

    def apply_pending(self) -> bool:
        if self.pending is None:
            return False
        self.active, self.pending = self.pending, None
        return True

    def report_latency(self, ms: float) -> None:
        self.latencies.append(ms)


class FakeSink:
    def __init__(self) -> None:
        self.events, self.summaries = [], []

    def send_event(self, e) -> None:
        self.events.append(e)

    def send_summary(self, s) -> None:
        self.summaries.append(s)


class FakeBuffer:
    def __init__(self) -> None:
        self.rows = []

    def append(self, rows, t_ns=None, channels=None) -> None:
        self.rows.append(rows)


def make(det=None, *, now=None, **kw):
    sink, slot, metrics = FakeSink(), FakeSlot(det or RobustZDetector(SPEC.dim)), Metrics()
    mono = now or (lambda: 0.0)
    p = StreamPipeline(
        site="s", gateway="g", stream=STREAM,
        thresholds=ThresholdConfig(false_alarm_rate=1e-4, warmup_windows=40,
                                   history_windows=400),
        events=EventConfig(merge_gap_channels=2, merge_gap_s=0), slot=slot, sink=sink,
        metrics=metrics, monotonic=mono, **kw)
    return p, slot, sink, metrics


def feed(p, frames) -> list:
    scored = []
    orig = p.events.update
    p.events.update = lambda s: (scored.append(s), orig(s))[1]
    for f in frames:
        p.handle(RawMessage("t", f, time.time_ns()))
    p.flush()
    return scored


def test_the_pipeline_transforms_each_segment_once_with_whole_window_rows() -> None:
    p, _, _, _ = make()
    ref = FeatureExtractor(SPEC)
    rows = []
    orig = p.process

    def keep(w):  # type: ignore[no-untyped-def]
        s = orig(w)
        rows.append((s.rows, np.array(w.data)))
        return s

    p.process = keep  # type: ignore[method-assign]
    feed(p, synth_frames(60))
    assert len(rows) == 11 and p.features.segments_transformed == 12
    slow = slice(SPEC.names.index("lf_max"), SPEC.names.index("lf_swing") + 1)
    for k, (got, data) in enumerate(rows):
        want = ref.transform(data)
        if k == 0:  # the first window: its own segments are all the slow features have
            np.testing.assert_array_equal(got, want)
        # version 3: only the slow features (and their context) remember earlier segments
        same = np.ones(SPEC.dim, bool)
        same[slow] = same[slice(slow.start + SPEC.dim // 2, slow.stop + SPEC.dim // 2)] = False
        np.testing.assert_array_equal(got[:, same], want[:, same])


def test_a_leak_gives_one_event_at_the_right_place_and_time() -> None:
    p, slot, sink, m = make()
    onset_frame = 300  # 15 s: well after the warm-up (40 windows = 10 s)
    feed(p, synth_frames(420, leak=(30, 35, onset_frame)))
    # announced while open, then re-sent under the same id: one event, last version wins
    by_id = {e.id: e for e in sink.events}
    (e,) = by_id.values()
    assert len(sink.events) >= 2, "an open event is announced before it closes"
    assert sink.events[0].end_ns < e.end_ns
    assert abs(e.ch_start - 30) <= 2 and abs(e.ch_end - 35) <= 2
    onset_ns = T0 + onset_frame * FRAME * 500_000
    assert abs(e.start_ns - onset_ns) <= 2 * HOP_NS
    assert e.class_hint == "leak" and e.model_version == "stat-robustz-1"
    assert m.snapshot()["windows"] == 83 and len(slot.latencies) == m.snapshot()["windows"]


def test_learning_never_sees_flagged_rows() -> None:
    det = RobustZDetector(SPEC.dim)
    learned: list[np.ndarray] = []
    orig = det.learn
    det.learn = lambda rows: (learned.append(rows.copy()), orig(rows))[1]
    p, *_ = make(det)
    scored = feed(p, synth_frames(360, leak=(30, 35, 300)))
    assert len(learned) == len(scored) or len(learned) > 0
    flagged_rows = set()
    for s in scored:
        for g in np.flatnonzero(s.flagged):
            for r in s.rows[g * 8:(g + 1) * 8]:
                flagged_rows.add(r.tobytes())
    assert flagged_rows, "the leak should be flagged"
    assert not any(r.tobytes() in flagged_rows for rows in learned for r in rows)


def test_nonfinite_samples_make_a_fault_event_and_scoring_goes_on() -> None:
    p, _, sink, m = make()
    scored = feed(p, synth_frames(300, nan_channel=12))
    assert m.snapshot()["drops"]["nonfinite"] > 0
    faults = [e for e in sink.events if e.class_hint == "fault"]
    assert faults and all(e.ch_start <= 12 <= e.ch_end for e in faults)
    assert len(scored) == m.snapshot()["windows"] == 59


def test_summaries_follow_the_clock() -> None:
    t = [0.0]
    p, _, sink, _ = make(now=lambda: t[0])
    frames = synth_frames(40)
    for f in frames[:20]:
        p.handle(RawMessage("t", f, time.time_ns()))
    t[0] = 1.5
    p.tick()
    (s,) = sink.summaries
    assert len(s.score) == CH // 8 and s.group_size == 8 and s.model_version == "stat-robustz-1"
    assert s.threshold == [0.0] * (CH // 8)  # still warming up
    p.tick()
    assert len(sink.summaries) == 1  # not due again yet


def test_swap_happens_between_windows_and_events_name_the_new_model() -> None:
    p, slot, sink, _ = make()

    class Other(RobustZDetector):
        version = "other-2"
        package_hash = "abc"

    frames = synth_frames(500, leak=(30, 35, 400))  # the new model warms up for 10 s
    for f in frames[:100]:
        p.handle(RawMessage("t", f, time.time_ns()))
    slot.pending = Other(SPEC.dim)
    for f in frames[100:]:
        p.handle(RawMessage("t", f, time.time_ns()))
    p.flush()
    assert slot.active.version == "other-2"
    assert sink.events and all(e.model_version == "other-2" for e in sink.events)
    assert set(p._thresholds) == {("stat-robustz-1", ""), ("other-2", "abc")}


def test_recent_rows_and_normal_buffer() -> None:
    buf = FakeBuffer()
    p, *_ = make(normal_buffer=buf, smoke_windows=3)
    assert p.recent_rows().shape == (0, SPEC.dim)
    feed(p, synth_frames(60))
    assert p.recent_rows().shape == (3 * CH, SPEC.dim)
    total = sum(len(r) for r in buf.rows)
    assert total == 16 * p.metrics.snapshot()["windows"]


def test_latency_is_filed_under_the_stream_kind() -> None:
    p, _, _, m = make()
    feed(p, synth_frames(40))
    iv = m.interval()
    assert m.snapshot()["windows"] > 0 and list(iv["latency_ms_by_stream"]) == ["das"]
    assert iv["latency_ms_by_stream"]["das"]["p99"] == iv["latency_ms"]["p99"] > 0


def test_a_gap_resets_the_buffer_and_is_counted() -> None:
    p, _, _, m = make()
    frames = synth_frames(60)
    scored = feed(p, frames[:20] + frames[25:])
    snap = m.snapshot()
    assert snap["gaps"] == 5 and snap["resets"] == 1
    after = [s for s in scored if s.window.after_gap]
    assert len(after) == 2  # the first window, and the first after the gap
    resumed = after[1].window.t_start_ns
    assert resumed == T0 + 25 * FRAME * 500_000


@pytest.mark.parametrize("bad", [b"", b"FWFR" + b"\0" * 60])
def test_malformed_payloads_are_counted_not_raised(bad: bytes) -> None:
    p, _, _, m = make()
    p.handle(RawMessage("t", bad, 0))
    assert sum(m.snapshot()["drops"].values()) == 1


def test_a_windows_events_reach_a_batching_sink_in_one_call() -> None:
    """Several events of one window: one `send_events` call (one outbox fsync), all counted."""
    class BatchSink(FakeSink):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def send_events(self, events) -> None:
            self.batches.append(len(events))
            self.events.extend(events)

    p, _, _, m = make()
    sink = p.sink = BatchSink()
    p.events.update = lambda s: ["e1", "e2", "e3"] if s.window.index == 2 else []
    feed(p, synth_frames(30))
    assert sink.batches == [3] and sink.events == ["e1", "e2", "e3"]
    assert m.snapshot()["events"] == 3


def test_flagged_rows_are_journaled_and_labelled_channels_never_learned(tmp_path) -> None:
    from edge_agent.labels import Label, LabelBook

    book = LabelBook(tmp_path / "labels.db")
    end = T0 + 10**12  # a maintenance label on channels 0-7 for the whole run
    book.add(Label(id="m", event_id="m", site="s", gateway="g", stream="das", start_ns=T0,
                   end_ns=end, ch_start=0, ch_end=7, label="maintenance"))
    buf = FakeBuffer()
    p, *_ = make(normal_buffer=buf, label_book=book)
    learned: list[np.ndarray] = []
    orig = p._threshold_for  # noqa: SLF001 - wrap the thresholds' learn

    def spy(model, det):  # type: ignore[no-untyped-def]
        thr = orig(model, det)
        if not getattr(thr, "_spied", False):
            base = thr.learn
            thr.learn = lambda g, ex=None: (learned.append(ex.copy()), base(g, ex))[1]
            thr._spied = True
        return thr

    p._threshold_for = spy  # type: ignore[method-assign]
    feed(p, synth_frames(360, leak=(30, 35, 300)))
    assert learned and all(ex[0] for ex in learned)  # group 0 (channels 0-7): never learned
    book.add(Label(id="fa", event_id="fa", site="s", gateway="g", stream="das", start_ns=T0,
                   end_ns=end, ch_start=24, ch_end=40, label="false_alarm"))
    rows, t, _, _ = book.labelled_rows("das", SPEC.dim)
    assert len(rows) and len(rows) % 8 == 0 and (t >= T0 + 300 * FRAME * 500_000 - 10**9).all()
    normal = np.concatenate(buf.rows)  # journaled (flagged) rows never reach the buffer
    assert not any((normal == r).all(1).any() for r in rows)
    book.close()
