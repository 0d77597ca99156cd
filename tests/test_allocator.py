"""`keep_freed_memory`: glibc stops serving large blocks with their own mmap (so a freed layer buffer is reused, not
faulted in again), in this process and the processes it starts; the user's own environment wins; `tune` and
`bench` apply it unless `--system-malloc`. Each check runs in a fresh interpreter (the setting is process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.core import allocator

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="the C library is not glibc")

# mmapped blocks (mallinfo2's hblks) of a 64 MiB array, before and after keep_freed_memory()
PROBE = """
import ctypes, json, sys
import numpy as np
import autotune
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
def mapped():  # the array's own mappings: blocks mapped while it lives, less those after it is freed
    a = np.ones(16 << 20, np.float32)
    alive = libc.mallinfo2().hblks
    del a
    return alive - libc.mallinfo2().hblks
out = {"before": mapped(), "note": autotune.keep_freed_memory(), "again": autotune.keep_freed_memory()}
out["after"] = mapped()
child = "import os; print(os.environ.get('MALLOC_MMAP_MAX_'))"
import subprocess
out["child"] = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout.strip()
print(json.dumps(out))
"""


def _probe(env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in allocator.ENVIRONMENT}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT,
                          env={**clean, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_large_blocks_come_from_the_heap_after_it():
    out = _probe({})
    assert out["before"] == 1  # glibc's default: the 64 MiB array had its own mapping
    assert out["after"] == 0, out
    assert out["note"].startswith("glibc malloc keeps freed memory") and out["again"] == out["note"]
    assert out["child"] == "0"  # processes started afterwards (tuner workers) read it from the environment


def test_the_users_environment_wins():
    out = _probe({"MALLOC_MMAP_MAX_": "65536"})
    assert out["note"] == "malloc left as the environment sets it (MALLOC_MMAP_MAX_=65536)"
    assert out["after"] == 1  # nothing changed


@pytest.mark.parametrize("flags,expected", [([], True), (["--system-malloc"], False)])
def test_bench_applies_it_unless_asked_not_to(tmp_path, flags, expected):
    clean = {k: v for k, v in os.environ.items() if k not in allocator.ENVIRONMENT}
    done = subprocess.run([sys.executable, "-m", "autotune.cli", "bench", "--only", "fcn_score_up2", "--ops",
                           "backward_bias", "--backends", "numpy", "--no-torch", "--no-dispatch", "--timing-budget",
                           "0.01", "--results", str(tmp_path), *flags], capture_output=True, text=True, cwd=ROOT,
                          env=clean, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ("bench: glibc malloc keeps freed memory" in done.stderr) is expected, done.stderr
