"""ModelSlot with a fake loader: staged swaps, refusals with reasons, latency fallback."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from edge_agent.hot_swap import ModelSlot

SPEC = "a" * 64
DIM = 4


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeDetector:
    def __init__(self, version: str, *, spec: str = SPEC, delay_ms: float = 1.0,
                 nan: bool = False, clock: FakeClock | None = None, package_hash: str = "",
                 width: int = DIM) -> None:
        self.version, self.feature_spec_hash, self.package_hash = version, spec, package_hash
        self.delay_ms, self.nan, self.clock, self.width = delay_ms, nan, clock, width
        self.calls = 0

    def score(self, rows: np.ndarray) -> np.ndarray:
        if rows.shape[1] != self.width:
            raise ValueError(f"rows must be (N, {self.width})")
        self.calls += 1
        if self.clock is not None:
            self.clock.t += self.delay_ms / 1e3
        out = rows.sum(axis=1).astype(np.float32)
        return np.full_like(out, np.nan) if self.nan else out


def package(version: str, **kw: object) -> bytes:
    return json.dumps({"version": version, **kw}).encode()


class FakeLoader:
    """Decodes `package()` bytes; "tampered" packages fail like a bad signature."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.loads = 0

    def __call__(self, data: bytes, public_key: bytes | None) -> FakeDetector:
        self.loads += 1
        d = json.loads(data)
        if d.get("tampered"):
            raise ValueError("signature: signature does not verify with key abc")
        return FakeDetector(d["version"], spec=d.get("spec", SPEC),
                            delay_ms=d.get("delay_ms", 1.0), nan=d.get("nan", False),
                            width=d.get("width", DIM), clock=self.clock,
                            package_hash=hashlib.sha256(data).hexdigest())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loader(clock: FakeClock) -> FakeLoader:
    return FakeLoader(clock)


@pytest.fixture
def slot(clock: FakeClock, loader: FakeLoader) -> ModelSlot:
    initial = FakeDetector("stat-1", spec="", clock=clock)
    return ModelSlot(initial, spec_hash=SPEC, public_key=b"k" * 32, latency_budget_ms=10.0,
                     smoke_windows=2, loader=loader, clock=clock, fallback_after=3)


ROWS = np.arange(40, dtype=np.float32).reshape(10, DIM)


def test_swaps_only_when_apply_pending_is_called(slot: ModelSlot) -> None:
    initial = slot.active
    slot.offer(package("m-2"), ROWS)
    assert slot.active is initial  # staged, not yet in force
    assert slot.state()["staged_version"] == "m-2"
    assert slot.state()["last_result"] is None
    assert slot.apply_pending() is True
    assert slot.active.version == "m-2" and slot.previous is initial
    assert slot.apply_pending() is False
    st = slot.state()
    assert st["model_version"] == "m-2" and st["previous_version"] == "stat-1"
    assert st["last_result"] == "swapped" and st["fallback"] is False
    assert st["model_hash"] == hashlib.sha256(package("m-2")).hexdigest()
    assert isinstance(st["swapped_at"], float) and st["staged_version"] is None
    json.dumps(st)


@pytest.mark.parametrize("pkg, why", [
    (package("m-2", tampered=True), "package rejected: signature"),
    (package("m-2", spec="b" * 64), "built for another feature spec"),
    (package("m-2", delay_ms=50.0), "too slow"),
    (package("m-2", nan=True), "non-finite"),
    (package("m-2", width=7), "smoke run failed"),
])
def test_bad_packages_are_refused_and_old_keeps_scoring(
    slot: ModelSlot, loader: FakeLoader, pkg: bytes, why: str
) -> None:
    initial = slot.active
    slot.offer(pkg, ROWS)
    assert slot.apply_pending() is False
    assert slot.active is initial
    assert slot.active.score(ROWS).shape == (10,)
    st = slot.state()
    assert st["last_result"] == "refused" and why in st["reason"]
    assert st["model_version"] == "stat-1"
    loads = loader.loads
    slot.offer(pkg, ROWS)  # the broker redelivers the retained package: not re-verified
    assert loader.loads == loads


