"""`allocator.keep_heap`: temporaries freed and allocated again come back without page faults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.core.descent import allocator

# Rounds of the engine's pattern: 40 temporaries of 1 MiB live at once, then all freed (40 MiB
# free at the heap's top: above glibc's default trim threshold, below `TRIM_THRESHOLD`).
CHILD = r"""
import json, resource, sys
import torch
from pipeline.core.descent import allocator
from pipeline.core.descent.allocator import keep_heap
if sys.argv[1] == "keep":
    kept = keep_heap()
else:  # glibc's start-up thresholds, held fixed (its dynamic ones depend on the history)
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    kept = bool(libc.mallopt(allocator.M_MMAP_THRESHOLD, 128 << 10)
                and libc.mallopt(allocator.M_TRIM_THRESHOLD, 128 << 10))
def round_():
    xs = [torch.ones(1 << 17, dtype=torch.float64) for _ in range(40)]  # 1 MiB each, touched
    return sum(float(x[-1]) for x in xs)
round_(); round_()  # the first rounds fault their pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"kept": kept, "faults": after - before}))
"""


def _faults(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                          timeout=300, check=True)  # fmt: skip
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_heap_serves_freed_temporaries_again_without_faulting_their_pages_in():
    kept, default = _faults("keep"), _faults("default")
    assert kept["kept"] is True and default["kept"] is True
    # 10 rounds of 40 MiB are 102,400 pages of 4 KiB: with glibc's start-up thresholds every
    # block is an mmap of its own and faults its pages in again (102,080 measured); glibc's
    # dynamic thresholds fault anywhere from a few hundred to all of them, by the process's
    # history. With the heap kept none do (0 measured; the bound leaves room for the
    # interpreter's own allocations).
    assert default["faults"] > 50_000
    assert kept["faults"] < 1_000


def test_thresholds_are_glibcs_ceiling_and_keep_a_step_of_temporaries():
    # glibc caps its dynamic mmap threshold at 32 MiB on 64-bit; the trim threshold keeps the
    # largest step of the benchmarks (a few tens of MiB of temporaries) in the heap.
    assert allocator.MMAP_THRESHOLD == 32 << 20
    assert allocator.TRIM_THRESHOLD >= 4 * allocator.MMAP_THRESHOLD
