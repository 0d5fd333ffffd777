"""Offline batch scoring through the online agent's own stages.

`OfflineScorer` wraps one `edge_agent.pipeline.StreamPipeline` (validate -> window ->
features -> detector -> thresholds -> events) with a fixed detector and a collecting sink,
and is fed wire frames, exactly as the agent is fed from MQTT. The pipeline's clock follows
stream time (the end of the window being processed), so events carry reproducible times and
``detected_ns`` is "when the gateway would have known".

Inputs are frames: recorded frames (``sensors_sim.read_frames``, read by the caller: this
package imports none of ours) or a CSV file turned into frames by `csv_frames`. A ``raw``
profile package (generic CSV time series) runs on a ``dts``-kind carrier stream, since
events name only ``das`` or ``dts``; its windows and features are the package's. An ``mv``
(multivariate) package runs on a ``dts``-kind stream with ``profile = "mv"``: one row and
one score per window over all columns, with per-column contributions (`Scored`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent import topics, wire
from edge_agent.config import EventConfig, StreamConfig, ThresholdConfig
from edge_agent.detectors.base import Detector
from edge_agent.events import Event
from edge_agent.feature_stream import StreamingFeatures
from edge_agent.features import FeatureExtractor, FeatureSpec
from edge_agent.metrics import Metrics
from edge_agent.package import PackageError
from edge_agent.pipeline import StreamPipeline
from edge_agent.types import RawMessage, Scored, Window
from edge_agent.windowing import StreamBuffer

TIME_COLUMNS = ("time", "timestamp", "t", "ts", "datetime", "date")


class InputError(ValueError):
    """Input that cannot be scored (the message names the file and the problem)."""


class _FixedSlot:
    """A model slot that never swaps (the `Slot` protocol)."""

    def __init__(self, detector: Detector) -> None:
        self.active = detector

    def apply_pending(self) -> bool:
        return False

    def report_latency(self, ms: float) -> None:
        pass


class _Collect:
    """A sink that keeps events and drops summaries."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def send_event(self, event: Event) -> None:
        self.events.append(event)

    def send_summary(self, s: object) -> None:
        pass


class _Pipeline(StreamPipeline):
    """The online pipeline, reporting every scored window and keeping stream time."""

    def __init__(self, on_window: Callable[[Scored], None] | None, **kw: Any) -> None:
        self.now_ns = 0
        self._on_window = on_window
        super().__init__(clock_ns=self._stream_clock, monotonic=lambda: 0.0, **kw)

    def _stream_clock(self) -> int:
        return self.now_ns

    def process(self, w: Window) -> Scored:
        self.now_ns = w.t_end_ns
        s = super().process(w)
        if self._on_window is not None:
            self._on_window(s)
        return s


def final_events(emitted: Iterable[Event]) -> list[Event]:
    """One event per id, the last emission of each, ordered by first emission."""
    by_id: dict[str, Event] = {}
    for e in emitted:
        by_id[e.id] = e  # dicts keep first-insertion order; the value is the latest
    return list(by_id.values())


def stream_config_for(spec: FeatureSpec, *, channels: int, first_channel: int = 0,
                      spacing_m: float = 1.0, group_size: int = 8) -> StreamConfig:
    """A `StreamConfig` that computes ``spec`` (raw specs get a dts carrier)."""
    kind = spec.profile if spec.profile in ("das", "dts") else "dts"
    if spec.profile == "mv":
        if channels != spec.channels:
            raise InputError(f"the mv model was trained on {spec.channels} columns, the input "
                             f"has {channels}")
        return StreamConfig(
            kind="dts", profile="mv", first_channel=first_channel, channels=channels,
            spacing_m=spacing_m, sample_rate_hz=spec.sample_rate_hz, window_s=spec.window_s,
            hop_s=spec.hop_s, bands_hz=[], context_radius=0, group_size=channels)
    return StreamConfig(
        kind=kind, first_channel=first_channel, channels=channels, spacing_m=spacing_m,
        sample_rate_hz=spec.sample_rate_hz, window_s=spec.window_s, hop_s=spec.hop_s,
        bands_hz=list(spec.bands_hz) if kind == "das" else [],
        context_radius=spec.context_radius, baseline_alpha=spec.baseline_alpha,
        group_size=min(group_size, channels), feature_version=spec.version,
    )


