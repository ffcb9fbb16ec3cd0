import os
import subprocess
import sys

import pytest

# Allocates and frees a 64 MiB tensor 20 times after a warm-up and prints the minor page faults that took.
PROBE = """
import resource, torch
from model.host_memory import keep_freed_memory
applied = keep_freed_memory()
for _ in range(10):  # warm-up: glibc settles within a few rounds (7 here)
    torch.empty(16 * 2**20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(16 * 2**20).fill_(1.0)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(switch: str) -> tuple[bool, int]:
    env = {**os.environ, "CLOVER_KEEP_FREED_MEMORY": switch}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    applied, count = out.stdout.split()
    return applied == "True", int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_serves_a_repeated_large_tensor_without_new_page_faults():
    applied, kept = faults("1")
    skipped, returned = faults("0")
    assert applied and not skipped
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert returned >= 10 * pages  # each fresh mmap is faulted in again
    assert kept < pages  # the freed block is reused from the heap
