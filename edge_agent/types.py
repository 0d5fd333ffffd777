"""Value types that flow between the pipeline's stages.

``source -> decode/validate -> window -> features -> model -> threshold -> events/summaries``

Every type here is a frozen dataclass or a Protocol: stages hand each other values, not
themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from edge_agent.detectors.base import Detector
from edge_agent.events import Event
from edge_agent.summary import FeatureSummary


class RawMessage(NamedTuple):
    """What the MQTT network thread enqueues: nothing parsed yet."""

    topic: str
    payload: bytes | memoryview  # a view of the received packet (`edge_agent.frame_client`)
    recv_ns: int  # time.time_ns() when the message was handed to us


@dataclass(frozen=True, slots=True)
class Window:
    """One analysis window of one stream.

    Attributes
    ----------
    stream : str
        ``"das"`` or ``"dts"``.
    data : numpy.ndarray
        float32 ``(window_samples, n_channels)``, time-major. A read-only view into the
        stream buffer: valid until the buffer receives its next frame.
    t_start_ns, t_end_ns : int
        Time of the first sample and time just after the last sample.
    first_channel : int
        Fiber index of column 0.
    recv_ns : tuple of int
        Receive times of the frames whose last sample entered a window for the first time
        in this window (frame-to-score latency is measured from these).
    nonfinite : numpy.ndarray or None
        bool ``(n_channels,)``: channels that carried NaN/inf samples (zeroed) in this
        window's frames; None when there were none.
    after_gap : bool
        First window after a sequence gap or stream reset (the buffer restarted).
    index : int
        Windows emitted by this buffer since it was created (monotonic across gaps).
    """

    stream: str
    data: np.ndarray
    t_start_ns: int
    t_end_ns: int
    first_channel: int
    recv_ns: tuple[int, ...]
    nonfinite: np.ndarray | None
    after_gap: bool
    index: int

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[1])


@dataclass(frozen=True, slots=True)
class Scored:
    """A window after features, model and threshold: what the event builder consumes.

    Attributes
    ----------
    window : Window
    rows : numpy.ndarray
        float32 ``(n_channels, dim)`` feature rows.
    scores : numpy.ndarray
        float32 ``(n_channels,)`` detector scores.
    group_scores, thresholds : numpy.ndarray
        ``(n_groups,)``: max score per channel group, threshold in force (inf = warming up).
    flagged : numpy.ndarray
        bool ``(n_groups,)``: groups above threshold.
    model_version, model_hash : str
        The detector that produced `scores`.
    contributions : numpy.ndarray or None
        ``mv`` profile: float32 ``(n_channels,)``, each column's share of the window's score
        (they sum to it); None for the per-channel profiles or detectors without them.
    """

    window: Window
    rows: np.ndarray
    scores: np.ndarray
    group_scores: np.ndarray
    thresholds: np.ndarray
    flagged: np.ndarray
    model_version: str
    model_hash: str
    contributions: np.ndarray | None = None


class Sink(Protocol):
    """Where events and summaries go (`edge_agent.uplink.Uplink` satisfies it)."""

    def send_event(self, event: Event) -> None: ...

    def send_summary(self, s: FeatureSummary) -> None: ...


class Slot(Protocol):
    """The part of `edge_agent.hot_swap.ModelSlot` the pipeline uses."""

    active: Detector

    def apply_pending(self) -> bool: ...

    def report_latency(self, ms: float) -> None: ...
