"""The event stage: flagged channels of consecutive windows -> `edge_agent.events.Event`.

Per window, a channel is *flagged* when its group is above threshold and the channel's own
score is above that threshold (so the event's channel range is channel-accurate, not
group-accurate), or when it carried non-finite samples. Flagged channels within
``merge_gap_channels`` of each other form a cluster; a cluster joins every open event it
touches (within the same channel gap), otherwise it opens a new one.

An open event *cools* for ``merge_gap_s`` of stream time after its last flagged window
(`EventConfig.merge_gap_hops`: whole hops of the stream, never less than one quiet window):
flags that come back at its channels meanwhile continue it, so an anomaly whose flag comes
and goes (a slug passing every few seconds, a pulsing leak) is one event, not one per pass.
It closes at the first window ending that long after its last flagged window (its
``end_ns`` stays the end of that flagged window), when no window has arrived for that long in
wall time, when the model changes (every event names the one model that scored it) and at
shutdown. Anomalies at channels farther apart than ``merge_gap_channels``, or further apart in
time than the gap, stay separate events. An event open longer than ``max_open_s`` of stream
time is emitted as a segment and continues as a new event from the segment's end.

The cloud hears of an event within a window of its onset: with ``announce_s`` (config
``events.announce_s``) an open event is announced as soon as it opens and re-sent at most that
often while it changes (not while it only cools), under the id it got when it opened (merges
keep the oldest id), so the final emission replaces the announcements. An announced event
that merges into an older one is withdrawn at once: re-sent under its own id with
``merged_into`` naming the event it joined, so the cloud shows one event per anomaly.

An event is *raised* (announced, emitted) only after the alarm on-delay
(`EventConfig.confirm_windows`: flags in ``on_delay_s / hop + 1`` windows, 5 on das, never
fewer than ``min_windows``), or at once when a window's peak is ``confirm_ratio`` times its
threshold: a noise excursion of one group at its threshold lasts a window or two, an anomaly
lasts seconds or scores far above it. An event that closes before it is raised is dropped.
The onset stays the first flagged window's.

The onset (``start_ns``) is the start of the newest hop of the first flagged window: the
window before it was quiet, so most of the change lies in that hop.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge_agent.config import EventConfig, StreamConfig
from edge_agent.events import Event, event_id
from edge_agent.types import Scored

_RISE = 0.3  # decades of band power (x2) that count as a rise


@dataclass
class _Open:
    start_ns: int
    last_end_ns: int
    first_end_ns: int
    ch_lo: int
    ch_hi: int
    peak: float
    threshold: float
    score_sum: float
    score_n: int
    windows: set[int]
    row_sum: np.ndarray
    nonfinite: bool
    model: tuple[str, str]
    touched_wall_ns: int
    last_index: int = field(default=-1)
    id: str = ""
    announced_wall_ns: int = 0
    announced_n: int = 0  # score_n at the last announcement
    confirmed: bool = False  # a continued segment of an event that was raised


class EventBuilder:
    """Merge flagged channels over channels and windows into events.

    Parameters
    ----------
    site, gateway : str
    stream : StreamConfig
        Channel geometry (`StreamConfig.distance_m`), kind, group size.
    cfg : EventConfig
    hop_ns : int
        Window hop in ns.
    names : tuple of str
        `FeatureSpec.names`, for the class hint.
    clock_ns : callable
        Wall clock for ``detected_ns`` and the no-data timeout.
    """

    def __init__(self, *, site: str, gateway: str, stream: StreamConfig, cfg: EventConfig,
                 hop_ns: int, names: tuple[str, ...],
                 clock_ns: Callable[[], int] = time.time_ns,
                 announce_s: float | None = None) -> None:
        self.site, self.gateway, self.stream, self.cfg = site, gateway, stream, cfg
        self.hop_ns = hop_ns
        self.names = names
        self._clock = clock_ns
        self.open: list[_Open] = []
        self.reference: np.ndarray | None = None  # median of recent normal rows
        # a window ending this long after an event's last flagged one closes it (half a hop
        # of slack for timestamp jitter)
        self._quiet_ns = cfg.merge_gap_hops(hop_ns) * hop_ns - hop_ns // 2
        self._announce_ns = None if announce_s is None else int(announce_s * 1e9)
        self._confirm_n = cfg.confirm_windows(hop_ns)  # the alarm on-delay, in windows
        self._withdrawn: list[Event] = []  # announced events merged into another, to send

    def update(self, s: Scored) -> list[Event]:
        """Consume one scored window; return the events it closes or announces."""
        w = s.window
        model = (s.model_version, s.model_hash)
        out = self._emit_all([e for e in self.open if e.model != model])
        self.open = [e for e in self.open if e.model == model]
        for lo, hi, chans in self._clusters(s):
            self._join(s, lo, hi, chans, model)
        out += self._withdrawn
        self._withdrawn = []
        now = self._clock()
        keep = []
        for e in self.open:
            if e.last_index != w.index and w.t_end_ns - e.last_end_ns >= self._quiet_ns:
                out += self._emit_all([e])
            elif w.t_end_ns - e.first_end_ns >= self.cfg.max_open_s * 1e9:
                out += self._emit_all([e])
                keep.append(self._continue(e, now))
            else:
                keep.append(e)
        self.open = keep
        every = self._announce_ns
        if every is not None:
            for e in keep:
                if e.score_n > 0 and self._raised(e) and (e.announced_wall_ns == 0 or (
                        e.score_n != e.announced_n and now - e.announced_wall_ns >= every)):
                    e.announced_wall_ns, e.announced_n = now, e.score_n
                    out.append(self._emit(e))
        return out

    def expire(self) -> list[Event]:
        """Close events that saw no window for the quiet period of wall time."""
        now = self._clock()
        done = [e for e in self.open if now - e.touched_wall_ns >= self._quiet_ns + self.hop_ns]
        self.open = [e for e in self.open if e not in done]
        return self._emit_all(done)

    def flush(self) -> list[Event]:
        """Close every open event (shutdown)."""
        out = self._emit_all(self.open)
        self.open = []
        return out

    def _clusters(self, s: Scored) -> list[tuple[int, int, np.ndarray]]:
        gs = self.stream.group_size
        group = np.arange(s.scores.shape[0]) // gs
        thr = s.thresholds[group]
        flag = s.flagged[group] & (s.scores > thr)
        if s.window.nonfinite is not None:
            flag |= s.window.nonfinite
        idx = np.flatnonzero(flag)
        if idx.size == 0:
            return []
        breaks = np.flatnonzero(np.diff(idx) > self.cfg.merge_gap_channels + 1) + 1
        return [(int(c[0]), int(c[-1]), c) for c in np.split(idx, breaks)]

    def _join(self, s: Scored, lo: int, hi: int, chans: np.ndarray,
              model: tuple[str, str]) -> None:
        w = s.window
        fc = w.first_channel
        sc = s.scores[chans]
        ipk = int(np.argmax(sc))
        thr = float(s.thresholds[chans[ipk] // self.stream.group_size])
        nonfinite = bool(w.nonfinite is not None and w.nonfinite[chans].any())
        new = _Open(
            start_ns=max(w.t_start_ns, w.t_end_ns - self.hop_ns), last_end_ns=w.t_end_ns,
            first_end_ns=w.t_end_ns, ch_lo=fc + lo, ch_hi=fc + hi, peak=float(sc[ipk]),
            threshold=thr if np.isfinite(thr) else 0.0, score_sum=float(sc.sum()),
            score_n=int(sc.size), windows={w.index},
            row_sum=s.rows[chans].sum(axis=0, dtype=np.float64),
            nonfinite=nonfinite, model=model, touched_wall_ns=self._clock(), last_index=w.index,
        )
        new.id = event_id(self.site, self.gateway, self.stream.kind, new.start_ns, new.ch_lo)
        gap = self.cfg.merge_gap_channels + 1
        touching = [e for e in self.open
                    if new.ch_lo <= e.ch_hi + gap and new.ch_hi >= e.ch_lo - gap]
        for e in touching:
            self.open.remove(e)
            new = _merge(e, new)
        self.open.append(new)
        self._withdrawn += [dataclasses.replace(self._emit(e), merged_into=new.id)
                            for e in touching if e.announced_wall_ns and e.id != new.id]

    def _raised(self, e: _Open) -> bool:
        """An open event is raised (announced, emitted) once it holds flags in
        `EventConfig.confirm_windows` windows (the alarm on-delay), or at once when its peak
        is ``confirm_ratio`` x its threshold or more: a noise excursion at a group's
        threshold lasts a window or two, an anomaly seconds or far above it."""
        if e.confirmed or len(e.windows) >= self._confirm_n:
            return True
        r = self.cfg.confirm_ratio
        return r is not None and e.threshold > 0 and e.peak >= r * e.threshold

    def _continue(self, e: _Open, now: int) -> _Open:
        return _Open(
            start_ns=e.last_end_ns, last_end_ns=e.last_end_ns, first_end_ns=e.last_end_ns,
            ch_lo=e.ch_lo, ch_hi=e.ch_hi, peak=0.0, threshold=e.threshold, score_sum=0.0,
            score_n=0, windows=set(), row_sum=np.zeros_like(e.row_sum), nonfinite=False,
            model=e.model, touched_wall_ns=now, last_index=e.last_index, confirmed=True,
            id=event_id(self.site, self.gateway, self.stream.kind, e.last_end_ns, e.ch_lo),
        )

    def _emit_all(self, events: list[_Open]) -> list[Event]:
        # a continued segment that saw no flag after the split has nothing to report; an
        # event that was never raised (`_raised`) is dropped
        return [self._emit(e) for e in events if e.score_n > 0 and self._raised(e)]

    def _emit(self, e: _Open) -> Event:
        from edge_agent.classify import classify  # it builds on class_hint below

        st = self.stream
        mean_row = e.row_sum / max(e.score_n, 1)
        ratio = e.peak / e.threshold if e.threshold > 0 else 2.0
        kind, confidence = classify(st.kind, self.names, mean_row, self.reference,
                                    extent=e.ch_hi - e.ch_lo + 1, nonfinite=e.nonfinite,
                                    group_size=st.group_size)
        return Event(
            id=e.id or event_id(self.site, self.gateway, st.kind, e.start_ns, e.ch_lo),
            site=self.site, gateway=self.gateway, stream=st.kind,
            start_ns=e.start_ns, end_ns=max(e.last_end_ns, e.start_ns),
            ch_start=e.ch_lo, ch_end=e.ch_hi,
            dist_start_m=st.distance_m(e.ch_lo), dist_end_m=st.distance_m(e.ch_hi),
            peak_score=e.peak, mean_score=e.score_sum / max(e.score_n, 1),
            threshold=e.threshold, severity=severity(ratio),
            class_hint=kind, kind=kind, kind_confidence=confidence,
            n_windows=max(len(e.windows), 1), model_version=e.model[0],
            model_hash=e.model[1] or "none", detected_ns=self._clock(),
        )


def _merge(a: _Open, b: _Open) -> _Open:
    """Two open events become one (b is the newer)."""
    peak_from_b = b.peak >= a.peak
    first = a if (a.start_ns, a.ch_lo) <= (b.start_ns, b.ch_lo) else b
    return _Open(
        start_ns=min(a.start_ns, b.start_ns), last_end_ns=max(a.last_end_ns, b.last_end_ns),
        first_end_ns=min(a.first_end_ns, b.first_end_ns), ch_lo=min(a.ch_lo, b.ch_lo),
        ch_hi=max(a.ch_hi, b.ch_hi), peak=max(a.peak, b.peak),
        threshold=b.threshold if peak_from_b else a.threshold,
        score_sum=a.score_sum + b.score_sum, score_n=a.score_n + b.score_n,
        windows=a.windows | b.windows,
        row_sum=a.row_sum + b.row_sum, nonfinite=a.nonfinite or b.nonfinite, model=b.model,
        touched_wall_ns=max(a.touched_wall_ns, b.touched_wall_ns),
        last_index=max(a.last_index, b.last_index),
        id=first.id or a.id or b.id,
        announced_wall_ns=first.announced_wall_ns, announced_n=first.announced_n,
        confirmed=a.confirmed or b.confirmed,
    )


def severity(ratio: float) -> str:
    """Severity from peak score / threshold: <1.5 low, <2.5 medium, <5 high, else critical."""
    if ratio < 1.5:
        return "low"
    if ratio < 2.5:
        return "medium"
    return "high" if ratio < 5 else "critical"


def _band_rises(names: tuple[str, ...], d: dict[str, float]) -> dict[str, float]:
    """Mean rise (decades) of the band powers below 80 Hz, 80-300 Hz and above 300 Hz."""
    groups: dict[str, list[float]] = {"low": [], "mid": [], "high": [], "all": []}
    for n in names:
        if not n.startswith("band_"):
            continue
        lo, hi = (float(v) for v in n[5:].split("_"))
        centre = (lo + hi) / 2
        key = "low" if centre < 80 else "mid" if centre < 300 else "high"
        groups[key].append(d[n])
        groups["all"].append(d[n])
    out = {k: float(np.mean(v)) if v else 0.0 for k, v in groups.items()}
    out["broad"] = float(np.mean(np.array(groups["all"]) > _RISE)) if groups["all"] else 0.0
    return out


def class_hint(kind: str, names: tuple[str, ...], row: np.ndarray, reference: np.ndarray | None,
               *, extent: int, nonfinite: bool, group_size: int) -> str:
    """A guess at the cause from the mean feature row of the flagged channels.

    DAS, with band powers relative to the median normal row (``reference``) grouped as low
    (< 80 Hz), mid (80-300 Hz) and high (> 300 Hz):

    ``fault``  non-finite samples, a dead/flat channel (RMS down 10x) or clipping
               (kurtosis < 1.26);
    ``sand``   impulsive (kurtosis up 2x) with the high band rising most;
    ``flow``   low-frequency energy over many channels (>= 4 groups), the high band not;
    ``leak``   broadband, not impulsive: the high band up (x2), the mid band up (x1.4), at
               least half of all bands up;
    ``unknown`` anything else.

    DTS: ``fault`` = non-finite or a flat channel; ``leak`` = cooling against the baseline.
    """
    if nonfinite:
        return "fault"
    r = dict(zip(names, row.tolist(), strict=False))
    d = dict(zip(names, (row - reference).tolist(), strict=False)) if reference is not None \
        else dict.fromkeys(names, 0.0)
    if kind == "dts":
        if reference is not None and r.get("std", 1.0) < 1e-6 < reference[names.index("std")]:
            return "fault"
        return "leak" if d.get("baseline_dev", 0.0) < -0.1 else "unknown"
    if d.get("log_rms", 0.0) < -1.0 or r.get("log_kurtosis", 1.0) < 0.1:
        return "fault"
    b = _band_rises(names, d)
    many = extent >= 4 * group_size
    if d.get("log_kurtosis", 0.0) > _RISE and b["high"] > _RISE and b["high"] > b["mid"]:
        return "sand"
    if b["low"] > _RISE and b["high"] < 0.5 * b["low"] and many:
        return "flow"
    if b["high"] > _RISE and b["mid"] > _RISE / 2 and b["broad"] >= 0.5:
        return "leak"
    return "flow" if many and b["low"] > _RISE else "unknown"
