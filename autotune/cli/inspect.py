"""`autotune inspect`: compile a backend's kernels for a GPU that need not be here and print what the compiled code
says (registers, spills, shared memory, load/store widths, tensor-core family, roofline). Parse, call
`autotune.inspect`, print."""

from __future__ import annotations

import argparse
import json

from autotune.core.problem import OPS
from autotune.inspect import GPUS, inspect_kernels
from autotune.problems import load_problems, select

HELP = ("compile kernels ahead of time for a GPU target (no GPU needed) and show registers, spills, load widths, "
        "tensor-core use and a roofline estimate")
DTYPES = ("float32", "bfloat16", "float16", "float64")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="triton", metavar="NAME", help="backend whose kernels to compile (triton)")
    p.add_argument("--arch", default="sm_90", metavar="SM",
                   help="NVIDIA target: sm_80 or sm_90 (default sm_90); 'local': the backend's own device here "
                        "(OpenCL through the local driver)")
    p.add_argument("--gpu", choices=sorted(GPUS), help="GPU of the roofline estimate (default: h100 for sm_90, "
                                                       "a100 for sm_80)")
    p.add_argument("--problems", metavar="FILE", help="problems CSV (default: the built-in suite)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these problems of the file")
    p.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), metavar="OP",
                   help=f"ops to compile (default: all of {', '.join(OPS)})")
    p.add_argument("--dtype", nargs="+", choices=DTYPES, default=["float32", "bfloat16"], metavar="DTYPE",
                   help="dtypes (default: float32 bfloat16)")
    p.add_argument("--config", metavar="JSON", help="config parameters to force (completed with the default)")
    p.add_argument("--json", action="store_true", help="print one JSON object per kernel, one per line")


def _bits(counts: dict) -> str:
    return " ".join(f"{bits}:{n}" for bits, n in sorted(counts.items())) or "-"


def run(args: argparse.Namespace) -> int:
    config = None
    if args.config:
        try:
            config = json.loads(args.config)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--config is not JSON: {exc}") from None
        if not isinstance(config, dict):
            raise ValueError("--config must be a JSON object of parameter names to values")
    problems = select(load_problems(args.problems), args.only)
    records = inspect_kernels(problems, backend=args.backend, arch=args.arch, gpu=args.gpu, ops=tuple(args.ops),
                              dtypes=tuple(args.dtype), config=config)
    if args.json:
        for r in records:
            print(json.dumps(r, sort_keys=True, default=str))
        return 1 if any("error" in r for r in records) else 0
    head = (f"{'problem':16} {'op':15} {'dtype':8} {'regs':>4} {'spill':>5} {'smem':>6} {'tc':6} "
            f"{'loads bits:n':22} {'stores bits:n':16} {'wide':>5} {'roof_us':>8} {'+staging':>8} bound")
    print(head)
    for r in records:
        lead = f"{r['problem']:16} {r['op']:15} {r['dtype']:8}"
        if "error" in r:
            print(f"{lead} error: {r['error']}")
            continue
        loads = _bits(r["global_load_bits"]) + (f" tma:{r['tma_loads']}" if r.get("tma_loads") else "")
        if r["registers"] is None:  # what a local driver reports (OpenCL): memory and work-group size
            print(f"{lead} kernel {r['kernel']}: private {r.get('private_bytes')} B, local {r['shared_bytes']} B, "
                  f"work-group up to {r.get('work_group_size')} on {r.get('target')}")
            continue
        print(f"{lead} {r['registers']:4} {r['spills']:5} {r['shared_bytes']:6} {r['tensor_core']:6} {loads:22} "
              f"{_bits(r['global_store_bits']):16} {r['wide_load_fraction']:5.2f} {r['roofline_us']:8.2f} "
              f"{r['roofline_staged_us']:8.2f} {r['bound']}")
    return 1 if any("error" in r for r in records) else 0
