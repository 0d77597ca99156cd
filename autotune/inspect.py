"""What a backend's kernels compile to on a GPU that need not be present: per kernel, the registers, spills, shared
memory, global load and store widths and tensor-core instruction family (from the compiled code), plus the bytes and
FLOPs of the op and a roofline estimate for a named GPU. The library half of `autotune inspect` (the command line is
`autotune/cli/inspect.py`); backends answer through `Backend.compile_report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import backends
from autotune.core.problem import OPS, Problem
from autotune.problems import NamedProblem
from backends.base import Config, Device

ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet figures of a GPU, for the roofline and for the stand-in device the backend's space is built on
    (dense peaks, no sparsity; FLOP/s, bytes/s)."""

    name: str
    arch: int
    multiprocessors: int
    shared_memory_bytes: int
    bandwidth: float
    peaks: dict[str, float] = field(default_factory=dict)

    def peak(self, dtype: str, tensor_core: str, precision: str | None) -> tuple[str, float]:
        """The peak that bounds a kernel: tensor cores at the operand precision, else the CUDA cores."""
        if dtype == "float64":
            return "fp64", self.peaks["fp64"]
        if tensor_core in ("HGMMA", "HMMA"):
            if dtype in ("float16", "bfloat16"):
                return "bf16", self.peaks["bf16"]
            if precision == "tf32x3":  # three tf32 products per multiply-add
                return "tf32x3", self.peaks["tf32"] / 3
            return "tf32", self.peaks["tf32"]
        return "fp32", self.peaks["fp32"]


GPUS = {
    "h100": GpuSpec("NVIDIA H100 SXM5 80GB", 90, 132, 232448, 3.35e12,
                    {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp64": 67e12}),
    "h200": GpuSpec("NVIDIA H200 SXM 141GB", 90, 132, 232448, 4.8e12,
                    {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp64": 67e12}),
    "a100": GpuSpec("NVIDIA A100 SXM4 80GB", 80, 108, 166912, 2.039e12,
                    {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp64": 19.5e12}),
}
DEFAULT_GPU = {90: "h100", 80: "a100"}


def gpu_for(arch: int, name: str | None = None) -> GpuSpec:
    if name is None:
        name = DEFAULT_GPU.get(arch)
        if name is None:
            raise ValueError(f"no GPU known for sm_{arch}: name one with gpu= ({', '.join(GPUS)})")
    key = name.strip().lower()
    if key not in GPUS:
        raise ValueError(f"unknown GPU {name!r}; known: {', '.join(GPUS)}")
    return GPUS[key]


def stand_in_device(backend: str, gpu: GpuSpec) -> Device:
    """A device that is not here: what the backend's space and default config need to know of it."""
    slug = gpu.name.lower().replace(" ", "-")
    return Device(id=f"gpu-{slug}", name=gpu.name, kind="gpu",
                  info={"warp_size": 32, "shared_memory_bytes": gpu.shared_memory_bytes,
                        "multiprocessors": gpu.multiprocessors, "capability": f"{gpu.arch // 10}.{gpu.arch % 10}",
                        "timing": "device", "stand_in": True})


def traffic_bytes(op: str, p: Problem) -> int:
    """Bytes every kernel of `op` must move at least: each operand read once, the result written once."""
    shapes = [s for s in p.operand_shapes(op) if s is not None]
    shapes.append({"forward": p.output_shape, "backward_input": p.input_shape, "backward_weight": p.weight_shape,
                   "backward_bias": p.bias_shape}[op])
    total = 0
    for s in shapes:
        n = 1
        for d in s:
            n *= d
        total += n
    return total * ITEMSIZE[p.dtype]


def roofline(op: str, p: Problem, gpu: GpuSpec, tensor_core: str, precision: str | None,
             staging_bytes: int = 0) -> dict[str, Any]:
    """Lower bound on the time of `op` on `gpu`: the larger of moving its bytes and doing its FLOPs at peak; and the
    same with the bytes of the backend's layout copies (`staging_bytes`, when it reports them) added."""
    nbytes, flops = traffic_bytes(op, p), p.flops(op)
    unit, peak = gpu.peak(p.dtype, tensor_core if op != "backward_bias" else "none", precision)
    memory_s, compute_s = nbytes / gpu.bandwidth, flops / peak
    staged_s = max((nbytes + staging_bytes) / gpu.bandwidth, compute_s)
    return {"bytes": nbytes, "flops": flops, "peak_unit": unit, "roofline_us": round(max(memory_s, compute_s) * 1e6, 3),
            "roofline_staged_us": round(staged_s * 1e6, 3),
            "bound": "memory" if memory_s >= compute_s else "compute", "gpu": gpu.name}


def inspect_kernels(problems: list[NamedProblem], *, backend: str = "triton", arch: str | int = "sm_90",
                    gpu: str | None = None, ops: tuple[str, ...] = OPS, dtypes: tuple[str, ...] = ("float32",),
                    config: Config | None = None) -> list[dict[str, Any]]:
    """One record per compiled kernel of each (problem, op, dtype): the backend's default config (or `config`,
    completed with the default and validated), what its compiler made of it for `arch`, and the roofline on `gpu`
    (by default the usual GPU of that arch). `arch="local"`: the backend's own first device here (OpenCL through the
    local driver; no roofline). A kernel that cannot be compiled gives a record with `error`."""
    from backends.triton.aot import parse_arch  # parsing only; imports nothing heavy

    b = backends.get(backend)  # not b.available(): compiling for a target needs no device of it here
    if str(arch).strip().lower() == "local":  # the backend's own first device (OpenCL: the local driver)
        devices = b.devices()
        if not devices:
            raise ValueError(f"backend {backend} has no device here: {b.available()[1]}")
        device, spec, arch_name = devices[0], None, "local"
    else:
        arch_n = parse_arch(arch)
        spec = gpu_for(arch_n, gpu)
        device, arch_name = stand_in_device(backend, spec), f"sm_{arch_n}"
    records: list[dict[str, Any]] = []
    for named in problems:
        for dtype in dtypes:
            for op in ops:
                q = named.problem.with_dtype(dtype).for_op(op)
                base = {"problem": named.name, "key": q.key, "op": op, "dtype": dtype, "arch": arch_name,
                        "backend": backend}
                try:
                    space = b.space(op, q, device)
                    default = b.default_config(op, q, device)
                    cfg = space.complete(config, default) if config else default
                    kernels = b.compile_report(op, q, device, cfg, arch_name)
                except Exception as exc:  # noqa: BLE001 - one kernel that fails must not hide the others
                    records.append({**base, "error": f"{type(exc).__name__}: {exc}"})
                    continue
                for k in kernels:
                    rec = {**base, "config": cfg, **k}
                    if spec is None:  # a local device: no datasheet to draw a roofline from
                        rec.update(bytes=traffic_bytes(op, q), flops=q.flops(op))
                        records.append(rec)
                        continue
                    rec.update(roofline(op, q, spec, k.get("tensor_core", "none"), cfg.get("precision"),
                                        int(k.get("staging_bytes", 0))))
                    records.append(rec)
    return records
