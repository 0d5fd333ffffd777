"""False alarms feed threshold calibration (`edge_agent.fa_calibration`): a labelled false
alarm's groups flag only above its pattern's level; other groups and louder anomalies still
flag."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_agent import wire
from edge_agent.fa_calibration import MARGIN, FalseAlarmFloor
from edge_agent.labels import Label, LabelBook
from edge_agent.types import RawMessage
from tests.unit.test_edge_pipeline import CH, FRAME, RATE, T0, make

DIM = 4


class SumDetector:
    """Score = the row's sum (times ``k``: another model's units)."""

    def __init__(self, k: float = 1.0, version: str = "m1") -> None:
        self.k, self.version = k, version

    def score(self, rows: np.ndarray) -> np.ndarray:
        return self.k * np.asarray(rows, np.float64).sum(1)


def _label(lid: str, ch: tuple[int, int], label: str = "false_alarm") -> Label:
    return Label(id=lid, event_id=lid, site="s", gateway="g", stream="das", start_ns=0,
                 end_ns=10**12, ch_start=ch[0], ch_end=ch[1], label=label)


def _journal(book: LabelBook, channels: list[int], level: float) -> None:
    rows = np.full((len(channels), DIM), level / DIM, np.float32)
    book.record_flagged("das", 100, 200, np.asarray(channels), rows)


def test_no_false_alarm_label_no_floor(tmp_path: Path) -> None:
    with LabelBook(tmp_path / "l.db") as book:
        _journal(book, [8, 9], 5.0)
        book.add(_label("a", (8, 15), "anomaly"))  # a true anomaly never raises a floor
        fa = FalseAlarmFloor(book, "das", dim=DIM, first_channel=0, channels=32, group_size=8)
        assert fa.floor(SumDetector(), "m1") is None
        flagged = np.array([True, True, False, False])
        assert fa.mute(np.full(4, 9.0), flagged, SumDetector(), "m1") is flagged


def test_the_floor_covers_the_labelled_groups_only_and_follows_labels_and_models(
        tmp_path: Path) -> None:
    with LabelBook(tmp_path / "l.db") as book:
        _journal(book, [8, 9, 10], 5.0)
        _journal(book, [20], 3.0)  # flagged, never labelled
        fa = FalseAlarmFloor(book, "das", dim=DIM, first_channel=0, channels=32, group_size=8)
        book.add(_label("fa", (8, 15)))
        floor = fa.floor(SumDetector(), "m1")
        assert floor is not None
        np.testing.assert_allclose(floor, [0, 5.0 * MARGIN, 0, 0], rtol=1e-6)
        scores = np.array([9.0, 5.0 * MARGIN - 0.1, 9.0, 9.0])
        assert fa.mute(scores, np.ones(4, bool), SumDetector(), "m1").tolist() == [
            True, False, True, True]
        loud = np.array([0.0, 5.0 * MARGIN + 0.1, 0.0, 0.0])  # louder than the pattern
        assert fa.mute(loud, np.ones(4, bool), SumDetector(), "m1")[1]

        two = fa.floor(SumDetector(2.0, "m2"), "m2")  # a new model: its own units
        assert two is not None and two[1] == floor[1] * 2
        book.add(_label("fa2", (16, 23)))  # a new label: recomputed
        three = fa.floor(SumDetector(2.0, "m2"), "m2")
        assert three is not None and three[2] == 2 * 3.0 * MARGIN


def test_mutes_are_counted_per_window_and_group(tmp_path: Path) -> None:
    """``active_groups``: groups with a floor now, brought up to date on any window (flagged
    or not); ``muted_windows``/``muted_groups``: only flags a floor removed."""
    with LabelBook(tmp_path / "l.db") as book:
        _journal(book, [8, 9], 5.0)
        _journal(book, [16], 3.0)
        fa = FalseAlarmFloor(book, "das", dim=DIM, first_channel=0, channels=32, group_size=8)
        det, quiet, every = SumDetector(), np.zeros(4, bool), np.ones(4, bool)
        fa.mute(np.full(4, 9.0), every, det, "m1")  # nothing labelled: nothing muted
        assert (fa.active_groups, fa.muted_windows, fa.muted_groups) == (0, 0, 0)
        book.add(_label("fa", (8, 15)))
        fa.mute(np.zeros(4), quiet, det, "m1")  # no flag, yet the new label's floor is in force
        assert (fa.active_groups, fa.muted_windows, fa.muted_groups) == (1, 0, 0)
        low = np.array([9.0, 1.0, 1.0, 9.0])  # group 1 under its floor; 2 has none
        assert fa.mute(low, every, det, "m1").tolist() == [True, False, True, True]
        assert (fa.muted_windows, fa.muted_groups) == (1, 1)
        fa.mute(np.full(4, 99.0), every, det, "m1")  # louder than the pattern: kept, not counted
        assert (fa.muted_windows, fa.muted_groups) == (1, 1)
        book.add(_label("fa2", (16, 23)))
        out = fa.mute(np.array([9.0, 1.0, 1.0, 9.0]), every, det, "m1")
        assert out.tolist() == [True, False, False, True] and fa.active_groups == 2
        assert (fa.muted_windows, fa.muted_groups) == (2, 3)
        fa.mute(low, np.array([False, True, False, False]), det, "m1")
        assert (fa.muted_windows, fa.muted_groups) == (3, 4)


def test_rows_of_another_feature_size_are_ignored(tmp_path: Path) -> None:
    with LabelBook(tmp_path / "l.db") as book:
        book.record_flagged("das", 100, 200, np.asarray([8]), np.ones((1, DIM + 1), np.float32))
        book.add(_label("fa", (8, 15)))
        fa = FalseAlarmFloor(book, "das", dim=DIM, first_channel=0, channels=32, group_size=8)
        assert fa.floor(SumDetector(), "m1") is None


def _frames(first: int, n: int, bursts: list[tuple[int, int, int, int, float]],
            seed: int) -> list[bytes]:
    """White noise frames from frame ``first``; bursts ``(ch_lo, ch_hi, f0, f1, gain)``."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(first, first + n):
        x = rng.normal(size=(FRAME, CH)).astype(np.float32)
        for lo, hi, f0, f1, gain in bursts:
            if f0 <= k < f1:
                x[:, lo:hi + 1] += gain * rng.normal(size=(FRAME, hi - lo + 1))
        out.append(wire.encode(wire.StreamKind.DAS, k, T0 + k * FRAME * 500_000, RATE, 0, x))
    return out


