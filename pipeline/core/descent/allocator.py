"""glibc's allocator, set for processes that run the engines: no page faults on the hot path.

Each step of the design engine allocates its row blocks' temporaries afresh (tens to hundreds
of kB each, hundreds per step). glibc serves blocks above its mmap threshold (128 kB at start,
raised as mmapped blocks are freed) with a fresh mmap, and returns the top of its heap to the
system once more than its trim threshold is free there; either way the next step faults every
page in again. On the NMES1988-shaped ZINB benchmark that was 0.8-2.6 million minor faults and
4-15 % of the engine's CPU in the kernel (benchmarks/README.md, "NMES1988-shaped fits").
Fixed thresholds keep the temporaries in the heap: the fits' arithmetic is untouched (the same
bits), only where their memory comes from changes.

`keep_heap` is called by the processes that fit (the sweep's workers, `fit_counts`, the
benchmarks), not on import: a library does not change its host's allocator behind its back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks below this come from the heap: glibc's own ceiling for its dynamic threshold on 64-bit.
MMAP_THRESHOLD = 32 << 20
# Free heap kept for reuse before it is returned to the system.
TRIM_THRESHOLD = 256 << 20


def keep_heap() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (see the module docstring).

    Returns:
        True where both were set; False where the C library is not glibc (macOS, musl) or
        refused them, which leaves the allocator as it was (slower, never wrong).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no glibc: musl has no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
