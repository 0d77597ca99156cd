#!/usr/bin/env python
"""Per-call dispatch overhead: `autotune.conv_transpose2d(x, w)` (backend=None, decision cached) against calling
the prepared kernel it dispatches to directly, on a tiny problem where the kernel itself costs little.

    .venv/bin/python scripts/dispatch_overhead.py [--calls 500] [--repeats 41] [--results DIR] [--torch]

Each repeat times a block of `--calls` calls of each variant, interleaved; the overhead of a repeat is the
difference of the per-call means. Printed: median, quartiles and range (min-max) over the repeats, and the
difference of the two variants' fastest blocks, in microseconds, of
- `api`: the whole public call beyond the kernel (argument checks, Problem construction, dispatch);
- `dispatch`: `api._run` alone (candidates, conversion, the kernel), with the Problem already built;
- with `--torch`, on CPU torch tensors: `api_torch` (the same call), `functional_torch`
  (`autotune.torch.conv_transpose2d`, no grad), `module_torch` (`autotune.torch.ConvTranspose2d`, no grad),
  `module_torch_grad` (the module's forward on an input that requires grad: the autograd node is recorded), and
  `torch_module` (torch's own module, kernel included: its time minus our kernel's, for scale); `module_fwd_bwd`
  (forward and backward of the module: three kernels) against the three kernels called directly, and
  `torch_module_fwd_bwd` (torch's module, the same step) against those same kernels.
By default the results come from an empty temporary directory holding one exact row for the problem (so the
cached decision is an `exact` one); `--results DIR` uses that directory (and the shipped results) instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import autotune  # noqa: E402
from autotune import api, dispatch  # noqa: E402
from autotune.core import results  # noqa: E402
from autotune.core.devices import cpu_device_id, cpu_device_name  # noqa: E402
from autotune.core.problem import Problem  # noqa: E402
from backends.base import config_json  # noqa: E402


def _block(fn, calls: int, clock=time.perf_counter) -> float:
    start = clock()
    for _ in range(calls):
        fn()
    return (clock() - start) / calls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=41)
    ap.add_argument("--results", help="results directory to dispatch from (default: a temporary one)")
    ap.add_argument("--torch", action="store_true", help="also measure CPU torch tensors")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads with --torch (default 1)")
    ap.add_argument("--clock", choices=("process", "wall"), default="process",
                    help="process: CPU time of this process (time.process_time; robust on a shared, loaded machine, "
                         "default); wall: time.perf_counter")
    args = ap.parse_args(argv)
    if args.calls < 1 or args.repeats < 1:
        ap.error("--calls and --repeats must be >= 1")

    p = Problem.make(1, 1, 2, 2, 1, 2, 2)  # output 3x3: the kernel is a few microseconds
    tmp = None
    if args.results:
        os.environ[results.ENV_VAR] = args.results
    else:
        tmp = tempfile.TemporaryDirectory()
        os.environ[results.ENV_VAR] = tmp.name
        from backends import get
        numpy_backend = get("numpy")
        dev = numpy_backend.devices()[0]
        cfg = numpy_backend.default_config("forward", p, dev)
        results.append_rows(results.device_file(tmp.name, cpu_device_id()), [{
            "device": cpu_device_id(), "device_name": cpu_device_name(), "backend": "numpy", "op": "forward",
            **results.problem_columns(p), "config": config_json(cfg), "status": "ok", "time_s": 1e-5,
            "gflops": 0.0, "max_abs_err": 0.0, "timestamp": "2026-11-21T00:00:00Z"}])
    dispatch.clear_cache()

    rng = np.random.default_rng(0)
    x = rng.standard_normal(p.input_shape).astype(np.float32)
    w = rng.standard_normal(p.weight_shape).astype(np.float32)
    answer = autotune.which(p)
    choice = dispatch.choices("forward", p)[0]
    kernel = choice.kernel
    np.testing.assert_allclose(autotune.conv_transpose2d(x, w), kernel(x, w, None), rtol=1e-6)

    variants = {
        "kernel": lambda: kernel(x, w, None),
        "api": lambda: autotune.conv_transpose2d(x, w),
        "dispatch": lambda: api._run("forward", p, (x, w, None), x, None, None),
    }
    if args.torch:
        import torch

        import autotune.torch as att
        # one thread, as the tiny kernels use: a second one only spins (and counts) on the process clock
        torch.set_num_threads(args.torch_threads)
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        torch_layer = torch.nn.ConvTranspose2d(1, 1, 2, bias=False)
        layer = att.ConvTranspose2d(1, 1, 2, bias=False)
        with torch.no_grad():
            torch_layer.weight.copy_(wt)
            layer.weight.copy_(wt)
        xg = xt.clone().requires_grad_(True)
        np.testing.assert_allclose(layer(xt).detach().numpy(), kernel(x, w, None), rtol=1e-6)

        def no_grad(fn):
            def run():
                with torch.no_grad():
                    fn()
            return run

        def forward_backward(module):
            def run():
                module(xg).backward(gy)
            return run
        gy = torch.ones(p.output_shape)
        variants["api_torch"] = lambda: autotune.conv_transpose2d(xt, wt)
        variants["functional_torch"] = no_grad(lambda: att.conv_transpose2d(xt, wt))
        variants["module_torch"] = no_grad(lambda: layer(xt))
        variants["module_torch_grad"] = lambda: layer(xg)
        variants["torch_module"] = no_grad(lambda: torch_layer(xt))
        # training: forward and backward of ours (4 kernels: forward, input and weight gradients) against torch's
        backward_kernels = [dispatch.choices(op, p)[0].kernel for op in ("backward_input", "backward_weight")]
        gyn = gy.numpy()
        variants["kernels_fwd_bwd"] = lambda: (kernel(x, w, None), backward_kernels[0](gyn, w),
                                               backward_kernels[1](gyn, x))
        variants["module_fwd_bwd"] = forward_backward(layer)
        variants["torch_module_fwd_bwd"] = forward_backward(torch_layer)
    clock = time.process_time if args.clock == "process" else time.perf_counter
    for fn in variants.values():  # warm-up
        _block(fn, max(args.calls // 10, 10), clock)
    per_call: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            per_call[name].append(_block(fn, args.calls, clock))
    # each variant against the kernels it runs: the forward kernel, or all three for a training step
    base = {name: "kernels_fwd_bwd" if name.endswith("fwd_bwd") else "kernel" for name in variants}
    overhead = {name: [t - k for t, k in zip(per_call[name], per_call[base[name]])]
                for name in variants if name not in ("kernel", "kernels_fwd_bwd")}

    print(f"device {cpu_device_id()} ({cpu_device_name()}), OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, numpy {np.__version__}")
    print(f"problem {p.key}; dispatched to {answer.backend} {config_json(answer.config)} [{answer.reason}]")
    print(f"{args.repeats} repeats x {args.calls} calls; microseconds per call; clock: {args.clock}")
    med = statistics.median(per_call["kernel"]) * 1e6
    print(f"  {'kernel alone':<28} median {med:7.2f}")
    if "kernels_fwd_bwd" in per_call:
        print(f"  {'3 kernels (fwd, gx, gw)':<28} median {statistics.median(per_call['kernels_fwd_bwd']) * 1e6:7.2f}")
    for name, vals in overhead.items():
        us = [v * 1e6 for v in vals]
        q1, _, q3 = statistics.quantiles(us, n=4) if len(us) > 1 else (us[0], us[0], us[0])
        best = (min(per_call[name]) - min(per_call[base[name]])) * 1e6
        print(f"  {name + ' overhead':<28} median {statistics.median(us):7.2f}   quartiles {q1:7.2f} .. {q3:7.2f}"
              f"   range {min(us):7.2f} .. {max(us):7.2f}   difference of minima {best:7.2f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
