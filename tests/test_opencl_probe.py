"""Issue 15, item 4: a crashing or hanging OpenCL driver costs that driver only. Fake drivers (ICDs) built here with
gcc: one whose platform query segfaults, one whose query never returns; registered through OCL_ICD_VENDORS beside
the real drivers. The backend (what `autotune devices` lists) and a plain call run on, naming each bad driver and
why; the verdicts are remembered on disk, so the next process does not probe them again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_ICD = r"""
#include <string.h>
#include <unistd.h>
typedef int cl_int;
typedef unsigned int cl_uint;
cl_int clIcdGetPlatformIDsKHR(cl_uint n, void *platforms, cl_uint *count) {
#ifdef HANG
    for (;;) sleep(1);
#else
    volatile int *nothing = 0;
    *nothing = 1;
#endif
    return 0;
}
cl_int clGetPlatformInfo(void *platform, cl_uint name, unsigned long size, void *value, unsigned long *ret) {
    return clIcdGetPlatformIDsKHR(0, 0, 0);
}
void *clGetExtensionFunctionAddress(const char *name) {
    return strcmp(name, "clIcdGetPlatformIDsKHR") == 0 ? (void *)clIcdGetPlatformIDsKHR : 0;
}
"""

SCRIPT = """
import json, time, numpy as np
import autotune, backends
start = time.monotonic()
b = backends.get("opencl")
ok, why = b.available()
y = autotune.conv_transpose2d(np.ones((1, 2, 3, 3), np.float32), np.ones((2, 2, 2, 2), np.float32), stride=2)
print(json.dumps({"ok": ok, "why": why, "broken": b.broken(), "shape": list(y.shape),
                  "seconds": time.monotonic() - start}))
"""


@pytest.fixture(scope="module")
def drivers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the fake drivers")
    pytest.importorskip("pyopencl")
    d = tmp_path_factory.mktemp("icd")
    (d / "fake.c").write_text(FAKE_ICD)
    vendors = d / "vendors"
    vendors.mkdir()
    for name, flags in (("crash", []), ("hang", ["-DHANG"])):
        lib = d / f"libfake_{name}.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-O0", *flags, "-o", str(lib), str(d / "fake.c")], check=True)
        (vendors / f"fake_{name}.icd").write_text(f"{lib}\n")
    for real in Path("/etc/OpenCL/vendors").glob("*.icd"):  # the real drivers still serve
        shutil.copy(real, vendors / real.name)
    return d


def _run(drivers: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OCL_ICD_VENDORS": str(drivers / "vendors"), "AUTOTUNE_CACHE": str(drivers / "cache"),
           "AUTOTUNE_OPENCL_PROBE_TIMEOUT": "3", "PYTHONPATH": str(ROOT), "AUTOTUNE_RESULTS": str(drivers / "res")}
    return subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_crashing_and_hanging_drivers_cost_only_themselves(drivers: Path) -> None:
    proc = _run(drivers, "-c", SCRIPT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    reasons = dict(map(tuple, out["broken"]))
    assert "crashed while probing (SIGSEGV)" in reasons["fake_crash.icd"]
    assert "did not answer within 3 s" in reasons["fake_hang.icd"]
    assert out["shape"] == [1, 2, 6, 6]
    if any(Path("/etc/OpenCL/vendors").glob("*.icd")):
        assert out["ok"], out["why"]  # the real driver still serves
    cache = json.loads((drivers / "cache" / "opencl-probe.json").read_text())
    assert sum(v is not None for v in cache.values()) == 2
    assert out["seconds"] >= 3  # waited once for the hanging driver
    # Remembered on disk with the driver's version: the next process does not wait for the hanging one again.
    proc = _run(drivers, "-c", SCRIPT)
    again = json.loads(proc.stdout.strip().splitlines()[-1])
    assert again["broken"] == out["broken"] and again["seconds"] < 3
    # Both processes pointed their loader at one shared directory of the good drivers, none left in /tmp.
    shared = list((drivers / "cache").glob("icd-*"))
    assert len(shared) == 1 and not list((drivers / "cache").glob(".icd-*"))
    assert sorted(p.name.split("-", 1)[1] for p in shared[0].iterdir()) == sorted(
        p.name for p in (drivers / "vendors").glob("*.icd") if not p.name.startswith(("fake_crash", "fake_hang")))
