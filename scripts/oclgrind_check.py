"""Run the OpenCL kernels of every op (the default config and a few random valid ones) on tiny problems, checked
against the float64 reference. Meant to run under Oclgrind's simulator, which reports out-of-bounds accesses and
data races that a CPU driver hides:

    oclgrind --data-races --log LOG python scripts/oclgrind_check.py [CONFIGS]

Exit status 1 on a wrong answer or when no Oclgrind device is found; Oclgrind's own findings go to LOG (empty when
clean). tests/test_oclgrind.py runs it in CI."""

from __future__ import annotations

import sys

import backends
from autotune.core import reference, verify
from autotune.core.problem import OPS, Problem

PROBLEMS = [Problem.make(2, 4, 3, 3, 4, 3, 3, stride=2, padding=1, output_padding=1, bias=True),
            Problem.make(1, 4, 3, 4, 6, 2, 3, stride=(1, 2), padding=((0, 1), (1, 0)), dilation=(2, 1), groups=2)]


def main() -> int:
    extra = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    backend = backends.get("opencl")
    ok, why = backend.available()
    devices = [d for d in backend.devices() if "oclgrind" in str(d.info.get("platform", "")).lower()] if ok else []
    if not devices:
        print(f"no Oclgrind device ({why or [d.id for d in backend.devices()]})", file=sys.stderr)
        return 1
    device, failures, runs = devices[0], 0, 0
    for p in PROBLEMS:
        for op in OPS:
            q = p.for_op(op)
            space = backend.space(op, q, device)
            default = space.validate(backend.default_config(op, q, device))
            inputs, exact = verify.make_inputs(op, q)
            expected = reference.run(op, q, exact)
            for config in [default, *verify.sample_configs(space, extra, seed=1, exclude=default)]:
                verdict = verify.compare(backend.prepare(op, q, device, config)(*inputs), expected, op, q)
                runs += 1
                if not verdict.ok:
                    failures += 1
                    print(f"WRONG {op} {q.key} {config}: {verdict.reason}", file=sys.stderr)
    print(f"{runs} kernel runs on {device.id}, {failures} wrong")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
