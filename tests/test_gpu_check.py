"""scripts/gpu_check.sh (issue 11): its help and dry run work anywhere; without a GPU it fails clearly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--python", sys.executable, *args], capture_output=True, text=True,
                          timeout=120)


def test_help_and_dry_run():
    assert _run("--help").returncode == 0
    proc = _run("--dry-run", "--out", "/tmp/x")
    assert proc.returncode == 0, proc.stderr
    for step in ("tests:", "bench float32:", "bench bfloat16:", "tune:"):
        assert step in proc.stdout
    assert "TRITON_INTERPRET" in proc.stdout and "--backends triton torch" in proc.stdout


def test_fails_clearly_without_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = _run("--out", str(tmp_path / "out"))
    assert proc.returncode == 3 and "no GPU" in proc.stderr
