"""Pure numpy: turn packed feature rows into the waterfall of `cloud.store.Store.window`.

Rows are summaries (one per gateway, stream and second, or per 10 s in history), each with
its own channel layout (first channel, group size, groups). The grid has one row per
channel group of a reference layout (the newest summary's) and one column per time bucket;
a summary with another layout contributes the group holding each grid row's first channel.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from cloud import codec

NS = 1_000_000_000
#: One summary: (time_ns, ch_start, group_size, n, weight, packed values).
Row = tuple[int, int, int, int, int, str]


def rows_from_table(cols: list[str], table: list[list[Any]], field: str) -> list[Row]:
    """The `Row` of each summary in a query's ``(columns, rows)`` (time, ch_start,
    group_size, n, fmt, `field` and, in history, count), oldest first; rows without values
    or in another `codec.FORMAT` are left out."""
    if not table:
        return []
    ix = {c: i for i, c in enumerate(cols)}
    i_t, i_v, i_cs, i_g, i_n, i_f = (ix[c] for c in ("time", field, "ch_start", "group_size",
                                                      "n", "fmt"))
    i_w = ix.get("count")
    out = []
    for r in table:
        if not r[i_v] or str(r[i_f]) != str(codec.FORMAT):
            continue
        w = int(r[i_w]) if i_w is not None and r[i_w] not in ("", None) else 1
        out.append((int(r[i_t]), int(r[i_cs]), int(r[i_g]), int(r[i_n]), w, r[i_v]))
    out.sort(key=lambda x: x[0])
    return out


def assemble(rows: list[Row], field: str, ch_start: int, ch_end: int, t0: int, step: int,
             ncols: int, max_cells: int, source: str) -> dict[str, Any]:
    """`cloud.store.Store.window`'s answer from its rows: the grid in the newest row's
    channel layout (single channels without rows), max of score, mean of the others.

    Raises
    ------
    ValueError
        If the grid would have more than `max_cells` cells.
    """
    ref_cs, ref_g = (rows[-1][1], rows[-1][2]) if rows else (0, 1)
    firsts = channel_rows(ch_start, ch_end, ref_cs, ref_g)
    if len(firsts) * ncols > max_cells:
        raise ValueError(f"window of {len(firsts)} channel groups x {ncols} times is too "
                         f"large (max {max_cells} cells): narrow it or ask for fewer times")
    how, dtype = ("max" if field == "score" else "mean"), codec.DTYPES[field]
    grid = build(rows, dtype, firsts, t0, step, ncols, how)
    values = to_lists(grid, float16=how == "max" and dtype == "<f2")  # max: exact
    return {"times_ns": [t0 + k * step for k in range(ncols)], "ch_start": ch_start,
            "ch_end": ch_end, "group_size": int(ref_g),
            "channels": np.maximum(firsts, 0).tolist(), "values": values,
            "field": field, "resolution_s": step / NS, "source": source}


def build(rows: list[Row], dtype: str, firsts: np.ndarray, t0: int, step: int, ncols: int,
          how: str) -> np.ndarray:
    """The grid (len(firsts) x ncols, NaN where empty) of packed `rows`, oldest first."""
    layouts: dict[tuple[int, int, int], list[int]] = {}
    for i, r in enumerate(rows):
        layouts.setdefault((r[1], r[2], r[3]), []).append(i)
    if len(layouts) == 1:  # the usual case: no copy into a second matrix
        ((cs, g, n), idx), = layouts.items()
        vals = gather(codec.unpack([r[5] for r in rows], n, dtype), cs, g, firsts)
    else:
        vals = np.empty((len(rows), len(firsts)), dtype=np.float32)
        for (cs, g, n), idx in layouts.items():
            vals[idx] = gather(codec.unpack([rows[i][5] for i in idx], n, dtype), cs, g, firsts)
    times = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    weights = np.fromiter((r[4] for r in rows), dtype=np.int64, count=len(rows))
    return reduce_columns((times - t0) // step, vals, weights, ncols, how)


def plan_times(start_ns: int, end_ns: int, max_times: int,
               min_step_ns: int = NS) -> tuple[int, int, int]:
    """``(t0, step_ns, ncols)``: buckets of whole `min_step_ns` multiples, aligned to them
    (so the columns stay put as a live view moves), covering [start_ns, end_ns), at most
    `max_times` of them."""
    span = end_ns - start_ns
    step = max(min_step_ns, math.ceil(span / max_times / min_step_ns) * min_step_ns)
    while True:
        t0 = start_ns - start_ns % step
        ncols = math.ceil((end_ns - t0) / step)
        if ncols <= max_times:
            return t0, step, ncols
        step += min_step_ns


def channel_rows(ch_start: int, ch_end: int, ref_start: int, group_size: int) -> np.ndarray:
    """First channel of each reference-layout group that overlaps [ch_start, ch_end]."""
    k0 = (ch_start - ref_start) // group_size
    k1 = (ch_end - ref_start) // group_size
    firsts = ref_start + np.arange(k0, k1 + 1, dtype=np.int64) * group_size
    return firsts[firsts + group_size - 1 >= 0]


def gather(matrix: np.ndarray, ch_start: int, group_size: int, firsts: np.ndarray) -> np.ndarray:
    """Columns of `matrix` (rows x groups of one layout) for the grid rows `firsts`, NaN
    where the layout has no group holding that channel (a view when it is one slice)."""
    n = matrix.shape[1]
    chans = np.maximum(firsts, 0)
    idx = (chans - ch_start) // group_size
    ok = (idx >= 0) & (idx < n) & (chans >= ch_start)
    if ok.all() and len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return matrix[:, idx[0]:idx[0] + len(idx)]
    out = np.full((matrix.shape[0], len(firsts)), np.nan, dtype=np.float32)
    out[:, ok] = matrix[:, idx[ok]]
    return out


def reduce_columns(cols: np.ndarray, vals: np.ndarray, weights: np.ndarray, ncols: int,
                   how: str) -> np.ndarray:
    """Aggregate rows of `vals` (rows x grid rows) into `ncols` time buckets: ``max`` or a
    `weights`-weighted ``mean``, ignoring NaN. Returns grid rows x ncols, NaN if empty (a
    transposed view: `to_lists` makes it contiguous on the way, in one pass).

    Rows are scattered into a dense (bucket, k-th row of the bucket, grid row) block and
    reduced along k: ~7x faster than ``ufunc.reduceat`` over rows for 1 s rows in 2 s
    buckets (which stays as the fallback for very uneven buckets).
    """
    inside = (cols >= 0) & (cols < ncols)
    if not inside.all():
        cols, vals, weights = cols[inside], vals[inside], weights[inside]
    out = np.full((ncols, vals.shape[1]), np.nan, dtype=np.float32)
    if len(cols) == 0:
        return out.T
    order = np.argsort(cols, kind="stable")
    if not np.all(order[1:] > order[:-1]):
        cols, vals, weights = cols[order], vals[order], weights[order]
    new = np.r_[True, cols[1:] != cols[:-1]]
    starts = np.flatnonzero(new)
    pos = np.arange(len(cols)) - starts[np.cumsum(new) - 1]
    k = int(pos.max()) + 1
    used = cols[starts]
    if k * len(starts) <= 4 * len(cols) + 64:
        block = np.full((len(starts), k, vals.shape[1]), np.nan, dtype=np.float32)
        block[np.cumsum(new) - 1, pos] = vals
        if how == "max":
            out[used] = np.fmax.reduce(block, axis=1)
        else:
            w = np.zeros((len(starts), k, 1), dtype=np.float32)
            w[np.cumsum(new) - 1, pos, 0] = weights
            out[used] = _weighted_mean(block, w, axis=1)
    elif how == "max":
        out[used] = np.fmax.reduceat(vals, starts, axis=0)
    else:
        present = ~np.isnan(vals)
        w = weights[:, None].astype(np.float32) * present
        total = np.add.reduceat(np.where(present, vals, 0) * w, starts, axis=0)
        wsum = np.add.reduceat(w, starts, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[used] = np.where(wsum > 0, total / wsum, np.nan)
    return out.T


def _weighted_mean(block: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    present = ~np.isnan(block)
    wp = np.where(present, w, 0)
    total = np.where(present, block, 0) * wp
    wsum = wp.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, total.sum(axis=axis) / wsum, np.nan)


def to_lists(grid: np.ndarray, float16: bool = False) -> list[list[float | None]]:
    """Nested lists of floats, None where NaN (only rows with a gap pay for the patch).

    With `float16` (the caller knows every value is a float16 value, e.g. the max of
    float16 data) equal values share one Python float from a table of all 65,536: a
    1,024 x 1,800 grid then costs ~3x less to build, and to free, than ``tolist()``.
    """
    if float16 and grid.size > 4096:
        codes = grid.astype(np.float16, order="C").view(np.uint16)
        return _f16_objects()[codes].tolist()
    grid = np.ascontiguousarray(grid)
    values: list[list[float | None]] = grid.tolist()
    missing = np.isnan(grid)
    for r in np.flatnonzero(missing.any(axis=1)):
        row = values[r]
        for c in np.flatnonzero(missing[r]).tolist():
            row[c] = None
    return values


@functools.cache
def _f16_objects() -> np.ndarray:
    """Object array: float16 bit pattern -> its value as a Python float, None for NaN."""
    return np.array([None if v != v else v for v in codec.F16_AS_F32.tolist()], dtype=object)
