"""The `opencl` backend: OpenCL C kernels (convt.cl) through PyOpenCL, on every OpenCL device found.

- Devices: each driver is first probed in a subprocess (`probe.py`: one that crashes or hangs is left out, with
  why); every platform and device is enumerated; each gets one context and one profiling queue, and must build
  a trivial kernel, else it is listed in `broken()` with the driver's reason and the others are still used. A CPU
  device under PoCL maps onto this machine's CPU id (so numpy and PoCL compete in one table); under another runtime
  onto the CPU's id plus the runtime (`cpu-amd-epyc-2c-oclgrind`: two runtimes never share a table); a GPU onto its
  own id. Oclgrind (a simulator) is never timed for speed.
- Algorithms: forward `phase` (stride-phase decomposition: each output phase is a dense stride-1 convolution with
  only its own ceil(k/s) taps per axis, no zero multiplies, no divisibility tests) or `direct` (gather over all
  taps with the divisibility test); backward_input is a strided conv2d of gy (the same kernel); backward_weight a
  reduction over N*H*W split across work-groups; backward_bias a split sum, reduced by a second launch or, for tiny
  layers, in one launch (`one_launch`: a work-group per channel adds its shares in local memory).
- Tunables (the space): work-group shape (wg_x, wg_y), register tile per work-item (tile_h x tile_w output pixels,
  or c_tile input channels for backward_weight), co_block vectors of `vec` lanes, the vector axis (output channels,
  or output columns for the forward phase kernel), local-memory staging of the weights, k_block (barriers that
  split the reduction so a work-group shares its weights in cache), split of the reductions. Constraints come from
  the device (max work-group size, local memory) and prune register-spilling tiles.
- Configs reach kernels only as integer `-D` defines, after `Space.validate`; builds are cached per (device,
  source hash, defines) in memory and, as the driver's binaries, on disk (`binary_cache.py`): a shape seen before,
  in any process, costs no compiler run. pyopencl is imported lazily, only when the backend is first asked something.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from autotune.core.devices import cpu_features, device_id, opencl_cpu_device_id
from autotune.core.problem import Problem
from backends.base import Backend, Config, Device, Kernel, Space
from backends.opencl import binary_cache
from backends.opencl.probe import TRIVIAL as _TRIVIAL
from backends.opencl.probe import restrict_loader, usable_icds

_SOURCE_PATH = Path(__file__).with_name("convt.cl")
INSTALL_HINT = ("pip install convt-autotune[opencl] (pyopencl), and an OpenCL driver, e.g. "
                "apt-get install pocl-opencl-icd")
# A register tile larger than this many accumulator values spills on every CPU and GPU we know; pruned.
MAX_ACCUMULATORS = 256
# Fraction of a device's global memory a prepared op may claim (the driver and other buffers need the rest).
MEMORY_FRACTION = 0.8

WG_X = (1, 4, 8, 16, 32, 64, 128)
WG_Y = (1, 2, 4)
TILES = (1, 2, 4, 8)
VECS = (1, 2, 4, 8, 16)
CO_BLOCKS = (1, 2, 4)
SPLITS = (1, 2, 4, 8, 16, 32, 64)
K_BLOCKS = (0, 16, 64)  # 0: no barriers in the reduction loop


def _fmt(defines: dict[str, int]) -> list[str]:
    """Build options from defines: names are ours, values must be ints (validated config values or problem sizes)."""
    opts = []
    for name, value in sorted(defines.items()):
        if not (name.isidentifier() and name.isupper()):
            raise ValueError(f"bad define name {name!r}")
        if type(value) not in (int, np.int64, np.int32, bool):
            raise TypeError(f"define {name} must be an int, got {type(value).__name__}")
        opts.append(f"-D{name}={int(value)}")
    return opts


VERBOSE_ENV = "AUTOTUNE_VERBOSE"  # set (to anything but "" or 0) to see the OpenCL compiler's output


def _verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def _quiet_build(program: Any, options: Any) -> Any:
    """`program.build(options)` with the compiler's output captured: what the OpenCL compiler prints on the
    process's stderr ("4 warnings generated.") and pyopencl's CompilerWarning stay out of users' terminals and
    training logs; with $AUTOTUNE_VERBOSE (`autotune --verbose`) they are shown after the build. A failing
    build raises as before, with its log."""
    if _verbose():
        return program.build(options=options)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Non-empty compiler output")
            warnings.filterwarnings("ignore", category=UserWarning, module="pyopencl")
            os.dup2(sink.fileno(), 2)
            try:
                return program.build(options=options)
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


class _DeviceState:
    """One OpenCL device: its context, profiling queue and program cache (keyed by source hash and defines), over
    the on-disk binary cache (`binary_cache`)."""

    def __init__(self, cl: Any, handle: Any) -> None:
        self.cl = cl
        self.handle = handle
        self.context = cl.Context([handle])
        self.queue = cl.CommandQueue(self.context, properties=cl.command_queue_properties.PROFILING_ENABLE)
        self.programs: dict[tuple, Any] = {}
        self.lock = threading.Lock()
        self.builds = 0  # programs made (in-memory cache misses: from source or from a cached binary)
        self.compiles = 0  # compiler runs (builds from source), for tests and the tuner's statistics
        self.binary_loads = 0  # programs made from the on-disk binary cache, no compiler run
        # id(program) -> (disk key, program): built from source here, stored on disk after its first run: PoCL
        # then includes the code generated for the launch's work-group sizes (the first enqueue's 0.1-0.6 s), and
        # it serializes a program's binary once, so asking earlier would freeze the binary without that code.
        self._store_after_run: dict[int, tuple[str, Any]] = {}
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """What identifies the compiler's output: platform, device and driver (and their versions)."""
        if self._fingerprint is None:
            h = self.handle
            parts = [h.platform.name, h.platform.version, h.vendor, h.name, h.version, h.driver_version]
            self._fingerprint = "\n".join(str(x).strip() for x in parts)
        return self._fingerprint

    def program(self, source: str, defines: dict[str, int]) -> Any:
        key = (hashlib.sha256(source.encode()).hexdigest(), tuple(sorted(defines.items())))
        with self.lock:
            prog = self.programs.get(key)
            if prog is None:
                options = _fmt(defines)
                disk_key = binary_cache.key(self.fingerprint(), source, options)
                prog = self._from_binary(disk_key, options)
                if prog is None:
                    prog = _quiet_build(self.cl.Program(self.context, source), options)
                    self.compiles += 1
                    self._store_after_run[id(prog)] = (disk_key, prog)
                else:
                    self.binary_loads += 1
                self.programs[key] = prog
                self.builds += 1
            return prog

    def _from_binary(self, disk_key: str, options: list[str]) -> Any:
        binary = binary_cache.load(disk_key)
        if binary is None:
            return None
        try:
            return _quiet_build(self.cl.Program(self.context, [self.handle], [binary]), options)
        except Exception:  # the driver refuses it (another driver build with the same version string, ...)
            binary_cache.discard(disk_key)
            return None

    def _save(self, disk_key: str, prog: Any) -> None:
        try:
            binaries = prog.get_info(self.cl.program_info.BINARIES)
        except Exception:  # a driver that cannot return binaries: nothing to cache
            return
        if len(binaries) == 1 and binaries[0]:
            binary_cache.store(disk_key, bytes(binaries[0]))

    def after_first_run(self, programs: list[Any], last: Any) -> None:
        """Called once per prepared op after its first enqueue (`last`: its final event): store the binaries of
        the programs built from source in this process, now holding the launch's generated code."""
        with self.lock:
            pending = [self._store_after_run.pop(id(p)) for p in programs if id(p) in self._store_after_run]
        if pending:
            last.wait()
            for disk_key, prog in pending:
                self._save(disk_key, prog)


