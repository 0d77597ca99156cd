"""The small base class every backend implements, and the tunable-space type it describes itself with.

A backend answers six questions: does it run here (and if not, why), on which devices, what can be tuned for an
(op, problem, device) and under which constraints, what is a sane default, give me a ready callable for a config,
and how to time that callable. Everything else (timing loops, tuning, results, dispatch) lives outside backends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autotune.core.problem import Problem
from autotune.core.space import Config, ConfigError, Constraint, Space, config_json

__all__ = ["Backend", "BackendUnavailable", "Config", "ConfigError", "Constraint", "Device", "Kernel", "Space",
           "config_json"]

# Signatures of prepared kernels, per op (arrays are the backend's native type, see Backend.accepts):
#   forward(x, w, bias_or_None) -> y
#   backward_input(gy, w) -> gx
#   backward_weight(gy, x) -> gw
#   backward_bias(gy) -> gb
Kernel = Callable[..., Any]


class BackendUnavailable(RuntimeError):
    """The backend cannot run here; the message says why and how to fix it."""


@dataclass(frozen=True)
class Device:
    """A physical device as one backend sees it. `id` is the shared slug (autotune.core.devices), so that backends
    running on the same hardware compete in one results table; `handle` is the backend's own object."""

    id: str
    name: str
    kind: str  # "cpu", "gpu", "interpreter", ...
    #: False where timings say nothing about speed (Triton's CPU interpreter): never tuned or dispatched by timing
    timing_is_speed: bool = True
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    handle: Any = field(default=None, compare=False, hash=False, repr=False)


class Backend:
    """Base class of every backend. Subclasses set `name` and implement the methods marked below."""

    name: str = ""
    #: True for a vendor's library that picks its own kernels for each device (the torch backend: oneDNN, cuDNN).
    #: Dispatch's transfer rule trusts its measurements on another device more than configs tuned there.
    vendor_library: bool = False
    #: True where a call on host arrays copies them to a device and back (OpenCL, Triton). Results of schemas 1 and 2
    #: timed such a backend's kernel alone in `time_s` (profiling events), so dispatch does not rank host-array calls
    #: by those rows: the copies were not in them.
    stages_host_arrays: bool = False
    # ---- implemented by every backend ---------------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        """(True, "") if the backend can run here, else (False, reason with an install hint). Must not raise."""
        raise NotImplementedError

    def devices(self) -> list[Device]:
        """The devices this backend can run on here (empty when unavailable)."""
        raise NotImplementedError

    def space(self, op: str, problem: Problem, device: Device) -> Space:
        """The tunable parameters for this op and problem on this device, with their constraints."""
        raise NotImplementedError

    def default_config(self, op: str, problem: Problem, device: Device) -> Config:
        """A config of `space(...)` that is valid and reasonably fast without tuning."""
        raise NotImplementedError

    def prepare(self, op: str, problem: Problem, device: Device, config: Config) -> Kernel:
        """A ready callable for (op, problem, device, config); compiled once and cached by the backend.
        `config` has already been validated against `space(...)`."""
        raise NotImplementedError

    # ---- overridable defaults -----------------------------------------------------------------------------------
    def supports(self, problem: Problem, device: Device) -> str | None:
        """None if this backend can run `problem` on `device`, else the reason (dtype, size limits...)."""
        return None

    def accepts(self, array: Any) -> bool:
        """Whether prepared kernels take `array` as is; other inputs are converted to NumPy first."""
        return isinstance(array, np.ndarray)

    def runner(self, kernel: Kernel, inputs: tuple[Any, ...], device: Device) -> Callable[[], float | None]:
        """A zero-argument callable that runs `kernel` once on `inputs` and returns the seconds measured by a device
        timer, or None to be timed by the wall clock around the call (which must then have finished its work when it
        returns). It times what a user waits for with these inputs: where the kernels take host arrays (NumPy) and
        copy them to a device, the copies are part of the call (the results' `time_s`)."""
        def run() -> None:
            kernel(*inputs)
        return run

    def device_runner(self, kernel: Kernel, inputs: tuple[Any, ...],
                      device: Device) -> Callable[[], float | None] | None:
        """Like `runner`, but the kernel-only device time, the inputs staged on the device once outside the timed
        loop: what a call whose data already lives on the device waits for (the results' `device_time_s`). None
        (the default) where that is what `runner` times already (a CPU backend, or one that stages its inputs
        before the timed loop): the two times are then one."""
        return None

    def takes_device_arrays(self, device: Device) -> bool:
        """Whether a call whose arrays already live on `device` (CUDA tensors on a GPU) hands them to the kernels as
        they are, so that dispatch ranks this backend there by its kernel-only `device_time_s`; else (host arrays,
        or arrays this backend converts through the host) by `time_s`. Default: on a GPU, when the backend accepts
        more than NumPy arrays (`accepts` overridden)."""
        return device.kind == "gpu" and type(self).accepts is not Backend.accepts

    def seed_configs(self, op: str, problem: Problem, device: Device) -> list[Config]:
        """Configs besides the default that every tuning study of (op, problem) on `device` measures first: priors
        measured to do well across layers on a kind of device (CLBlast ships such per-device-type defaults). Never
        run untuned: dispatch uses the default. Each is validated against the study's space (invalid ones are
        dropped). Default: none."""
        return []

    def version(self) -> str:
        """Version string of what computes (library and driver), recorded with every measurement. Dispatch ranks a
        backend's configs measured under its current version before those measured only under another, so a change
        that alters how fast existing configs run (a kernel rewrite) should change this string too (say, a kernel
        revision in it)."""
        return ""

    def compile_report(self, op: str, problem: Problem, device: Device, config: Config,
                       target: str) -> list[dict[str, Any]]:
        """What the compiler makes of the kernels of (op, problem, config) for `target` (e.g. "sm_90"), without
        running them: one dict per kernel with at least `kernel`, `registers`, `spills`, `shared_bytes`,
        `tensor_core` and `global_load_bits` (width in bits -> instructions). `autotune inspect` calls it; a backend
        that cannot compile ahead of time keeps this default, which says so."""
        raise BackendUnavailable(f"the {self.name or type(self).__name__} backend cannot compile its kernels ahead "
                                 f"of time for inspection (target {target})")
