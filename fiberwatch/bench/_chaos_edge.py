"""Gateway-side chaos for ``fiberwatch bench chaos`` (issue 12): frame fuzzing through a real
agent, and the gateway faults.

`run_frame_fuzz` sends mutated frames (valid headers with one field mutated and the checksum
fixed, valid frames with hostile sequence numbers, times and samples, truncated frames, bit
flips, random bytes) to a real ``fiberwatch edge run`` process over a real Mosquitto, while
the real stream goes on, paced by the agent's own counters so every frame reaches it. Then
the real stream alone: the agent must still score it. Result keys (a contract):
``{"frames", "crashes", "stream_recovered"}`` plus what the agent counted.

Fault functions, for the chaos runner: `fault_agent_sigkill`, `fault_outbox_disk_full`,
`fault_clock_jump`, `fault_forged_frame`. Each runs a real agent on the real stream (with a
leak every few seconds) against Mosquitto, ingestion and influxd, applies its fault, stops the
agent cleanly, waits for the cloud, and returns ``{"name", "events_published",
"events_stored", "lost", "duplicates"}`` (a contract) plus details:

- ``events_published``: distinct event ids the agent published (seen on the broker);
- ``events_stored``: how many of those ids InfluxDB holds; ``lost`` = published - stored;
- ``duplicates``: InfluxDB points beyond the first per event id (measured, 2026-12-04: an
  event announced while open and re-sent when it closes with another ``severity`` or
  ``class_hint`` is two points today, because the cloud's ``event`` measurement keeps those
  as tags: a duplicate with no fault at all, to be fixed on the cloud side);
- ``leaks_injected`` / ``leaks_detected``: leaks in the stream and how many of them a
  published event covers (a blinded stream publishes nothing, and so loses nothing: this
  is what shows it).

Pass a `Stack` to use a running broker + ingestion + influxd, or none to start one.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent import wire
from fiberwatch.bench import _chaos_fuzz as fuzz
from fiberwatch.bench._chaos_edge_parts import (
    CH,
    FRAME,
    HOP_S,
    RATE,
    Agent,
    Feed,
    Stack,
    Watch,
    agent_config,
    offset_env,
    own_stack,
    stored_counts,
    wait_for,
    write_toml,
)

__all__ = ["Stack", "fault_agent_sigkill", "fault_clock_jump", "fault_forged_frame",
           "fault_outbox_disk_full", "run_frame_fuzz"]

_INFLIGHT = 20_000  # fuzz frames sent but not yet counted by the agent


@contextmanager
def _workdir(work: Path | None) -> Iterator[Path]:
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    with tempfile.TemporaryDirectory(prefix="fw-chaos-edge-") as d:
        yield Path(d)


@contextmanager
def _stack(stack: Stack | None, work: Path, cloud: bool) -> Iterator[Stack]:
    if stack is not None:
        yield stack
        return
    with own_stack(work, cloud=cloud) as s:
        yield s


# -- frame fuzzing ---------------------------------------------------------------------------
def _counted(h: dict) -> int:
    """Frames the agent has taken from MQTT: accepted plus dropped for any reason
    (``nonfinite`` marks an accepted frame, it is not a drop)."""
    drops = h.get("drops", {})
    return int(h.get("frames", 0)) + sum(int(v) for k, v in drops.items() if k != "nonfinite")


def run_frame_fuzz(frames: int = 1_000_000, *, seed: int = 0, work: Path | None = None,
                   stack: Stack | None = None, recover_s: float = 10.0,
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Send `frames` mutated frames through a real agent, then check it still scores the real
    stream for `recover_s` seconds. See the module notes for the result."""
    with _workdir(work) as wd, _stack(stack, wd, cloud=False) as st:
        gw = "fuzz-1"
        cfg = write_toml(wd / "fuzz.toml", agent_config(wd / "fuzz-data", st.mqtt_port, gw))
        agent, watch = Agent(cfg, wd), Watch(st.mqtt_port, gw)
        agent.start()
        feed = Feed(st.mqtt_port, gw, leaks_from_s=1e9).start()
        try:
            if not wait_for(lambda: watch.health().get("windows", 0) > 0, 60):
                raise RuntimeError(f"chaos fuzz: the agent never scored\n{agent.log_tail()}")
            t0 = time.monotonic()
            sent, counted = _fuzz_loop(frames, seed, feed, watch, agent, progress)
            fuzz_s = time.monotonic() - t0
            recovered, detail = _recovery(watch, agent, recover_s)
        finally:
            feed.stop()
            code = agent.stop()
            watch.close()
        h = detail.pop("health")
        internal = int(h.get("drops", {}).get("internal_error", 0))
        return {"frames": sent, "crashes": agent.crashes + internal,
                "stream_recovered": recovered and agent.crashes == 0,
                "frames_counted_by_agent": counted, "fuzz_s": round(fuzz_s, 1),
                "frames_per_s": round(sent / max(fuzz_s, 1e-9)), "agent_exit": code,
                "drops": h.get("drops", {}), "resyncs": h.get("resyncs", 0), **detail}


