"""The writer's commit threads: built batches written by `threads` threads at once, in
order wherever order matters.

InfluxDB takes concurrent writes on several cores, and one write at a time left it
waiting on ingestion half the time (`bench cloud`, 2 cores: one thread 1.3-1.9 s per 9,000
summaries, two 1.0-1.1 s, measured). What may overlap and what may not:

- ``raw`` and ``history`` lines overlap freely: each point is written once (a re-sent
  summary is the same point with the same values: writing it twice, in any order, stores
  the same thing), and a history bucket is emitted once.
- ``events`` lines (events, fleet rows, model state) are written one batch at a time, in
  the batches' order (stage 0): InfluxDB keeps the last write of a point, and an event
  re-sent as it grows, or a newer fleet row, must be written after the older one.
- Acknowledgements, the deletes of superseded event points, the spool commit and the
  stats (stage 1) follow the batches' order too: MQTT wants PUBACKs in the order the
  messages came, and a message is acknowledged only once all of its batch is written.

Once a batch was not written (stopped, the drain time ran out), no later batch is
acknowledged: their items go to `unwritten`, and the broker sends the QoS1 ones again.
A later batch's events may already be written by then; written again on redelivery, after
the earlier ones, they end in the right order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloud.ingest.buffer import Item
    from cloud.ingest.writer import Built, Writer

Job = tuple[int, "Built"]


class Broken(RuntimeError):
    """A commit thread died: the others stop waiting for its turn."""


class Turns:
    """Numbered jobs pass each stage one at a time, in their numbers' order."""

    def __init__(self, stages: int) -> None:
        self._next = [0] * stages
        self._cond = threading.Condition()
        self._broken = False

    @contextmanager
    def turn(self, stage: int, k: int) -> Iterator[None]:
        """Wait until every job before `k` has passed `stage`; `k` passes it on exit."""
        with self._cond:
            self._cond.wait_for(lambda: self._next[stage] == k or self._broken)
            if self._broken:
                raise Broken("a commit thread died")
        try:
            yield
        finally:
            with self._cond:
                self._next[stage] = k + 1
                self._cond.notify_all()

    def break_all(self) -> None:
        with self._cond:
            self._broken = True
            self._cond.notify_all()


class Commits:
    """`threads` commit threads taking numbered built batches from `handoff`."""

    def __init__(self, writer: Writer, threads: int, done: Callable[[], None]) -> None:
        self.w = writer
        self.handoff: queue.Queue[Job | None] = queue.Queue(maxsize=1)
        self.unwritten: list[Item] = []
        self._turns = Turns(2)
        self._failed = False
        self._done = done  # called once per batch, whatever became of it
        self._threads = [threading.Thread(target=self._loop, name=f"ingest-commit-{i}")
                         for i in range(threads)]
        self._count = 0

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def alive(self) -> bool:
        """All threads still run (one that died ends the writer, as an error would)."""
        return all(t.is_alive() for t in self._threads)

    def submit(self, built: Built) -> None:
        """Hand `built` over once there is room, unless a commit thread has died."""
        job = (self._count, built)
        self._count += 1
        _put(self.handoff, job, self.alive)

    def close(self) -> None:
        """No more batches: let the threads finish what they have, then end."""
        for _ in self._threads:
            _put(self.handoff, None, lambda: any(t.is_alive() for t in self._threads))
        for t in self._threads:
            t.join()

    def _loop(self) -> None:
        while (job := self.handoff.get()) is not None:
            try:
                self._one(*job)
            except BaseException:
                self._turns.break_all()
                raise
            finally:
                self._done()

    def _one(self, k: int, built: Built) -> None:
        with self._turns.turn(0, k):
            ok = not self._failed and self.w.write_events(built)
        ok = ok and self.w.write_stored(built)  # overlaps the other threads' writes
        with self._turns.turn(1, k):
            if self._failed or not ok:
                self._failed = True
                self.unwritten.extend(built.items)
            else:
                self.w.finish(built)
                self.w.write_status()


def _put(q: queue.Queue[Job | None], job: Job | None, alive: Callable[[], bool]) -> None:
    while alive():
        try:
            q.put(job, timeout=0.5)
            return
        except queue.Full:
            continue
