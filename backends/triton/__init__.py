"""The `triton` backend: Triton kernels for the four ops, tunable, GPU-native, checked on CPU by the interpreter.

Devices. Each GPU that Triton's active driver (CUDA or HIP, through torch) sees is one device, id
`gpu-<vendor>-<model>-<memory>gb`. Where there is none, the backend runs only when `TRITON_INTERPRET=1` is set (read
at call time, not import time): it then reports one device of kind `interpreter` whose kernels run in Triton's
CPU interpreter. That device exists for correctness: its timings say nothing about speed, which its
`timing_is_speed=False` tells the tuner and dispatch. With `TRITON_INTERPRET=1` set, even a machine with a
GPU gets only the interpreter device, because Triton then interprets every kernel.

Arrays. Kernels take torch tensors: tensors already on the kernel's device (CPU for the interpreter) are used
without a copy; NumPy arrays are converted and the result comes back as NumPy. `import backends.triton` imports
neither triton nor torch.

Tunable space. Each op is computed as tiles of a GEMM-shaped view of its output, BLOCK_M x BLOCK_N, reduced BLOCK_K
at a time:

| op | block_m (rows) | block_n (columns) | block_k (reduction) |
|---|---|---|---|
| forward | output pixels (n, oh, ow) | output channels of a group | input channels (`gemm`: channels x taps) |
| backward_input | input pixels (n, ih, iw) | input channels of a group | output channels (`gemm`: x taps) |
| backward_weight | input channels of a group | output channels (`gemm`: channels x taps) | pixels (n, ih, iw) |
| backward_bias | - | channels | (n, pixel) pairs |

`algorithm`: `direct` (one loop over (tap, channel chunk); per output pixel and tap, test
`(oh + p - kh*d) % s == 0`), `phase` (forward only: stride-phase decomposition, one program axis per phase
(oh % s, ow % s), only that phase's taps run, no lane is masked for divisibility), `gemm` (the reduction over taps and
channels as one K axis, gathered per element: for layers with few channels); backward_bias is one reduction. A tile
is reduced with `tl.dot` (tensor cores) when all three blocks are >= 16 and the dtype is not float64, else with
broadcast FMAs. `precision` (float32 only): `ieee`, `tf32x3` (the default: float32 accuracy on the tensor cores) or
`tf32`, pruned where its expected error exceeds the float32 tolerance (the tuner's check still judges each trial).
`split_k` (backward_weight, backward_bias): the long reduction over pixels cut into that many shares whose partial
sums are added into the output with atomics, so a gradient with few output tiles still fills a GPU.
`num_warps`, `num_stages`: Triton's launch options; num_stages > 1 only with `tl.dot` (other loads do not pipeline).
Each block's values stop at the first power of two covering its extent in this problem (block_n up to 256).
Constraints, checked before any launch: registers per thread (`register_estimate`, a model fitted to ptxas that
counts load pointers as well as values), Hopper's wgmma shape on sm_90 (num_warps 4 or 8, block_m 64 or 128),
shared memory of the pipelined dot operands, blocks larger than the extent of the config's algorithm, empty splits,
CUDA grid limits. Data layouts (channels-last staging, packed weights) are described in `kernels.py`.

Timing (GPU): see `TritonBackend.runner`: CUDA-graph replay of staged launches between CUDA events, with the
empty-launch cost measured alongside. `TritonBackend.compile_report` compiles for sm_80/sm_90 without a GPU and reads
the cubin (`backends/triton/aot.py`), for `autotune inspect`.

The interpreter device's space is a subset of a GPU's, so a config that runs there also compiles for a GPU: one
value of `num_warps` and `num_stages` (the interpreter runs every program alike whatever they say), a budget of
interpreted tile steps (`INTERPRETER_MAX_STEPS`, or twice the fewest any config takes on a large problem: it is
for correctness, not for minutes-long runs) and, for bfloat16, no `tl.dot` (the interpreter's dot reads bfloat16 as
raw bits). The interpreter's dot ignores `input_precision`, so there the kernels round float32 operands to tf32
themselves: each precision's error in the interpreter is the GPU's.

Offsets: int64 when any tensor could reach 2**31 elements, int32 (faster) otherwise. float16/bfloat16 accumulate in
float32, float64 in float64.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from autotune.core import verify
from autotune.core.devices import cpu_device_id, cpu_device_name, device_id
from autotune.core.problem import Problem, check_op
from backends.base import Backend, Config, Constraint, Device, Kernel, Space, config_json

PRECISIONS = ("ieee", "tf32x3", "tf32")  # float32 tl.dot: exact FMAs, three tf32 products, one tf32 product
# float32 default: three tf32 products keep float32 accuracy (within the tuner's float32 tolerance on every problem
# tested) while running on the tensor cores; plain tf32 is for the tuner to try (and its check to reject or keep).
DEFAULT_PRECISION = "tf32x3"
INSTALL_HINT = "pip install 'convt-autotune[triton]'  (triton and torch)"
BLOCKS_M = (1, 2, 4, 8, 16, 32, 64, 128)
BLOCKS_N = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BLOCKS_K = (1, 2, 4, 8, 16, 32, 64, 128)
BIAS_BLOCKS_N = (1, 2, 4, 8, 16, 32, 64)
BIAS_BLOCKS_K = (16, 32, 64, 128, 256, 512, 1024)
SPLITS = (1, 2, 4, 8, 16, 32)
NUM_WARPS = (1, 2, 4, 8)
NUM_STAGES = (1, 2, 3, 4)
# tl.dot's smallest operand side on NVIDIA (16 for 16-bit types; AMD takes any): below it a tile uses FMAs.
DOT_MIN = 16
# Registers per thread that `register_estimate` may reach (of 255 on NVIDIA): the margin covers the model's error
# against ptxas (checked for sm_90 by tests/test_triton.py on configs that do and do not spill).
REGISTER_BUDGET = 200
# The bias reduction's BLOCK_N*BLOCK_K tile per thread.
FMA_VALUES_PER_THREAD = 128
# Shared memory assumed where the device does not say (the interpreter): what every GPU since Volta offers.
DEFAULT_SHARED_BYTES = 64 * 1024
# CUDA grid limits: x up to 2**31-1, y and z up to 65535 (HIP's are larger).
GRID_LIMITS = (2**31 - 1, 65535, 65535)
# Offsets are int32 while every tensor stays below this many elements (margin for a block's overshoot).
INT32_LIMIT = 2**31 - 1 - 2**16
# Prepared kernels kept per backend object (Triton keeps the compiled binaries in its own caches).
KERNEL_CACHE_SIZE = 256
# Interpreted tile steps allowed per launch (about a second each 20-40 steps on a small CPU).
INTERPRETER_MAX_STEPS = 64
_ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
_INTERPRETER_DTYPES = ("float32", "float64", "float16", "bfloat16")


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1), read now."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on")  # as Triton reads it


@functools.lru_cache(maxsize=1)
def _import_problem() -> str:
    """Why triton and torch cannot be imported here ("" when they can); tried once per process."""
    missing = [m for m in ("triton", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed: {INSTALL_HINT}"
    try:
        import torch  # noqa: F401
        import triton  # noqa: F401
    except Exception as exc:  # a broken install must make the backend unavailable, not crash the caller
        return f"importing triton/torch failed ({type(exc).__name__}: {exc}); reinstall with {INSTALL_HINT}"
    return ""


def _is_tensor(a: Any) -> bool:
    return type(a).__module__.startswith("torch") and hasattr(a, "data_ptr")


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def needs_int64(p: Problem) -> bool:
    """Whether some tensor of `p` (input, weight, output) could hold 2**31 elements or more."""
    Ho, Wo = p.output_size
    largest = max(p.N * p.C_in * p.H * p.W, p.N * p.C_out * Ho * Wo, p.C_in * (p.C_out // p.groups) * p.kH * p.kW)
    return largest >= INT32_LIMIT


@functools.lru_cache(maxsize=1)
def _gpu_devices() -> tuple[Device, ...]:
    """Every GPU of Triton's active driver, read once per process (GPUs do not come and go)."""
    try:
        import torch
        from triton.runtime import driver
        driver.active  # noqa: B018 - raises when no GPU driver is active
    except Exception:
        return ()
    if not torch.cuda.is_available():
        return ()
    vendor = "amd" if getattr(torch.version, "hip", None) else "nvidia"
    found = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        try:  # what Triton itself checks kernels against (its OutOfResources limit)
            shared = int(driver.active.utils.get_device_properties(i)["max_shared_mem"])
        except Exception:
            shared = int(getattr(props, "shared_memory_per_block_optin", 0) or DEFAULT_SHARED_BYTES)
        warp = int(getattr(props, "warp_size", 0) or (64 if vendor == "amd" else 32))
        memory_gb = math.ceil(props.total_memory / 2**30)  # marketing sizes: 79.2 GiB reads as an 80 GB part
        info = {"index": i, "memory_gb": memory_gb, "warp_size": warp, "shared_memory_bytes": shared,
                "multiprocessors": int(getattr(props, "multi_processor_count", 0) or 100),
                "capability": f"{props.major}.{props.minor}", "timing": "device"}
        found.append(Device(id=device_id("gpu", vendor, props.name, memory_gb=memory_gb), name=props.name,
                            kind="gpu", info=info, handle=torch.device("cuda", i)))
    return tuple(found)