class Prepared:
    """A ready op on one device: buffers allocated once, programs built once. Calling it with NumPy arrays
    uploads them, runs, and returns the result; `upload` + `enqueue` let the runner time device work only."""

    def __init__(self, state: _DeviceState, plan: Any, dtype: np.dtype, source: str) -> None:
        cl = state.cl
        self.state, self.plan, self.dtype = state, plan, dtype
        mf = cl.mem_flags
        self.buffers: dict[str, Any] = {}
        for name, count in plan.buffers.items():
            self.buffers[name] = cl.Buffer(state.context, mf.READ_WRITE, max(int(count), 1) * dtype.itemsize)
        for name, array in plan.constants.items():
            self.buffers[name] = cl.Buffer(state.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=array)
        used = {s.program for s in plan.steps}
        common = {"DOUBLE": int(dtype == np.float64)}
        programs = {name: state.program(source, plan.programs.get(name, common)) for name in used}
        self.launches = []
        for s in plan.steps:
            kernel = state.cl.Kernel(programs[s.program], s.kernel)
            self.launches.append((kernel, s))
        self._programs = list(programs.values())
        self._ran = False  # the first enqueue hands the programs back to the binary cache (after_first_run)
        self.lock = threading.Lock()
        self.nbytes = 0  # device memory held, set by the backend

    def _arg(self, a: Any, bufs: dict[str, Any]) -> Any:
        if isinstance(a, tuple):
            return np.int32(a[1]) if a[0] == "i" else np.int64(a[1])
        return bufs.get(a) if a in bufs else self.buffers[a]

    def upload(self, inputs: tuple[Any, ...]) -> dict[str, Any]:
        """Device buffers holding `inputs` (in the op's signature order; None for an absent bias). Shapes are
        checked here: a wrong shape would make the kernels read past a buffer."""
        cl = self.state.cl
        plan = self.plan
        if plan.op == "forward" and len(inputs) == 2:
            inputs = (*inputs, None)
        if len(inputs) != len(plan.input_shapes):
            raise TypeError(f"{plan.op} kernel takes {len(plan.input_shapes)} arrays, got {len(inputs)}")
        out = {}
        for name, array, shape in zip(("x", "w", "b") if plan.op == "forward" else plan.inputs, inputs,
                                      plan.input_shapes):
            if array is None:
                if name == "b" and "b" in plan.inputs:
                    raise ValueError("bias: this problem has bias=True but no bias array was given")
                if name != "b":
                    raise TypeError(f"{name}: an array is required, got None")
                continue
            if name == "b" and "b" not in plan.inputs:
                raise ValueError("bias: this problem has bias=False but a bias array was given")
            if tuple(np.shape(array)) != tuple(shape):
                raise ValueError(f"{name}: expected shape {tuple(shape)} for this problem, "
                                 f"got {tuple(np.shape(array))}")
            a = np.ascontiguousarray(array, dtype=self.dtype)
            out[name] = cl.Buffer(self.state.context, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR,
                                  hostbuf=a)
        return out

    def enqueue(self, bufs: dict[str, Any]) -> list[Any]:
        queue = self.state.queue
        events = []
        for kernel, s in self.launches:
            args = [self._arg(a, bufs) for a in s.args]
            events.append(kernel(queue, s.global_size, s.local_size, *args))
        if not self._ran and events:
            self._ran = True
            self.state.after_first_run(self._programs, events[-1])
        return events

    def __call__(self, *inputs: Any) -> np.ndarray:
        with self.lock:  # buffers are shared state of this prepared op
            bufs = self.upload(inputs)
            events = self.enqueue(bufs)
            out = np.empty(self.plan.output_shape, self.dtype)
            self.state.cl.enqueue_copy(self.state.queue, out, self.buffers[self.plan.output], wait_for=events[-1:])
        return out


