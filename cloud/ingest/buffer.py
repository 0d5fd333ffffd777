"""The bounded buffer between ``on_message`` and the writer, and the retry backoff."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cloud.ingest.parse import Record


@dataclass(frozen=True, slots=True)
class Item:
    """One received message: its record (None if malformed), and what to ack once stored."""

    record: Record | None
    received_ns: int
    mid: int = 0  # MQTT packet id to acknowledge after the write (qos >= 1)
    qos: int = 0
    nbytes: int = 0
    lines: int = 1
    spool: tuple[int, int] | None = None  # its place in the QoS0 spool, committed once stored


class Buffer:
    """A FIFO bounded in bytes for QoS0 messages.

    QoS1 messages are always accepted: they are not acknowledged until written, so the
    broker's in-flight window (our MQTT v5 Receive Maximum) bounds how many can be here,
    and the rest wait at the broker. QoS0 messages beyond `max_bytes` are refused (the
    caller counts the drop).
    """

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._items: deque[tuple[float, Item]] = deque()  # (arrival, item)
        self._bytes = 0
        self._cond = threading.Condition()
        self._last_put = -float("inf")  # when the newest item came
        self._wake_at = (1, 0)  # `put` wakes a waiting batch at this many items or bytes

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put(self, item: Item) -> bool:
        """Append `item`; False (and nothing appended) if it is QoS0 and would overflow."""
        with self._cond:
            if item.qos == 0 and self._bytes + item.nbytes > self.max_bytes:
                return False
            self._last_put = now = self._clock()
            self._items.append((now, item))
            self._bytes += item.nbytes
            if len(self._items) >= self._wake_at[0] or self._bytes >= self._wake_at[1]:
                self._cond.notify()
            return True

    def get_batch(self, *, max_lines: int, max_bytes: int, linger_s: float, idle_s: float,
                  timeout: float, quick_s: float | None = None,
                  busy: Callable[[], bool] = lambda: True) -> list[Item]:
        """Take a batch: wait up to `timeout` for a first item, then keep taking items
        until `max_lines` or `max_bytes` is reached, the oldest item has waited `linger_s`,
        or no new item came for `idle_s`. Returns [] if nothing came within `timeout`.

        The linger counts from the oldest item's arrival, so items that piled up during
        the previous write go out at once: under load, batches grow with the backlog and
        the writer never idles.

        While `busy()` is False (no write in flight or waiting), the linger is `quick_s`
        instead: the first lines of a burst go out at once rather than after a full batch
        or `linger_s`, and the batches behind them fill while those are written. `wake`
        makes a waiting batch look at `busy()` again.

        While a batch fills, `put` does not wake this thread for every item (a thread
        switch per message costs the MQTT thread the GIL): the batch sleeps until the
        linger ends or the newest item is `idle_s` old, and is woken early only once
        enough items or bytes to fill it are queued.
        """
        batch: list[Item] = []
        lines = nbytes = 0
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                return batch
            oldest = self._items[0][0]
            try:
                while True:
                    linger = linger_s if quick_s is None or busy() else min(linger_s, quick_s)
                    deadline = oldest + linger
                    while self._items and lines < max_lines and nbytes < max_bytes:
                        item = self._items.popleft()[1]
                        self._bytes -= item.nbytes
                        batch.append(item)
                        lines += item.lines
                        nbytes += item.nbytes
                    if lines >= max_lines or nbytes >= max_bytes:
                        return batch
                    now = self._clock()
                    wait = min(deadline - now, self._last_put + idle_s - now)
                    if wait <= 0:
                        return batch
                    self._wake_at = (max(max_lines - lines, 1), max(max_bytes - nbytes, 1))
                    self._cond.wait(wait)
            finally:
                self._wake_at = (1, 0)

    def wake(self) -> None:
        """Wake a waiting `get_batch` (the writer's `busy` state changed)."""
        with self._cond:
            self._cond.notify()

    def drain(self) -> list[Item]:
        """Everything left, at once."""
        with self._cond:
            items = [item for _, item in self._items]
            self._items.clear()
            self._bytes = 0
            return items


class Backoff:
    """Exponential backoff with jitter: initial, initial*factor, ... capped at `maximum`."""

    def __init__(self, initial: float = 0.2, maximum: float = 10.0, factor: float = 2.0,
                 jitter: float = 0.1, rng: random.Random | None = None) -> None:
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._rng = rng or random.Random()
        self._next = initial

    def __iter__(self) -> Iterator[float]:
        while True:
            yield self.next()

    def next(self) -> float:
        """The next delay in seconds."""
        base = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return base * (1 + self.jitter * (2 * self._rng.random() - 1))

    def reset(self) -> None:
        """Back to the initial delay (after a success)."""
        self._next = self.initial
