"""The CLI's allocator tuning: applied on glibc, skipped when the user chose otherwise, and
effective (a freed large block is reused instead of faulted in again)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's mallopt")

PROBE = """
import resource, sys, threading
from stemsplit.allocator import keep_freed_memory
applied = keep_freed_memory()
import torch
torch.set_num_threads(1)

def one_segment():  # what a network does: large temporaries, made and freed
    x = torch.ones(1 << 24)  # 64 MiB
    y = x * 2
    z = (y + x).sum()
    del x, y

def faults_per_segment_in_steady_state():
    for _ in range(30):  # the heap settles into a layout that fits the pattern
        one_segment()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        one_segment()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5

result = {}
worker = threading.Thread(target=lambda: result.update(faults=faults_per_segment_in_steady_state()))
worker.start(); worker.join()
print(applied, int(result["faults"]))
"""


def probe(**env) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environment.pop("GLIBC_TUNABLES", None)
    environment.pop("STEMSPLIT_MALLOC_TUNING", None)
    output = subprocess.run([sys.executable, "-c", PROBE], env={**environment, **env},
                            capture_output=True, text=True, check=True).stdout.split()
    return output[0], int(output[1])


@glibc_only
def test_freed_memory_is_reused_in_worker_threads():
    applied, faults = probe()
    assert applied == "True"
    untouched, faults_default = probe(STEMSPLIT_MALLOC_TUNING="0")
    assert untouched == "False"
    # By default the 64 MiB temporaries are mmap-ed and unmapped: 3 x 16,384 pages faulted
    # in and zeroed every time. Tuned, once the heap has settled (its size plateaus after
    # a few rounds), freed blocks come back already mapped.
    assert faults_default > 40000
    assert faults < faults_default / 4


@glibc_only
def test_user_allocator_settings_win():
    applied, _ = probe(MALLOC_ARENA_MAX="4")
    assert applied == "False"
