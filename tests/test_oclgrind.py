"""The OpenCL kernels under Oclgrind's simulator with data-race detection: the default and a few random configs of
each op on tiny problems (scripts/oclgrind_check.py). Out-of-bounds accesses and races that a CPU driver hides would
corrupt a GPU's results; Oclgrind reports them, and any report fails the test. CI installs Debian's `oclgrind`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import require

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_are_clean_under_oclgrind(tmp_path: Path) -> None:
    require(shutil.which("oclgrind") is not None, "oclgrind (apt-get install oclgrind)")
    log = tmp_path / "oclgrind.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOTUNE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["oclgrind", "--data-races", "--log", str(log), sys.executable,
                           str(ROOT / "scripts" / "oclgrind_check.py"), "2"], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "0 wrong" in proc.stdout
    findings = log.read_text() if log.exists() else ""
    assert findings.strip() == "", findings[:3000]
