"""Times ``forward``, ``gradients`` and ``train_step`` of every spec row and mode on one batch of each of
:data:`bench.micro.WORKLOADS` (see :mod:`bench.micro` for what each phase contains)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from bench import libraries, micro, workloads
from bench.rows import Row
from impls import registry


def phase_call(model, phase: str, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer) -> Callable:
    """A call of one phase on the batch ``(X, Y)`` that returns once its results exist as NumPy (an asynchronous
    framework has finished computing)."""
    if phase == "forward":
        return lambda: np.asarray(model._forward(X))
    if phase == "gradients":
        masks = model.no_dropout
        return lambda: [(np.asarray(gW), np.asarray(gb)) for gW, gb in model._gradients(X, Y, masks)]
    return lambda: float(model._train_step(X, Y, learning_rate, optimizer))


@pytest.mark.parametrize("phase", micro.PHASES)
@pytest.mark.parametrize("workload_name", micro.WORKLOADS)
def test_phase(benchmark, case: tuple[Row, str], workload_name: str, phase: str) -> None:
    row, mode = case
    workload = workloads.get(workload_name)
    spec = workload.spec("float32")
    config = workload.config(seed=0)
    data = workload.load().cast("float32")
    X, Y = spec.check_Xy(data.X_train[: workload.batch_size], data.y_train[: workload.batch_size])
    model = registry.create(row.implementation, spec, seed=0, mode=mode)
    libraries.apply_threads(1)  # the pools that only an API sets, once the framework is imported
    call = phase_call(model, phase, X, Y, config.learning_rate, config.optimizer)
    call()  # tracing and compilation are not a phase's time
    call()
    benchmark.extra_info.update(row=row.name, implementation=row.implementation, backend=row.backend, mode=mode,
                                workload=workload_name, phase=phase, batch=workload.batch_size)
    benchmark(call)
