"""The decode/validate stage: bytes in, an accepted `Frame` (or a counted drop) out.

Checks, in order; each failure is counted under its reason and the frame is dropped:

``malformed:<reason>``  `edge_agent.wire.decode` raised `FrameError` (reason from it)
``stream_kind``         the frame's kind is not the stream its topic names
``channels``            first channel or channel count differs from the stream config
``sample_rate``         sample rate differs from the stream config (relative 1e-6)
``clock_skew``          first sample more than ``max_clock_skew_s`` ahead of the gateway clock
``duplicate``           a sequence number seen recently
``out_of_order``        an older sequence number not seen recently

Non-finite samples (NaN/inf) do not drop the frame: one dead channel must not blind the other
2,047. They are set to 0.0, the frame is counted under ``nonfinite``, and the affected channels
are reported so windows can mark them (the event builder classes them as ``fault``). This
happens where the samples are written (`FrameValidator.values_into`, straight into the window
buffer's rows): `accept` checks the frame without converting its payload.

Sequence numbers: ``seq == last + 1`` continues the stream; a jump forward is a *gap*
(``gaps`` += frames missing) and resets the stream buffer; a lower ``seq`` whose first sample
lies after the previous frame's end is a *restart* of the interrogator (buffer reset).

Hostile frames must not blind a stream. A frame dated further ahead of the gateway clock than
``max_clock_skew_s`` (plus how far ahead the accepted stream already runs) is dropped as
``clock_skew``, so one forged frame (``seq = 2**64 - 1``, ``t0 = 2**62``) cannot move the
stream's state into the far future. The past is not bounded: recordings and simulators replay
old times, and an older frame is out of order anyway. Whatever the reason for rejection
(``clock_skew``, ``out_of_order``), a run of `RESYNC_RUN` rejected frames that continue each
other (``seq`` + 1 each) is the real stream: the validator re-synchronises on it (``resyncs``
+= 1, buffer reset). The next frame of the stream (``seq`` + 1, within 1 s of the previous
frame's end) is not checked against the clock, so a gateway clock step during a stream drops
nothing, and a gateway whose clock is wrong from the start (booted at 1970) loses at most
`RESYNC_RUN` frames. Counters saturate at ``2**63 - 1`` (`Metrics.add`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_agent import wire
from edge_agent.config import StreamConfig
from edge_agent.metrics import Metrics, RateLimitedLog

log = logging.getLogger(__name__)
_RECENT = 64
#: consecutive rejected frames that continue each other before the validator follows them
RESYNC_RUN = 16


@dataclass(frozen=True, slots=True)
class Accepted:
    """A frame to push into the stream buffer.

    Attributes
    ----------
    frame : wire.RawFrame
        Checked; its samples are still the payload's: `FrameValidator.values_into` writes
        them (non-finite ones zeroed and counted) where they are needed.
    reset : bool
        The buffer must restart before this frame (gap or stream restart).
    """

    frame: wire.RawFrame
    reset: bool


class FrameValidator:
    """Decode and check frames of one configured stream; keeps sequence state.

    Parameters
    ----------
    stream : StreamConfig
    metrics : Metrics
    max_clock_skew_s : float or None
        Frames dated further ahead of ``clock_ns()`` are dropped (None: no check, e.g.
        offline scoring of recordings).
    clock_ns : callable
        The gateway's wall clock, ns since the epoch.
    """

    def __init__(self, stream: StreamConfig, metrics: Metrics,
                 rlog: RateLimitedLog | None = None, *, max_clock_skew_s: float | None = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.stream = stream
        self.kind = wire.StreamKind.from_label(stream.kind)
        self._metrics = metrics
        self._rlog = rlog or RateLimitedLog(log)
        self._last_seq: int | None = None
        self._last_end_ns = 0
        self._recent: deque[int] = deque(maxlen=_RECENT)
        self._skew_ns = None if max_clock_skew_s is None else round(max_clock_skew_s * 1e9)
        self._clock_ns = clock_ns
        self._ahead_ns = 0  # how far the accepted stream runs ahead of the gateway clock
        self._run_next: int | None = None  # seq that would continue the rejected run
        self._run = 0

    def values_into(self, frame: wire.RawFrame, out: np.ndarray) -> np.ndarray | None:
        """Write an accepted frame's float32 samples into `out` (``(n_samples, n_channels)``,
        e.g. the window buffer's next rows); zero NaN/inf there and count them. Returns the
        per-channel mask of channels that had any, or None."""
        frame.values_into(out)
        return None if frame.finite else _zero_nonfinite(out, self._metrics)

    def values(self, frame: wire.RawFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """`values_into` a new array: ``(samples, nonfinite mask or None)``."""
        out = np.empty((frame.n_samples, frame.n_channels), dtype=np.float32)
        return out, self.values_into(frame, out)

    def _drop(self, reason: str, detail: str) -> None:
        self._metrics.drop(reason)
        self._rlog.warning(reason, "event=frame_dropped stream=%s reason=%s detail=%s",
                           self.stream.kind, reason, detail)

    def accept(self, payload: bytes | memoryview) -> Accepted | None:
        """Decode and validate one payload; None if it was dropped (and counted)."""
        try:
            frame = wire.parse(payload)
        except wire.FrameError as exc:
            self._drop(f"malformed:{exc.reason}", exc.detail)
            return None
        s = self.stream
        if frame.kind != self.kind:
            self._drop("stream_kind", f"{frame.kind.label} frame on the {s.kind} stream")
            return None
        if frame.first_channel != s.first_channel or frame.n_channels != s.channels:
            self._drop("channels", f"channels {frame.first_channel}+{frame.n_channels}, "
                                   f"config {s.first_channel}+{s.channels}")
            return None
        if abs(frame.sample_rate - s.sample_rate_hz) > 1e-6 * s.sample_rate_hz:
            self._drop("sample_rate", f"{frame.sample_rate} Hz, config {s.sample_rate_hz} Hz")
            return None
        skew = self._skew(frame)
        if skew is None:
            reset = self._sequence(frame)
        elif self._rejected_run(frame):
            reset = True
        else:
            self._drop("clock_skew", f"t0 {frame.t0_ns} is {skew / 1e9:.3g} s ahead of the "
                                     "gateway clock")
            return None
        if reset is None:
            return None
        self._run, self._run_next = 0, None
        self._last_seq = frame.seq
        self._last_end_ns = frame.end_ns
        self._recent.append(frame.seq)
        if self._skew_ns is not None:
            self._ahead_ns = max(0, frame.t0_ns - self._clock_ns())
        return Accepted(frame, reset)

    def _skew(self, frame: wire.RawFrame) -> int | None:
        """How far (ns) the frame is ahead of what the skew bound allows; None if within."""
        if self._skew_ns is None or self._continues(frame):
            return None
        ahead = frame.t0_ns - self._clock_ns() - self._ahead_ns
        return ahead if ahead > self._skew_ns else None

    def _continues(self, frame: wire.RawFrame) -> bool:
        """The next frame of the accepted stream, in sequence and in time (within 1 s): a
        jump of the gateway clock alone does not drop it."""
        return (self._last_seq is not None and frame.seq == self._last_seq + 1
                and abs(frame.t0_ns - self._last_end_ns) <= 10**9)

    def _rejected_run(self, frame: wire.RawFrame) -> bool:
        """Count one rejected frame into the run; True when the run is long enough to follow
        (the frame is then accepted and the stream restarts on it)."""
        self._run = self._run + 1 if frame.seq == self._run_next else 1
        self._run_next = frame.seq + 1
        if self._run < RESYNC_RUN:
            return False
        self._metrics.add("resyncs")
        self._rlog.warning("resync", "event=stream_resync stream=%s seq=%d t0_ns=%d",
                           self.stream.kind, frame.seq, frame.t0_ns)
        self._recent.clear()
        return True

    def _sequence(self, frame: wire.RawFrame) -> bool | None:
        """True = reset the buffer first, False = continue, None = drop."""
        last = self._last_seq
        seq = frame.seq
        if last is None:
            reset = True
        elif seq == last + 1:
            reset = False
        elif seq > last + 1:
            self._metrics.add("gaps", seq - last - 1)
            self._rlog.warning("gap", "event=sequence_gap stream=%s missing=%d after=%d",
                               self.stream.kind, seq - last - 1, last)
            reset = True
        elif frame.t0_ns >= self._last_end_ns and seq not in self._recent:
            self._metrics.add("restarts")
            self._rlog.warning("restart", "event=stream_restart stream=%s seq=%d last=%d",
                               self.stream.kind, seq, last)
            self._recent.clear()
            reset = True
        elif seq in self._recent:
            self._drop("duplicate", f"seq {seq}")
            return None
        elif self._rejected_run(frame):
            reset = True
        else:
            self._drop("out_of_order", f"seq {seq} after {last}")
            return None
        return reset


def _zero_nonfinite(data: np.ndarray, metrics: Metrics) -> np.ndarray | None:
    """Zero NaN/inf in place; return the per-channel mask, or None if all were finite."""
    finite = np.isfinite(data)
    if finite.all():
        return None
    bad = ~finite
    data[bad] = 0.0
    metrics.drop("nonfinite")
    metrics.add("nonfinite_samples", int(bad.sum()))
    return bad.any(axis=0)
