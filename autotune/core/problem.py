"""The problem model: the shapes and semantic arguments of one transposed convolution.

A `Problem` is everything that changes the answer or the speed of a call: shapes, stride, padding (possibly
asymmetric), output_padding, dilation, groups, whether there is a bias, and dtype. It validates itself, knows its
output shape and FLOP counts, and has one canonical string key used in study names and result rows.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from autotune.core.errors import ArgumentTypeError, UserError

OPS = ("forward", "backward_input", "backward_weight", "backward_bias")
DTYPES = ("float32", "float64", "float16", "bfloat16")

Pair = tuple[int, int]


def _is_int(v: Any) -> bool:
    # bool is an int subclass; numpy integers are accepted.
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return type(v).__module__ == "numpy" and hasattr(v, "dtype") and v.dtype.kind in "iu"


def _pair(name: str, value: Any) -> Pair:
    """An int or a pair of ints, as torch accepts for stride, dilation, output_padding."""
    if _is_int(value):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        return (int(value[0]), int(value[1]))
    raise ArgumentTypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def _padding(value: Any) -> tuple[Pair, Pair]:
    """int, (ph, pw), or asymmetric ((top, bottom), (left, right))."""
    if _is_int(value):
        p = int(value)
        return ((p, p), (p, p))
    if isinstance(value, (tuple, list)) and len(value) == 2:
        if all(_is_int(v) for v in value):
            return ((int(value[0]),) * 2, (int(value[1]),) * 2)
        if all(isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(u) for u in v) for v in value):
            (t, b), (left, r) = value
            return ((int(t), int(b)), (int(left), int(r)))
    raise ArgumentTypeError(
        "padding must be an int, a pair (ph, pw), or ((top, bottom), (left, right)) of ints, "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class Problem:
    """One transposed convolution: input (N, C_in, H, W), weight (C_in, C_out/groups, kH, kW)."""

    N: int
    C_in: int
    H: int
    W: int
    C_out: int
    kH: int
    kW: int
    stride: Pair = (1, 1)
    padding: tuple[Pair, Pair] = ((0, 0), (0, 0))
    output_padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = False
    dtype: str = "float32"

    @classmethod
    def make(cls, N: int, C_in: int, H: int, W: int, C_out: int, kH: int, kW: int, stride: Any = 1,
             padding: Any = 0, output_padding: Any = 0, dilation: Any = 1, groups: int = 1,
             bias: bool = False, dtype: str = "float32") -> Problem:
        """Build and validate a problem from torch-style arguments (ints or pairs)."""
        for name, v in (("N", N), ("C_in", C_in), ("H", H), ("W", W), ("C_out", C_out), ("kH", kH),
                        ("kW", kW), ("groups", groups)):
            if not _is_int(v):
                raise ArgumentTypeError(f"{name} must be an int, got {v!r}")
        if not isinstance(bias, bool) and not (_is_int(bias) and int(bias) in (0, 1)):
            raise ArgumentTypeError(f"bias must be a bool, got {bias!r}")
        p = cls(int(N), int(C_in), int(H), int(W), int(C_out), int(kH), int(kW), _pair("stride", stride),
                _padding(padding), _pair("output_padding", output_padding), _pair("dilation", dilation),
                int(groups), bool(bias), str(dtype))
        p.validate()
        return p

    def validate(self) -> None:
        """Raise ValueError naming the argument and the rule it breaks."""
        for name in ("N", "C_in", "H", "W", "C_out"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kH < 1 or self.kW < 1:
            raise UserError(f"kernel size must be >= 1, got {(self.kH, self.kW)}")
        if min(self.stride) < 1:
            raise UserError(f"stride must be >= 1, got {self.stride}")
        if min(self.dilation) < 1:
            raise UserError(f"dilation must be >= 1, got {self.dilation}")
        if min(min(self.padding[0]), min(self.padding[1])) < 0:
            raise UserError(f"padding must be >= 0, got {self.padding}")
        if min(self.output_padding) < 0:
            raise UserError(f"output_padding must be >= 0, got {self.output_padding}")
        for axis in (0, 1):
            op, s, d = self.output_padding[axis], self.stride[axis], self.dilation[axis]
            if not (op < s or op < d):
                raise UserError(
                    f"output_padding must be smaller than either stride or dilation, got output_padding="
                    f"{self.output_padding}, stride={self.stride}, dilation={self.dilation}")
        if self.groups < 1:
            raise UserError(f"groups must be >= 1, got {self.groups}")
        if self.C_in % self.groups or self.C_out % self.groups:
            raise UserError(f"groups={self.groups} must divide both C_in={self.C_in} and C_out={self.C_out}")
        if self.dtype not in DTYPES:
            raise UserError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        Ho, Wo = self.output_size
        if Ho < 1 or Wo < 1:
            raise UserError(
                f"output size {(Ho, Wo)} is smaller than 1: padding {self.padding} crops more than "
                f"(H-1)*stride + dilation*(k-1) + 1 + output_padding")

    # ---- shapes -------------------------------------------------------------------------------------------------
    # cached: the kernels and the per-call path read the output's size many times per call (a frozen dataclass's
    # instance dict still takes it; equality and hashing see only the fields)
    @cached_property
    def output_size(self) -> Pair:
        def size(n: int, s: int, p: Pair, d: int, k: int, op: int) -> int:
            return (n - 1) * s - (p[0] + p[1]) + d * (k - 1) + 1 + op
        return (size(self.H, self.stride[0], self.padding[0], self.dilation[0], self.kH, self.output_padding[0]),
                size(self.W, self.stride[1], self.padding[1], self.dilation[1], self.kW, self.output_padding[1]))

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C_in, self.H, self.W)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.C_in, self.C_out // self.groups, self.kH, self.kW)

    @property
    def bias_shape(self) -> tuple[int]:
        return (self.C_out,)

    @cached_property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C_out, *self.output_size)

    def operand_shapes(self, op: str) -> tuple[tuple[int, ...] | None, ...]:
        """Shapes of a prepared `op` kernel's arguments, in signature order (None: an absent bias):
        forward(x, w, bias), backward_input(gy, w), backward_weight(gy, x), backward_bias(gy)."""
        check_op(op)
        return {"forward": (self.input_shape, self.weight_shape, self.bias_shape if self.bias else None),
                "backward_input": (self.output_shape, self.weight_shape),
                "backward_weight": (self.output_shape, self.input_shape),
                "backward_bias": (self.output_shape,)}[op]

    @property
    def symmetric_padding(self) -> Pair | None:
        """(ph, pw) when padding is symmetric per axis (what torch accepts), else None."""
        (t, b), (left, r) = self.padding
        return (t, left) if t == b and left == r else None

    def flops(self, op: str) -> int:
        """Useful FLOPs of `op`: 2*N*C_in*(C_out/groups)*H*W*kH*kW for the three convolutions; one add per
        gradient element for backward_bias."""
        check_op(op)
        if op == "backward_bias":
            return self.N * self.C_out * self.output_size[0] * self.output_size[1]
        return 2 * self.N * self.C_in * (self.C_out // self.groups) * self.H * self.W * self.kH * self.kW

    def for_op(self, op: str) -> Problem:
        """The problem as `op` sees it: the bias only changes the forward op, so the gradients' problems are keyed
        without it (a layer's backward ops share their tuning with or without a bias)."""
        check_op(op)
        if op != "forward" and self.bias:
            return dataclasses.replace(self, bias=False)
        return self

    def with_dtype(self, dtype: str) -> Problem:
        return Problem.make(**{**self.as_args(), "dtype": dtype})

    def as_args(self) -> dict[str, Any]:
        return dict(N=self.N, C_in=self.C_in, H=self.H, W=self.W, C_out=self.C_out, kH=self.kH, kW=self.kW,
                    stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    dilation=self.dilation, groups=self.groups, bias=self.bias, dtype=self.dtype)

    # ---- canonical key ------------------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """Canonical, filesystem-safe string; `Problem.from_key(p.key) == p`."""
        (t, b), (left, r) = self.padding
        return (f"n{self.N}_ci{self.C_in}_h{self.H}_w{self.W}_co{self.C_out}_k{self.kH}x{self.kW}"
                f"_s{self.stride[0]}x{self.stride[1]}_p{t}.{b}.{left}.{r}"
                f"_op{self.output_padding[0]}x{self.output_padding[1]}"
                f"_d{self.dilation[0]}x{self.dilation[1]}_g{self.groups}_b{int(self.bias)}_{self.dtype}")

    _KEY = re.compile(r"n(\d+)_ci(\d+)_h(\d+)_w(\d+)_co(\d+)_k(\d+)x(\d+)_s(\d+)x(\d+)_p(\d+)\.(\d+)\.(\d+)\.(\d+)"
                      r"_op(\d+)x(\d+)_d(\d+)x(\d+)_g(\d+)_b([01])_(\w+)")

    @classmethod
    def from_key(cls, key: str) -> Problem:
        m = cls._KEY.fullmatch(str(key))
        if not m:
            raise UserError(f"not a problem key: {key!r}")
        v = [int(g) for g in m.groups()[:-1]]
        return cls.make(N=v[0], C_in=v[1], H=v[2], W=v[3], C_out=v[4], kH=v[5], kW=v[6], stride=(v[7], v[8]),
                        padding=((v[9], v[10]), (v[11], v[12])), output_padding=(v[13], v[14]),
                        dilation=(v[15], v[16]), groups=v[17], bias=bool(v[18]), dtype=m.groups()[-1])

    def __str__(self) -> str:
        return self.key


def check_op(op: str) -> str:
    if op not in OPS:
        raise UserError(f"op must be one of {OPS}, got {op!r}")
    return op
