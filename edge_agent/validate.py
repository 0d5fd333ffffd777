"""The decode/validate stage: bytes in, an accepted `Frame` (or a counted drop) out.

Checks, in order; each failure is counted under its reason and the frame is dropped:

``malformed:<reason>``  `edge_agent.wire.decode` raised `FrameError` (reason from it)
``stream_kind``         the frame's kind is not the stream its topic names
``channels``            first channel or channel count differs from the stream config
``sample_rate``         sample rate differs from the stream config (relative 1e-6)
``duplicate``           a sequence number seen recently
``out_of_order``        an older sequence number not seen recently

Non-finite samples (NaN/inf) do not drop the frame: one dead channel must not blind the other
2,047. They are set to 0.0, the frame is counted under ``nonfinite``, and the affected channels
are reported so windows can mark them (the event builder classes them as ``fault``).

Sequence numbers: ``seq == last + 1`` continues the stream; a jump forward is a *gap*
(``gaps`` += frames missing) and resets the stream buffer; a lower ``seq`` whose first sample
lies after the previous frame's end is a *restart* of the interrogator (buffer reset).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from edge_agent import wire
from edge_agent.config import StreamConfig
from edge_agent.metrics import Metrics, RateLimitedLog

log = logging.getLogger(__name__)
_RECENT = 64


@dataclass(frozen=True, slots=True)
class Accepted:
    """A frame to push into the stream buffer.

    Attributes
    ----------
    frame : wire.Frame
        Non-finite samples already zeroed.
    reset : bool
        The buffer must restart before this frame (gap or stream restart).
    nonfinite : numpy.ndarray or None
        bool per channel: channels that had NaN/inf samples in this frame.
    """

    frame: wire.Frame
    reset: bool
    nonfinite: np.ndarray | None


class FrameValidator:
    """Decode and check frames of one configured stream; keeps sequence state.

    Parameters
    ----------
    stream : StreamConfig
    metrics : Metrics
    """

    def __init__(self, stream: StreamConfig, metrics: Metrics,
                 rlog: RateLimitedLog | None = None) -> None:
        self.stream = stream
        self.kind = wire.StreamKind.from_label(stream.kind)
        self._metrics = metrics
        self._rlog = rlog or RateLimitedLog(log)
        self._last_seq: int | None = None
        self._last_end_ns = 0
        self._recent: deque[int] = deque(maxlen=_RECENT)

    def _drop(self, reason: str, detail: str) -> None:
        self._metrics.drop(reason)
        self._rlog.warning(reason, "event=frame_dropped stream=%s reason=%s detail=%s",
                           self.stream.kind, reason, detail)

    def accept(self, payload: bytes) -> Accepted | None:
        """Decode and validate one payload; None if it was dropped (and counted)."""
        try:
            frame = wire.decode(payload)
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
        reset = self._sequence(frame)
        if reset is None:
            return None
        return Accepted(frame, reset, _zero_nonfinite(frame.data, self._metrics))

    def _sequence(self, frame: wire.Frame) -> bool | None:
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
        else:
            self._drop("out_of_order", f"seq {seq} after {last}")
            return None
        self._last_seq = seq
        self._last_end_ns = frame.end_ns
        self._recent.append(seq)
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
