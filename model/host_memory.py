"""Keep freed host memory in the process instead of handing it back to the kernel (glibc's malloc).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh `mmap` and unmaps it on
free, so a CPU training step's large activations (one 32-clip layer of the video stem is 67 MB) are page-faulted
and zeroed by the kernel again on every step. Measured on a 2-core CPU (docs/benchmarks.md, session 19), about a
quarter of the video tower bench's CPU time was that kernel work. With mmap and trimming off, a freed block stays
in the heap and the next step reuses it; resident memory stays at the peak instead (1.7-2.1 GB against 1.6 GB
for the tower bench). PyTorch's CPU performance notes suggest jemalloc or tcmalloc for the same reason; this needs neither.

The batch programs (`clover train`, `finetune`, `eval`, `index`, `demo`) call `keep_freed_memory()` once at start;
`CLOVER_KEEP_FREED_MEMORY=0` turns it off. Off glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
ENV_SWITCH = "CLOVER_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Sets glibc's malloc never to mmap a block or trim the heap; -> whether it took effect."""
    if os.environ.get(ENV_SWITCH, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success; musl's is a stub that returns 0.
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
