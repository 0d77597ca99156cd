"""`autotune explain`: a layer's stride-phase decomposition, which kernel taps feed which output pixels (library:
`autotune.explain`)."""

from __future__ import annotations

import argparse
from typing import Any

from autotune import explain
from autotune.core.errors import UserError

HELP = "Show a layer's stride-phase decomposition: which kernel taps feed which output pixels."


def _ints(text: str, name: str, counts: tuple[int, ...]) -> tuple[int, ...]:
    parts = str(text).replace("x", ":").replace(",", ":").split(":")
    if len(parts) not in counts or not all(p.strip().isdigit() and len(p.strip()) < 6 for p in parts):
        raise UserError(f"--{name} must be {' or '.join(str(c) for c in counts)} non-negative integer(s) "
                         f"separated by ':', got {text!r}")
    return tuple(int(p) for p in parts)


def _pair_opt(text: str | None, name: str, default: int) -> tuple[int, int]:
    if text is None:
        return (default, default)
    v = _ints(text, name, (1, 2))
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", help="kernel size K or KH:KW (default: from --weight FILE.npy)")
    parser.add_argument("--stride", help="S or SH:SW (default 1)")
    parser.add_argument("--padding", help="P, PH:PW, or asymmetric TOP:BOTTOM:LEFT:RIGHT (default 0)")
    parser.add_argument("--dilation", help="D or DH:DW (default 1)")
    parser.add_argument("--output-padding", dest="output_padding", help="OP or OPH:OPW (default 0)")
    parser.add_argument("--groups", type=int, default=1, help="groups of the weight (default 1)")
    parser.add_argument("--input-size", dest="input_size", default="6",
                        help="H or H:W of the input used for the overlap map and output sizes (default 6)")
    parser.add_argument("--weight", default="random",
                        help="FILE.npy of shape (C_in, C_out/groups, KH, KW) or (KH, KW); or 'random' (seeded, "
                             "the default: shows how a learned kernel's phases sum differently) or 'ones'")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random demonstration weight")
    parser.add_argument("--export", metavar="DIR",
                        help="write the per-phase conv2d kernels (.npy) and phases.json / phases.txt to DIR")


def run(args: argparse.Namespace) -> int:
    weight_spec = args.weight
    kernel: tuple[int, int] | None = _pair_opt(args.kernel, "kernel", 1) if args.kernel else None
    if weight_spec not in ("random", "ones"):
        w = explain.load_weight(weight_spec, kernel, args.seed)
        if kernel is None:
            kernel = (int(w.shape[-2]), int(w.shape[-1]))
    else:
        w = explain.load_weight(weight_spec, kernel, args.seed)
    assert kernel is not None
    pad = _ints(args.padding, "padding", (1, 2, 4)) if args.padding is not None else (0,)
    padding: Any = pad[0] if len(pad) == 1 else (pad if len(pad) == 2 else ((pad[0], pad[1]), (pad[2], pad[3])))
    dec = explain.phase_decomposition(kernel, _pair_opt(args.stride, "stride", 1), padding,
                              _pair_opt(args.dilation, "dilation", 1),
                              _pair_opt(args.output_padding, "output-padding", 0))
    H, W = _pair_opt(args.input_size, "input-size", 6)
    if not (1 <= H <= explain.MAX_INPUT_SIZE and 1 <= W <= explain.MAX_INPUT_SIZE):
        raise UserError(f"--input-size must be between 1 and {explain.MAX_INPUT_SIZE}, got {H}x{W}")
    w = explain.check_weight(w, dec.kernel, args.groups)
    # The layer must be valid for this input size (padding may crop everything of a small input).
    dec._problem(H, W, C_in=w.shape[0], C_out=w.shape[1] * args.groups, groups=args.groups)
    print(explain.format_text(dec, w, H, W, args.groups))
    if args.export:
        paths = explain.export(dec, w, args.export, H, W, args.groups)
        print(f"\nwrote {len(paths)} files to {args.export}: " + ", ".join(p.name for p in paths))
    return 0
