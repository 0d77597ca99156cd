"""A test-only backend whose configs fail in every way a real kernel can: it is registered through the registry's
entry-point group (`conftest.register_plugin`, which also puts this folder on PYTHONPATH for the tuner's workers) so
that the real backends stay clean.

Space: `mode` x `size`. `good` computes the right answer (the reference) and then sleeps `size` milliseconds, so
size 1 is the fastest and the default (size 3) is beaten; every other mode only exists with size 1 (a constraint
prunes the rest): `wrong` is off by 0.5 in one element, `build_error` raises in prepare, `oom` raises an
out-of-resources error at launch, `hang` never returns, `crash` kills its process with SIGSEGV.
$FAKE_BACKEND_MODES (comma-separated) restricts the modes.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np

from autotune.core import reference
from autotune.core.problem import Problem
from backends.base import Backend, Config, Device, Kernel, Space

MODES = ("good", "wrong", "build_error", "oom", "hang", "crash")
SIZES = (1, 2, 3)
DEVICE = Device(id="cpu-fake-test-1c", name="Fake test CPU", kind="cpu")
INTERPRETER = Device(id="interp-fake-test", name="Fake interpreter", kind="interpreter", timing_is_speed=False)


def modes() -> tuple[str, ...]:
    wanted = os.environ.get("FAKE_BACKEND_MODES")
    return tuple(m for m in MODES if m in wanted.split(",")) if wanted else MODES


class FakeBackend(Backend):
    name = "fake"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def devices(self) -> list[Device]:
        return [DEVICE, INTERPRETER]

    def version(self) -> str:
        return "fake 1"

    def space(self, op: str, problem: Problem, device: Device) -> Space:
        def one_size(c: Config) -> str | None:
            return f"size {c['size']} exists only for mode good" if c["mode"] != "good" and c["size"] > 1 else None
        return Space({"mode": modes(), "size": SIZES}, [one_size])

    def default_config(self, op: str, problem: Problem, device: Device) -> Config:
        return {"mode": "good", "size": 3}

    def prepare(self, op: str, problem: Problem, device: Device, config: Config) -> Kernel:
        mode, size = config["mode"], config["size"]
        if mode == "build_error":
            raise RuntimeError("synthetic build error: 'kernel.cl', line 3: expected ';'")

        def kernel(*inputs: Any) -> np.ndarray:
            if mode == "hang":
                time.sleep(3600)
            if mode == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)
            if mode == "oom":
                raise RuntimeError("clEnqueueNDRangeKernel failed: OUT_OF_RESOURCES")
            out = reference.run(op, problem, inputs).astype(problem.dtype)
            if mode == "wrong":
                out.flat[out.size // 2] += 0.5
            time.sleep(size * 1e-3)
            return out
        return kernel
