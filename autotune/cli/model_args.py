"""`--model PKG.MODULE:FACTORY [--input-shape N,C,H,W ...]` for `autotune tune` and `autotune bench`: the problems
of a PyTorch model's transposed convolutions (`autotune.torch.model_problems`) instead of a problems file.

torch is imported only when `--model` is given."""

from __future__ import annotations

import argparse

from autotune.core.errors import UserError
from autotune.problems import NamedProblem, select


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="PKG.MODULE:FACTORY",
                        help="the nn.ConvTranspose2d layers of the model this factory builds (or file.py:factory), "
                             "run once on random inputs, instead of a problems file (needs torch)")
    parser.add_argument("--input-shape", action="append", metavar="N,C,H,W",
                        help="shape of the model's input, once per input (default: the factory's "
                             "example_input_shapes)")


def problems(args: argparse.Namespace, only: list[str] | None = None) -> list[NamedProblem] | None:
    """The model's problems (each distinct one once, named `<factory>.<module path>`), selected by `only`; None
    without `--model`."""
    spec = getattr(args, "model", None)
    if not spec:
        if getattr(args, "input_shape", None):
            raise UserError("--input-shape needs --model")
        return None
    if getattr(args, "problems", None):
        raise UserError("--model and --problems are alternatives: give one")
    try:
        from autotune.torch import model_problems
    except ImportError as exc:
        raise UserError(f"--model needs torch (pip install 'convt-autotune[torch]'): {exc}") from None
    return select(model_problems(spec, args.input_shape), only)
