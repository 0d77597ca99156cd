"""The numpy backend's copies shared among threads (`backends.numpy.parallel`): every task runs and an error still
waits for the others; `assign`/`contiguous` equal NumPy's own on any split; and every algorithm of every op gives the
reference's answer with its copies forced into (an odd number of) threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import assert_close, inputs_for

from autotune.core import reference
from autotune.core.problem import OPS, Problem
from backends.numpy import NumpyBackend, parallel

BACKEND = NumpyBackend()
DEVICE = BACKEND.devices()[0]


@pytest.fixture
def threaded(monkeypatch):
    """Three threads, and no size below which work stays inline."""
    monkeypatch.setattr(parallel, "threads", lambda: 3)
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)


def test_run_uses_threads_and_runs_every_task(threaded):
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def task(i: int) -> None:
        with lock:
            seen.append((i, threading.current_thread().name))
    parallel.run([lambda i=i: task(i) for i in range(7)], nbytes=1)
    assert sorted(i for i, _ in seen) == list(range(7))
    assert len({name for _, name in seen}) > 1  # the caller's thread and at least one of the pool's


def test_run_waits_for_every_task_before_raising(threaded):
    done = threading.Event()
    finished: list[int] = []

    def slow() -> None:
        done.wait(5)
        finished.append(1)

    def fail() -> None:
        done.set()
        raise ValueError("boom")
    # the caller's share fails first; the pool's shares still finish before the error reaches us
    with pytest.raises(ValueError, match="boom"):
        parallel.run([fail, slow, slow], nbytes=1)
    assert finished == [1, 1]


def test_small_work_stays_on_the_callers_thread(monkeypatch):
    monkeypatch.setattr(parallel, "threads", lambda: 4)
    names: list[str] = []
    parallel.run([lambda: names.append(threading.current_thread().name)] * 4, nbytes=parallel.MIN_BYTES - 1)
    assert set(names) == {threading.current_thread().name}


@pytest.mark.parametrize("shape", [(7, 5, 3), (1, 2, 9), (2, 1, 1), (1, 1, 1), (5,), ()])
def test_assign_and_contiguous_equal_numpys(threaded, shape):
    rng = np.random.default_rng(0)
    src = rng.standard_normal((*shape, 2)).astype(np.float32)[..., 0]  # a strided view
    dst = np.zeros(shape, np.float32)
    parallel.assign(dst, src)
    np.testing.assert_array_equal(dst, src)
    parallel.assign(dst, 3.0)  # broadcast
    assert (dst == 3.0).all()
    out = parallel.contiguous(np.moveaxis(src, 0, -1) if src.ndim else src)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, np.moveaxis(src, 0, -1) if src.ndim else src)


PROBLEMS = [Problem.make(N=3, C_in=4, H=7, W=6, C_out=6, kH=4, kW=4, stride=2, padding=1, groups=2),
            Problem.make(N=2, C_in=3, H=5, W=9, C_out=5, kH=3, kW=2, stride=(2, 3), padding=((1, 0), (0, 1)),
                         output_padding=(1, 0), dilation=(1, 2)),
            Problem.make(N=20, C_in=4, H=2, W=3, C_out=4, kH=2, kW=2, stride=2)]  # col2im's batch innermost


@pytest.mark.parametrize("op", OPS)
def test_every_config_is_exact_with_threaded_copies(threaded, op):
    for p in PROBLEMS:
        inputs = inputs_for(op, p, seed=3)
        ref = reference.run(op, p, inputs)
        space = BACKEND.space(op, p, DEVICE)
        for config in space.grid():
            if space.violation(config) is None:
                out = BACKEND.prepare(op, p, DEVICE, config)(*inputs)
                assert_close(out, ref, op, p, f"{op} {config} {p.key}")
