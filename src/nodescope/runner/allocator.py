"""Keep freed tensor memory in the process for the next tensor of the same size.

glibc serves a block above its mmap threshold with a fresh mmap and unmaps it on free;
the threshold adapts to freed blocks up to 32 MB, but not for the 2 MB-aligned blocks
torch asks for when it backs tensors with transparent huge pages
(THP_MEM_ALLOC_ENABLE, set by `nodescope run`), so every eval chunk's activations
paid their page faults again: a ReLU writing a fresh 3 × 4,096 × 80 float32 tensor took
1.5 ms instead of 0.05 ms, and one checkpoint of the 3 × 4×80 sample-set slice 78 ms
instead of 61 ms (2-core CPU, docs/benchmarks.md). Fixed thresholds keep blocks up to
32 MB in the heap for reuse. Larger ones (the winner-take-most activations, 60 MB) stay
mmaps on huge pages: keeping them too was 10% faster there, but fragmented the heap to
+330 MB of peak memory.

Dask's nannies set MALLOC_TRIM_THRESHOLD_ for their workers, which turns the adaptive
threshold off altogether (every tensor above 128 kB a fresh mmap: training 2.2x slower,
bench/dask_workers.py); the same call undoes it in a task.
"""

from __future__ import annotations

import contextlib
import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds; False where there is no glibc mallopt."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        # the process's own symbols hold libc's; find_library("c") took 4 ms every command
        libc = ctypes.CDLL(None)
        mmap_ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        trim_ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        return mmap_ok and trim_ok
    return False
