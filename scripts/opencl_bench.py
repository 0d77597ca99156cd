"""Measure the opencl backend against PyTorch's CPU conv_transpose2d on the suite (a development aid, not a test).

    .venv/bin/python scripts/opencl_bench.py [--ops forward,...] [--problems a,b] [--configs FILE.json] [--budget S]

For every problem and op: the default config, optional extra configs (JSON list of partial configs, completed with
the default), timed with autotune.core.timing.measure through the backend's runner; torch timed the same way (wall
clock). Prints GFLOP/s and opencl/torch ratios, and geometric means per op.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

import backends
from autotune.core.timing import measure
from autotune.problems import load_problems

OPS = ("forward", "backward_input", "backward_weight", "backward_bias")


def torch_run(op, p, ins):
    import torch
    (pt, _), (pl, _) = p.padding
    t = [None if a is None else torch.from_numpy(a) for a in ins]
    kw = dict(stride=p.stride, padding=(pt, pl), output_padding=p.output_padding, groups=p.groups, dilation=p.dilation)
    if op == "forward":
        return lambda: (torch.nn.functional.conv_transpose2d(t[0], t[1], t[2], **kw), None)[1]
    if op == "backward_bias":
        return lambda: (t[0].sum((0, 2, 3)), None)[1]
    gy, x, w = t[0], t[1], t[2]
    mask = [op == "backward_input", op == "backward_weight", False]
    return lambda: (torch.ops.aten.convolution_backward(gy, x, w, None, p.stride, (pt, pl), p.dilation, True,
                                                        p.output_padding, p.groups, mask), None)[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--problems", default="")
    ap.add_argument("--configs", default="")
    ap.add_argument("--budget", type=float, default=0.4)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--numpy-only", action="store_true", help="time the numpy backend's default config only")
    ap.add_argument("--verbose", action="store_true", help="print every config's GFLOP/s")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    be = backends.get("opencl")
    dev = be.devices()[0]
    extra = json.loads(open(a.configs).read()) if a.configs else []
    names = set(a.problems.split(",")) if a.problems else None
    rng = np.random.default_rng(0)
    geo: dict[str, list[float]] = {}
    for np_ in load_problems():
        if names and np_.name not in names:
            continue
        for op in a.ops.split(","):
            p = np_.problem.for_op(op)
            x = rng.standard_normal(p.input_shape).astype(np.float32)
            w = rng.standard_normal(p.weight_shape).astype(np.float32)
            b = rng.standard_normal(p.C_out).astype(np.float32) if p.bias else None
            gy = rng.standard_normal(p.output_shape).astype(np.float32)
            ins = {"forward": (x, w, b), "backward_input": (gy, w), "backward_weight": (gy, x),
                   "backward_bias": (gy,)}[op]
            fl = p.flops(op) / 1e9
            tt = None
            if not a.no_torch:
                tins = (gy, x, w) if op.startswith("backward_") and op != "backward_bias" else ins
                tt = measure(torch_run(op, p, tins), budget_s=a.budget).median_s
            if a.numpy_only:
                nb = backends.get("numpy")
                nd = nb.devices()[0]
                k = nb.prepare(op, p, nd, nb.default_config(op, p, nd))
                t = measure(nb.runner(k, ins, nd), budget_s=a.budget).median_s
                print(f"{np_.name:16s} {op:16s} numpy {fl / t:7.2f}", flush=True)
                continue
            space = be.space(op, p, dev)
            default = be.default_config(op, p, dev)
            rows = []
            for i, partial in enumerate([{}] + [e for e in extra if set(e) <= set(space.params)]):
                try:
                    c = space.complete(partial, default)
                except Exception:
                    continue
                k = be.prepare(op, p, dev, c)
                t = measure(be.runner(k, ins, dev), budget_s=a.budget).median_s
                rows.append((t, i, c))
                if a.verbose:
                    print(f"    #{i:<3d} {fl / t:7.2f}  {json.dumps(partial, sort_keys=True)}", flush=True)
            best = min(rows, key=lambda r: r[0])
            t0 = rows[0][0]
            geo.setdefault(op, []).append((fl / t0, fl / best[0], fl / tt if tt else float("nan")))
            line = (f"{np_.name:16s} {op:16s} default {fl / t0:7.2f}  best {fl / best[0]:7.2f} (#{best[1]})"
                    + (f"  torch {fl / tt:7.2f}  ratio {tt / t0:5.2f} best-ratio {tt / best[0]:5.2f}" if tt else ""))
            print(line, flush=True)
            if best[1]:
                print("    best config:", json.dumps(best[2], sort_keys=True), flush=True)
    for op, vals in geo.items():
        g = [math.exp(sum(math.log(v[i]) for v in vals) / len(vals)) for i in range(3)]
        print(f"GEOMEAN {op:16s} default {g[0]:7.2f} best {g[1]:7.2f} torch {g[2]:7.2f} "
              f"ratio {g[0] / g[2]:5.2f} best-ratio {g[1] / g[2]:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
