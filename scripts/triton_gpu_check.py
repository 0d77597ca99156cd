"""The Triton backend's checks that need a GPU, in the order of issue 16's 30-minute budget (run on a CUDA machine):

1. correctness of the default config of every op, float32 / float16 / bfloat16, on four layers, with the output
   memory pre-filled with NaN (an element a kernel forgets to write shows up), against torch's conv_transpose2d
   (cuDNN) and its autograd gradients;
2. the backend's timer (CUDA-graph replay, `TritonBackend.runner`) against `triton.testing.do_bench` on the same
   staged call, and the empty-launch cost;
3. the suite's forward against cuDNN at the same precision: float32 with TF32 off (Triton `ieee` and `tf32x3`) and
   on (Triton `tf32` where its check allows, else `tf32x3`), and bfloat16;
4. the `ncu` command lines for two kernels (run them by hand: ncu needs its own process).

Prints Markdown. `--smoke` runs steps 1-2 on a tiny layer in Triton's interpreter (TRITON_INTERPRET=1, no GPU), to
check the script itself.

    python scripts/triton_gpu_check.py                  # on a GPU machine
    TRITON_INTERPRET=1 python scripts/triton_gpu_check.py --smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

import backends
from autotune.core.problem import OPS, Problem
from autotune.core.timing import measure
from autotune.problems import load_problems

LAYERS = ("dcgan_g1", "unet_up_deep", "depthwise_up", "odd_shapes")
DTYPES = ("float32", "float16", "bfloat16")
TOLERANCE = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 5e-2}  # relative to the largest |reference|


def torch_ops(torch, p: Problem, x, w, b, gy):
    """cuDNN's forward and gradients (autograd) for `p`, in float64-comparable form."""
    F = torch.nn.functional
    pad = p.symmetric_padding
    if pad is None:
        return None
    x = x.detach().requires_grad_(True)
    w = w.detach().requires_grad_(True)
    bb = None if b is None else b.detach().requires_grad_(True)
    y = F.conv_transpose2d(x, w, bb, stride=p.stride, padding=pad, output_padding=p.output_padding,
                           groups=p.groups, dilation=p.dilation)
    y.backward(gy)
    return {"forward": y, "backward_input": x.grad, "backward_weight": w.grad,
            "backward_bias": gy.sum((0, 2, 3))}