class OfflineScorer:
    """Score frames of one stream with one detector, as the agent would.

    Parameters
    ----------
    detector : Detector
        E.g. `edge_agent.inference.LiteRTDetector`.
    stream : StreamConfig
        The stream the frames belong to (channels, rate, windows, groups).
    spec : FeatureSpec, optional
        The detector's spec when it is not the stream's own (``raw`` packages).
    thresholds, events : ThresholdConfig, EventConfig
        As in the gateway config.
    on_window : callable, optional
        Called with every `edge_agent.types.Scored` window, in order.
    """

    def __init__(self, detector: Detector, stream: StreamConfig, *,
                 spec: FeatureSpec | None = None,
                 thresholds: ThresholdConfig | None = None, events: EventConfig | None = None,
                 on_window: Callable[[Scored], None] | None = None,
                 site: str = "offline", gateway: str = "offline") -> None:
        spec = spec or stream.feature_spec()
        if detector.feature_spec_hash and detector.feature_spec_hash != spec.hash:
            raise PackageError("feature_spec", f"model {detector.version} was built for "
                               f"feature spec {detector.feature_spec_hash[:12]}, the input "
                               f"computes {spec.hash[:12]}")
        self._sink = _Collect()
        self.metrics = Metrics()
        self.stream = stream
        self.pipeline = _Pipeline(
            on_window, site=site, gateway=gateway, stream=stream,
            thresholds=thresholds or ThresholdConfig(), events=events or EventConfig(),
            slot=_FixedSlot(detector), sink=self._sink, metrics=self.metrics)
        if spec.hash != stream.feature_spec().hash:  # raw profile on a carrier stream
            self.pipeline.extractor = FeatureExtractor(spec)
            self.pipeline.features = StreamingFeatures(self.pipeline.extractor)
            self.pipeline.buffer = StreamBuffer(
                stream.kind, stream.channels, stream.first_channel, stream.sample_rate_hz,
                window_samples=spec.window_samples, hop_samples=spec.hop_samples)
            self.pipeline.events.names = spec.names
        self._topic = topics.raw(site, gateway, stream.kind)
        self._args = (detector, stream, spec, thresholds, events, site, gateway)

    def fork(self, on_window: Callable[[Scored], None] | None = None) -> OfflineScorer:
        """A new scorer for another recording that keeps this one's learned state: the
        adaptive thresholds (and the event builder's normal reference), as if the stream had
        restarted after running this long. Events and windows start empty."""
        import copy

        detector, stream, spec, thresholds, events, site, gateway = self._args
        new = OfflineScorer(detector, stream, spec=spec, thresholds=thresholds, events=events,
                            on_window=on_window, site=site, gateway=gateway)
        new.pipeline._thresholds = copy.deepcopy(self.pipeline._thresholds)
        new.pipeline.events.reference = copy.deepcopy(self.pipeline.events.reference)
        return new

    @property
    def emitted(self) -> list[Event]:
        """Every emission, announcements of open events included."""
        return self._sink.events

    @property
    def events(self) -> list[Event]:
        """Final events: one per id (a later emission replaces an announcement), in order
        of first emission, as the cloud stores them."""
        return final_events(self._sink.events)

    def feed(self, frame: bytes) -> int:
        """One wire frame; returns the windows it completed."""
        return self.pipeline.handle(RawMessage(self._topic, frame, self.pipeline.now_ns))

    def run(self, frames: Iterable[bytes]) -> list[Event]:
        """Feed every frame, then close open events; returns the final events."""
        for f in frames:
            self.feed(f)
        return self.finish()

    def finish(self) -> list[Event]:
        self.pipeline.flush()
        return self.events


#: columns that hold ground truth, never sensor values: read_csv leaves them out
LABEL_COLUMNS = ("anomaly", "changepoint", "label", "labels", "is_anomaly", "fault", "target")


