"""Issue 12: the outbox survives a full disk and wall-clock jumps without losing an event."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from edge_agent.store_forward import Outbox


def _fill_to_the_limit(ob: Outbox, extra_pages: int = 2) -> None:
    """SQLITE_FULL for real: cap the database file a few pages above its current size."""
    pages = int(ob._db.execute("PRAGMA page_count").fetchone()[0])
    ob._db.execute(f"PRAGMA max_page_count={pages + extra_pages}")


def test_disk_full_keeps_the_event_in_memory_counts_the_real_error_and_retries(
        tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_events=10_000, max_age_s=3600)
    _fill_to_the_limit(ob)
    ids = [ob.put("t/e", bytes([i % 251]) * 3000) for i in range(40)]  # never raises
    assert ids == sorted(ids) and len(set(ids)) == 40
    assert ob.errors.get("SQLITE_FULL", 0) >= 1
    assert not any("rollback" in k.lower() for k in ob.errors)
    assert ob.spilled() > 0
    assert ob.depth() == 40
    rows = ob.pending(limit=1000)
    assert [r[0] for r in rows] == ids  # every event is still delivered, in order
    # the disk frees up: the next write stores the spilled items, counters stay exact
    ob._db.execute("PRAGMA max_page_count=1073741823")
    ob.put("t/e", b"after")
    assert ob.spilled() == 0 and ob.depth() == 41
    stored = ob._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert stored == 41
    ob.ack_many(ids[:10])
    assert ob.depth() == 31
    ob.close()
    with Outbox(tmp_path / "o.db", max_events=10_000, max_age_s=3600) as again:
        assert again.depth() == 31
        assert [r[0] for r in again.pending(limit=5)] == ids[10:15]


def test_acks_on_a_full_disk_are_remembered_and_written_later(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_events=1000, max_age_s=3600)
    ids = [ob.put("t/e", b"x" * 100) for _ in range(20)]
    _fill_to_the_limit(ob, extra_pages=0)
    ob._db.execute("PRAGMA journal_mode=DELETE")  # a delete now needs a rollback journal page
    assert ob.ack_many(ids[:5]) == 5
    assert ob.depth() == 15
    assert [r[0] for r in ob.pending(limit=100)] == ids[5:]
    ob.close()


def test_the_row_counter_matches_the_table_after_failures(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_events=25, max_age_s=3600)
    _fill_to_the_limit(ob, extra_pages=3)
    for i in range(60):
        ob.put("t/e", bytes(2000))
        if i % 7 == 0:
            ob.ack_many([r[0] for r in ob.pending(limit=2)])
    stored = ob._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert ob.depth() == stored + ob.spilled()
    assert ob.depth() <= 25
    ob.close()


def test_byte_bound_evicts_the_oldest(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_events=1000, max_age_s=3600, max_bytes=10_000) as ob:
        ids = [ob.put("t", bytes(1000)) for _ in range(25)]
        assert ob.depth() == 10 and ob.evicted == 15
        assert [r[0] for r in ob.pending(limit=100)] == ids[15:]


_CLOCK_JUMP = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    real = time.time
    offset = [86400.0 - real()]          # the gateway boots believing it is 1970-01-02
    time.time = lambda: real() + offset[0]
    from edge_agent.store_forward import Outbox
    path = Path(sys.argv[1])
    ob = Outbox(path, max_events=1000, max_age_s=7 * 86400)
    ids = [ob.put("t/e", b"queued while offline") for _ in range(5)]
    offset[0] = 0.0                      # NTP steps the clock to today
    assert [r[0] for r in ob.pending(limit=100)] == ids, "evicted by a clock step"
    ob.close()
    ob = Outbox(path, max_events=1000, max_age_s=7 * 86400)
    assert [r[0] for r in ob.pending(limit=100)] == ids, "evicted after a restart"
    assert ob.evicted == 0
    ob.close()
    print("ok")
""")


def test_a_gateway_booting_at_1970_then_syncing_ntp_keeps_its_queue(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-c", _CLOCK_JUMP, str(tmp_path / "o.db")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A real 1 MiB tmpfs (needs mount rights: skipped without them)."""
    mnt = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_really_full_filesystem_loses_nothing(tiny_fs: Path) -> None:
    ob = Outbox(tiny_fs / "outbox.db", max_events=100_000, max_age_s=3600)
    ob.put("t/e", b"first")
    filler = tiny_fs / "filler"
    with open(filler, "wb", buffering=0) as f:  # take every free byte
        try:
            while True:
                f.write(bytes(4096))
        except OSError:
            pass
    ids = [ob.put("t/e", bytes(4000)) for _ in range(50)]
    assert ob.errors, "the filesystem should have refused a write"
    assert ob.depth() == 51
    assert [r[0] for r in ob.pending(limit=1000)][1:] == ids
    filler.unlink()
    ob.put("t/e", b"last")
    assert ob.spilled() == 0
    ob.close()
    with Outbox(tiny_fs / "outbox.db", max_events=100_000, max_age_s=3600) as again:
        assert again.depth() == 52


def test_the_normal_buffer_on_a_full_filesystem_keeps_rows_and_does_not_raise(
        tiny_fs: Path) -> None:
    from edge_agent.normal_buffer import NormalBuffer

    nb = NormalBuffer(tiny_fs / "n.fwnb", dim=4, spec_hash="h", max_rows=200_000)
    with open(tiny_fs / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(4096))
        except OSError:
            pass
    for _ in range(50):
        nb.append(np.ones((100, 4), np.float32))  # the ring lies past the end of the file
    assert nb.write_errors > 0
    (tiny_fs / "filler").unlink()
    nb.append(np.ones((1, 4), np.float32))
    nb.close()
    assert len(NormalBuffer.open_readonly(tiny_fs / "n.fwnb").read()) == 5001
