"""The bridge loop: watch the directory, read each complete file, publish its frames.

`Bridge.run` is the live service (``fiberwatch bridge run``): position in `State`, files in
name order per stream, a refused file counted, logged and skipped. `replay` publishes a
directory of recordings once, paced by their timestamps (``--speed``), without a state.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge_agent.bridge import convert
from edge_agent.bridge.config import BridgeConfig, DasInput, DtsInput
from edge_agent.bridge.reader import Block, FileError, read_file
from edge_agent.bridge.state import State
from edge_agent.bridge.watch import Candidate, Watcher

log = logging.getLogger(__name__)


class Sink(Protocol):
    def publish(self, stream: str, frame: bytes) -> None: ...
    def flush(self, timeout: float = 30.0) -> None: ...
    def wait_connected(self, timeout: float) -> bool: ...


@dataclass
class BridgeStats:
    files: int = 0
    frames: int = 0
    samples: int = 0
    resumed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "frames": self.frames, "samples": self.samples,
                "resumed": self.resumed, "file_errors": sum(self.errors.values()),
                "errors": dict(self.errors)}


class Bridge:
    """The live bridge: one `State`, one `Sink` (a `BridgePublisher`)."""

    def __init__(self, cfg: BridgeConfig, sink: Sink, state: State, *,
                 stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.sink, self.state = cfg, sink, state
        self.stop = stop or threading.Event()
        self.watcher = Watcher(cfg, clock)
        self.stats = BridgeStats()
        self._inputs = {"das": cfg.das, "dts": cfg.dts}

    def run(self) -> BridgeStats:
        """Until `stop` is set: resume a claimed file, then publish complete files."""
        while not self.stop.is_set():
            self.step()
            self.stop.wait(self.cfg.bridge.poll_s)
        return self.stats

    def step(self) -> int:
        """One scan: returns the files finished (published or refused)."""
        n = 0
        for rec in self.state.unfinished():
            path = self.cfg.bridge.watch_dir / rec.name
            inp = self._inputs.get(rec.stream)
            if inp is None:
                self.state.error(rec.name, rec.stream, rec.size, rec.mtime_ns, "no_stream")
                continue
            self.stats.resumed += 1
            n += self._publish_file(Candidate(path, rec.stream, rec.size, rec.mtime_ns, 0.0),
                                    inp) is not None
            if self.stop.is_set():
                return n
        blocked: set[str] = set()
        for c in self.watcher.scan(self.state.known()):
            if self.stop.is_set():
                break
            if c.stream in blocked:
                continue  # keep time order: an earlier file of the stream is not ready yet
            inp = self._inputs[c.stream]
            assert inp is not None
            if not c.complete:
                if self.cfg.bridge.marker_suffix and (
                        c.quiet_s >= self.cfg.bridge.incomplete_timeout_s):
                    n += self._refuse(c, FileError("no_marker", "no marker file after "
                                                   "incomplete_timeout_s"), True) is not None
                    continue
                blocked.add(c.stream)
                continue
            done = self._publish_file(c, inp)
            if done is None:
                blocked.add(c.stream)
            n += done is not None
        return n

    def _publish_file(self, c: Candidate, inp: DasInput | DtsInput) -> bool | None:
        """True when published, False when refused, None when it should be retried later."""
        name = c.path.name
        rec = self.state.file(name)
        try:
            if c.size > self.cfg.bridge.max_file_bytes:
                raise FileError("too_large", f"{c.size} bytes > bridge.max_file_bytes")
            blocks = read_file(c.path, inp)
            if rec is None:
                next_seq, end_ns = self.state.stream(c.stream)
                plan = convert.plan(blocks, inp, next_seq, end_ns)
                self.state.claim(name, c.stream, c.size, c.mtime_ns, plan.seqs[0],
                                 plan.n_frames, plan.next_seq, blocks[0].t0_ns,
                                 blocks[-1].end_ns, _meta(blocks))
                start = 0
            else:
                if (rec.size, rec.mtime_ns) != (c.size, c.mtime_ns) and c.path.exists():
                    raise FileError("changed", "the file changed after it was claimed")
                plan = convert.plan(blocks, inp, rec.seq0, None)
                start = rec.frames_done
        except FileError as exc:
            return self._refuse(c, exc, rec is None)
        except OSError as exc:
            return self._refuse(c, FileError("unreadable", str(exc)), rec is None)
        if not self._send(name, blocks, plan, inp, start):
            return None
        self.state.done(name)
        self.watcher.forget(name)
        self.stats.files += 1
        self.stats.samples += sum(b.data.size for b in blocks)
        log.info("event=file_published file=%s stream=%s frames=%d seq0=%d", name, c.stream,
                 plan.n_frames, plan.seqs[0])
        if self.cfg.bridge.delete_published:
            _delete(c.path, self.cfg.bridge.marker_suffix)
        return True

    def _refuse(self, c: Candidate, exc: FileError, new: bool) -> bool | None:
        young = c.quiet_s < self.cfg.bridge.incomplete_timeout_s and not c.closed
        if exc.reason == "unreadable" and new and young:
            log.debug("event=file_not_ready file=%s detail=%s", c.path.name, exc.detail)
            return None  # still being written, or not closed yet
        self.state.error(c.path.name, c.stream, c.size, c.mtime_ns, str(exc))
        self.stats.error(exc.reason)
        self.watcher.forget(c.path.name)
        log.error("event=file_error file=%s stream=%s reason=%s detail=%s", c.path.name,
                  c.stream, exc.reason, exc.detail)
        return False

    def _send(self, name: str, blocks: list[Block], plan: convert.Plan,
              inp: DasInput | DtsInput, start: int) -> bool:
        """Publish frames `start..`, committing the position; False if stopped first."""
        from edge_agent.bridge.publish import PublishLost

        every = self.cfg.bridge.commit_frames
        while not self.stop.is_set():
            done = start
            try:
                for frame in convert.frames(blocks, plan, inp, start):
                    self.sink.publish(blocks[0].kind, frame)
                    done += 1
                    self.stats.frames += 1
                    if (done - start) % every == 0:
                        self.sink.flush()
                        self.state.progress(name, done)
                    if self.stop.is_set():
                        break
                self.sink.flush()
                self.state.progress(name, done)
                return done == plan.n_frames
            except PublishLost as exc:
                log.warning("event=publish_lost file=%s detail=%s", name, exc)
                rec = self.state.file(name)
                start = rec.frames_done if rec else start
                if not self.sink.wait_connected(5.0):
                    self.stop.wait(1.0)  # refused or down: paho retries with backoff
        return False


def _meta(blocks: list[Block]) -> dict[str, Any]:
    m = dict(blocks[0].meta)
    m.update(channels=int(blocks[0].data.shape[1]), sample_rate_hz=blocks[0].sample_rate,
             first_channel=blocks[0].first_channel, blocks=len(blocks))
    return m


def _delete(path: Path, marker: str | None) -> None:
    for p in (path, Path(f"{path}{marker}") if marker else None):
        if p is not None:
            try:
                p.unlink()
            except OSError as exc:
                log.warning("event=delete_failed file=%s detail=%s", p, exc)


# --- replay


def replay_frames(cfg: BridgeConfig, directory: Path, stats: BridgeStats
                  ) -> Iterator[tuple[int, str, bytes]]:
    """``(end_ns, stream, frame)`` of every matching file in `directory`, each stream in
    name order with its own sequence numbers, merged by time. Refused files are counted in
    `stats` and skipped."""
    watcher = Watcher(cfg)
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    per: dict[str, list[Path]] = {}
    for name in names:
        inp = watcher.stream_of(name)
        if inp is not None:
            per.setdefault("das" if isinstance(inp, DasInput) else "dts", []).append(
                directory / name)
    inputs = {"das": cfg.das, "dts": cfg.dts}
    its = [_stream_frames(paths, inputs[s], stats) for s, paths in per.items()]
    return heapq.merge(*its, key=lambda x: x[0])


def _stream_frames(paths: list[Path], inp: DasInput | DtsInput | None, stats: BridgeStats
                   ) -> Iterator[tuple[int, str, bytes]]:
    assert inp is not None
    next_seq, end_ns = 0, None
    for path in paths:
        try:
            blocks = read_file(path, inp)
            plan = convert.plan(blocks, inp, next_seq, end_ns)
        except FileError as exc:
            stats.error(exc.reason)
            log.error("event=file_error file=%s reason=%s detail=%s", path.name, exc.reason,
                      exc.detail)
            continue
        next_seq, end_ns = plan.next_seq, blocks[-1].end_ns
        stats.files += 1
        stats.samples += sum(b.data.size for b in blocks)
        for frame in convert.frames(blocks, plan, inp):
            yield convert.frame_end_ns(frame), blocks[0].kind, frame


def replay(cfg: BridgeConfig, directory: Path, sink: Sink, *, speed: float | None,
           stop: threading.Event | None = None,
           clock: Callable[[], float] = time.monotonic) -> BridgeStats:
    """Publish a directory of recordings once; `speed` x real time, None = as fast as the
    broker takes them."""
    stop = stop or threading.Event()
    stats = BridgeStats()
    base = wall0 = None
    for end_ns, stream, frame in replay_frames(cfg, directory, stats):
        if stop.is_set():
            break
        if speed is not None:
            if base is None:
                base, wall0 = end_ns, clock()
            assert wall0 is not None
            delay = wall0 + (end_ns - base) / 1e9 / speed - clock()
            if delay > 0 and stop.wait(delay):
                break
        sink.publish(stream, frame)
        stats.frames += 1
    sink.flush()
    return stats
