"""glibc ``malloc`` settings for a process that receives a stream of large frames.

A 2,048-channel DAS frame is ~410 kB, and every one passes through several buffers of that
size (paho's packet, the PUBLISH body it slices out, the payload). glibc serves blocks over
its *mmap threshold* with a fresh ``mmap`` (every page faults in on first touch, ~100 per
frame and buffer) and gives the top of its heap back to the kernel past its *trim
threshold*; its defaults (128 kB, adjusted upward as blocks are freed, and twice that) make
a frame stream fault in and release the same memory over and over. Measured with
`fiberwatch bench edge` (2 cores): the agent's receive thread and the window processing both
spend a large share of their CPU in those page faults.

`tune_malloc` raises both thresholds once at start-up, so frame-sized blocks are reused from
the heap. The memory kept is bounded by the trim threshold; blocks larger than the mmap
threshold (the window buffer) are still mapped on their own. An operator's own
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment settings win; on a C
library without ``mallopt`` (musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD,
                trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds; True if both were set (see the module)."""
    if any(k in os.environ for k in _ENV):
        log.info("event=malloc_tuning state=environment")
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.info("event=malloc_tuning state=unsupported")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold))
    log.info("event=malloc_tuning state=%s mmap_threshold=%d trim_threshold=%d",
             "set" if ok else "refused", mmap_threshold, trim_threshold)
    return ok
