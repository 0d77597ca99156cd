"""The OpenCL on-disk binary cache: a shape seen before costs no compiler run, in a later process; a corrupt,
foreign or refused entry is ignored and rebuilt, never a crash; the directory stays bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_close, inputs_for, require

import backends
from autotune.core import reference
from autotune.core.problem import Problem
from backends.opencl import binary_cache

ROOT = Path(__file__).resolve().parent.parent
P = Problem.make(1, 3, 5, 4, 4, 3, 3, stride=2, padding=1, bias=True)

# One process: prepare and run forward and backward_input of P with the default config; report the counters, the
# source builds pyopencl was asked for (cl.Program.build on a program made from source) and whether it was right.
SCRIPT = r"""
import json, sys
import numpy as np
import pyopencl as cl
import backends
from autotune.core import reference, verify
from autotune.core.problem import Problem

source_builds = []
original = cl.Program.build
def build(self, *args, **kwargs):
    if getattr(self, "_source", None) and "probe" not in self._source:
        source_builds.append(1)
    return original(self, *args, **kwargs)
cl.Program.build = build

b = backends.get("opencl")
dev = b.devices()[0]
p = Problem.make(1, 3, 5, 4, 4, 3, 3, stride=2, padding=1, bias=True)
ok = True
for op in ("forward", "backward_input"):
    q = p.for_op(op)
    k = b.prepare(op, q, dev, b.default_config(op, q, dev))
    inputs = verify.make_inputs(op, q)[0]
    ok &= bool(verify.compare(k(*inputs), reference.run(op, q, inputs), op, q).ok)
s = dev.handle
print(json.dumps({"compiles": s.compiles, "loads": s.binary_loads, "source_builds": len(source_builds), "ok": ok}))
"""


@pytest.fixture(scope="module")
def device() -> backends.Device:
    backend = backends.get("opencl")
    ok, why = backend.available()
    require(ok, f"the opencl backend ({why})")
    return backend.devices()[0]


def _run(cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOTUNE_CACHE": str(cache),
           "POCL_KERNEL_CACHE": "0"}  # PoCL's own cache off: what is saved here is this cache's doing
    env.pop("AUTOTUNE_OPENCL_CACHE_MB", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_runs_a_seen_shape_without_a_build(device: backends.Device, tmp_path: Path) -> None:
    first = _run(tmp_path)
    assert first["ok"] and first["compiles"] >= 2 and first["source_builds"] == first["compiles"]
    assert first["loads"] == 0
    assert len(list((tmp_path / "opencl-binaries").glob("*.clbin"))) == first["compiles"]
    second = _run(tmp_path)
    assert second == {"compiles": 0, "loads": first["compiles"], "source_builds": 0, "ok": True}


def _fresh_run(device: backends.Device, op: str = "forward") -> None:
    """Prepare and run `op` of P from an empty in-memory cache (the disk cache decides), and check the answer."""
    ocl = backends.get("opencl")
    ocl._prepared.clear()  # type: ignore[attr-defined]
    device.handle.programs.clear()
    q = P.for_op(op)
    k = ocl.prepare(op, q, device, ocl.default_config(op, q, device))
    inputs = inputs_for(op, q)
    assert_close(k(*inputs), reference.run(op, q, inputs), op, q)


def _corruptions(data: bytes) -> dict[str, bytes]:
    head = len(binary_cache.MAGIC)
    other_key = ("0" * 64).encode()
    return {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "flipped_byte": data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:],
        "foreign_key": data[:head] + other_key + data[head + 64:],
        "bad_magic": b"X" + data[1:],
    }


@pytest.mark.parametrize("kind", ["truncated", "empty", "flipped_byte", "foreign_key", "bad_magic"])
def test_corrupt_or_foreign_entry_is_ignored_and_rebuilt(device: backends.Device, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path))
    _fresh_run(device)
    files = sorted((tmp_path / "opencl-binaries").glob("*.clbin"))
    assert files
    for f in files:
        f.write_bytes(_corruptions(f.read_bytes())[kind])
    compiles = device.handle.compiles
    _fresh_run(device)
    assert device.handle.compiles == compiles + len(files)  # each bad entry rebuilt from source
    for f in files:  # and replaced by a good one
        assert binary_cache.load(f.name.removesuffix(binary_cache.SUFFIX)) is not None
    loads = device.handle.binary_loads
    _fresh_run(device)
    assert device.handle.binary_loads == loads + len(files)


def test_binary_the_driver_refuses_is_rebuilt(device: backends.Device, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A well-formed entry (right key and digest) whose bytes the driver rejects: deleted, built from source."""
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path))
    _fresh_run(device)
    files = sorted((tmp_path / "opencl-binaries").glob("*.clbin"))
    for f in files:
        binary_cache.store(f.name.removesuffix(binary_cache.SUFFIX), b"not a binary of any driver" * 10)
    compiles = device.handle.compiles
    _fresh_run(device)
    assert device.handle.compiles == compiles + len(files)


def test_cache_disabled_and_unwritable_cost_only_builds(device: backends.Device, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path))
    monkeypatch.setenv(binary_cache.LIMIT_ENV, "0")
    _fresh_run(device)
    assert not (tmp_path / "opencl-binaries").exists()
    monkeypatch.delenv(binary_cache.LIMIT_ENV)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would go")
    monkeypatch.setenv("AUTOTUNE_CACHE", str(blocker))
    _fresh_run(device)  # cannot write: still runs


def test_store_load_and_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path))
    k = binary_cache.key("dev", "src", ["-DA=1"])
    assert k != binary_cache.key("dev", "src", ["-DA=2"]) != binary_cache.key("dev2", "src", ["-DA=1"])
    assert binary_cache.load(k) is None
    assert binary_cache.store(k, b"abc") and binary_cache.load(k) == b"abc"
    assert not [p for p in (tmp_path / "opencl-binaries").iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.setenv(binary_cache.LIMIT_ENV, "1")  # 1 MiB: entries of 200 KiB, oldest out
    keys = [binary_cache.key("dev", "src", [f"-DA={i}"]) for i in range(10)]
    for i, kk in enumerate(keys):
        assert binary_cache.store(kk, bytes([i]) * (200 << 10))
        os.utime(binary_cache._path(kk), (1000 + i, 1000 + i))
    total = sum(p.stat().st_size for p in (tmp_path / "opencl-binaries").glob("*.clbin"))
    assert total <= 1 << 20
    assert binary_cache.load(keys[-1]) == bytes([9]) * (200 << 10)
    assert binary_cache.load(keys[0]) is None  # evicted first
    monkeypatch.setenv(binary_cache.LIMIT_ENV, "lots")  # malformed: disabled, not guessed
    assert binary_cache.load(keys[-1]) is None