def test_latency_budget_uses_one_window_of_rows(clock: FakeClock, loader: FakeLoader) -> None:
    """8 ms per call is within a 10 ms budget; the batch is len(rows) // smoke_windows."""
    s = ModelSlot(FakeDetector("stat-1", spec=SPEC), spec_hash=SPEC, public_key=None,
                  latency_budget_ms=10.0, smoke_windows=5, loader=loader, clock=clock)
    seen: list[int] = []
    orig = FakeDetector.score

    def spy(self: FakeDetector, rows: np.ndarray) -> np.ndarray:
        seen.append(len(rows))
        return orig(self, rows)

    FakeDetector.score = spy  # type: ignore[method-assign]
    try:
        s.offer(package("m-2", delay_ms=8.0), ROWS)
    finally:
        FakeDetector.score = orig  # type: ignore[method-assign]
    assert s.apply_pending()
    assert seen == [10, 2, 2, 2]  # smoke run on all rows, then 3 timed windows of 10 // 5


def test_nonfinite_input_rows_are_skipped_and_no_rows_is_not_remembered(
    slot: ModelSlot, loader: FakeLoader
) -> None:
    bad = np.full((3, DIM), np.nan, np.float32)
    slot.offer(package("m-2"), bad)
    assert slot.state()["last_result"] == "refused"
    assert "no recent rows" in slot.state()["reason"]
    slot.offer(package("m-2"), np.vstack([bad, ROWS]))  # offered again once rows exist
    assert slot.apply_pending() and slot.active.version == "m-2"


def test_same_version_or_same_bytes_is_a_noop(slot: ModelSlot, loader: FakeLoader) -> None:
    slot.offer(package("m-2"), ROWS)
    slot.apply_pending()
    loads = loader.loads
    slot.offer(package("m-2"), ROWS)  # same bytes as active: not even loaded
    assert loader.loads == loads
    slot.offer(package("m-2", note="rebuilt"), ROWS)  # same version, other bytes
    assert slot.apply_pending() is False
    assert slot.state()["last_result"] == "swapped"


def test_fallback_after_consecutive_misses(slot: ModelSlot, loader: FakeLoader) -> None:
    initial = slot.active
    slot.offer(package("m-2"), ROWS)
    slot.apply_pending()
    slot.report_latency(50.0)
    slot.report_latency(50.0)
    slot.report_latency(1.0)  # the streak is broken
    slot.report_latency(50.0)
    slot.report_latency(50.0)
    assert slot.active.version == "m-2"
    slot.report_latency(50.0)
    assert slot.active is initial
    st = slot.state()
    assert st["last_result"] == "fallback" and st["fallback"] is True
    assert "m-2 missed the 10 ms budget 3 windows in a row" in st["reason"]
    assert st["previous_version"] is None
    loads = loader.loads
    slot.offer(package("m-2"), ROWS)  # the slow model is not taken back
    assert loader.loads == loads and slot.apply_pending() is False
    slot.offer(package("m-3"), ROWS)  # a new one is
    assert slot.apply_pending() and slot.state()["fallback"] is False


def test_no_fallback_without_previous(slot: ModelSlot) -> None:
    initial = slot.active
    for _ in range(10):
        slot.report_latency(99.0)
    assert slot.active is initial and slot.state()["last_result"] is None


def test_default_loader_refuses_garbage(clock: FakeClock) -> None:
    """Real `read_package` behind the default loader: bytes that are no package."""
    s = ModelSlot(FakeDetector("stat-1"), spec_hash=SPEC, public_key=None,
                  latency_budget_ms=10.0, smoke_windows=1, clock=clock)
    s.offer(b"not a package", ROWS)
    assert s.state()["last_result"] == "refused"
    assert "package rejected: format" in s.state()["reason"]
