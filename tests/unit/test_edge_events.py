"""Event builder: merging over channels and windows, closing, segments, class hints."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.config import EventConfig, StreamConfig
from edge_agent.event_builder import EventBuilder, class_hint, severity
from edge_agent.events import Event, event_id
from edge_agent.features import FeatureSpec
from edge_agent.types import Scored, Window

CH = 64
GS = 8
HOP = 500_000_000
STREAM = StreamConfig(kind="das", first_channel=1000, channels=CH, spacing_m=2.0,
                      fiber_offset_m=10.0, sample_rate_hz=2000.0, window_s=1.0, hop_s=0.5,
                      group_size=GS)
NAMES = FeatureSpec().names
DIM = len(NAMES)


def builder(**cfg) -> EventBuilder:
    now = [10**18]

    def clock() -> int:
        now[0] += 1
        return now[0]

    cfg.setdefault("min_windows", 1)  # these tests are about merging single flags
    cfg.setdefault("on_delay_s", 0.0)
    b = EventBuilder(site="s", gateway="g", stream=STREAM, cfg=EventConfig(**cfg), hop_ns=HOP,
                     names=NAMES, clock_ns=clock)
    b.reference = np.zeros(DIM, np.float32)
    return b


def scored(k: int, hot: dict[int, float] | None = None, *, model=("m1", "h1"), thr=5.0,
           nonfinite: list[int] | None = None, rows: np.ndarray | None = None) -> Scored:
    scores = np.ones(CH, np.float32)
    for c, v in (hot or {}).items():
        scores[c] = v
    g = scores.reshape(-1, GS).max(axis=1)
    t = np.full(CH // GS, thr)
    nf = None
    if nonfinite:
        nf = np.zeros(CH, bool)
        nf[nonfinite] = True
    w = Window("das", np.zeros((4, CH), np.float32), k * HOP, k * HOP + 2 * HOP, 1000, (),
               nf, False, k)
    r = rows if rows is not None else np.zeros((CH, DIM), np.float32)
    return Scored(w, r, scores, g, t, g > t, *model)


def run(b: EventBuilder, windows: list[Scored]) -> list[Event]:
    out = []
    for s in windows:
        out += b.update(s)
    return out


def test_one_event_over_channels_and_windows_with_geometry() -> None:
    b = builder(merge_gap_channels=2, merge_gap_s=1.0)  # 2 hops
    leak = {20: 9.0, 21: 12.0, 23: 8.0}  # 22 quiet but within the channel gap
    ws = [scored(0), scored(1, leak), scored(2, leak), scored(3), scored(4, leak), scored(5),
          scored(6), scored(7)]
    (e,) = run(b, ws)
    assert (e.ch_start, e.ch_end) == (1020, 1023)
    assert (e.dist_start_m, e.dist_end_m) == (10.0 + 1020 * 2, 10.0 + 1023 * 2)
    assert e.start_ns == 1 * HOP + HOP  # newest hop of the first flagged window
    assert e.end_ns == 4 * HOP + 2 * HOP
    assert e.n_windows == 3 and e.peak_score == 12.0 and e.threshold == 5.0
    assert e.id == event_id("s", "g", "das", e.start_ns, 1020)
    assert (e.model_version, e.model_hash) == ("m1", "h1")


def test_channel_resolution_is_per_channel_not_per_group() -> None:
    b = builder(merge_gap_s=1.0)  # closes at the second quiet window
    (e,) = run(b, [scored(0, {13: 9.0}), scored(1), scored(2), scored(3)])
    assert (e.ch_start, e.ch_end) == (1013, 1013)


def test_far_apart_clusters_are_separate_events() -> None:
    b = builder(merge_gap_channels=2, merge_gap_s=1.0)
    evs = run(b, [scored(0, {3: 9.0, 40: 9.0}), scored(1), scored(2), scored(3)])
    assert sorted((e.ch_start, e.ch_end) for e in evs) == [(1003, 1003), (1040, 1040)]


def test_a_growing_anomaly_merges_open_events() -> None:
    b = builder(merge_gap_channels=1, merge_gap_s=1.0)
    ws = [scored(0, {10: 9.0, 20: 9.0}), scored(1, dict.fromkeys(range(10, 21), 9.0)),
          scored(2), scored(3), scored(4)]
    (e,) = run(b, ws)
    assert (e.ch_start, e.ch_end, e.n_windows) == (1010, 1020, 2)


def test_quiet_longer_than_the_gap_splits_events() -> None:
    b = builder(merge_gap_s=1.0)  # 2 hops
    leak = {30: 9.0}
    evs = run(b, [scored(0, leak), scored(1), scored(2), scored(3, leak), scored(4), scored(5)])
    assert len(evs) == 2


def test_long_events_are_emitted_as_segments() -> None:
    b = builder(max_open_s=2.0)  # 4 hops
    leak = {30: 9.0}
    evs = run(b, [scored(k, leak) for k in range(11)])
    assert len(evs) == 2
    assert evs[1].start_ns == evs[0].end_ns
    assert len({e.id for e in evs}) == 2
    evs += b.flush()
    assert len(evs) == 3 and all(e.n_windows >= 1 for e in evs)


def test_model_change_closes_events() -> None:
    b = builder()
    leak = {30: 9.0}
    evs = run(b, [scored(0, leak), scored(1, leak, model=("m2", "h2"))])
    assert [e.model_version for e in evs] == ["m1"]
    assert [e.model_version for e in b.flush()] == ["m2"]


def test_nonfinite_channels_are_fault_events_even_below_threshold() -> None:
    b = builder(merge_gap_s=1.0)
    (e,) = run(b, [scored(0, nonfinite=[5]), scored(1), scored(2)])
    assert (e.ch_start, e.ch_end, e.class_hint) == (1005, 1005, "fault")


def test_expire_closes_events_without_new_windows() -> None:
    b = builder()
    b.update(scored(0, {30: 9.0}))
    b._clock = lambda: 5 * 10**18  # much later, no window came
    assert len(b.expire()) == 1 and b.open == []


def test_flush_emits_nothing_when_quiet() -> None:
    b = builder()
    run(b, [scored(0), scored(1)])
    assert b.flush() == []


@pytest.mark.parametrize(("ratio", "level"),
                         [(1.1, "low"), (2.0, "medium"), (4.0, "high"), (9.0, "critical")])
def test_severity(ratio: float, level: str) -> None:
    assert severity(ratio) == level


def _row(**delta: float) -> np.ndarray:
    r = np.zeros(DIM, np.float32)
    r[NAMES.index("log_kurtosis")] = 0.477  # Gaussian kurtosis 3
    for k, v in delta.items():
        if k in ("bands_low", "bands_mid", "bands_high"):
            # default bands: 1-10, 10-30, 30-80 | 80-150, 150-300 | 300-500, 500-800, 800-1000
            idx = {"bands_low": (0, 3), "bands_mid": (3, 5), "bands_high": (5, 8)}[k]
            for n in NAMES[idx[0]:idx[1]]:
                r[NAMES.index(n)] += v
        else:
            r[NAMES.index(k)] += v
    return r


REF = _row()


@pytest.mark.parametrize(
    ("row", "extent", "nonfinite", "hint"),
    [
        (_row(bands_mid=1.0, bands_high=0.8), 6, False, "leak"),  # 80-950 Hz hiss
        (_row(bands_low=1.0, bands_mid=1.0, bands_high=0.8), 6, False, "leak"),
        (_row(bands_high=1.0, log_kurtosis=0.6), 4, False, "sand"),
        (_row(bands_low=1.0, bands_mid=0.5), 64, False, "flow"),
        (_row(bands_low=1.0), 64, False, "flow"),
        (_row(log_rms=-3.0), 2, False, "fault"),
        (_row(), 2, True, "fault"),
        (_row(bands_low=0.1), 2, False, "unknown"),
    ],
)
def test_das_class_hints(row, extent, nonfinite, hint) -> None:
    assert class_hint("das", NAMES, row, REF, extent=extent, nonfinite=nonfinite,
                      group_size=8) == hint


def test_dts_cooling_is_a_leak() -> None:
    names = FeatureSpec(profile="dts", sample_rate_hz=1.0, window_s=10, hop_s=10,
                        bands_hz=()).names
    ref = np.array([0, 0, 0, 0.05, 0], np.float32)
    cool = np.array([-2.0, 0, -0.1, 0.05, -2.0], np.float32)
    warm = np.array([2.0, 0, 0.1, 0.05, 2.0], np.float32)
    flat = np.array([0, 0, 0, 0.0, 0], np.float32)
    kw = {"extent": 3, "nonfinite": False, "group_size": 8}
    assert class_hint("dts", names, cool, ref, **kw) == "leak"
    assert class_hint("dts", names, warm, ref, **kw) == "unknown"
    assert class_hint("dts", names, flat, ref, **kw) == "fault"


# -- merge gap in seconds: an anomaly whose flag comes and goes is one event ---------------

def test_merge_gap_is_seconds_converted_by_the_hop() -> None:
    assert EventConfig().merge_gap_s == 5.0
    assert EventConfig().merge_gap_hops(HOP) == 10  # 5 s of 0.5 s hops
    assert EventConfig(merge_gap_s=1.2).merge_gap_hops(HOP) == 2  # rounded down
    assert EventConfig(merge_gap_s=0).merge_gap_hops(HOP) == 2  # one quiet window at least
    assert EventConfig().merge_gap_hops(5_000_000_000) == 2  # dts: 5 s hops


def test_the_removed_merge_gap_windows_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="merge_gap_windows"):
        EventConfig(**{"merge_gap_windows": 1})


def test_periodic_flags_are_one_event_closed_at_most_the_gap_later() -> None:
    b = builder()  # merge_gap_s = 5 s = 10 hops
    slug = {30: 9.0, 31: 9.0}
    passes = {k for k in range(0, 30) if k % 6 in (0, 1)}  # a pass every 3 s, 1 s long
    out = []
    for k in range(60):
        evs = b.update(scored(k, slug if k in passes else None))
        out += [(k, e) for e in evs]
    ((k_close, e),) = out
    last = max(passes)
    assert e.n_windows == len(passes)
    assert e.start_ns == 0 * HOP + HOP and e.end_ns == last * HOP + 2 * HOP
    assert k_close == last + 10  # the window ending 5 s after the last flagged one


def test_anomalies_further_apart_than_the_gap_are_two_events() -> None:
    b = builder(merge_gap_s=3.0)  # 6 hops
    leak = {30: 9.0}
    ws = [scored(k, leak if k in (0, 1, 2, 10, 11) else None) for k in range(20)]
    evs = run(b, ws)
    assert [e.n_windows for e in evs] == [3, 2]
    assert len({e.id for e in evs}) == 2
    # flags back within the gap continue the event
    b = builder(merge_gap_s=3.0)
    evs = run(b, [scored(k, leak if k in (0, 1, 2, 7, 8) else None) for k in range(20)])
    assert [e.n_windows for e in evs] == [5]


def test_distinct_channels_stay_separate_while_an_event_cools() -> None:
    b = builder()
    ws = [scored(0, {5: 9.0}), scored(1), scored(2, {50: 9.0}), scored(3, {5: 9.0})]
    evs = run(b, ws + [scored(k) for k in range(4, 20)])
    assert sorted((e.ch_start, e.n_windows) for e in evs) == [(1005, 2), (1050, 1)]


def test_announced_at_open_and_not_resent_while_only_cooling() -> None:
    now = [10**18]
    b = EventBuilder(site="s", gateway="g", stream=STREAM,
                     cfg=EventConfig(min_windows=1, on_delay_s=0.0),
                     hop_ns=HOP,
                     names=NAMES, clock_ns=lambda: now[0], announce_s=2.0)
    b.reference = np.zeros(DIM, np.float32)
    sent: list[tuple[int, Event]] = []
    for k in range(30):
        now[0] += HOP  # wall clock in step with the stream
        sent += [(k, e) for e in b.update(scored(k, {30: 9.0} if k in (3, 4, 8) else None))]
    # at once when it opens; re-sent 2 s later since it grew (k=4) and again 2 s after that
    # (k=8); not while it only cools; the final emission 5 s after the last flag
    assert [k for k, _ in sent] == [3, 7, 11, 18]
    assert len({e.id for _, e in sent}) == 1
    assert sent[0][1].n_windows == 1 and sent[-1][1].n_windows == 3
    assert sent[0][1].start_ns == sent[-1][1].start_ns == 3 * HOP + HOP


def test_an_announced_event_that_merges_is_withdrawn_into_the_older_one() -> None:
    now = [10**18]
    b = EventBuilder(site="s", gateway="g", stream=STREAM,
                     cfg=EventConfig(merge_gap_channels=2, min_windows=1,
                                     on_delay_s=0.0),
                     hop_ns=HOP, names=NAMES, clock_ns=lambda: now[0], announce_s=2.0)
    b.reference = np.zeros(DIM, np.float32)
    sent: list[Event] = []
    hot = [{10: 9.0}, {10: 9.0, 30: 9.0}, {10: 9.0, 30: 9.0},
           dict.fromkeys(range(10, 31), 9.0)]  # two anomalies, then one spanning both
    for k in range(30):
        now[0] += HOP
        sent += b.update(scored(k, hot[k] if k < len(hot) else None))
    older, newer = sent[0], sent[1]  # both announced when they opened
    assert (older.ch_start, newer.ch_start) == (1010, 1030) and older.id != newer.id
    withdrawn = [e for e in sent if e.merged_into]
    assert [(e.id, e.merged_into) for e in withdrawn] == [(newer.id, older.id)]
    final = sent[-1]
    assert final.id == older.id and (final.ch_start, final.ch_end) == (1010, 1030)
    assert not final.merged_into
    assert Event.from_json(withdrawn[0].to_json()) == withdrawn[0]  # on the wire


def test_events_carry_the_classifier_kind_and_confidence() -> None:
    b = builder(merge_gap_s=1.0)
    (fault,) = run(b, [scored(0, {13: 9.0}, nonfinite=[13]), scored(1), scored(2), scored(3)])
    assert fault.kind == fault.class_hint == "fault" and fault.kind_confidence == 1.0
    (plain,) = run(b, [scored(10, {40: 9.0}), scored(11), scored(12), scored(13)])
    assert plain.kind == plain.class_hint and 0.0 < plain.kind_confidence <= 1.0
    assert "kind" in plain.to_dict() and "merged_into" not in plain.to_dict()


def test_optional_fields_are_checked() -> None:
    (e,) = run(builder(merge_gap_s=1.0), [scored(0, {13: 9.0}), scored(1), scored(2)] +
               [scored(3)])
    d = e.to_dict()
    for bad in ({"kind": "lek"}, {"kind_confidence": 1.5}, {"kind_confidence": float("nan")},
                {"merged_into": e.id}):
        with pytest.raises(ValueError):
            Event.from_dict({**d, **bad})
    old = {k: v for k, v in d.items() if k not in ("kind", "kind_confidence", "merged_into")}
    assert Event.from_dict(old).kind == ""  # events from older agents still parse


def test_a_lone_flagged_window_is_not_an_event_by_default() -> None:
    b = builder(min_windows=2, merge_gap_s=1.0)  # on_delay_s=0: min_windows alone
    assert EventConfig().min_windows == 2
    blip = {40: 9.0}
    assert run(b, [scored(0), scored(1, blip), scored(2), scored(3), scored(4), scored(5)]) == []
    assert b.flush() == [] and b.open == []
    # two flagged windows (not even consecutive, within the merge gap) are one event
    (e,) = [e for e in run(b, [scored(6, blip), scored(7), scored(8, blip), scored(9),
                                scored(10), scored(11)]) + b.flush()]
    assert e.n_windows == 2 and (e.ch_start, e.ch_end) == (1040, 1040)


def _default_builder(**cfg) -> tuple[EventBuilder, list[int]]:
    """The gateway's default EventConfig (on-delay and confirm ratio), a stream clock."""
    now = [0]
    b = EventBuilder(site="s", gateway="g", stream=STREAM, cfg=EventConfig(**cfg), hop_ns=HOP,
                     names=NAMES, clock_ns=lambda: now[0], announce_s=2.0)
    b.reference = np.zeros(DIM, np.float32)
    return b, now


