"""`keep_large_buffers` (gateway/http/server.py): answers of a few hundred KB, each a little larger
than the last, reuse the C heap instead of faulting in fresh pages from the kernel every time."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
if sys.argv[1] == "kept":
    from gateway.http.server import keep_large_buffers
    assert keep_large_buffers()
def answers():
    for i in range(100):
        body = b"x" * (300_000 + i * 1_000)  # a listing that grows, as the open tasks do
        joined = b"".join((b"{", body, b"}"))
        del body, joined
answers()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
answers()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    # our own interpreter on a fixed script: a fresh allocator each time
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=60
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_growing_large_answers_fault_no_fresh_pages_once_kept() -> None:
    # 100 answers of 300-400 KB: glibc's default maps (and faults in) each one anew
    assert _faults("default") > 2_000
    assert _faults("kept") < 100
