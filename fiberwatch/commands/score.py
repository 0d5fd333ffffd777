"""`fiberwatch score --model PKG --input FILE --output FILE`: offline batch scoring.

The input runs through the gateway's own stages (`edge_agent.offline.OfflineScorer`):
frame validation, windowing, features, the packaged int8 model, adaptive thresholds and the
event builder. Input: recorded frames (``.fwrec``, `sensors_sim.read_frames`), CSV (a
time column + numeric sensor columns: one channel each, or all of them for an ``mv``
package), or an interrogator's files read as the bridge reads them
(`edge_agent.bridge.files`: a DAS HDF5/TDMS file through DASCore, or a directory of them or
of DTS CSV files). Output by extension: ``.csv`` or ``.json`` (windows with per-channel
scores, and the events). CSV output of a CSV input has one row per input row: its time as
written, the score of the window whose newest samples hold it, the threshold, the flag and
the top contributing columns (`RowWriter`); of other input, one row per window and channel.
Events go to ``OUTPUT.events.jsonl``.

The operating point is the gateway's (``--config`` or the defaults) with
``--false-alarms-per-day`` on top: the one knob (`edge_agent.config.ThresholdConfig`).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from fiberwatch.cli import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score recorded frames or a CSV file with a model package")
    p.add_argument("--model", type=Path, required=True, help="model package (.fwpkg)")
    p.add_argument("--input", type=Path, required=True,
                   help=".fwrec recording, .csv file, or an interrogator's files: a DAS file "
                   "(PRODML/DASDAE/... HDF5, TDMS: DASCore) or a directory of DAS files or "
                   "DTS CSV files")
    p.add_argument("--output", type=Path, required=True, help=".csv or .json output")
    p.add_argument("--public-key", type=Path, help="Ed25519 public key the package must match")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="read the package without verifying a signature (offline analysis "
                        "of a package you trust; required without --public-key)")
    p.add_argument("--config", type=Path,
                   help="gateway TOML: take the stream geometry, thresholds and event settings")
    p.add_argument("--group-size", type=int, default=8, help="channels per threshold group")
    p.add_argument("--spacing-m", type=float, default=1.0, help="metres between channels")
    p.add_argument("--false-alarms-per-day", type=float,
                   help="target false alarms per day per threshold group (a whole mv "
                   "stream): sets the threshold (threshold.false_alarms_per_day)")
    p.add_argument("--top", type=int, default=3, help="CSV rows: top contributing columns")
    p.set_defaults(func=_run)


def _load(args: argparse.Namespace) -> Any:
    from edge_agent.package import PackageError, read_package

    if args.public_key is None and not args.allow_unsigned:
        raise UsageError("give --public-key to verify the package's signature, or "
                         "--allow-unsigned to read it unverified")
    try:
        data = args.model.read_bytes()
        key = args.public_key.read_bytes() if args.public_key else None
    except OSError as exc:
        raise UsageError(f"{exc.filename}: {exc.strerror}") from None
    try:
        return read_package(data, key)
    except PackageError as exc:
        raise UsageError(f"{args.model}: refused ({exc})") from None


def _frames(path: Path, spec: Any) -> tuple[Any, int, int]:
    """``(frames iterable, n_channels, first_channel)`` for the package's stream."""
    from edge_agent import wire
    from edge_agent.bridge.files import is_interrogator_input
    from edge_agent.offline import InputError, csv_frames, csv_rate, read_csv

    if is_interrogator_input(path):
        return _interrogator_frames(path, spec)
    if path.suffix.lower() == ".csv":
        try:
            t, x, _ = read_csv(path)
        except InputError as exc:
            raise UsageError(str(exc)) from None
        rate = csv_rate(t)
        if abs(rate - spec.sample_rate_hz) > 0.01 * spec.sample_rate_hz:
            raise UsageError(f"{path}: {rate:g} Hz data, the model expects "
                             f"{spec.sample_rate_hz:g} Hz")
        kind = spec.profile if spec.profile in ("das", "dts") else "dts"
        return (csv_frames(t, x, kind=kind, rate=spec.sample_rate_hz,
                           frame_samples=spec.hop_samples), x.shape[1], 0)
    from sensors_sim import RecordingError, read_frames

    kind = wire.StreamKind.from_label(spec.profile if spec.profile != "raw" else "dts")
    try:
        first = next((f for f in map(wire.decode, read_frames(path)) if f.kind == kind), None)
    except (RecordingError, wire.FrameError, OSError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    if first is None:
        raise UsageError(f"{path}: no {kind.label} frames for this {spec.profile} model")
    return read_frames(path), first.n_channels, first.first_channel


def _interrogator_frames(path: Path, spec: Any) -> tuple[Any, int, int]:
    """An interrogator's DAS file (DASCore) or directory of DAS or DTS CSV files, through
    the bridge's reader (`edge_agent.bridge.files`)."""
    from edge_agent.bridge.files import file_frames
    from edge_agent.bridge.reader import FileError

    stream = "dts" if spec.profile == "dts" else "das"
    try:
        frames, n_ch, first = file_frames(path, stream, frame_samples=spec.hop_samples)
        head = next(frames)
    except ImportError:
        raise UsageError(f"{path}: DAS files need DASCore: pip install "
                         "'fiberwatch[bridge]'") from None
    except (FileError, StopIteration) as exc:
        raise UsageError(f"{path}: {exc or 'no data'}") from None
    from edge_agent import wire

    rate = wire.decode(head).sample_rate
    if abs(rate - spec.sample_rate_hz) > 0.01 * spec.sample_rate_hz:
        raise UsageError(f"{path}: {rate:g} Hz data, the model expects "
                         f"{spec.sample_rate_hz:g} Hz")
    return _chain(head, frames, path), n_ch, first


def _chain(head: bytes, rest: Any, path: Path) -> Any:
    """The frames, with a file refused half-way turned into a usage error."""
    from edge_agent.bridge.reader import FileError

    yield head
    try:
        yield from rest
    except FileError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edge_agent.config import EventConfig, ThresholdConfig
    from edge_agent.features import FeatureSpec
    from edge_agent.inference import LiteRTDetector
    from edge_agent.offline import OfflineScorer, stream_config_for
    from edge_agent.package import PackageError

    if args.output.suffix.lower() not in (".csv", ".json"):
        raise UsageError(f"{args.output}: the output must end in .csv or .json")
    pkg = _load(args)
    spec = FeatureSpec.from_dict(pkg.manifest["feature_spec"])
    frames, n_ch, first = _frames(args.input, spec)
    thr, evc = ThresholdConfig(), EventConfig()
    try:
        stream = stream_config_for(spec, channels=n_ch, first_channel=first,
                                   spacing_m=args.spacing_m, group_size=args.group_size)
    except ValueError as exc:  # an mv model and an input with other columns
        raise UsageError(f"{args.input}: {exc}") from None
    if args.config is not None:
        stream, thr, evc = _from_config(args.config, stream)
    if args.false_alarms_per_day is not None:
        thr = thr.model_copy(update={"false_alarms_per_day": args.false_alarms_per_day})
    writer = _writer(args, stream.group_size, spec.hop_s * 1e9)
    try:
        scorer = OfflineScorer(LiteRTDetector(pkg), stream, spec=spec, thresholds=thr,
                               events=evc, on_window=writer.window)
        with tqdm(desc="score", unit="frame", disable=None) as bar:
            for f in frames:
                scorer.feed(f)
                bar.update(1)
        events = scorer.finish()
    except PackageError as exc:
        raise UsageError(f"{args.model}: refused ({exc})") from None
    writer.close(events, {"model": pkg.version, "package_sha256": pkg.sha256,
                          "input": str(args.input)})
    extra = {"rows": len(writer.flag), "flagged_rows": int(writer.flag.sum())} \
        if isinstance(writer, RowWriter) else {}
    print(json.dumps({"windows": writer.n_windows, "channels": n_ch, "events": len(events),
                      **extra, "output": str(args.output), "model": pkg.version}))
    return 0


def _writer(args: argparse.Namespace, group_size: int, hop_ns: float) -> Any:
    if args.input.suffix.lower() != ".csv" or args.output.suffix.lower() != ".csv":
        return _Writer(args.output, group_size)
    from edge_agent.offline import InputError, read_csv, read_csv_times

    try:
        t, _, names = read_csv(args.input)
        times = read_csv_times(args.input)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    return RowWriter(args.output, group_size, t, times, names, hop_ns=hop_ns, top=args.top)


def _from_config(path: Path, default: Any) -> tuple[Any, Any, Any]:
    from edge_agent.config import ConfigError, load_gateway_config

    try:
        cfg = load_gateway_config(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    s = cfg.stream(default.kind)
    if s is None:
        raise UsageError(f"{path}: no {default.kind} stream")
    if (s.channels, s.first_channel) != (default.channels, default.first_channel):
        raise UsageError(f"{path}: the {s.kind} stream has channels {s.first_channel}+"
                         f"{s.channels}, the input {default.first_channel}+{default.channels}")
    return s, cfg.threshold, cfg.events


class _Writer:
    """Streams per-window, per-channel scores to CSV, or collects them for JSON."""

    def __init__(self, path: Path, group_size: int) -> None:
        self.path, self.group_size, self.n_windows = path, group_size, 0
        self.json = path.suffix.lower() == ".json"
        self._windows: list[dict[str, Any]] = []
        if not self.json:
            self._f = open(path, "w", newline="")  # noqa: SIM115 - closed in close()
            self._w = csv.writer(self._f)
            self._w.writerow(["t_start_ns", "t_end_ns", "channel", "score", "threshold",
                              "flagged"])

    def window(self, s: Any) -> None:
        self.n_windows += 1
        w = s.window
        thr = s.thresholds.repeat(self.group_size)[: len(s.scores)]
        flag = s.flagged.repeat(self.group_size)[: len(s.scores)] & (s.scores > thr)
        if self.json:
            self._windows.append({
                "t_start_ns": w.t_start_ns, "t_end_ns": w.t_end_ns,
                "first_channel": w.first_channel, "scores": [float(v) for v in s.scores],
                "thresholds": [float(v) if v != float("inf") else None for v in s.thresholds],
                "flagged_channels": [int(c) + w.first_channel for c in flag.nonzero()[0]],
                **({"contributions": [float(v) for v in s.contributions]}
                   if s.contributions is not None else {})})
            return
        for c in range(len(s.scores)):
            self._w.writerow([w.t_start_ns, w.t_end_ns, w.first_channel + c,
                              f"{s.scores[c]:.6g}", f"{thr[c]:.6g}", int(flag[c])])

    def close(self, events: list, meta: dict[str, Any]) -> None:
        if self.json:
            self.path.write_text(json.dumps({**meta, "windows": self._windows,
                                             "events": [e.to_dict() for e in events]}))
            return
        self._f.close()
        with open(f"{self.path}.events.jsonl", "w") as f:
            for e in events:
                f.write(e.to_json().decode() + "\n")


class RowWriter:
    """CSV output with one row per input row: ``time`` (as written in the input), ``score``,
    ``threshold``, ``flagged`` and ``top_columns``.

    Row i takes the values of the window whose newest hop holds it (the window that first
    saw it, ``t_end - hop <= t_i < t_end``); rows no window reached (the first window's
    older samples, gaps) have empty cells. Per-channel models report the highest-scoring
    channel; ``top_columns`` lists the ``top`` columns by contribution (``mv``: share of the
    score, which sums to it) or by score (per-channel), as ``name=value`` joined by ``;``.
    """

    def __init__(self, path: Path, group_size: int, t_ns: Any, times: list[str],
                 names: list[str], *, hop_ns: float, top: int = 3) -> None:
        import numpy as np

        self.path, self.group_size, self.top = path, group_size, max(0, top)
        self.hop_ns = hop_ns
        self.t_ns, self.times, self.names = np.asarray(t_ns), times, names
        self.n_windows = 0
        n = len(self.t_ns)
        self.score = np.full(n, np.nan)
        self.thr = np.full(n, np.nan)
        self.flag = np.zeros(n, bool)
        self.tops = [""] * n

    def window(self, s: Any) -> None:
        import numpy as np

        self.n_windows += 1
        w = s.window
        lo = np.searchsorted(self.t_ns, w.t_end_ns - self.hop_ns - 0.5, side="left")
        hi = np.searchsorted(self.t_ns, w.t_end_ns - 0.5, side="left")
        if hi <= lo:
            return
        thr = s.thresholds.repeat(self.group_size)[: len(s.scores)]
        c = int(np.argmax(s.scores))
        self.score[lo:hi], self.thr[lo:hi] = s.scores[c], thr[c]
        flagged = bool(s.flagged.any()) and bool(s.scores[c] > thr[c])
        self.flag[lo:hi] = flagged
        vals = s.contributions if s.contributions is not None else s.scores
        order = np.argsort(vals)[::-1][: self.top]
        text = ";".join(f"{self._name(w.first_channel + int(j))}={vals[j]:.4g}" for j in order)
        for i in range(lo, hi):
            self.tops[i] = text

    def _name(self, ch: int) -> str:
        return self.names[ch] if 0 <= ch < len(self.names) else f"ch{ch}"

    def close(self, events: list, meta: dict[str, Any]) -> None:
        import math

        with open(self.path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time", "score", "threshold", "flagged", "top_columns"])
            for i, t in enumerate(self.times):
                sc, th = self.score[i], self.thr[i]
                w.writerow([t, "" if math.isnan(sc) else f"{sc:.6g}",
                            "" if math.isnan(th) else f"{th:.6g}" if math.isfinite(th)
                            else "inf", int(self.flag[i]), self.tops[i]])
        with open(f"{self.path}.events.jsonl", "w") as f:
            for e in events:
                f.write(e.to_json().decode() + "\n")