def _delimiter(line: str) -> str:
    """``,`` unless the header line splits better on ``;`` or a tab."""
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def _records(path: Path) -> tuple[list[str] | None, list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            first = f.readline()
            f.seek(0)
            reader = csv.reader(f, delimiter=_delimiter(first))
            header = next(reader, None)
            return header, [r for r in reader if r and any(c.strip() for c in r)]
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a CSV text file: {exc}") from None


def read_csv(path: Path, *, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(t_ns (T,), values (T, channels) float32, names)`` from a CSV with a header, one
    time column (named like `TIME_COLUMNS`, else the first; seconds or ISO-8601) and numeric
    sensor columns, separated by commas, semicolons or tabs. Empty cells become NaN.
    Ground-truth columns (`LABEL_COLUMNS`) are left out: a model must not see them.
    `min_rows`: fewer data rows are an error (a DTS unit's one-trace files need 1; the
    sample rate then comes from elsewhere)."""
    header, records = _records(path)
    if not header or len(header) < 2:
        raise InputError(f"{path}: needs a header with a time column and sensor columns")
    names = [h.strip() for h in header]
    tcol = next((i for i, h in enumerate(names) if h.lower() in TIME_COLUMNS), 0)
    cols = [i for i in range(len(names))
            if i != tcol and names[i].lower() not in LABEL_COLUMNS]
    if not cols:
        raise InputError(f"{path}: no sensor columns besides the time and label columns")
    t = np.empty(len(records), np.int64)
    x = np.empty((len(records), len(cols)), np.float32)
    for k, r in enumerate(records):
        if len(r) != len(names):
            raise InputError(f"{path}: line {k + 2} has {len(r)} fields, expected {len(names)}")
        t[k] = _time_ns(r[tcol], path, k + 2)
        try:
            x[k] = [float(r[i]) if r[i].strip() else np.nan for i in cols]
        except ValueError as exc:
            raise InputError(f"{path}: line {k + 2}: {exc}") from None
    if len(t) < max(1, min_rows):
        raise InputError(f"{path}: needs at least {max(1, min_rows)} data rows")
    if np.any(np.diff(t) <= 0):
        raise InputError(f"{path}: the time column must increase strictly")
    return t, x, [names[i] for i in cols]


def read_csv_times(path: Path) -> list[str]:
    """The time column's cells as written (the column `read_csv` uses), for output that
    quotes the input's own times."""
    header, records = _records(path)
    names = [h.strip().lower() for h in header or []]
    tcol = next((i for i, h in enumerate(names) if h in TIME_COLUMNS), 0)
    try:
        return [r[tcol].strip() for r in records]
    except IndexError:
        raise InputError(f"{path}: a row without a time cell") from None

#: times a CSV may hold: int64 nanoseconds since the epoch reach about year 2262
_MAX_ABS_S = 9.2e9


def _time_ns(text: str, path: Path, line: int) -> int:
    s = text.strip()
    try:
        seconds = float(s)
    except ValueError:
        seconds = _iso_seconds(s, path, line)
    if not (math.isfinite(seconds) and abs(seconds) < _MAX_ABS_S):
        raise InputError(f"{path}: line {line}: time {s!r} is out of range (finite seconds "
                         f"within +-{_MAX_ABS_S:g} of the epoch)")
    return round(seconds * 1e9)


def _iso_seconds(s: str, path: Path, line: int) -> float:
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{path}: line {line}: time {s!r} is neither seconds nor "
                         "ISO-8601") from None
    if dt.tzinfo is None:  # naive times are UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def csv_rate(t_ns: np.ndarray) -> float:
    """Sample rate (Hz) from the median time step."""
    return 1e9 / float(np.median(np.diff(t_ns)))


def csv_frames(t_ns: np.ndarray, values: np.ndarray, *, kind: str, rate: float,
               first_channel: int = 0, frame_samples: int = 1) -> Iterator[bytes]:
    """Wire frames (float32) of ``frame_samples`` rows each. Rows further than 1.5 steps
    from the previous one start a new sequence run (a gap, as on the wire). NaN stays NaN:
    the validator zeroes it and marks the channel, as for a live frame."""
    sk = wire.StreamKind.from_label(kind)
    step = 1e9 / rate
    seq, i, n = 0, 0, len(t_ns)
    while i < n:
        j = i + 1
        while j < n and j - i < frame_samples and abs(t_ns[j] - t_ns[j - 1] - step) < 0.5 * step:
            j += 1
        if i > 0 and abs(t_ns[i] - t_ns[i - 1] - step) >= 0.5 * step:
            seq += 1  # skip a number: the validator sees a gap and restarts the windows
        yield wire.encode(sk, seq, int(t_ns[i]), rate, first_channel, values[i:j])
        seq += 1
        i = j