def _fuzz_loop(frames: int, seed: int, feed: Feed, watch: Watch, agent: Agent,
               progress: Callable[[int], None] | None) -> tuple[int, int]:
    """Publish the mutated frames, never more than `_INFLIGHT` ahead of the agent's count;
    return (sent, counted by the agent: accepted or dropped with a reason)."""
    gen = fuzz.Mutator(seed)
    base = _counted(watch.health()) - feed.sent

    def done() -> int:  # the real frames the agent took are counted too: subtract them
        return _counted(watch.health()) - feed.sent - base

    def caught_up(sent: int, slack: int) -> bool:
        return sent - done() <= slack or not agent.alive()

    sent = 0
    while sent < frames and agent.alive():
        n = min(2_000, frames - sent)
        feed.inject(gen.batch(n))
        sent += n
        wait_for(lambda s=sent: caught_up(s, _INFLIGHT), 10.0, tick=0.05)
        if progress is not None:
            progress(sent)
    wait_for(lambda: caught_up(sent, 0), 30.0)
    return sent, done()


def _recovery(watch: Watch, agent: Agent, seconds: float) -> tuple[bool, dict]:
    """The real stream alone for `seconds`: windows and summaries must keep coming."""
    time.sleep(2.0)  # the fuzz frames still queued drain; the validator re-synchronises
    before, t_real = watch.snapshot(), time.time_ns()
    time.sleep(seconds)
    after = watch.snapshot()
    windows = int(after.health.get("windows", 0)) - int(before.health.get("windows", 0))
    expected = seconds / HOP_S
    fresh = after.summary_t_ns >= t_real  # a summary of windows that ended after the fuzz
    ok = agent.alive() and windows >= 0.8 * expected and fresh
    return ok, {"windows_after": windows, "windows_expected": round(expected),
                "summaries_after": after.summaries - before.summaries, "health": after.health}


# -- gateway faults --------------------------------------------------------------------------
class _Run:
    """One agent on the real stream with leaks; `finish` counts published vs stored."""

    def __init__(self, st: Stack, wd: Path, name: str, env: dict[str, str] | None = None,
                 data_dir: Path | None = None) -> None:
        if st.influx_url is None:
            raise ValueError("gateway faults need the cloud (Stack.influx_url)")
        self.st, self.name, self.gw = st, name, name.replace("_", "-")
        cfg = agent_config(data_dir or wd / f"{self.gw}-data", st.mqtt_port, self.gw)
        self.agent = Agent(write_toml(wd / f"{self.gw}.toml", cfg), wd, env)
        self.watch = Watch(st.mqtt_port, self.gw)
        self.agent.start()
        self.feed = Feed(st.mqtt_port, self.gw).start()
        if not wait_for(lambda: self.watch.health().get("windows", 0) > 0, 60):
            self.close()
            raise RuntimeError(f"chaos {name}: the agent never scored\n"
                               f"{self.agent.log_tail()}")

    def leak_on(self, timeout: float = 30.0) -> None:
        """Wait until a leak has been detected (an event is open) - the worst moment."""
        n = len(self.watch.snapshot().events)
        wait_for(lambda: len(self.watch.snapshot().events) > n, timeout)

    def close(self) -> None:
        self.feed.stop()
        self.agent.stop()
        self.watch.close()

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        self.feed.stop()
        time.sleep(1.0)
        health = self.watch.health()
        self.agent.stop()
        seen = self.watch.snapshot()
        ids = set(seen.events)
        wait_for(lambda: ids <= set(stored_counts(self.st.influx_url or "", self.gw)), 60, 0.5)
        stored = stored_counts(self.st.influx_url or "", self.gw)
        self.watch.close()
        return {
            "name": self.name, "events_published": len(ids),
            "events_stored": len(ids & set(stored)), "lost": len(ids - set(stored)),
            "duplicates": sum(max(0, c - 1) for c in stored.values()),
            "leaks_injected": len(self.feed.leaks),
            "leaks_detected": _covered(self.feed.leaks, list(seen.events.values())),
            "agent_crashes": self.agent.crashes,
            "outbox_errors": health.get("outbox_errors", {}),
            "outbox_evicted": health.get("outbox_evicted", 0), **(extra or {}),
        }