class OpenCLBackend(Backend):
    stages_host_arrays = True  # host arrays are copied to the device's buffers and back on every call

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probed = False
        self._devices: list[Device] = []
        self._broken: list[tuple[str, str]] = []
        self._error = ""
        self._cl: Any = None
        self._source: str | None = None
        self._prepared: dict[tuple, Prepared] = {}

    # ---- discovery ------------------------------------------------------------------------------------------------
    def _import(self) -> Any:
        import pyopencl as cl  # lazy: `import backends.opencl` must not need pyopencl
        return cl

    def _platforms(self, cl: Any) -> list[Any]:
        """Every OpenCL platform (a seam tests monkeypatch to simulate broken drivers)."""
        return cl.get_platforms()

    def _probe(self) -> None:
        with self._lock:
            if self._probed:
                return
            self._probed = True
            try:
                cl = self._import()  # importing pyopencl asks the drivers nothing yet
            except Exception as e:  # ImportError, or a pyopencl whose native part fails to load
                self._error = f"pyopencl cannot be imported ({e}); install: {INSTALL_HINT}"
                return
            # Each driver is first probed in a subprocess: one that crashes or hangs is left out, with why.
            try:
                good, bad = usable_icds()
            except Exception as e:  # the isolation itself failing must not cost the backend
                good, bad = None, [("probe", f"{type(e).__name__}: {e}")]
            self._broken.extend(bad)
            if good is not None and bad:
                if not good:
                    reasons = "; ".join(f"{n}: {r}" for n, r in bad)
                    self._error = f"no usable OpenCL driver ({reasons}); install: {INSTALL_HINT}"
                    return
                restrict_loader(good)
            self._cl = cl
            try:
                platforms = self._platforms(cl)
            except Exception as e:  # no ICD loader, or no platform at all
                self._error = f"no OpenCL platform found ({e}); install a driver: {INSTALL_HINT}"
                return
            seen: set[str] = set()
            for plat in platforms:
                try:
                    handles = plat.get_devices()
                except Exception as e:
                    self._broken.append((_name(plat), f"cannot list devices: {e}"))
                    continue
                for handle in handles:
                    label = f"{_name(plat)} / {_name(handle)}"
                    try:
                        dev = self._make_device(cl, plat, handle)
                    except Exception as e:  # the driver's own reason (build log, out of resources, ...)
                        self._broken.append((label, f"{type(e).__name__}: {str(e).strip()[:500]}"))
                        continue
                    if dev.id in seen:  # a second driver for the same hardware: keep the first
                        self._broken.append((label, f"duplicate of device {dev.id} (served by another platform)"))
                        continue
                    seen.add(dev.id)
                    self._devices.append(dev)
            if not self._devices:
                reasons = "; ".join(f"{n}: {r}" for n, r in self._broken) or "no OpenCL device found"
                self._error = f"no usable OpenCL device ({reasons}); install: {INSTALL_HINT}"

    def _make_device(self, cl: Any, plat: Any, handle: Any) -> Device:
        state = _DeviceState(cl, handle)
        # A trivial build and run proves the driver works here (PoCL's PyPI wheel fails at this point on some CPUs).
        prog = cl.Program(state.context, _TRIVIAL).build()
        buf = cl.Buffer(state.context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR,
                        hostbuf=np.zeros(4, np.float32))
        prog.probe(state.queue, (4,), None, buf).wait()
        kind_bits = int(handle.type)
        is_cpu = bool(kind_bits & cl.device_type.CPU)
        is_gpu = bool(kind_bits & cl.device_type.GPU)
        mem = int(handle.global_mem_size)
        if is_cpu:  # the CPU's id under PoCL; another runtime on the same CPU adds its platform (never mixed)
            dev_id, kind = opencl_cpu_device_id(_name(plat)), "cpu"
        else:
            kind = "gpu" if is_gpu else "accelerator"
            dev_id = device_id(kind, handle.vendor, handle.name, memory_gb=max(1, round(mem / 2**30)))
        exts = str(handle.extensions)
        info = {"platform": _name(plat), "device": _name(handle), "driver": str(handle.driver_version),
                "opencl": str(handle.version), "max_work_group_size": int(handle.max_work_group_size),
                "local_mem_size": int(handle.local_mem_size), "global_mem_size": mem,
                "max_mem_alloc_size": int(handle.max_mem_alloc_size), "compute_units": int(handle.max_compute_units),
                "fp64": "cl_khr_fp64" in exts or int(getattr(handle, "double_fp_config", 0) or 0) != 0}
        # A simulator's timings are not speed: never tuned or dispatched by time.
        simulated = "oclgrind" in _name(plat).lower()
        return Device(id=dev_id, name=_name(handle), kind=kind, info=info, handle=state,
                      timing_is_speed=not simulated)

    def available(self) -> tuple[bool, str]:
        try:
            self._probe()
        except Exception as e:  # must not raise
            return False, f"OpenCL probe failed: {e}; install: {INSTALL_HINT}"
        return (True, "") if self._devices else (False, self._error)

    def devices(self) -> list[Device]:
        self._probe()
        return list(self._devices)

    def broken(self) -> list[tuple[str, str]]:
        """(platform / device, reason) for every device found but not usable."""
        self._probe()
        return list(self._broken)

    def version(self) -> str:
        self._probe()
        if self._cl is None:
            return ""
        drivers = sorted({f"{d.info['platform']} {d.info['driver']}" for d in self._devices})
        return f"pyopencl {self._cl.VERSION_TEXT}; " + "; ".join(drivers)

    def _source_text(self) -> str:
        if self._source is None:
            self._source = _SOURCE_PATH.read_text(encoding="utf-8")
        return self._source

    # ---- problems -------------------------------------------------------------------------------------------------
    def supports(self, problem: Problem, device: Device) -> str | None:
        if problem.dtype == "float64":
            if not device.info.get("fp64"):
                return f"device {device.name} lacks cl_khr_fp64, so float64 is not supported there"
        elif problem.dtype != "float32":
            return f"opencl backend computes float32 (and float64 with cl_khr_fp64), not {problem.dtype}"
        itemsize = np.dtype(problem.dtype).itemsize
        biggest = max(int(np.prod(s)) for s in (problem.input_shape, problem.output_shape, problem.weight_shape))
        limit = int(device.info.get("max_mem_alloc_size", 0))
        if limit and biggest * itemsize > limit:
            return (f"an array of this problem needs {biggest * itemsize / 2**30:.2f} GiB, more than the device's "
                    f"largest allocation ({limit / 2**30:.2f} GiB)")
        return None

    # ---- space ----------------------------------------------------------------------------------------------------
    def space(self, op: str, problem: Problem, device: Device) -> Space:
        from backends.opencl import plans

        max_wg = int(device.info.get("max_work_group_size", 1))
        local_mem = int(device.info.get("local_mem_size", 0))
        itemsize = np.dtype(problem.dtype).itemsize if problem.dtype in ("float32", "float64") else 4

        def wg_fits(c: Config) -> str | None:
            if c["wg_x"] * c["wg_y"] > max_wg:
                return f"work-group {c['wg_x']}x{c['wg_y']} exceeds the device's maximum {max_wg}"
            return None

        if op == "backward_bias":
            def group_fits(c: Config) -> str | None:
                if c["one_launch"] and c["split"] > max_wg:
                    return f"one launch runs split={c['split']} work-items per work-group, device maximum {max_wg}"
                return None
            # one_launch came later: a recorded config without it ran two launches
            return Space({"vec": VECS, "split": SPLITS, "one_launch": (0, 1)}, [group_fits], added={"one_launch": 0})
        if op == "backward_weight":
            def regs(c: Config) -> str | None:
                n = c["c_tile"] * c["co_block"] * c["vec"]
                return f"register tile of {n} accumulators > {MAX_ACCUMULATORS}" if n > MAX_ACCUMULATORS else None
            # vec_axis came later: a recorded config without it ran vectors along output channels. With "ci"
            # (few output channels) vectors run along input channels, c_tile tiles output channels and co_block
            # counts input-channel vectors.
            return Space({"wg_x": WG_X, "wg_y": WG_Y, "c_tile": TILES, "co_block": CO_BLOCKS, "vec": VECS,
                          "split": SPLITS, "vec_axis": ("co", "ci")}, [wg_fits, regs], added={"vec_axis": "co"})

        algorithms = ("phase", "direct") if op == "forward" else ("direct",)

        def regs_conv(c: Config) -> str | None:
            n = c["tile_h"] * c["tile_w"] * c["co_block"] * c["vec"]
            return f"register tile of {n} accumulators > {MAX_ACCUMULATORS}" if n > MAX_ACCUMULATORS else None

        def local_fits(c: Config) -> str | None:
            if not c["local"]:
                return None
            if c["wg_y"] != 1:
                return "local staging shares one weight slab per work-group: needs wg_y == 1"
            need = plans.conv_local_bytes(op, problem, c, itemsize)
            if need > local_mem:
                return f"local staging needs {need} bytes, device has {local_mem} bytes of local memory"
            return None

        def kblock_ok(c: Config) -> str | None:
            if c["k_block"] and c["vec_axis"] != "co":
                return "k_block (barrier-separated reduction blocks) exists for vec_axis=co only"
            return None

        def axis_ok(c: Config) -> str | None:
            if c["vec_axis"] == "w" and (c["algorithm"] != "phase" or c["local"]):
                return "vectors along output columns exist for the phase algorithm without local staging only"
            return None

        return Space({"algorithm": algorithms, "vec_axis": ("co", "w") if op == "forward" else ("co",),
                      "wg_x": WG_X, "wg_y": WG_Y, "tile_h": TILES, "tile_w": TILES, "co_block": CO_BLOCKS,
                      "vec": VECS, "local": (0, 1), "k_block": K_BLOCKS},
                     [wg_fits, regs_conv, axis_ok, local_fits, kblock_ok])

    def default_config(self, op: str, problem: Problem, device: Device) -> Config:
        return _default_config(self, op, problem, device)

    def seed_configs(self, op: str, problem: Problem, device: Device) -> list[Config]:
        # On a CPU, short phase tiles two output channels deep with 16 floats along the row and 8x2 work-groups
        # were in the top 3 of all four 100-config random pools measured on the AMD EPYC (AVX2; fcn_score_up2,
        # dcgan_rgb, dilated_up, odd_shapes forward) and beat the shipped tuned configs by 1.1-1.5x on 7 of the 15
        # suite layers (losing 2-4x on the dense DCGAN layers, where tuning keeps its own winner).
        if op == "forward" and device.kind == "cpu":
            return [{"algorithm": "phase", "co_block": 2, "k_block": 0, "local": 0, "tile_h": 2, "tile_w": 1,
                     "vec": 16, "vec_axis": "w", "wg_x": 8, "wg_y": 2}]
        return []

    # ---- kernels --------------------------------------------------------------------------------------------------
    def prepare(self, op: str, problem: Problem, device: Device, config: Config) -> Kernel:
        from backends.opencl import plans

        state = device.handle
        if not isinstance(state, _DeviceState):
            raise ValueError(f"device {device.id!r} is not an OpenCL device of this backend")
        reason = self.supports(problem, device)
        if reason:
            raise ValueError(f"opencl cannot run this problem on {device.name}: {reason}")
        key = (op, problem, device.id, tuple(sorted(config.items())))
        found = self._prepared.get(key)
        if found is not None:
            return found
        dtype = np.dtype(problem.dtype)
        plan = plans.make_plan(op, problem, dict(config), dtype == np.float64)
        plan.input_shapes = list(problem.operand_shapes(op))
        need = plan.bytes_needed(dtype.itemsize) + sum(
            int(np.prod(s)) for s in plan.input_shapes if s is not None) * dtype.itemsize
        limit = int(device.info["global_mem_size"] * MEMORY_FRACTION)
        biggest = max(plan.buffers.values()) * dtype.itemsize
        if need > limit or biggest > int(device.info["max_mem_alloc_size"]):
            raise ValueError(
                f"problem too large for {device.name}: {op} needs {need / 2**30:.2f} GiB of device memory "
                f"(largest buffer {biggest / 2**30:.2f} GiB); the device offers {limit / 2**30:.2f} GiB "
                f"(largest allocation {int(device.info['max_mem_alloc_size']) / 2**30:.2f} GiB)")
        prepared = Prepared(state, plan, dtype, self._source_text())
        prepared.nbytes = need
        # Cached ops hold device memory: keep at most 64 of them and a quarter of the device's memory (oldest out).
        while self._prepared and (len(self._prepared) >= 64 or sum(k.nbytes for k in self._prepared.values())
                                  + need > int(device.info["global_mem_size"]) // 4):
            self._prepared.pop(next(iter(self._prepared)))
        self._prepared[key] = prepared
        return prepared

    def compile_report(self, op: str, problem: Problem, device: Device, config: Config,
                       target: str) -> list[dict[str, Any]]:
        """Build (op, problem, config) with the local OpenCL driver for `device` (the only target it has) and report
        what the driver says of each kernel: private (spilled or stack) and local memory, the work-group size it
        allows. Registers, load widths and tensor cores are not exposed by OpenCL: reported as None."""
        if not isinstance(device.handle, _DeviceState):
            raise ValueError(f"the opencl backend compiles for its local devices only (target {target!r}); "
                             "inspect it with --arch local")
        prepared = self.prepare(op, problem, device, self.space(op, problem, device).validate(config))
        cl, handle = device.handle.cl, device.handle.handle
        wg = cl.kernel_work_group_info
        reports = []
        for kernel, step in prepared.launches:  # type: ignore[attr-defined]
            private = int(kernel.get_work_group_info(wg.PRIVATE_MEM_SIZE, handle))
            reports.append({"kernel": step.kernel, "registers": None, "spills": None, "private_bytes": private,
                            "shared_bytes": int(kernel.get_work_group_info(wg.LOCAL_MEM_SIZE, handle)),
                            "work_group_size": int(kernel.get_work_group_info(wg.WORK_GROUP_SIZE, handle)),
                            "local_size": list(step.local_size) if step.local_size else None,
                            "tensor_core": "none", "global_load_bits": {}, "global_store_bits": {},
                            "wide_load_fraction": None, "target": device.name})
        return reports

    def runner(self, kernel: Kernel, inputs: tuple[Any, ...], device: Device) -> Callable[[], float | None]:
        """The time a user waits for: `inputs` are host arrays (NumPy), so each run copies them to the device,
        runs the kernels and copies the result back, as a call does (on a CPU device the copies are the same
        order as the kernel; timing the kernel alone let dispatch prefer configs slower end to end). Kernel-only
        device time, for data already on the device: `device_runner`."""
        if not isinstance(kernel, Prepared):
            return super().runner(kernel, inputs, device)

        def run() -> float:
            start = time.perf_counter()
            kernel(*inputs)
            return time.perf_counter() - start
        return run

    def device_runner(self, kernel: Kernel, inputs: tuple[Any, ...], device: Device) -> Callable[[], float | None]:
        """Kernel-only device time (profiling events), the inputs staged once outside the timed loop."""
        if not isinstance(kernel, Prepared):
            return super().runner(kernel, inputs, device)
        bufs = kernel.upload(inputs)  # staged once, outside the timed loop

        def run() -> float:
            with kernel.lock:
                events = kernel.enqueue(bufs)
                events[-1].wait()
            return (events[-1].profile.end - events[0].profile.start) * 1e-9
        return run


def _name(obj: Any) -> str:
    try:
        return str(obj.name).strip()
    except Exception:
        return "?"


def _pow2_at_most(n: int, cap: int) -> int:
    v = 1
    while v * 2 <= min(n, cap):
        v *= 2
    return v


def device_traits(device: Device) -> dict[str, int]:
    """What an OpenCL device says about itself, for its defaults: `vec_width` (the preferred float vector width,
    else the native one; on a CPU device that reports nothing, this CPU's SIMD lanes), `compute_units`,
    `max_wg` (max work-group size), `local_is_global` (1 when local memory is emulated in global memory, as on
    CPU devices) and `registers` (vector registers of a CPU's ISA: 32 with AVX-512, 16 with AVX2). Read from
    `device.info` where the probe recorded it, else from the driver handle, else from the CPU's features."""
    info = dict(device.info)
    handle = getattr(getattr(device, "handle", None), "handle", None)

    def ask(key: str, attr: str) -> int | None:
        if key in info:
            return int(info[key])
        try:
            return int(getattr(handle, attr)) if handle is not None else None
        except Exception:  # a driver that does not answer: the next source
            return None

    cpu = device.kind == "cpu"
    features = cpu_features() if cpu else {}
    width = ask("preferred_vector_width_float", "preferred_vector_width_float") or \
        ask("native_vector_width_float", "native_vector_width_float") or int(features.get("float_lanes", 0) or 0)
    if cpu and not width:
        width = 8
    local_type = ask("local_mem_type", "local_mem_type")
    return {"vec_width": max(1, min(16, width or 1)), "compute_units": ask("compute_units", "max_compute_units") or 1,
            "max_wg": ask("max_work_group_size", "max_work_group_size") or 1,
            "local_is_global": int(cpu if local_type is None else local_type == 2),  # CL_GLOBAL == 2
            "registers": int(features.get("registers", 32) or 32)}


def _default_config(backend: OpenCLBackend, op: str, p: Problem, device: Device) -> Config:
    """Heuristics from measurements on PoCL's CPU device (scripts/opencl_bench.py), scaled by what the device says
    about itself (`device_traits`): vectors of the device's preferred float width (16 on AVX-512, 8 on AVX2: PoCL
    warns about, and splits, 16-wide vectors without AVX-512); as many accumulator vectors per work-item as half
    the vector registers (16 of AVX-512's 32, 8 of AVX2's 16): channel vectors x 2x2 pixels, or 2x4; with few
    output channels (forward), vectors along output columns instead, several rows per work-item. On a GPU
    (scalar preferred width), scalar lanes with work-groups of 64 work-items. The fallback scan keeps a device
    with small limits working."""
    space = backend.space(op, p, device)
    traits = device_traits(device)
    vw = _pow2_at_most(traits["vec_width"], 16)
    gpu = device.kind == "gpu"
    accumulators = 16 if gpu else max(4, traits["registers"] // 2)  # vectors of vw lanes
    G = p.groups
    if op == "backward_bias":
        # tiny layers (fcn_score_up2: 86k elements) in one launch: the second launch cost as much as the sum
        # (device time 17.6 -> 8.7 us there on PoCL, a shared 2-core EPYC)
        one = int(p.N * p.C_out * p.output_size[0] * p.output_size[1] <= 1 << 19)
        cand_bias: Config = {"vec": vw, "split": 8, "one_launch": one}
        return space.validate(cand_bias if space.violation(cand_bias) is None else {**cand_bias, "one_launch": 0})
    m = p.C_out // G if op in ("forward", "backward_weight") else p.C_in // G
    vec = vw if m >= vw else _pow2_at_most(m, vw)
    if op == "backward_weight":
        vec = vw  # even for a few output channels: full aligned vectors beat short ones on PoCL
        mb = 2 if m >= 2 * vw else 1
        ct = 8 if p.C_in // G >= 8 else _pow2_at_most(p.C_in // G, 8)
        items = p.kH * p.kW * -(-(p.C_in // G) // ct) * G * -(-m // (vec * mb))
        # Splitting the N*H*W reduction pays even with parallelism to spare: each work-item's share of x and gy
        # then stays in cache for the neighbouring work-items that read the same pixels.
        split = _pow2_at_most(max(16, 2048 // max(items, 1)), 64) if items < 2048 else 8
        cand: Config = {"wg_x": 1, "wg_y": 1, "c_tile": ct, "co_block": mb, "vec": vec,
                        "split": max(1, min(split, 64)), "vec_axis": "co"}
        cig = p.C_in // G
        if m < max(2, vw // 2) and cig >= vw:
            # few output channels (an RGB layer's 3): vectors along input channels, c_tile output channels
            ct = next(t for t in (1, 2, 4, 8) if t >= min(m, 8))
            mb = 2 if cig >= 2 * vw and ct * 2 * vw <= MAX_ACCUMULATORS else 1
            items = p.kH * p.kW * -(-cig // (vw * mb)) * G * -(-m // ct)
            split = _pow2_at_most(max(16, 2048 // max(items, 1)), 64) if items < 2048 else 8
            cand = {"wg_x": 1, "wg_y": 1, "c_tile": ct, "co_block": mb, "vec": vw, "split": max(1, min(split, 64)),
                    "vec_axis": "ci"}
    else:
        # 16 accumulator vectors of 16 lanes measured best on AVX-512: 4x(2x2) or 2x(2x4); the same number of
        # channels (64 or 32) on narrower vectors takes more registers, so co_block is capped by the budget.
        mb = 4 if m >= 4 * vw else 2 if m >= 2 * vw else 1
        while mb > 1 and mb * 4 > accumulators:
            mb //= 2
        tile_w = 2 if mb * 4 >= accumulators else 4 if mb * 8 <= accumulators else 2
        cand = {"algorithm": "phase" if op == "forward" else "direct", "vec_axis": "co",
                "wg_x": 64 if gpu else 8, "wg_y": 1, "tile_h": 2, "tile_w": tile_w, "co_block": mb, "vec": vec,
                "local": 0, "k_block": 0}
        # A work-item streams taps*KC*vec*co_block weights; for long reductions or slabs from 512 KiB (~L2) up,
        # barrier-separated k-blocks keep them in cache across the work-group (measured 1.4-1.6x on dcgan_g1
        # backward_input and unet_up_deep backward_input; neutral to slightly worse on short reductions).
        from backends.opencl import plans
        kc = p.C_in // G if op == "forward" else p.C_out // G
        if kc >= 256 or plans.conv_local_bytes(op, p, cand, 4) >= 1 << 19:
            cand["k_block"] = 16
        qw = -(-p.output_size[1] // p.stride[1])  # columns of one stride phase
        if op == "forward" and m < 32 and qw >= 8 and not gpu:
            mb = 1 if m < 4 else 4
            cand.update(vec_axis="w", vec=vw if qw >= vw else _pow2_at_most(qw, vw), tile_w=1, co_block=mb,
                        tile_h=8 if m == 1 else 4, k_block=0)
    reason = space.violation(cand)
    if reason is None:
        return space.validate(cand)
    for c in space.grid():  # a device with tiny limits: the first point that fits
        if space.violation(c) is None:
            return c
    raise ValueError(f"no config of the opencl space fits {device.name} for {op}: {reason}")


BACKEND = OpenCLBackend