def _feed(b: EventBuilder, now: list[int], windows: list[Scored]) -> list[tuple[int, Event]]:
    out = []
    for s in windows:
        now[0] = s.window.t_end_ns
        out += [(s.window.index, e) for e in b.update(s)]
    return out


def test_the_default_on_delay_needs_five_flagged_windows_at_a_half_second_hop() -> None:
    assert EventConfig().confirm_windows(HOP) == 5
    near = {40: 8.0}  # 1.6 x the threshold (5.0): below the confirm ratio
    b, now = _default_builder()
    # four flagged windows (2 s of one group at its threshold) close without an event
    assert _feed(b, now, [scored(k, near if k < 4 else None) for k in range(20)]) == []
    assert b.flush() == [] and b.open == []
    # five are one event, announced in the fifth window, with the first window's onset
    sent = _feed(b, now, [scored(k, near if k < 25 else None) for k in range(20, 40)])
    assert sent[0][0] == 24 and len({e.id for _, e in sent}) == 1
    assert sent[-1][1].n_windows == 5 and sent[-1][1].start_ns == 20 * HOP + HOP


def test_a_window_far_above_its_threshold_raises_its_event_at_once() -> None:
    b, now = _default_builder()
    sent = _feed(b, now, [scored(0, {40: 15.0})] + [scored(k) for k in range(1, 20)])
    assert [k for k, _ in sent][:1] == [0]  # 3 x the threshold: announced in its window
    assert sent[-1][1].n_windows == 1 and sent[-1][1].peak_score == 15.0
    b, now = _default_builder()
    assert _feed(b, now, [scored(0, {40: 14.9})] + [scored(k) for k in range(1, 20)]) == []
    assert EventConfig(confirm_ratio=0).confirm_ratio is None  # 0 (TOML) = off
    b, now = _default_builder(confirm_ratio=None)  # off: the on-delay alone
    assert _feed(b, now, [scored(0, {40: 500.0})] + [scored(k) for k in range(1, 20)]) == []


def test_the_on_delay_is_stream_time_and_never_below_min_windows() -> None:
    assert EventConfig().confirm_windows(1_000_000_000) == 3  # an mv stream at 1 Hz
    assert EventConfig().confirm_windows(36_000_000_000) == 2  # slower: min_windows
    assert EventConfig(on_delay_s=0.0).confirm_windows(HOP) == 2
    assert EventConfig(on_delay_s=1.0, min_windows=6).confirm_windows(HOP) == 6
    b, now = _default_builder(on_delay_s=0.0, confirm_ratio=None)  # the previous default
    sent = _feed(b, now, [scored(k, {40: 8.0} if k < 2 else None) for k in range(20)])
    assert [k for k, _ in sent][:1] == [1] and sent[-1][1].n_windows == 2