def _flagged_groups(p, frames: list[bytes]) -> set[int]:  # type: ignore[no-untyped-def]
    got: set[int] = set()
    orig = p.process

    def keep(w):  # type: ignore[no-untyped-def]
        s = orig(w)
        got.update(np.flatnonzero(s.flagged).tolist())
        return s

    p.process = keep
    for f in frames:
        p.handle(RawMessage("t", f, time.time_ns()))
    p.process = orig
    return got


def test_a_labelled_false_alarm_stops_flagging_in_the_pipeline(tmp_path: Path) -> None:
    book = LabelBook(tmp_path / "labels.db")
    p, _, _, metrics = make(label_book=book)
    stroke = (24, 31)  # group 3
    before = _flagged_groups(p, _frames(0, 320, [(*stroke, 300, 310, 4.0)], seed=1))
    assert 3 in before  # the pattern flags and is journaled
    snap = metrics.snapshot()
    assert (snap["fa_muted_windows"], snap["fa_muted_groups"], p.fa_mutes_active()) == (0, 0, 0)
    book.add(Label(id="fa", event_id="fa", site="s", gateway="g", stream="das", start_ns=T0,
                   end_ns=T0 + 320 * FRAME * 500_000, ch_start=24, ch_end=31,
                   label="false_alarm"))
    after = _flagged_groups(p, _frames(320, 60, [
        (*stroke, 330, 340, 4.0),  # the same pattern again: muted
        (48, 55, 350, 360, 4.0)], seed=2))  # the same on unlabelled channels: flags
    assert 3 not in after and 6 in after
    snap = metrics.snapshot()  # the agent's metrics count what the floor muted
    assert p.fa_mutes_active() == 1  # group 3 alone
    # one group has a floor: each muted window muted that one group
    assert snap["fa_muted_windows"] == snap["fa_muted_groups"] >= 1
    louder = _flagged_groups(p, _frames(380, 30, [(*stroke, 390, 400, 40.0)], seed=3))
    assert 3 in louder  # far louder than the labelled pattern: still an anomaly
    book.close()


def test_the_falling_edge_of_a_flag_stays_out_of_the_threshold_history() -> None:
    """After a group's last flagged window, `quarantine_windows` more windows of it are not
    learned (the quarantine drops the rising edge; this, the falling edge)."""
    p, *_ = make()
    learned: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    orig = p._threshold_for  # noqa: SLF001 - wrap the thresholds' learn

    def spy(model, det):  # type: ignore[no-untyped-def]
        thr = orig(model, det)
        if not getattr(thr, "_spied", False):
            base, classify = thr.learn, thr.classify
            thr.learn = lambda g, ex=None: (learned.append(ex.copy()), base(g, ex))[1]
            thr.classify = lambda g: (flags.append(classify(g)), flags[-1])[1]
            thr._spied = True
        return thr

    p._threshold_for = spy
    _flagged_groups(p, _frames(0, 420, [(24, 31, 300, 306, 6.0)], seed=4))
    q = p._thr_cfg.quarantine_windows  # noqa: SLF001
    flags = flags[len(flags) - len(learned):]  # learning starts once the detector is ready
    last = max(i for i, f in enumerate(flags) if f[3])
    assert all(learned[i][3] for i in range(last + 1, min(last + 1 + q, len(learned))))
    assert len(learned) > last + q and not learned[last + q + 1][3]  # then learned again
    # its neighbours too (an anomaly's fringe, below threshold next to it)
    assert all(learned[i][2] and learned[i][4] for i, f in enumerate(flags[:len(learned)])
               if f[3])
    assert all(learned[i][2] and learned[i][4]
               for i in range(last + 1, min(last + 1 + q, len(learned))))
    assert not any(learned[i][0] for i in range(last + 1, len(learned)))  # other groups
