"""Ground truth: one `Label` per injected anomaly, stored as JSON Lines.

Each line is one JSON object::

    {"id": "well-a/gw1/0-leak", "kind": "leak", "site": "well-a", "gateway": "gw1",
     "streams": ["das", "dts"], "start_ns": ..., "end_ns": ..., "ch_start": 296,
     "ch_end": 304, "dist_start_m": 296.0, "dist_end_m": 304.0, "intensity": 1.0,
     "params": {"spread": 4.0, ...}, "dropped_seqs": {}}

``start_ns``/``end_ns`` bound the injection (end exclusive; clipped to the run); channel
ranges are inclusive absolute fiber channels, as in `edge_agent.events`. For ``dropped``,
``dropped_seqs`` maps each stream to the sequence numbers that were never emitted. A leak's
DTS cooling recovers over a few ``tau`` after ``end_ns``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Label:
    """One injected anomaly (see the module docstring for the fields)."""

    id: str
    kind: str
    site: str
    gateway: str
    streams: tuple[str, ...]
    start_ns: int
    end_ns: int
    ch_start: int
    ch_end: int
    dist_start_m: float
    dist_end_m: float
    intensity: float
    params: dict[str, float] = field(default_factory=dict)
    dropped_seqs: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record (one line of the labels file)."""
        d = asdict(self)
        d["streams"] = list(self.streams)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Label:
        """Parse a record written by `to_dict`; ValueError if it is not one."""
        try:
            return cls(**{**d, "streams": tuple(d["streams"])})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a label record: {exc}") from None

    def overlaps(self, stream: str, start_ns: int, end_ns: int, ch_lo: int, ch_hi: int) -> bool:
        """Whether a window ``[start_ns, end_ns)`` over channels ``ch_lo..ch_hi`` (inclusive)
        of `stream` touches this anomaly."""
        return (stream in self.streams and start_ns < self.end_ns and end_ns > self.start_ns
                and ch_lo <= self.ch_end and ch_hi >= self.ch_start)


def write_labels(path: str | Path, labels: Iterable[Label]) -> int:
    """Write labels as JSON Lines; return how many were written."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for label in labels:
            f.write(json.dumps(label.to_dict(), separators=(",", ":"), sort_keys=True) + "\n")
            n += 1
    return n


def read_labels(path: str | Path) -> list[Label]:
    """Read labels written by `write_labels` (blank lines are skipped)."""
    return list(iter_labels(path))


def iter_labels(path: str | Path) -> Iterator[Label]:
    """Iterate over the labels in a JSON Lines file."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield Label.from_dict(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
