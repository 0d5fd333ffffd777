"""NormalBuffer: ring wrap, reopen, spec checks, and a concurrent reader in another process."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_agent.normal_buffer import NormalBuffer, NormalBufferError

SPEC = "c" * 64


def rows(start: int, n: int, dim: int = 3) -> np.ndarray:
    """Row i holds the value i in every column, so order and tearing are visible."""
    return np.repeat(np.arange(start, start + n, dtype=np.float32)[:, None], dim, axis=1)


def test_append_read_and_wrap(tmp_path: Path) -> None:
    with NormalBuffer(tmp_path / "nb", dim=3, spec_hash=SPEC, max_rows=5) as nb:
        assert len(nb) == 0 and nb.read().shape == (0, 3)
        nb.append(rows(0, 3))
        np.testing.assert_array_equal(nb.read(), rows(0, 3))
        nb.append(rows(3, 4))  # wraps: 7 rows into 5 slots
        assert len(nb) == 5 and nb.total == 7
        np.testing.assert_array_equal(nb.read(), rows(2, 5))
        np.testing.assert_array_equal(nb.read(2), rows(5, 2))
        nb.append(rows(7, 12))  # more than the capacity in one go
        np.testing.assert_array_equal(nb.read(), rows(14, 5))
        assert nb.read().dtype == np.float32


def test_nonfinite_rows_skipped_and_shape_checked(tmp_path: Path) -> None:
    with NormalBuffer(tmp_path / "nb", dim=3, spec_hash=SPEC, max_rows=5) as nb:
        x = rows(0, 3)
        x[1, 2] = np.nan
        nb.append(x)
        np.testing.assert_array_equal(nb.read(), rows(0, 3)[[0, 2]])
        assert nb.skipped_nonfinite == 1
        with pytest.raises(ValueError, match=r"\(N, 3\)"):
            nb.append(np.zeros((2, 4), np.float32))
        nb.append(np.ones(3))  # one row as a vector
        assert len(nb) == 3


def test_reopen_keeps_rows_and_other_spec_replaces(tmp_path: Path) -> None:
    path = tmp_path / "nb"
    with NormalBuffer(path, dim=3, spec_hash=SPEC, max_rows=5) as nb:
        nb.append(rows(0, 4))
    with NormalBuffer(path, dim=3, spec_hash=SPEC, max_rows=5) as nb:
        np.testing.assert_array_equal(nb.read(), rows(0, 4))
        nb.append(rows(4, 1))
        assert nb.total == 5
    with NormalBuffer(path, dim=3, spec_hash="d" * 64, max_rows=5) as nb:
        assert len(nb) == 0  # rows of another spec are useless: started afresh


def test_open_readonly(tmp_path: Path) -> None:
    path = tmp_path / "nb"
    with NormalBuffer(path, dim=3, spec_hash=SPEC, max_rows=5) as nb:
        nb.append(rows(0, 2))
        with NormalBuffer.open_readonly(path, spec_hash=SPEC) as ro:
            assert (ro.dim, ro.max_rows, ro.spec_hash) == (3, 5, SPEC)
            nb.append(rows(2, 1))  # appends show up in an open reader
            np.testing.assert_array_equal(ro.read(), rows(0, 3))
            with pytest.raises(NormalBufferError, match="read-only"):
                ro.append(rows(0, 1))
    with pytest.raises(NormalBufferError, match="feature spec"):
        NormalBuffer.open_readonly(path, spec_hash="d" * 64)
    (tmp_path / "junk").write_bytes(b"x" * 5000)
    with pytest.raises(NormalBufferError, match="not a normal buffer"):
        NormalBuffer.open_readonly(tmp_path / "junk")
    with pytest.raises(FileNotFoundError):
        NormalBuffer.open_readonly(tmp_path / "missing")


def test_writer_never_blocks_on_a_reader(tmp_path: Path) -> None:
    """While a reader holds the lock, appends are held in memory and written afterwards."""
    path = tmp_path / "nb"
    with NormalBuffer(path, dim=3, spec_hash=SPEC, max_rows=10) as nb:
        nb.append(rows(0, 2))
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)  # a reader in the middle of a read
        nb.append(rows(2, 3))  # returns at once
        nb.append(rows(5, 1))
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        assert nb.total == 2
        nb.append(rows(6, 1))
        np.testing.assert_array_equal(nb.read(), rows(0, 7))


_READER = textwrap.dedent("""
    import sys
    import numpy as np
    from pathlib import Path
    from edge_agent.normal_buffer import NormalBuffer
    path, reads = Path(sys.argv[1]), int(sys.argv[2])
    seen = 0
    for _ in range(reads):
        with NormalBuffer.open_readonly(path, spec_hash=sys.argv[3]) as nb:
            x = nb.read()
        if len(x) == 0:
            continue
        col = x[:, 0]
        assert (x == col[:, None]).all(), "torn row"
        assert (np.diff(col) == 1).all(), f"not consecutive: {col[:5]}..."
        seen = max(seen, int(col[-1]))
    print("ok", seen)
""")


def test_concurrent_reader_in_another_process_sees_whole_consecutive_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nb"
    nb = NormalBuffer(path, dim=16, spec_hash=SPEC, max_rows=500)
    proc = subprocess.Popen([sys.executable, "-c", _READER, str(path), "300", SPEC],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    i = 0
    try:
        while proc.poll() is None:  # keep writing while the reader reads
            nb.append(rows(i, 37, dim=16))
            i += 37
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        nb.close()
    assert proc.returncode == 0, err
    assert out.startswith("ok")
    with NormalBuffer.open_readonly(path) as ro:
        last = ro.read()
    np.testing.assert_array_equal(last, rows(i - 500, 500, dim=16))


def test_rows_keep_their_origin_and_labelled_ranges_are_dropped(tmp_path: Path) -> None:
    from federation.model.task import read_normal

    with NormalBuffer(tmp_path / "nb", dim=3, spec_hash=SPEC, max_rows=6) as nb:
        nb.append(rows(0, 2))  # origin unknown
        nb.append(rows(2, 6), np.array([10, 10, 20, 20, 30, 30]), np.array([1, 2, 1, 2, 1, 2]))
        got, origin = nb.read_origin()
    np.testing.assert_array_equal(got, rows(2, 6))  # wrapped: the 6 newest
    assert origin["t_ns"].tolist() == [10, 10, 20, 20, 30, 30]
    kept, dropped = read_normal(str(tmp_path / "nb"), max_rows=6, exclude=[(15, 25, 2, 9)])
    assert dropped == 1 and kept[:, 0].tolist() == [2, 3, 4, 6, 7]  # t 20 channel 2 dropped
