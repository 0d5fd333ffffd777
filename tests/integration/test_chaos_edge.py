"""Issue 12, gateway side of `bench chaos`: frame fuzzing and gateway faults, for real.

Real Mosquitto, a real ``fiberwatch edge run`` process, and for the faults real ingestion and
influxd (`fiberwatch.bench._chaos_edge`). Smaller than the benchmark: 30,000 fuzz frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fiberwatch.bench._chaos_edge import (
    Stack,
    fault_agent_sigkill,
    fault_clock_jump,
    fault_forged_frame,
    fault_outbox_disk_full,
    run_frame_fuzz,
)
from fiberwatch.bench._chaos_edge_parts import own_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
KEYS = {"name", "events_published", "events_stored", "lost", "duplicates"}


def test_fuzzed_frames_crash_nothing_and_the_real_stream_is_scored_after(
        tmp_path: Path) -> None:
    r = run_frame_fuzz(30_000, seed=3, work=tmp_path, recover_s=6.0)
    assert r["frames"] == 30_000
    assert r["frames_counted_by_agent"] >= 30_000  # every frame reached the agent
    assert r["crashes"] == 0
    assert r["stream_recovered"], r
    drops = r["drops"]
    assert drops.get("clock_skew", 0) > 0  # far-future frames were refused, not followed
    assert sum(v for k, v in drops.items() if k.startswith("malformed:")) > 10_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with own_stack(tmp_path_factory.mktemp("chaos-stack")) as st:
        yield st


def _check(r: dict) -> None:
    assert KEYS <= set(r), r
    assert r["agent_crashes"] == 0, r
    assert r["events_published"] >= 1, r  # the stream was not blinded: leaks gave events
    assert r["lost"] == 0 and r["events_stored"] == r["events_published"], r


def test_a_forged_far_future_frame_does_not_blind_the_gateway(stack: Stack,
                                                               tmp_path: Path) -> None:
    r = fault_forged_frame(stack=stack, work=tmp_path, seconds=24)
    _check(r)
    assert r["windows_after_forged"] >= 0.8 * r["windows_expected"], r


def test_events_survive_an_agent_sigkill(stack: Stack, tmp_path: Path) -> None:
    _check(fault_agent_sigkill(stack=stack, work=tmp_path, seconds=24))


def test_events_survive_a_full_outbox_disk(stack: Stack, tmp_path: Path) -> None:
    try:
        r = fault_outbox_disk_full(stack=stack, work=tmp_path, seconds=24, full_s=8.0)
    except PermissionError as exc:
        pytest.skip(str(exc))
    _check(r)
    assert r["outbox_errors_while_full"].get("SQLITE_FULL", 0) >= 1, r  # the fault was real


def test_events_survive_gateway_clock_jumps(stack: Stack, tmp_path: Path) -> None:
    r = fault_clock_jump(stack=stack, work=tmp_path, seconds=24)
    _check(r)
    plus, minus, back = r["agent_clock_offsets_s"]  # the agent's clock did jump
    assert abs(plus - 86400) <= 5 and abs(minus + 86400) <= 5 and abs(back) <= 5, r
