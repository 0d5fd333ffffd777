"""Outbox: order, acks, bounds (size and age), counters, reopen, crash durability."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.store_forward import Outbox, OutboxError


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _open(path: Path, **kw) -> Outbox:
    kw.setdefault("max_events", 1000)
    kw.setdefault("max_age_s", 3600.0)
    return Outbox(path, **kw)


def test_put_pending_ack_in_order(tmp_path: Path) -> None:
    with _open(tmp_path / "o.db") as ob:
        ids = [ob.put(f"t/{i}", f"p{i}".encode()) for i in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert ob.depth() == 5
        assert ob.pending() == [(i, f"t/{n}", f"p{n}".encode()) for n, i in enumerate(ids)]
        assert [r[0] for r in ob.pending(limit=2)] == ids[:2]
        assert [r[0] for r in ob.pending(after=ids[2])] == ids[3:]
        ob.ack(ids[1])
        ob.ack(ids[1])  # twice: harmless
        ob.ack(999_999)  # unknown: harmless
        assert [r[0] for r in ob.pending()] == [ids[0], *ids[2:]]
        assert ob.ack_many([ids[0], ids[3]]) == 2
        assert ob.depth() == 2
        assert ob.evicted == 0


def test_ids_are_never_reused(tmp_path: Path) -> None:
    with _open(tmp_path / "o.db") as ob:
        a = ob.put("t", b"a")
        ob.ack(a)
        b = ob.put("t", b"b")
        assert b > a
        assert ob.max_id() == b
    with _open(tmp_path / "o.db") as ob:
        assert ob.put("t", b"c") > b


def test_size_bound_evicts_oldest_and_counts(tmp_path: Path) -> None:
    with _open(tmp_path / "o.db", max_events=3) as ob:
        ids = [ob.put("t", bytes([i])) for i in range(5)]
        assert ob.depth() == 3
        assert [r[0] for r in ob.pending()] == ids[2:]
        assert ob.evicted == 2


def test_age_bound_with_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    with _open(tmp_path / "o.db", max_age_s=10.0, clock=clock) as ob:
        old = ob.put("t", b"old")
        clock.t += 6
        mid = ob.put("t", b"mid")
        clock.t += 6  # `old` is 12 s old now, `mid` 6 s
        assert [r[0] for r in ob.pending()] == [mid]
        assert ob.evicted == 1 and ob.depth() == 1
        clock.t += 20
        new = ob.put("t", b"new")  # put evicts too
        assert [r[0] for r in ob.pending()] == [new]
        assert ob.evicted == 2
        assert old < mid < new


def test_survives_reopen_and_counter_is_per_process(tmp_path: Path) -> None:
    with _open(tmp_path / "o.db", max_events=2) as ob:
        for i in range(3):
            ob.put("t", bytes([i]))
        assert ob.evicted == 1
        before = ob.pending()
    with _open(tmp_path / "o.db", max_events=2) as ob:
        assert ob.pending() == before
        assert ob.depth() == 2
        assert ob.evicted == 0  # per process, not persisted


def test_second_opener_is_refused(tmp_path: Path) -> None:
    with _open(tmp_path / "o.db"):
        with pytest.raises(OutboxError, match="in use"):
            _open(tmp_path / "o.db")
    _open(tmp_path / "o.db").close()  # released on close


def test_closed_outbox_raises(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db")
    ob.close()
    ob.close()
    with pytest.raises(OutboxError, match="closed"):
        ob.put("t", b"x")


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "o.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(OutboxError):
        _open(tmp_path / "o.db")


_CRASHER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from edge_agent.store_forward import Outbox
    ob = Outbox(Path(sys.argv[1]), max_events=10_000, max_age_s=3600)
    n = int(sys.argv[2])
    for i in range(n):
        ob.put("t/crash", i.to_bytes(4, "big"))
    if sys.argv[3] == "exit":
        os._exit(0)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_items_survive_a_crash_right_after_put(tmp_path: Path, how: str) -> None:
    db = tmp_path / "o.db"
    proc = subprocess.run([sys.executable, "-c", _CRASHER, str(db), "200", how], timeout=120)
    assert proc.returncode == (0 if how == "exit" else -signal.SIGKILL)
    with _open(db) as ob:  # the dead process's lock is gone
        rows = ob.pending(limit=1000)
    assert [int.from_bytes(p, "big") for _, _, p in rows] == list(range(200))


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.one_of(st.just("put"), st.integers(0, 20)), max_size=60),
       cap=st.integers(1, 8))
def test_bounded_fifo_model(tmp_path_factory: pytest.TempPathFactory, ops: list, cap: int) -> None:
    """Against a plain list: FIFO, at most `cap`, evictions counted, acks by id."""
    model: list[int] = []
    evicted = 0
    with _open(tmp_path_factory.mktemp("o") / "o.db", max_events=cap) as ob:
        for op in ops:
            if op == "put":
                model.append(ob.put("t", b"x"))
                if len(model) > cap:
                    model.pop(0)
                    evicted += 1
            elif model:
                victim = model[op % len(model)]
                ob.ack(victim)
                model.remove(victim)
            assert [r[0] for r in ob.pending(limit=100)] == model
            assert ob.depth() == len(model)
            assert ob.evicted == evicted
