"""One stream's stages wired in order: validate -> window -> features -> model -> threshold
-> events and summaries.

`StreamPipeline` runs on the processing thread only (no locks on the hot path), except
`StreamPipeline.recent_rows`, which the model worker reads. Between windows it lets the model
slot swap; it scores every channel's row of a window in one batch; it learns (detector,
thresholds, normal-row buffer) only from groups that are not flagged, not next to a flagged
group and free of non-finite samples.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_agent.config import EventConfig, StreamConfig, ThresholdConfig
from edge_agent.event_builder import EventBuilder
from edge_agent.events import Event
from edge_agent.fa_calibration import FalseAlarmFloor
from edge_agent.feature_stream import StreamingFeatures
from edge_agent.features import FeatureExtractor
from edge_agent.metrics import Metrics, RateLimitedLog
from edge_agent.model_health import ModelHealth
from edge_agent.smoothing import ScoreSmoother
from edge_agent.summary_accumulator import SummaryAccumulator
from edge_agent.thresholds import GroupThreshold, group_max
from edge_agent.types import RawMessage, Scored, Sink, Slot, Window
from edge_agent.validate import FrameValidator
from edge_agent.windowing import StreamBuffer

log = logging.getLogger(__name__)
_SCORE_CAP = 1e30


class StreamPipeline:
    """Validate, window, featurise, score, threshold and build events for one stream.

    Parameters
    ----------
    site, gateway : str
    stream : StreamConfig
    thresholds : ThresholdConfig
    events : EventConfig
    slot : Slot
        Holds the active detector (`edge_agent.hot_swap.ModelSlot`).
    sink : Sink
        Receives events and summaries (`edge_agent.uplink.Uplink`).
    metrics : Metrics
    summary_interval_s : float
    normal_buffer : object with ``append(rows)``, optional
        Receives a subsample of normal rows (`edge_agent.normal_buffer.NormalBuffer`).
    smoke_windows : int
        Windows of rows kept for the model slot's smoke test.
    learn_rows, normal_rows : int
        Normal rows per window given to the detector / the normal buffer.
    feature_threads : int
        Threads of the feature extractor (`edge_agent.features.FeatureExtractor`).
    clock_ns, monotonic : callable
        Wall clock (latency, event times) and monotonic clock (summary cadence).
    max_clock_skew_s : float or None
        Drop frames dated further ahead of ``gateway_clock_ns`` (`edge_agent.validate`);
        None = no check (offline scoring, tests).
    gateway_clock_ns : callable
        The gateway's clock for that check (`edge_agent.clock.wall_ns` in the agent).
    """

    def __init__(self, *, site: str, gateway: str, stream: StreamConfig,
                 thresholds: ThresholdConfig, events: EventConfig, slot: Slot, sink: Sink,
                 metrics: Metrics, summary_interval_s: float = 1.0, normal_buffer=None,
                 smoke_windows: int = 8, learn_rows: int = 256, normal_rows: int = 16,
                 seed: int = 0, feature_threads: int = 1,
                 clock_ns: Callable[[], int] = time.time_ns,
                 monotonic: Callable[[], float] = time.monotonic,
                 max_clock_skew_s: float | None = None,
                 gateway_clock_ns: Callable[[], int] = time.time_ns,
                 label_book: Any = None) -> None:
        spec = stream.feature_spec()
        if spec.profile == "mv":  # one model over all columns: one score, one group
            stream = stream.model_copy(update={"group_size": stream.channels})
        self.stream, self.slot, self.sink, self.metrics = stream, slot, sink, metrics
        self.validator = FrameValidator(stream, metrics, RateLimitedLog(log),
                                        max_clock_skew_s=max_clock_skew_s,
                                        clock_ns=gateway_clock_ns)
        self.buffer = StreamBuffer(stream.kind, stream.channels, stream.first_channel,
                                   stream.sample_rate_hz, window_samples=spec.window_samples,
                                   hop_samples=spec.hop_samples)
        self.extractor = FeatureExtractor(spec, threads=feature_threads)
        self.features = StreamingFeatures(self.extractor)
        self.n_groups = -(-stream.channels // stream.group_size)
        self._thr_cfg = thresholds.for_hop(spec.hop_s, spec.profile)  # the knob, per window
        self._thresholds: dict[tuple[str, str], GroupThreshold] = {}
        self._smoothers: dict[tuple[str, str], ScoreSmoother] = {}  # mv: one per model
        self.events = EventBuilder(site=site, gateway=gateway, stream=stream, cfg=events,
                                   hop_ns=round(spec.hop_s * 1e9), names=spec.names,
                                   clock_ns=clock_ns, announce_s=events.announce_s)
        self.summaries = SummaryAccumulator(site, gateway, stream)
        self.model_health = ModelHealth()  # drift figures for the health heartbeat
        self.normal_buffer = normal_buffer
        self.label_book = label_book  # `edge_agent.labels.LabelBook`: journal and exclusions
        self._fa_floor = None if label_book is None or spec.profile == "mv" else \
            FalseAlarmFloor(label_book, stream.kind, dim=spec.dim,
                            first_channel=stream.first_channel, channels=stream.channels,
                            group_size=stream.group_size)  # false alarms calibrate
        self._energy_col = spec.names.index("log_rms") if spec.profile == "das" else None
        self._starts = np.arange(0, stream.channels, stream.group_size)
        # windows each group stays out of the threshold history after its last flag: the
        # falling edge of an event (the quarantine drops its rising edge)
        self._cooldown = np.zeros(self.n_groups, np.int64)
        self._sizes = np.diff(np.append(self._starts, stream.channels))
        self._learn_rows, self._normal_rows = learn_rows, normal_rows
        self._rng = np.random.default_rng(seed)
        self._recent: deque[np.ndarray] = deque(maxlen=max(1, smoke_windows))
        self._recent_lock = threading.Lock()
        self._normal_pending: list[np.ndarray] = []
        self._normal_origin: list[tuple[int, np.ndarray]] = []
        self._clock_ns, self._monotonic = clock_ns, monotonic
        self._summary_every = summary_interval_s
        self._next_summary = monotonic() + summary_interval_s

    # -- stages ---------------------------------------------------------------------------
    def handle(self, msg: RawMessage) -> int:
        """Validate one message, buffer it, process the windows it completes; return how many."""
        acc = self.validator.accept(msg.payload)
        if acc is None:
            return 0
        f = acc.frame
        expected = self.buffer.expected_t0_ns()
        if acc.reset or (expected is not None
                         and abs(f.t0_ns - expected) > 2e9 / self.stream.sample_rate_hz):
            if not acc.reset:
                self.metrics.add("time_jumps")
            if self.buffer.buffered:
                self.metrics.add("resets")
            self.buffer.reset()
            for sm in self._smoothers.values():
                sm.reset()  # a gap: the average starts again
        self.metrics.add("frames")
        self.metrics.add("samples", f.raw.size)
        rows = self.buffer.reserve(f.n_samples)  # the frame's samples go straight there
        nonfinite = self.validator.values_into(f, rows)
        windows = self.buffer.commit(f.n_samples, f.t0_ns, msg.recv_ns, nonfinite)
        for w in windows:
            self.process(w)
        return len(windows)

    def process(self, w: Window) -> Scored:
        """Features, model, threshold, events, learning and summary for one window."""
        self.slot.apply_pending()
        det = self.slot.active
        model = (det.version, det.package_hash)
        thr = self._threshold_for(model, det)
        rows = self.features.rows(w)
        t0 = time.perf_counter()
        scores, contrib = self._score(det, rows)
        self.slot.report_latency((time.perf_counter() - t0) * 1e3)
        self.model_health.observe(det, rows, scores,
                                  fallback=bool(getattr(self.slot, "fallback", False)))
        if rows.shape[0] != w.n_channels:  # mv: the window's one row stands for every column
            rows = np.broadcast_to(rows, (w.n_channels, rows.shape[1]))
            scores = np.repeat(scores, w.n_channels)
        gscores = group_max(scores, self.stream.group_size)
        flagged = thr.classify(gscores)
        if self._fa_floor is not None:
            flagged = self._mute_false_alarms(self._fa_floor, gscores, flagged, det, model)
        s = Scored(w, rows, scores, gscores, thr.thresholds.copy(), flagged, *model, contrib)
        self._record_latency(w)
        if self.label_book is not None and rows.shape[0] == scores.shape[0] and flagged.any():
            self._journal(s)
        self._send(self.events.update(s))
        self._learn(s, det, thr)
        self.summaries.add(s, self._energy(w, rows), thr.reported())
        self.metrics.add("windows")
        self.metrics.add("samples_scored", self.buffer.hop * w.n_channels)
        return s

    def _mute_false_alarms(self, fa: FalseAlarmFloor, gscores: np.ndarray,
                           flagged: np.ndarray, det: Any, model: Any) -> np.ndarray:
        """`FalseAlarmFloor.mute`, and what it muted in the agent's metrics
        (``fa_muted_windows``, ``fa_muted_groups``)."""
        before = fa.muted_groups
        kept = fa.mute(gscores, flagged, det, model)
        if fa.muted_groups != before:
            self.metrics.add("fa_muted_windows")
            self.metrics.add("fa_muted_groups", fa.muted_groups - before)
        return kept

    def fa_mutes_active(self) -> int:
        """Channel groups of this stream a labelled false alarm mutes now (its floor)."""
        return 0 if self._fa_floor is None else self._fa_floor.active_groups

    def tick(self) -> None:
        """Periodic work (processing thread): summaries, events that saw no data."""
        self._send(self.events.expire())
        now = self._monotonic()
        if now >= self._next_summary:
            self._next_summary = now + self._summary_every
            summary = self.summaries.take(self.slot.active.version)
            if summary is not None:
                self.sink.send_summary(summary)
                self.metrics.add("summaries")

    def flush(self) -> None:
        """At shutdown: emit open events, the last summary and pending normal rows."""
        self._send(self.events.flush())
        summary = self.summaries.take(self.slot.active.version)
        if summary is not None:
            self.sink.send_summary(summary)
        self._write_normal(force=True)
        self.extractor.close()

    def recent_rows(self) -> np.ndarray:
        """Rows of the last ``smoke_windows`` windows (a copy; any thread)."""
        with self._recent_lock:
            parts = list(self._recent)
        if not parts:
            return np.empty((0, self.extractor.spec.dim), dtype=np.float32)
        return np.concatenate(parts)

    # -- helpers --------------------------------------------------------------------------
    def _send(self, events: list[Event]) -> None:
        """Events of one window (or tick) to the sink: one outbox commit for all of them
        when the sink takes batches (`edge_agent.uplink.Uplink.send_events`: one fsync)."""
        if not events:
            return
        batch = getattr(self.sink, "send_events", None)
        if batch is not None and len(events) > 1:
            batch(list(events))
        else:
            for e in events:
                self.sink.send_event(e)
        self.metrics.add("events", len(events))

    def _threshold_for(self, model: tuple[str, str], det: object) -> GroupThreshold:
        """Thresholds live in one model's score units: one set per model (this + previous),
        floored by that model's package quantiles."""
        thr = self._thresholds.get(model)
        if thr is None:
            if len(self._thresholds) >= 2:
                self._thresholds.pop(next(iter(self._thresholds)))
            per_group = 1 if self.extractor.spec.profile == "mv" else self.stream.group_size
            thr = self._thresholds[model] = GroupThreshold.for_detector(
                self.n_groups, self._thr_cfg, det, rows_per_group=per_group)
            log.info("event=thresholds_new stream=%s model=%s", self.stream.kind, model[0])
        return thr

    def _score(self, det: object, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores, and for an ``mv`` row the per-column contributions when the detector
        gives them (`edge_agent.inference.LiteRTDetector.score_columns`): one model call."""
        by_column = getattr(det, "score_columns", None)
        if self.extractor.spec.profile == "mv" and by_column is not None:
            scores, contrib = by_column(rows)
            score, c = self._smooth(det, float(scores[0]), np.asarray(contrib[0], np.float32))
            return self._clean(np.array([score], np.float32)), c
        return self._clean(np.asarray(det.score(rows), dtype=np.float32)), None  # type: ignore[attr-defined]

    def _smooth(self, det: object, score: float, contrib: np.ndarray,
                ) -> tuple[float, np.ndarray | None]:
        """An mv package's score smoothing (`edge_agent.smoothing`, manifest
        ``threshold.smoothing``): one running average per model, like its thresholds."""
        span = int(getattr(det, "smoothing_span", 1))
        if span <= 1:
            return score, contrib
        key = (getattr(det, "version", "?"), getattr(det, "package_hash", ""))
        sm = self._smoothers.get(key)
        if sm is None:
            if len(self._smoothers) >= 2:
                self._smoothers.pop(next(iter(self._smoothers)))
            sm = self._smoothers[key] = ScoreSmoother(span)
        return sm.update(score, contrib)

    def _clean(self, scores: np.ndarray) -> np.ndarray:
        finite = np.isfinite(scores)
        if not finite.all():
            self.metrics.drop("score_nonfinite", int((~finite).sum()))
            scores = np.nan_to_num(scores, nan=0.0, posinf=_SCORE_CAP, neginf=0.0)
        return np.minimum(scores, _SCORE_CAP)

    def _record_latency(self, w: Window) -> None:
        if w.recv_ns:
            now = self._clock_ns()
            recv = np.asarray(w.recv_ns, dtype=np.int64)
            self.metrics.record_latency((now - recv) / 1e6, (now - int(recv.max())) / 1e6,
                                        self.stream.kind)

    def _energy(self, w: Window, rows: np.ndarray) -> np.ndarray:
        per_ch = rows[:, self._energy_col] if self._energy_col is not None \
            else w.data.mean(axis=0)
        return np.add.reduceat(per_ch.astype(np.float64), self._starts) / self._sizes

    def _journal(self, s: Scored) -> None:
        """The rows of flagged groups, for labels that come later (`edge_agent.labels`)."""
        mask = np.repeat(s.flagged, self._sizes)
        channels = self.stream.first_channel + np.flatnonzero(mask)
        self.label_book.record_flagged(self.stream.kind, s.window.t_start_ns,
                                       s.window.t_end_ns, channels, s.rows[mask])

    def _learn(self, s: Scored, det: object, thr: GroupThreshold) -> None:
        # a flagged group and its neighbours (an anomaly's fringe, below threshold next to
        # it) learn no threshold scores for the next quarantine_windows windows either
        hot = s.flagged.copy()
        hot[1:] |= s.flagged[:-1]
        hot[:-1] |= s.flagged[1:]
        self._cooldown = np.where(hot, thr.cfg.quarantine_windows + 1,
                                  np.maximum(self._cooldown - 1, 0))
        exclude = s.flagged.copy()
        if s.window.nonfinite is not None:
            exclude |= np.logical_or.reduceat(s.window.nonfinite, self._starts)
        if self.label_book is not None:  # inside a labelled anomaly or maintenance
            labelled = self.label_book.excluded_channels(
                self.stream.kind, s.window.t_start_ns, s.window.t_end_ns,
                self.stream.first_channel, self.stream.channels)
            if labelled is not None:
                exclude |= np.logical_or.reduceat(labelled, self._starts)
        if getattr(det, "ready", True):
            thr.learn(s.group_scores, exclude | (self._cooldown > 0))
        near = exclude.copy()
        near[1:] |= exclude[:-1]
        near[:-1] |= exclude[1:]
        ok = np.repeat(~near, self._sizes)
        idx = np.flatnonzero(ok)
        if self.extractor.spec.profile == "mv":
            idx = idx[:1]  # the window's one row stands for every column: learn it once
        if idx.size == 0:
            return
        with self._recent_lock:
            self._recent.append(s.rows[idx])
        if self.events.reference is None or s.window.index % 10 == 0:
            self.events.reference = np.median(s.rows[idx], axis=0)  # for class hints
        learn = getattr(det, "learn", None)
        if learn is not None:
            pick = idx if idx.size <= self._learn_rows else \
                self._rng.choice(idx, self._learn_rows, replace=False)
            learn(s.rows[pick])
        if self.normal_buffer is not None and self._normal_rows > 0:
            pick = self._rng.choice(idx, min(self._normal_rows, idx.size), replace=False)
            self._normal_pending.append(s.rows[pick])
            self._normal_origin.append((s.window.t_start_ns, self.stream.first_channel + pick))
            self._write_normal()

    def _write_normal(self, force: bool = False) -> None:
        if self.normal_buffer is None or not self._normal_pending:
            return
        if force or len(self._normal_pending) >= 10:  # with each row's window and channel
            t = np.concatenate([np.full(len(c), t0, np.int64) for t0, c in self._normal_origin])
            ch = np.concatenate([c for _, c in self._normal_origin])
            self.normal_buffer.append(np.concatenate(self._normal_pending), t, ch)
            self._normal_pending, self._normal_origin = [], []