def nan_prefill(torch, device, nbytes: int) -> None:
    """Fill memory the caching allocator will hand out next with NaN, then release it."""
    junk = torch.full((nbytes // 4 + 1024,), float("nan"), dtype=torch.float32, device=device)
    del junk


def check_correctness(torch, tb, device, layers) -> list[str]:
    lines = ["| layer | dtype | op | max rel err | ok |", "|---|---|---|---|---|"]
    for name, p32 in layers:
        for dtype in DTYPES:
            p = p32.with_dtype(dtype)
            g = torch.Generator().manual_seed(0)
            tdt = getattr(torch, dtype)

            def rnd(shape, g=g, tdt=tdt):
                return (torch.rand(shape, generator=g) * 2 - 1).to(device=device.handle, dtype=tdt)
            x, w = rnd(p.input_shape), rnd(p.weight_shape)
            b = rnd(p.bias_shape) if p.bias else None
            gy = rnd(p.output_shape)
            ref = torch_ops(torch, p, x.float(), w.float(), None if b is None else b.float(), gy.float())
            if ref is None:
                lines.append(f"| {name} | {dtype} | - | asymmetric padding: no torch reference | - |")
                continue
            args = {"forward": (x, w, b), "backward_input": (gy, w), "backward_weight": (gy, x),
                    "backward_bias": (gy,)}
            for op in OPS:
                q = p.for_op(op)
                kernel = tb.prepare(op, q, device, tb.default_config(op, q, device))
                nan_prefill(torch, device.handle, 4 * max(np.prod(s) for s in (q.output_shape, q.input_shape)))
                out = kernel(*args[op]).double()
                want = ref[op].double()
                err = float((out - want).abs().max() / want.abs().max().clamp_min(1e-30))
                ok = bool(torch.isfinite(out).all()) and err <= TOLERANCE[dtype]
                lines.append(f"| {name} | {dtype} | {op} | {err:.2e} | {'yes' if ok else '**NO**'} |")
    return lines


def check_timer(torch, tb, device, layers, smoke: bool) -> list[str]:
    lines = ["| layer | op | runner (graph) us | do_bench us | empty launch us |", "|---|---|---|---|---|"]
    for name, p32 in layers:
        for op in ("forward", "backward_weight"):
            q = p32.for_op(op)
            kernel = tb.prepare(op, q, device, tb.default_config(op, q, device))
            g = torch.Generator().manual_seed(1)
            inputs = tuple(None if s is None else (torch.rand(s, generator=g) * 2 - 1).to(device.handle)
                           for s in q.operand_shapes(op))
            run = tb.runner(kernel, inputs, device)
            timing = measure(run, budget_s=0.05 if smoke else 0.5)
            if smoke:
                bench = float("nan")
            else:
                import triton.testing
                bench = triton.testing.do_bench(lambda: kernel(*inputs)) * 1e3  # noqa: B023
            empty = getattr(run, "launch_overhead_s", float("nan"))
            lines.append(f"| {name} | {op} | {timing.median_s * 1e6:.2f} | {bench:.2f} | {empty * 1e6:.2f} |")
    return lines


def versus_cudnn(torch, tb, device, suite) -> list[str]:
    import triton.testing
    F = torch.nn.functional
    lines = ["| layer | dtype | precision | cuDNN us | Triton us | Triton / cuDNN speed |", "|---|---|---|---|---|---|"]
    for name, p32 in suite:
        pad = p32.symmetric_padding
        if pad is None:
            continue
        for dtype, tf32, precision in (("float32", False, "ieee"), ("float32", False, "tf32x3"),
                                       ("float32", True, "tf32"), ("bfloat16", False, None)):
            p = p32.with_dtype(dtype)
            tdt = getattr(torch, dtype)
            x = torch.randn(p.input_shape, device=device.handle, dtype=tdt)
            w = torch.randn(p.weight_shape, device=device.handle, dtype=tdt)
            b = torch.randn(p.bias_shape, device=device.handle, dtype=tdt) if p.bias else None
            torch.backends.cudnn.allow_tf32 = tf32
            cudnn = triton.testing.do_bench(lambda: F.conv_transpose2d(
                x, w, b, stride=p.stride, padding=pad, output_padding=p.output_padding,  # noqa: B023
                groups=p.groups, dilation=p.dilation)) * 1e3  # noqa: B023
            space = tb.space("forward", p, device)
            config = tb.default_config("forward", p, device)
            if precision and "precision" in space.params:
                trial = {**config, "precision": precision}
                if space.violation(trial) is not None:  # tf32 pruned: its error exceeds the float32 tolerance
                    precision = f"{precision} pruned, {config['precision']}"
                else:
                    config = trial
            kernel = tb.prepare("forward", p, device, config)
            run = tb.runner(kernel, (x, w, b), device)
            ours = statistics.median(run() for _ in range(20)) * 1e6
            lines.append(f"| {name} | {dtype} | {precision or '-'} | {cudnn:.2f} | {ours:.2f} | "
                         f"{cudnn / ours:.2f}x |")
    torch.backends.cudnn.allow_tf32 = True
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny layer in the interpreter (checks the script)")
    ap.add_argument("--run", nargs=3, metavar=("LAYER", "DTYPE", "OP"),
                    help="only run one default kernel three times (for ncu)")
    args = ap.parse_args()
    import torch
    tb = backends.get("triton")
    ok, why = tb.available()
    if not ok:
        print(f"triton backend unavailable: {why}", file=sys.stderr)
        return 2
    device = tb.devices()[0]
    suite = [(n.name, n.problem) for n in load_problems()]
    if args.run:
        name, dtype, op = args.run
        q = dict(suite)[name].with_dtype(dtype).for_op(op)
        kernel = tb.prepare(op, q, device, tb.default_config(op, q, device))
        inputs = tuple(None if s is None else torch.randn(s, device=device.handle, dtype=getattr(torch, dtype))
                       for s in q.operand_shapes(op))
        for _ in range(3):
            kernel(*inputs)
        return 0
    if args.smoke:
        layers = [("tiny", Problem.make(N=1, C_in=4, H=3, W=3, C_out=4, kH=4, kW=4, stride=2, padding=1,
                                        bias=True))]
    else:
        if device.kind != "gpu":
            print("no GPU: run with --smoke under TRITON_INTERPRET=1, or on a CUDA machine", file=sys.stderr)
            return 2
        layers = [(n, p) for n, p in suite if n in LAYERS]
    print(f"# Triton on {device.name} ({tb.version()})\n\n## Correctness (outputs pre-filled with NaN)\n")
    print("\n".join(check_correctness(torch, tb, device, layers)))
    print("\n## Timer\n")
    print("\n".join(check_timer(torch, tb, device, layers, args.smoke)))
    if not args.smoke:
        print("\n## Forward against cuDNN (do_bench for cuDNN, the backend's graph timer for Triton)\n")
        print("\n".join(versus_cudnn(torch, tb, device, suite)))
        print("\n## ncu (run by hand)\n")
        for name in ("dcgan_g1", "superres_x2"):
            print(f"    ncu --set full -k regex:forward_kernel -s 1 -c 1 python scripts/triton_gpu_check.py "
                  f"--run {name} bfloat16 forward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
