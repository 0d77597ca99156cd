"""Ahead-of-time compilation of the Triton kernels for an NVIDIA target that need not be present, and what the
compiled code says: registers, spills, shared memory, global load and store widths and the tensor-core instruction
family, read from the cubin with the `cuobjdump` that Triton ships.

Used by `TritonBackend.compile_report` (and through it by `autotune inspect`) and by the tests that hold the kernels
to "no spills, vector loads, wgmma" without a GPU. Importing this module imports nothing heavy; compiling imports
triton, and needs a process where TRITON_INTERPRET is unset (Triton fixes interpreted-or-compiled per process).
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import tempfile
from typing import Any

# Pointer arguments of each kernel (everything else is a constexpr).
POINTER_ARGS = ("x_ptr", "w_ptr", "b_ptr", "y_ptr", "gy_ptr", "gx_ptr", "gw_ptr", "gb_ptr")
_POINTER_TYPE = {"float32": "*fp32", "float64": "*fp64", "float16": "*fp16", "bfloat16": "*bf16"}

_INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Za-z0-9_.]*)")
_RESOURCES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def parse_arch(arch: str | int) -> int:
    """'sm_90', 'sm90', '90' or 90 -> 90 (also 'sm_90a')."""
    m = re.fullmatch(r"(?:sm_?)?(\d+)a?", str(arch).strip().lower())
    if not m:
        raise ValueError(f"arch must look like sm_80 or sm_90, got {arch!r}")
    return int(m.group(1))


def _width(opcode: str, default: int = 32) -> int:
    """Bits moved per thread by a load or store opcode: LDG.E.128 -> 128, LDG.E.U16 -> 16, LDG.E -> 32."""
    parts = opcode.split(".")
    for token, bits in (("128", 128), ("64", 64), ("U16", 16), ("S16", 16), ("U8", 8), ("S8", 8)):
        if token in parts:
            return bits
    return default


def sass_stats(sass: str) -> dict[str, Any]:
    """Instruction mix of one kernel's SASS that matters first for speed: global load/store widths (LDG and the
    asynchronous LDGSTS count as loads), TMA copies, tensor-core instructions, spill traffic (STL/LDL), atomics."""
    loads: collections.Counter[int] = collections.Counter()
    stores: collections.Counter[int] = collections.Counter()
    tensor: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for opcode in _INSTRUCTION.findall(sass):
        head = opcode.split(".")[0]
        if head in ("LDG", "LDGSTS"):
            loads[_width(opcode)] += 1
        elif head == "STG":
            stores[_width(opcode)] += 1
        elif head in ("UTMALDG", "UBLKCP"):
            counts["tma_loads"] += 1
        elif head == "UTMASTG":
            counts["tma_stores"] += 1
        elif head in ("HGMMA", "HMMA", "DMMA", "IMMA", "UTCHMMA", "UTCQMMA"):
            tensor[head] += 1
            counts["tensor_ops"] += 1
        elif head in ("STL", "LDL"):
            counts[head] += 1
        elif head in ("RED", "ATOMG", "ATOM"):
            counts["atomics"] += 1
        elif head in ("FFMA", "DFMA"):
            counts[head] += 1
    family = "HGMMA" if tensor["HGMMA"] else ("HMMA" if tensor["HMMA"] else ("DMMA" if tensor["DMMA"] else "none"))
    variants = sorted({op for op in _INSTRUCTION.findall(sass) if op.split(".")[0] in ("HGMMA", "HMMA", "DMMA")})
    n_loads = sum(loads.values()) + counts["tma_loads"]
    wide = sum(n for bits, n in loads.items() if bits >= 64) + counts["tma_loads"]
    return {"tensor_core": family, "tensor_core_ops": variants, "tensor_core_count": counts["tensor_ops"],
            "global_load_bits": dict(sorted(loads.items())), "global_store_bits": dict(sorted(stores.items())),
            "tma_loads": counts["tma_loads"], "tma_stores": counts["tma_stores"],
            "wide_load_fraction": round(wide / n_loads, 3) if n_loads else 0.0,
            "spill_stores": counts["STL"], "spill_loads": counts["LDL"], "atomics": counts["atomics"],
            "ffma": counts["FFMA"], "dfma": counts["DFMA"]}


def _cuobjdump() -> str:
    from triton import knobs
    return knobs.nvidia.cuobjdump.path


def cubin_report(cubin: bytes) -> dict[str, Any]:
    """Registers, stack and local bytes (`cuobjdump -res-usage`) and the SASS instruction mix of a cubin."""
    fd, path = tempfile.mkstemp(suffix=".cubin")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cubin)
        tool = _cuobjdump()
        usage = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([tool, "-sass", path], capture_output=True, text=True, check=True).stdout
    finally:
        os.remove(path)
    m = _RESOURCES.search(usage)
    if not m:
        raise RuntimeError(f"cuobjdump -res-usage gave no resource line: {usage[:300]!r}")
    registers, stack, _shared, local = (int(v) for v in m.groups())
    stats = sass_stats(sass)
    # A kernel spills when ptxas had to put registers in local memory: spill stores in the SASS (Triton kernels
    # have no local arrays, so local/stack bytes are spills too).
    spills = stats["spill_stores"]
    return {"registers": registers, "spills": spills, "stack_bytes": stack, "local_bytes": local, **stats,
            "sass_lines": sass.count("\n")}


def compile_plan(fn: Any, meta: dict[str, Any], dtype: str, arch: int, pointer_types: dict[str, str] | None = None
                 ) -> Any:
    """Compile Triton function `fn` with constexprs `meta` (plus `num_warps`, `num_stages`) for sm_`arch`."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    meta = dict(meta)
    options = {k: meta.pop(k) for k in ("num_warps", "num_stages", "num_ctas") if k in meta}
    pointer_types = pointer_types or {}
    signature = {name: pointer_types.get(name, _POINTER_TYPE[dtype]) if name in POINTER_ARGS else "constexpr"
                 for name in fn.arg_names}
    # What Triton's launcher specializes on at run time: pointers 16-byte aligned (torch allocations are). Without it
    # the compiler may not assume any alignment and no load is vectorized.
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names) if name in POINTER_ARGS}
    return triton.compile(ASTSource(fn, signature, constexprs=meta, attrs=attrs),
                          target=GPUTarget("cuda", arch, 32), options=options)
