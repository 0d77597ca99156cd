"""Direct calls into the BLAS that NumPy itself uses (ctypes), for the one GEMM `numpy.matmul` cannot express: an
accumulating GEMM, `c = a @ b + beta * c`, on operands that are strided views (a leading dimension wider than the
row). The numpy backend's phase algorithm then reads every tap's run where it lies and sums all taps into one
output, with no copy of the runs and no temporary per tap.

Only a library whose symbol names fix the integer width is used: scipy-openblas (the BLAS inside NumPy's PyPI
wheels), `scipy_cblas_?gemm64_` (64-bit integers) or `scipy_cblas_?gemm` (32-bit), and `cblas_?gemm64_`. A plain
`cblas_sgemm` may take either width (OpenBLAS built with INTERFACE64 keeps the name), so a NumPy linked against a
system BLAS, MKL or Accelerate gets `reason()` instead, and the backend keeps its copying algorithms there.

`gemm` checks every operand against the pointer arithmetic BLAS will do (dtype, alignment, one unit-stride axis, a
leading dimension that covers the row), so no call can read or write outside the arrays it is given.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from typing import NamedTuple

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
# (symbol prefix, symbol suffix, integer type), most specific first
_NAMINGS = (("scipy_cblas_", "64_", ctypes.c_int64), ("cblas_", "64_", ctypes.c_int64),
            ("scipy_cblas_", "", ctypes.c_int32))


class _Library(NamedTuple):
    path: str
    functions: dict  # dtype -> the ctypes function of ?gemm
    integer: type


def _candidates() -> list[str]:
    """Shared libraries that may be NumPy's BLAS: the loaded ones with "blas" in their name (Linux), then the ones
    NumPy's wheels carry beside it (numpy.libs on Linux and Windows, numpy/.dylibs on macOS)."""
    found: list[str] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if "blas" in os.path.basename(path).lower() and path not in found:
                    found.append(path)
    except OSError:
        pass
    root = os.path.dirname(os.path.dirname(np.__file__))
    for pattern in ("numpy.libs/*blas*", "numpy/.dylibs/*blas*"):
        found += [p for p in sorted(glob.glob(os.path.join(root, pattern))) if p not in found]
    return found


@functools.lru_cache(maxsize=1)
def _library() -> _Library | str:
    """NumPy's BLAS with its GEMM functions, or why there is none (looked up once per process)."""
    candidates = _candidates()
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, integer in _NAMINGS:
            functions = {}
            for dtype, letter, scalar in ((np.dtype("float32"), "s", ctypes.c_float),
                                          (np.dtype("float64"), "d", ctypes.c_double)):
                f = getattr(lib, f"{prefix}{letter}gemm{suffix}", None)
                if f is None:
                    break
                f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, integer, integer, integer, scalar,
                              ctypes.c_void_p, integer, ctypes.c_void_p, integer, scalar, ctypes.c_void_p, integer]
                f.restype = None
                functions[dtype] = f
            if len(functions) == 2:
                return _Library(path, functions, integer)
    if not candidates:
        return "no BLAS library found beside NumPy (a NumPy built against a system BLAS, MKL or Accelerate)"
    return (f"no GEMM with a known integer width in {', '.join(os.path.basename(c) for c in candidates)} "
            "(scipy-openblas's scipy_cblas_sgemm64_ is what NumPy's wheels carry)")


def reason() -> str | None:
    """Why `gemm` cannot be called here, or None when it can."""
    lib = _library()
    return lib if isinstance(lib, str) else None


def describe() -> str:
    """The library `gemm` calls, in words (for the backend's version string)."""
    lib = _library()
    if isinstance(lib, str):
        return "none"
    return f"{os.path.basename(lib.path)} ({8 * ctypes.sizeof(lib.integer)}-bit integers)"


def _layout(x: np.ndarray, name: str) -> tuple[int, int]:
    """(transpose flag, leading dimension) of a 2-D row-major operand for cblas: rows contiguous (no transpose) or
    columns contiguous (transposed), the other stride at least a row (or column) long."""
    rows, cols = x.shape
    item = x.itemsize
    s0, s1 = x.strides
    if cols == 1 or s1 == item:
        ld = s0 // item if rows > 1 else max(cols, 1)
        if rows == 1 or (s0 % item == 0 and ld >= cols):
            return _NO_TRANS, ld
    if rows == 1 or s0 == item:
        ld = s1 // item if cols > 1 else max(rows, 1)
        if cols == 1 or (s1 % item == 0 and ld >= rows):
            return _TRANS, ld
    raise ValueError(f"gemm: {name} {x.shape} with strides {x.strides} has no unit-stride axis BLAS can read")


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float = 0.0) -> None:
    """c = a @ b + beta * c, in place, for 2-D float32 or float64 views (any with one unit-stride axis; c's rows
    contiguous). Raises ValueError for operands BLAS cannot take as they lie, RuntimeError where `reason()` says."""
    lib = _library()
    if isinstance(lib, str):
        raise RuntimeError(lib)
    if not (a.ndim == b.ndim == c.ndim == 2):
        raise ValueError(f"gemm: 2-D operands only, got {a.ndim}, {b.ndim}, {c.ndim} dimensions")
    (M, K), (K2, N) = a.shape, b.shape
    if K2 != K or c.shape != (M, N):
        raise ValueError(f"gemm: shapes {a.shape} @ {b.shape} -> {c.shape} do not match")
    if not (a.dtype == b.dtype == c.dtype) or a.dtype not in lib.functions:
        raise ValueError(f"gemm: one dtype of float32 or float64, got {a.dtype}, {b.dtype}, {c.dtype}")
    if not c.flags.writeable or np.may_share_memory(c, a) or np.may_share_memory(c, b):
        raise ValueError("gemm: the output must be writeable and apart from the operands")
    if any(x.ctypes.data % x.itemsize for x in (a, b, c)):
        raise ValueError("gemm: operands must be aligned to their item size")
    if M == 0 or N == 0:
        return
    if K == 0:
        c *= beta
        return
    ta, lda = _layout(a, "a")
    tb, ldb = _layout(b, "b")
    tc, ldc = _layout(c, "c")
    if tc != _NO_TRANS:
        raise ValueError(f"gemm: the output's rows must be contiguous, got strides {c.strides}")
    lib.functions[a.dtype](_ROW_MAJOR, ta, tb, M, N, K, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, beta,
                           c.ctypes.data, ldc)