class TritonBackend(Backend):
    stages_host_arrays = True  # host arrays are copied to the device's buffers and back on every call

    def __init__(self) -> None:
        self._kernels: OrderedDict[tuple, Kernel] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._budgets: dict[tuple, int] = {}  # (op, problem, device id) -> interpreter step budget
        self._overheads: dict[tuple, float] = {}  # device -> seconds per empty launch

    # ---- where it runs -------------------------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        problem = _import_problem()
        if problem:
            return False, problem
        if interpreting():
            return True, ""
        if not _gpu_devices():
            return False, ("no GPU visible to Triton's active driver; set TRITON_INTERPRET=1 to run the Triton "
                           "kernels in Triton's CPU interpreter (correct but slow, for testing)")
        return True, ""

    def devices(self) -> list[Device]:
        if not self.available()[0]:
            return []
        if interpreting():
            return [_interpreter_device(self.name or "triton")]
        return list(_gpu_devices())

    def version(self) -> str:
        try:
            import torch
            import triton
        except Exception as exc:
            return f"unavailable ({exc})"
        where = "interpreter" if interpreting() else (f"hip {torch.version.hip}" if torch.version.hip
                                                     else f"cuda {torch.version.cuda}")
        return f"triton {triton.__version__}, torch {torch.__version__}, {where}"

    def supports(self, problem: Problem, device: Device) -> str | None:
        if device.kind == "interpreter" and problem.dtype not in _INTERPRETER_DTYPES:
            return f"the Triton interpreter computes {', '.join(_INTERPRETER_DTYPES)}, not {problem.dtype}"
        if problem.dtype not in _ITEMSIZE:
            return f"triton backend computes {', '.join(_ITEMSIZE)}, not {problem.dtype}"
        Ho, Wo = problem.output_size
        largest = max(problem.N * problem.C_in * problem.H * problem.W, problem.N * problem.C_out * Ho * Wo)
        if largest >= 2**62:
            return f"a tensor of {largest} elements is beyond 64-bit offsets"
        # The grid with the largest blocks must fit the launch limits, or no config can run.
        G = problem.groups
        Cig, Cog = problem.C_in // G, problem.C_out // G
        big = max(BLOCKS_M)
        pixels = problem.N * max(Ho * Wo, problem.H * problem.W)
        if G * -(-max(Cig, Cog) // big) > GRID_LIMITS[1] or -(-pixels // big) > GRID_LIMITS[0]:
            return (f"too large for one launch: the grid exceeds {GRID_LIMITS} programs even with "
                    f"{big}-wide blocks")
        return None

    def accepts(self, array: Any) -> bool:
        """NumPy arrays (converted by the kernels) and torch tensors already on one of this backend's devices."""
        if isinstance(array, np.ndarray):
            return True
        if not _is_tensor(array):
            return False
        kind = array.device.type
        if interpreting():
            return kind == "cpu"
        return any(d.handle == array.device for d in _gpu_devices())

    # ---- what can be tuned ---------------------------------------------------------------------------------
    def space(self, op: str, problem: Problem, device: Device) -> Space:
        return self._space(op, problem, device, budget=True)

    def _interpreter_budget(self, op: str, p: Problem, device: Device) -> int:
        """INTERPRETER_MAX_STEPS, or twice the fewest steps any otherwise valid config takes where even that is
        more (a large problem still gets a few configs: slow in the interpreter, but it runs)."""
        key = (op, p, device.id)
        if key not in self._budgets:
            space = self._space(op, p, device, budget=False)
            fewest = min((interpreter_steps(op, p, c) for c in space.grid() if space.violation(c) is None),
                         default=0)
            self._budgets[key] = max(INTERPRETER_MAX_STEPS, 2 * fewest)
        return self._budgets[key]

    def _space(self, op: str, problem: Problem, device: Device, budget: bool) -> Space:
        check_op(op)
        p = problem
        warp = int(device.info.get("warp_size", 32))
        shared = int(device.info.get("shared_memory_bytes", DEFAULT_SHARED_BYTES))
        itemsize = _ITEMSIZE.get(p.dtype, 4)
        if op == "backward_bias":
            Ho, Wo = p.output_size

            def bias_fits(c: Config) -> str | None:
                if c["block_n"] * c["block_k"] > FMA_VALUES_PER_THREAD * warp * c["num_warps"]:
                    return (f"register pressure: block_n*block_k={c['block_n'] * c['block_k']} values over "
                            f"{warp * c['num_warps']} threads")
                return None

            def bias_extent(c: Config) -> str | None:
                return (_too_big("block_n", c["block_n"], p.C_out, 1)
                        or _too_big("block_k", c["block_k"], p.N * Ho * Wo, min(BIAS_BLOCKS_K)))

            constraints: list[Constraint] = [bias_fits, bias_extent, functools.partial(_split_useful, op, p)]
            if device.kind == "interpreter" and budget:
                limit = self._interpreter_budget(op, p, device)
                constraints.append(lambda c: _within_budget(op, p, c, limit))
            return Space({"algorithm": ("reduce",), "block_n": _upto(BIAS_BLOCKS_N, p.C_out, 1),
                          "block_k": _upto(BIAS_BLOCKS_K, p.N * Ho * Wo, min(BIAS_BLOCKS_K)),
                          "split_k": _upto(SPLITS, _reduction(op, p), 1),
                          "num_warps": (4,) if device.kind == "interpreter" else NUM_WARPS, "num_stages": (1,)},
                         constraints)

        algorithms = ("direct", "phase", "gemm") if op == "forward" else ("direct", "gemm")
        hopper = _capability(device) >= 9.0

        def fits(c: Config) -> str | None:
            dot = _uses_dot(p, c)
            if not dot and c["num_stages"] > 1:
                return "num_stages > 1 does nothing here: loads pipeline only into tl.dot"
            if dot and c["num_stages"] > 1 and max(load_vectors(op, p, c)) * itemsize < 4:
                return ("num_stages > 1 does nothing here: loads narrower than 4 bytes cannot be copied "
                        "asynchronously")
            if not dot and c.get("precision", "ieee") != "ieee":
                return f"precision {c['precision']} needs tl.dot (blocks >= {DOT_MIN})"
            if dot and c.get("precision", "ieee") != "ieee":
                error, tolerance = precision_error(op, p, c["precision"])
                if error > tolerance:
                    return (f"precision {c['precision']}: its expected error {error:.2g} exceeds the float32 "
                            f"tolerance {tolerance:.2g} of this problem")
            if dot and hopper and (c["num_warps"] not in (4, 8) or c["block_m"] not in (64, 128)):
                return "Hopper's wgmma needs num_warps 4 or 8 and block_m 64 or 128"
            regs = register_estimate(op, p, c, warp)
            if regs > REGISTER_BUDGET:
                return f"register pressure: about {regs} registers per thread > {REGISTER_BUDGET} (ptxas would spill)"
            if dot:
                need = (c["block_m"] * c["block_k"] + c["block_k"] * c["block_n"]) * itemsize * c["num_stages"]
                if need > shared:
                    return f"out of resources: {need} bytes of shared memory for the dot operands > {shared}"
            return None

        def extents(c: Config) -> str | None:
            m, n, k = _extents(op, p, c["algorithm"])
            return (_too_big("block_m", c["block_m"], m, DOT_MIN) or _too_big("block_n", c["block_n"], n, DOT_MIN)
                    or _too_big("block_k", c["block_k"], k, DOT_MIN))

        def grid_limits(c: Config) -> str | None:
            grid = _grid(op, p, c)
            for axis, (size, limit) in enumerate(zip(grid, GRID_LIMITS)):
                if size > limit:
                    return f"grid axis {axis} has {size} programs > {limit}"
            return None

        constraints = [extents, fits, grid_limits]
        # Each block's values stop at the first power of two covering its extent (for any algorithm): larger ones
        # only add masked lanes; the constraint `extents` then checks the config's own algorithm.
        rows, cols, red = (max(e) for e in zip(*(_extents(op, p, a) for a in algorithms)))
        params: dict[str, tuple[Any, ...]] = {
            "algorithm": algorithms, "block_m": _upto(BLOCKS_M, rows, DOT_MIN),
            "block_n": _upto(BLOCKS_N, cols, DOT_MIN), "block_k": _upto(BLOCKS_K, red, DOT_MIN)}
        if op == "backward_weight":
            params["split_k"] = _upto(SPLITS, _reduction(op, p), 1)
            constraints.append(functools.partial(_split_useful, op, p))
        if p.dtype == "float32":  # kept by the tuner only where its correctness check passes
            params["precision"] = PRECISIONS
        if op == "forward" and p.dtype != "float64":  # the weight tile through TMA: Hopper's tensor descriptors
            params["weight_tma"] = (0, 1) if hopper else (0,)

            def tma_fits(c: Config) -> str | None:
                if not c.get("weight_tma"):
                    return None
                if c["algorithm"] == "gemm":
                    return "weight_tma: the gemm algorithm gathers the weight per element"
                if c["block_n"] * itemsize < 16:  # the packed weight's rows are padded to 16 bytes
                    return f"weight_tma: TMA needs boxes of 16 bytes or more (block_n={c['block_n']})"
                return None

            constraints.append(tma_fits)
        if device.kind != "interpreter":
            return Space({**params, "num_warps": NUM_WARPS, "num_stages": NUM_STAGES}, constraints)
        if budget:
            limit = self._interpreter_budget(op, p, device)
            constraints.append(lambda c: _within_budget(op, p, c, limit))
        if p.dtype == "bfloat16":  # triton-lang/triton#11584; the FMA path casts to float32 first, which works
            constraints.append(lambda c: "the Triton interpreter's tl.dot reads bfloat16 as raw bits (wrong sums); "
                                         "bfloat16 takes the FMA path there" if _uses_dot(p, c) else None)
        # The interpreter runs every program alike whatever these say: one value each keeps its space small.
        return Space({**params, "num_warps": (4,), "num_stages": (1,)}, constraints)

    def default_config(self, op: str, problem: Problem, device: Device) -> Config:
        space = self.space(op, problem, device)
        if op == "backward_bias":
            candidates = [{"algorithm": "reduce", "block_n": bn, "block_k": bk, "num_warps": 4, "num_stages": 1}
                          for bn in (16, 8, 4, 2, 1) for bk in (256, 128, 64, 32, 16)]
        else:
            p = problem
            channels = {"forward": p.C_in, "backward_input": p.C_out, "backward_weight": p.C_out}[op] // p.groups
            first = ("phase" if op == "forward" and max(p.stride) > 1 else
                     "direct" if channels >= DOT_MIN else "gemm")
            algorithms = [a for a in (first, "direct", "gemm") if a in space.params["algorithm"]]
            algorithms = list(dict.fromkeys(algorithms))
            big_k = 64 if _ITEMSIZE.get(p.dtype, 4) <= 2 else 32
            # Hopper-shaped tensor-core tiles first (wgmma: 4 or 8 warps, block_m 64 or 128), the largest whose
            # grid still fills the GPU; then smaller and FMA tiles for small problems and float64.
            shaped = [{"algorithm": a, "block_m": bm, "block_n": bn, "block_k": bk, "num_warps": w, "num_stages": s}
                      for a in algorithms
                      for bm, bn, w in ((128, 128, 8), (128, 64, 4), (64, 128, 4), (64, 64, 4), (64, 32, 4),
                                        (128, 32, 4), (64, 16, 4))
                      for bk in (big_k, 32, 16) for s in (3, 2)]
            if "split_k" in space.params:
                shaped = [{**c, "split_k": 1} for c in shaped]
            fill = 2 * int(device.info.get("multiprocessors", 0)) if device.kind == "gpu" else 0
            shaped = ([c for c in shaped if math.prod(_grid(op, p, c)) >= fill]
                      + [c for c in shaped if math.prod(_grid(op, p, c)) < fill])
            candidates = shaped + [
                {"algorithm": a, "block_m": bm, "block_n": bn, "block_k": bk, "num_warps": w, "num_stages": s}
                for a in algorithms
                for bn in (32, 64, 16, 8, 4, 2, 1) for bk in (32, 16, 8, 4, 2, 1)
                for bm in (64, 128, 32, 16, 8, 4, 2, 1)
                for w, s in ((4, 2), (4, 1), (8, 1), (2, 1), (1, 1))]
            if "precision" in space.params:
                candidates = [{**c, "precision": DEFAULT_PRECISION if _uses_dot(p, c) else "ieee"}
                              for c in candidates]
            if "weight_tma" in space.params:  # TMA stays a tuning choice until it has run on a GPU
                candidates = [{**c, "weight_tma": 0} for c in candidates]
        if "split_k" in space.params:
            candidates = [{**c, "split_k": 1} for c in candidates]
        for c in candidates:
            if all(c[k] in space.params[k] for k in space.params) and space.violation(c) is None:
                return _default_split(op, problem, device, space, c)
        # Large problems in the interpreter: the config it runs fastest.
        valid = [c for c in space.grid() if space.violation(c) is None]
        if valid:
            return min(valid, key=lambda c: interpreter_steps(op, problem, c))
        raise ValueError(f"no triton config fits {op} {problem.key} on {device.id}")

    # ---- kernels -------------------------------------------------------------------------------------------
    def prepare(self, op: str, problem: Problem, device: Device, config: Config) -> Kernel:
        check_op(op)
        ok, why = self.available()
        if not ok:
            raise RuntimeError(f"triton backend is not available here: {why}")
        reason = self.supports(problem, device)
        if reason:
            raise ValueError(f"triton backend cannot run {problem.key}: {reason}")
        key = (op, problem, device.id, config_json(config), interpreting(), needs_int64(problem))
        with self._lock:
            kernel = self._kernels.get(key)
            if kernel is None:
                kernel = self._kernels[key] = _build(op, problem, device, dict(config))
                if len(self._kernels) > KERNEL_CACHE_SIZE:  # a tuner prepares thousands of configs
                    self._kernels.popitem(last=False)
            else:
                self._kernels.move_to_end(key)
        return kernel

    def compile_report(self, op: str, problem: Problem, device: Device, config: Config,
                       target: str) -> list[dict[str, Any]]:
        """Compile (op, problem, config) for NVIDIA `target` ("sm_80", "sm_90") with Triton's own compiler, no GPU
        needed, and read the cubin (see `backends/triton/aot.py`). Needs a process where TRITON_INTERPRET is unset."""
        from backends.triton import aot
        check_op(op)
        arch = aot.parse_arch(target)
        problem_ = _import_problem()
        if problem_:
            raise RuntimeError(problem_)
        config = self.space(op, problem, device).validate(config)
        from backends.triton import kernels
        if kernels.INTERPRETED:
            raise RuntimeError("TRITON_INTERPRET is set in this process: Triton then interprets its kernels and "
                               "cannot compile them; unset it to inspect the compiled code")
        fn, meta = launch_plan(op, problem, config, kernels)
        compiled = aot.compile_plan(fn, meta, problem.dtype, arch, pointer_types(op, problem, config))
        itemsize = _ITEMSIZE[problem.dtype]
        staged = {"forward": (problem.input_shape, problem.weight_shape),
                  "backward_input": (problem.output_shape, problem.weight_shape),
                  "backward_weight": (problem.output_shape,), "backward_bias": ()}[op]
        # the launcher's layout copies (channels-last operand, packed weight): read once and written once each
        staging = sum(2 * math.prod(shape) * itemsize for shape in staged)
        return [{"kernel": fn.__name__, "num_warps": config["num_warps"], "num_stages": config["num_stages"],
                 "shared_bytes": int(compiled.metadata.shared), "staging_bytes": staging,
                 **aot.cubin_report(compiled.asm["cubin"])}]

    def runner(self, kernel: Kernel, inputs: tuple[Any, ...], device: Device) -> Callable[[], float | None]:
        """Inputs are staged on the device once, here. On a GPU the kernel is called once (compiling it and
        allocating outside any timed region), then GRAPH_LAUNCHES calls are captured in a CUDA graph: each timed call
        replays the graph between two CUDA events and returns the seconds per launch, so Python, argument checks
        and allocation stay out of the measurement. Where capture fails, CUDA events around one call (which then
        include the Python launch cost). The returned callable carries `launch_overhead_s`: the same measurement
        of an empty kernel, the floor under every figure. In the interpreter: the wall clock (correctness only)."""
        import torch
        staged = tuple(None if a is None else (a if _is_tensor(a) else torch.from_numpy(np.ascontiguousarray(a)))
                       .to(device.handle if device.kind == "gpu" else "cpu") for a in inputs)
        if device.kind != "gpu":
            def run_wall() -> None:
                kernel(*staged)
            return run_wall
        timed = _graph_timer(lambda: kernel(*staged), device)
        timed.launch_overhead_s = self.launch_overhead(device)  # type: ignore[attr-defined]
        return timed

    def launch_overhead(self, device: Device) -> float:
        """Seconds per launch of an empty Triton kernel, timed like the kernels (CUDA-graph replay): measured
        once per device and process."""
        key = (device.id, str(device.handle))
        if key not in self._overheads:
            import torch

            from backends.triton import kernels
            flag = torch.zeros(1, dtype=torch.int32, device=device.handle)
            launch = kernels.empty_kernel[(1,)]
            timer = _graph_timer(lambda: launch(flag), device)
            self._overheads[key] = min(timer() for _ in range(5))
        return self._overheads[key]


# Launches captured per CUDA graph: each timed replay runs this many, so the replay's own cost is amortized.
GRAPH_LAUNCHES = 10


def _graph_timer(call: Callable[[], Any], device: Device) -> Callable[[], float]:
    """A zero-argument timer of `call` on `device` (see TritonBackend.runner): CUDA-graph replay where capture
    works, CUDA events around one call where it does not."""
    import torch
    with torch.cuda.device(device.handle):
        call()  # compiles, allocates, and fails here (not in the timed loop) if it fails at all
        torch.cuda.synchronize()
        graph = None
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(GRAPH_LAUNCHES):
                    call()
        except Exception:  # e.g. a driver without graph support: time the call itself
            graph = None
            torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def run_graph() -> float:
        assert graph is not None
        with torch.cuda.device(device.handle):
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / GRAPH_LAUNCHES

    def run_events() -> float:
        with torch.cuda.device(device.handle):
            start.record()
            call()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

    return run_graph if graph is not None else run_events


def _interpreter_device(name: str) -> Device:
    import torch
    return Device(id=f"interpreter-{cpu_device_id()}", name=f"Triton interpreter on {cpu_device_name()}",
                  kind="interpreter", timing_is_speed=False,
                  info={"note": "Triton's CPU interpreter: for correctness, not speed",
                        "warp_size": 32, "shared_memory_bytes": DEFAULT_SHARED_BYTES},
                  handle=torch.device("cpu"))


def _upto(values: tuple[int, ...], extent: int, floor: int) -> tuple[int, ...]:
    """`values` up to the first power of two >= `extent` (and at least up to `floor`)."""
    return tuple(v for v in values if v <= max(floor, _pow2_at_least(extent)))


def _too_big(name: str, block: int, extent: int, floor: int) -> str | None:
    """A block more than the next power of two above its extent only adds masked lanes (below `floor` is kept so
    tl.dot stays reachable)."""
    if block > max(floor, _pow2_at_least(extent)):
        return f"{name}={block} exceeds its extent {extent}"
    return None


def interpreter_steps(op: str, p: Problem, c: Config) -> int:
    """How many tile steps (program starts plus inner-loop iterations, each a few dozen interpreted tensor ops of
    ~1 ms) a launch takes in Triton's interpreter."""
    programs = math.prod(_grid(op, p, c))
    taps = p.kH * p.kW
    G = p.groups
    Cig, Cog = p.C_in // G, p.C_out // G
    bk = c["block_k"]
    if op in ("backward_bias", "backward_weight"):
        inner = _split_steps(op, p, c)
    elif c["algorithm"] == "gemm":
        inner = -(-(Cig if op == "forward" else Cog) * taps // bk)
    elif c["algorithm"] == "phase":  # each phase runs the most taps any phase has
        inner = max_phase_taps(p) * -(-padded_channels(p, c)[0] // bk)
    else:
        inner = taps * -(-padded_channels(p, c)[0 if op == "forward" else 1] // bk)
    return programs * (1 + inner)


def _tap_period(k: int, s: int, d: int) -> tuple[int, int]:
    """(period, most taps of one phase) along an axis: the taps of a phase are every s/gcd(d, s)-th one."""
    period = s // math.gcd(d, s)
    return period, -(-k // period)


def max_phase_taps(p: Problem) -> int:
    """Tap steps a phase program runs: the most taps any phase has per axis, multiplied."""
    (_, maxh), (_, maxw) = (_tap_period(k, s, d) for k, s, d in zip((p.kH, p.kW), p.stride, p.dilation))
    return maxh * maxw


def _within_budget(op: str, p: Problem, c: Config, limit: int) -> str | None:
    """The interpreter device is for correctness: configs that would interpret for minutes are pruned there (this
    only narrows the GPU's space, so every config valid here is valid on a GPU)."""
    steps = interpreter_steps(op, p, c)
    if steps > limit:
        return f"too slow for the interpreter: {steps} tile steps > {limit}"
    return None


def _reduction(op: str, p: Problem) -> int:
    """Length of the split reduction: (n, ih, iw) for backward_weight, (n, oh, ow) for backward_bias."""
    return p.N * p.H * p.W if op == "backward_weight" else p.N * p.output_size[0] * p.output_size[1]


def _steps(op: str, p: Problem, c: Config) -> int:
    """Reduction steps of the weight and bias gradients: (image, chunk of block_k pixels) pairs."""
    pixels = p.H * p.W if op == "backward_weight" else p.output_size[0] * p.output_size[1]
    return p.N * -(-pixels // c["block_k"])


def _split_steps(op: str, p: Problem, c: Config) -> int:
    """Steps per split: the reduction cut in split_k pieces."""
    return -(-_steps(op, p, c) // c["split_k"])


def _split_useful(op: str, p: Problem, c: Config) -> str | None:
    if c["split_k"] > 1 and -(-_steps(op, p, c) // _split_steps(op, p, c)) < c["split_k"]:
        return (f"split_k={c['split_k']} leaves empty splits: {_steps(op, p, c)} steps of {c['block_k']} "
                f"pixels")
    return None


def _default_split(op: str, p: Problem, device: Device, space: Space, c: Config) -> Config:
    """On a GPU, split the reduction of the weight and bias gradients until there are about 4 programs per
    multiprocessor (each split keeping at least 8 steps of work); the interpreter keeps split_k=1."""
    if "split_k" not in space.params or device.kind != "gpu":
        return c
    want = 4 * int(device.info.get("multiprocessors", 100))
    best = c
    for split in SPLITS[1:]:
        trial = {**c, "split_k": split}
        if (math.prod(_grid(op, p, best)) >= want or _split_steps(op, p, trial) < 8
                or split not in space.params["split_k"] or space.violation(trial) is not None):
            break
        best = trial
    return best


# Relative error of one product of operands in [-1, 1] rounded as the tensor cores read them: tf32 rounds each
# operand to 10 mantissa bits (2**-11 each way); tf32x3 drops the low x low product and rounds the low parts.
_PRODUCT_ERROR = {"tf32": 2.0**-11, "tf32x3": 2.0**-21}


def precision_error(op: str, p: Problem, precision: str) -> tuple[float, float]:
    """(expected largest error, float32 tolerance) of a float32 tl.dot at `precision` on `p`, for inputs in
    [-1, 1] as the tuner's check draws them (`autotune.core.verify`): rounding errors of K products add like a random
    walk (3 sigma: 3*sqrt(K)*e), while the check's tolerance grows like K. The check itself still runs on every
    trial; this only prunes what would certainly fail it (tf32 on any ordinary layer)."""
    K = verify.reduction_length(op, p)
    return 3.0 * math.sqrt(K) * _PRODUCT_ERROR.get(precision, 0.0), verify.tolerance(op, p)


def _capability(device: Device) -> float:
    try:
        return float(device.info.get("capability", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


def _vector(run: int, block: int, itemsize: int) -> int:
    """Elements per vector load along a contiguous axis: up to 16 bytes, where the contiguous run (channels or
    pixels) and the block both divide by it (else alignment is unprovable and the loads stay scalar)."""
    v = 16 // itemsize
    while v > 1 and (run % v or block % v):
        v //= 2
    return v


def padded_channels(p: Problem, c: Config) -> tuple[int, int]:
    """(C_in/G, C_out/G) as the staged channels-last operands and packed weights hold them: rounded up to 16 bytes
    for `direct` and `phase` (the padding is zeros; it keeps every channel run aligned, so loads stay vectorized
    whatever the channel count), exact for `gemm` (whose per-element gathers would only multiply zeros)."""
    G = p.groups
    pad = 1 if c.get("algorithm") == "gemm" else 16 // _ITEMSIZE.get(p.dtype, 4)
    return -(-(p.C_in // G) // pad) * pad, -(-(p.C_out // G) // pad) * pad


def _contiguous_runs(op: str, p: Problem, algorithm: str) -> tuple[int, int]:
    """Length of the contiguous run along the loaded axis of each operand tile (A: BLOCK_M x BLOCK_K, B: BLOCK_K x
    BLOCK_N), see the layouts in `backends/triton/kernels.py`."""
    Cig, Cog = padded_channels(p, {"algorithm": algorithm})
    if op == "forward":
        return Cig, Cog
    if op == "backward_input":
        return Cog, Cig
    return p.H * p.W, Cog  # backward_weight: x along pixels, gy (channels-last) along output channels


def load_vectors(op: str, p: Problem, c: Config) -> tuple[int, int]:
    """Elements per load instruction of the A (BLOCK_M x BLOCK_K) and B (BLOCK_K x BLOCK_N) tiles: A is contiguous
    along K, B along N; per-element gathers (gemm over taps narrower than the block) are scalar."""
    itemsize = _ITEMSIZE.get(p.dtype, 4)
    bn, bk = c["block_n"], c["block_k"]
    run_a, run_b = _contiguous_runs(op, p, c["algorithm"])
    gather_a = c["algorithm"] == "gemm" and op != "backward_weight" and run_a < bk
    gather_b = c["algorithm"] == "gemm" and op == "backward_weight" and run_b < bn
    return (1 if gather_a else _vector(run_a, bk, itemsize)), (1 if gather_b else _vector(run_b, bn, itemsize))


def register_estimate(op: str, p: Problem, c: Config, warp: int = 32) -> int:
    """Registers per thread a config needs, by a model fitted to ptxas for sm_90 (about 100 configs of the suite
    layers; it errs high, so that what it accepts does not spill): the accumulator; the operand values where they
    pass through registers (FMA path; float32 `ieee` dots, which run on CUDA cores; `tf32x3`, which splits each
    operand in registers; dot loads that cannot be copied asynchronously: scalar 16-bit loads or num_stages 1); and
    3 registers per load instruction in flight (a 64-bit pointer and an offset or mask), so scalar gathers cost
    far more than their values."""
    threads = warp * c["num_warps"]
    itemsize = _ITEMSIZE.get(p.dtype, 4)
    words = 2 if p.dtype == "float64" else 1
    bm, bn, bk = c["block_m"], c["block_n"], c["block_k"]
    va, vb = load_vectors(op, p, c)
    loads = 3 * (bm * bk / va + bk * bn / vb) / threads
    acc = bm * bn * words / threads
    operands = (bm * bk + bk * bn) / threads
    if not _uses_dot(p, c):
        product = bm * bk * bn * words / threads
        return int(24 + acc + product + operands * words + loads)
    precision = c.get("precision", "ieee") if p.dtype == "float32" else "tensor"
    if precision == "ieee":  # a float32 dot on CUDA cores: operand slices in registers, the tile twice
        return int(60 + 2 * acc + operands + loads)
    if precision == "tf32x3":  # each operand split (high, low) in registers, three products in flight
        return int(40 + 2.5 * acc + 2 * operands + loads)
    asynchronous = c["num_stages"] > 1 and min(va, vb) * itemsize >= 4
    values = 0.0 if asynchronous else operands * itemsize / 4
    # wgmma accumulators beyond 64 per thread cost about half again (128x128 over 4 warps reached 255 and spilled)
    return int(24 + acc * (1.5 if acc > 64 else 1.0) + values + loads)


def _uses_dot(p: Problem, c: Config) -> bool:
    return min(c["block_m"], c["block_n"], c["block_k"]) >= DOT_MIN and p.dtype != "float64"


def _extents(op: str, p: Problem, algorithm: str) -> tuple[int, int, int]:
    """(rows, columns, reduction) lengths of `op`'s GEMM view, per program (see the table in the docstring)."""
    G, taps = p.groups, p.kH * p.kW
    Cig, Cog = p.C_in // G, p.C_out // G
    Ho, Wo = p.output_size
    if op == "forward":
        if algorithm == "phase":
            sh, sw = p.stride
            return p.N * -(-Ho // sh) * -(-Wo // sw), Cog, Cig
        return p.N * Ho * Wo, Cog, Cig * (taps if algorithm == "gemm" else 1)
    if op == "backward_input":
        return p.N * p.H * p.W, Cig, Cog * (taps if algorithm == "gemm" else 1)
    return Cig, Cog * (taps if algorithm == "gemm" else 1), p.N * p.H * p.W


def _grid(op: str, p: Problem, c: Config) -> tuple[int, ...]:
    if op == "backward_bias":
        return (-(-p.C_out // c["block_n"]), c["split_k"])
    G = p.groups
    m, n, _ = _extents(op, p, c["algorithm"])
    rows, cols = -(-m // c["block_m"]), -(-n // c["block_n"])
    if op == "backward_weight":
        return (G * rows, cols, c["split_k"] * (1 if c["algorithm"] == "gemm" else p.kH * p.kW))
    return (rows, G * cols, p.stride[0] * p.stride[1] if c["algorithm"] == "phase" else 1)


def to_tensor(name: str, a: Any, shape: tuple[int, ...], dtype: str, target: Any) -> Any:
    """`a` as a contiguous torch tensor of `dtype` and `shape` on `target`: a tensor that already is one is returned
    as is, a NumPy array is wrapped without a copy where the device is the CPU; anything else is a clear error."""
    import torch
    if isinstance(a, np.ndarray):
        if dtype == "bfloat16" or a.dtype != np.dtype(dtype):  # NumPy has no bfloat16
            raise TypeError(f"{name} must have dtype {dtype}, got numpy {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a) if a.flags.writeable else np.array(a))
    elif _is_tensor(a):
        if a.device != target:
            raise ValueError(f"{name} is on {a.device}, but this kernel runs on {target}")
        t = a
    else:
        raise TypeError(f"{name} must be a numpy.ndarray or a torch.Tensor, got {type(a).__name__}")
    if t.dtype != getattr(torch, dtype):
        raise TypeError(f"{name} must have dtype {dtype}, got {str(t.dtype).replace('torch.', '')}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return t.to(target).contiguous()


def launch_plan(op: str, p: Problem, c: Config, kernels: Any) -> tuple[Any, dict[str, Any]]:
    """The kernel of `kernels` (the module) that computes (op, config) and its constexpr and launch arguments
    (everything but the tensors)."""
    tl = kernels.tl
    Ho, Wo = p.output_size
    meta: dict[str, Any] = dict(IDX=tl.int64 if needs_int64(p) else tl.int32,
                                ACC=tl.float64 if p.dtype == "float64" else tl.float32,
                                num_warps=c["num_warps"], num_stages=c["num_stages"])
    if op == "backward_bias":
        meta.update(N=p.N, C_OUT=p.C_out, HWO=Ho * Wo, SPLIT=c["split_k"], SPLIT_STEPS=_split_steps(op, p, c),
                    BLOCK_N=c["block_n"], BLOCK_K=c["block_k"])
        return kernels.backward_bias_kernel, meta
    meta.update(N=p.N, C_IN=p.C_in, H=p.H, W=p.W, C_OUT=p.C_out, HO=Ho, WO=Wo, KH=p.kH, KW=p.kW,
                SH=p.stride[0], SW=p.stride[1], PT=p.padding[0][0], PL=p.padding[1][0],
                DH=p.dilation[0], DW=p.dilation[1], G=p.groups, USE_DOT=_uses_dot(p, c),
                PREC=PRECISIONS.index(c.get("precision", "ieee")), EMULATE=bool(kernels.INTERPRETED),
                BLOCK_M=c["block_m"], BLOCK_N=c["block_n"], BLOCK_K=c["block_k"])
    meta["CIGP"], meta["COGP"] = padded_channels(p, c)
    if op == "forward":
        (psh, maxh), (psw, maxw) = (_tap_period(k, s, d) for k, s, d in zip((p.kH, p.kW), p.stride, p.dilation))
        return kernels.forward_kernel, {**meta, "HAS_BIAS": p.bias, "PSH": psh, "PSW": psw, "MAXH": maxh,
                                        "MAXW": maxw, "MODE": ("direct", "phase", "gemm").index(c["algorithm"]),
                                        "W_TMA": bool(c.get("weight_tma", 0))}
    if op == "backward_weight":
        meta.update(SPLIT=c["split_k"], SPLIT_STEPS=_split_steps(op, p, c))
    fn = kernels.backward_input_kernel if op == "backward_input" else kernels.backward_weight_kernel
    return fn, {**meta, "GEMM": c["algorithm"] == "gemm"}


def accumulates_in_output(op: str, p: Problem, c: Config) -> bool:
    """Whether the kernel adds split partial sums into a zeroed output with atomics in the accumulator's dtype
    (a float32 buffer for 16-bit outputs, cast afterwards)."""
    return op in ("backward_weight", "backward_bias") and c.get("split_k", 1) > 1


def pointer_types(op: str, p: Problem, c: Config) -> dict[str, str]:
    """Element types of the kernel's pointer arguments that differ from the problem's dtype (for compiling ahead
    of time): the float32 output of split 16-bit gradients."""
    types: dict[str, str] = {}
    if accumulates_in_output(op, p, c) and p.dtype in ("float16", "bfloat16"):
        types["gw_ptr" if op == "backward_weight" else "gb_ptr"] = "*fp32"
    return types


def stage_operands(op: str, p: Problem, c: Config, tensors: list[Any]) -> list[Any]:
    """The layouts the kernels read (see `backends/triton/kernels.py`): the per-tap operand channels-last, the
    weight packed per group and tap, channels padded with zeros as `padded_channels` says. Each is one copy of an
    operand per call (gy and x are read once more; the weight is small)."""
    import torch.nn.functional as F
    G, taps = p.groups, p.kH * p.kW
    Cig, Cog = p.C_in // G, p.C_out // G
    Cigp, Cogp = padded_channels(p, c)

    def channels_last(t: Any, per_group: int, padded: int) -> Any:
        n, _, h, w = t.shape
        t = t.permute(0, 2, 3, 1).reshape(n, h, w, G, per_group)
        # (F.pad may keep a permuted input's memory format: .contiguous() makes the layout the kernels index)
        return (F.pad(t, (0, padded - per_group)) if padded > per_group else t).contiguous()

    if op == "forward":
        x, w = tensors[0], tensors[1]
        wp = w.reshape(G, Cig, Cog, taps).permute(0, 3, 1, 2)  # [G, taps, Cig, Cog]
        wp = (F.pad(wp, (0, Cogp - Cog, 0, Cigp - Cig)) if (Cigp, Cogp) != (Cig, Cog) else wp).contiguous()
        return [channels_last(x, Cig, Cigp), wp, *tensors[2:]]
    if op == "backward_input":
        gy, w = tensors
        wq = w.reshape(G, Cig, Cog, taps).permute(0, 3, 2, 1)  # [G, taps, Cog, Cig]
        wq = (F.pad(wq, (0, Cigp - Cig, 0, Cogp - Cog)) if (Cigp, Cogp) != (Cig, Cog) else wq).contiguous()
        return [channels_last(gy, Cog, Cogp), wq]
    if op == "backward_weight":
        gy, x = tensors
        return [channels_last(gy, Cog, Cogp), x]
    return tensors


def _scratch(size: int, alignment: int, stream: Any) -> Any:
    """Triton's allocator for the global scratch of in-kernel tensor descriptors (TMA), on the current GPU."""
    import torch
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _build(op: str, p: Problem, device: Device, c: Config) -> Kernel:
    """The prepared kernel: checks and stages its arguments, allocates the output, launches, converts back."""
    import torch

    from backends.triton import kernels

    if kernels.INTERPRETED != interpreting():
        raise RuntimeError("TRITON_INTERPRET changed after the Triton kernels were imported; Triton fixes the mode "
                           "when a kernel is defined, so set it before the first call")
    tdtype = getattr(torch, p.dtype)
    target = device.handle if device.kind == "gpu" else torch.device("cpu")
    grid = _grid(op, p, c)
    fn, meta = launch_plan(op, p, c, kernels)
    atomic = accumulates_in_output(op, p, c)
    if meta.get("W_TMA") and device.kind == "gpu":  # in-kernel tensor descriptors live in a global scratch buffer
        import triton
        triton.set_allocator(_scratch)
    out_dtype = torch.float32 if atomic and p.dtype in ("float16", "bfloat16") else tdtype
    launcher = fn[grid]
    names = {"forward": ("input", "weight", "bias"), "backward_input": ("grad_output", "weight"),
             "backward_weight": ("grad_output", "input"), "backward_bias": ("grad_output",)}[op]
    shapes_in = {"input": p.input_shape, "weight": p.weight_shape, "bias": p.bias_shape,
                 "grad_output": p.output_shape}
    out_shape = {"forward": p.output_shape, "backward_input": p.input_shape, "backward_weight": p.weight_shape,
                 "backward_bias": p.bias_shape}[op]

    def kernel(*args: Any) -> Any:
        if len(args) != len(names) and not (op == "forward" and len(args) == 2):
            raise TypeError(f"{op} kernel takes ({', '.join(names)}), got {len(args)} arguments")
        as_numpy = isinstance(args[0], np.ndarray)
        bias = args[2] if op == "forward" and len(args) == 3 else None
        if op == "forward" and (bias is not None) != p.bias:
            raise ValueError(f"bias must be {'given' if p.bias else 'None'} for problem {p.key}")
        where = target
        if device.kind == "gpu" and _is_tensor(args[0]) and args[0].device.type == "cuda":
            where = args[0].device  # GPUs of one model share a device id (and a config): run where the data is
        tensors = [to_tensor(n, a, shapes_in[n], p.dtype, where) for n, a in zip(names, args) if a is not None]
        tensors = stage_operands(op, p, c, tensors)
        if atomic:  # split partial sums are added into it
            out = torch.zeros(out_shape, dtype=out_dtype, device=where)
        else:
            out = torch.empty(out_shape, dtype=out_dtype, device=where)
        if op == "forward":
            x, w = tensors[0], tensors[1]
            args_ = (x, w, tensors[2] if p.bias else x, out)  # x stands in for the absent bias (never read)
        else:
            args_ = (*tensors, out)
        if device.kind == "gpu":
            with torch.cuda.device(where):  # Triton launches on the current device
                launcher(*args_, **meta)
        else:
            launcher(*args_, **meta)
        if out.dtype != tdtype:
            out = out.to(tdtype)
        return out.cpu().numpy() if as_numpy else out

    return kernel


BACKEND = TritonBackend