def _covered(leaks: list, events: list[dict]) -> int:
    """Leaks that ended (at least 2 s before the stream did) and that an event covers."""
    n = 0
    for lk in leaks:
        n += any(e["start_ns"] <= lk.end_ns + 2e9 and e["end_ns"] >= lk.start_ns - 2e9
                 and e["ch_start"] <= lk.ch_hi + 3 and e["ch_end"] >= lk.ch_lo - 3
                 for e in events)
    return n


def _fault(name: str, body: Callable[[_Run], dict | None], *, stack: Stack | None,
           work: Path | None, seconds: float, env: Callable[[Path], dict] | None = None,
           data_dir: Callable[[Path], Path] | None = None) -> dict[str, Any]:
    with _workdir(work) as wd, _stack(stack, wd, cloud=True) as st:
        run = _Run(st, wd, name, env(wd) if env else None, data_dir(wd) if data_dir else None)
        try:
            time.sleep(seconds / 3)
            extra = body(run)
            time.sleep(seconds / 3)
        except BaseException:
            run.close()
            raise
        return run.finish(extra or {})


def fault_agent_sigkill(*, stack: Stack | None = None, work: Path | None = None,
                        seconds: float = 30.0) -> dict[str, Any]:
    """SIGKILL the agent while a leak's event is open, start it again on the same data."""
    def body(run: _Run) -> dict:
        run.leak_on()
        run.agent.kill()
        time.sleep(1.0)
        run.agent.start()
        return {"restarts": 1}

    return _fault("agent_sigkill", body, stack=stack, work=work, seconds=seconds)


def fault_outbox_disk_full(*, stack: Stack | None = None, work: Path | None = None,
                           seconds: float = 30.0, full_s: float = 12.0) -> dict[str, Any]:
    """The agent's data dir is a real 4 MiB tmpfs; it is filled for `full_s` seconds while
    leaks go on, then freed. Needs the right to mount (root); raises PermissionError
    otherwise."""
    from fiberwatch.bench._chaos_fs import TinyFs

    fs: list[TinyFs] = []

    def data_dir(wd: Path) -> Path:
        fs.append(TinyFs(wd / "gw-fs", size_kib=4096))
        return fs[0].path / "data"

    def body(run: _Run) -> dict:
        run.leak_on()
        fs[0].fill()
        time.sleep(full_s)
        errors = run.watch.health().get("outbox_errors", {})
        fs[0].free()
        return {"outbox_errors_while_full": errors, "full_s": full_s}

    try:
        return _fault("outbox_disk_full", body, stack=stack, work=work, seconds=seconds,
                      data_dir=data_dir)
    finally:
        for f in fs:
            f.close()


def fault_clock_jump(*, stack: Stack | None = None, work: Path | None = None,
                     seconds: float = 30.0, jump_s: float = 86400.0) -> dict[str, Any]:
    """The gateway's wall clock jumps +1 day, then -1 day, then back (the agent's
    documented test hook `edge_agent.clock`), while leaks go on."""
    hook: list[Path] = []

    def env(wd: Path) -> dict[str, str]:
        hook.append(wd / "clock-offset")
        return offset_env(hook[0])

    def body(run: _Run) -> dict:
        seen = []
        for offset in (jump_s, -jump_s, 0.0):
            hook[0].write_text(f"{offset}\n")
            time.sleep(max(seconds / 6, 3.0))
            # the agent's own clock, as its health heartbeat reports it: proof the jump took
            seen.append(round((run.watch.health().get("t_ns", 0) - time.time_ns()) / 1e9))
        return {"jumps_s": [jump_s, -jump_s, 0.0], "agent_clock_offsets_s": seen}

    return _fault("clock_jump", body, stack=stack, work=work, seconds=seconds, env=env)


def fault_forged_frame(*, stack: Stack | None = None, work: Path | None = None,
                       seconds: float = 30.0) -> dict[str, Any]:
    """One forged frame: seq = 2**64 - 1, first sample at 2**62 ns (year 2116)."""
    def body(run: _Run) -> dict:
        forged = wire.encode(wire.StreamKind.DAS, 2**64 - 1, 2**62, RATE, 0,
                             np.zeros((FRAME, CH), np.float32))
        before = run.watch.health().get("windows", 0)
        run.feed.inject([forged])
        time.sleep(seconds / 3)
        after = run.watch.health().get("windows", 0)
        return {"windows_after_forged": after - before,
                "windows_expected": round(seconds / 3 / HOP_S)}

    return _fault("forged_frame", body, stack=stack, work=work, seconds=seconds)
