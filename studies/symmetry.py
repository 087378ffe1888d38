"""Symmetry: zero initialization leaves every hidden unit of a layer identical, in every framework.

With all weights zero, the units of a hidden layer compute the same function,
receive the same gradient and therefore stay copies of each other for ever;
random initialization breaks the tie.  Sigmoid hidden units are used because
with zeros they still learn something (``sigmoid(0) = 0.5``); tanh or ReLU
units would not move at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from impls import MLPSpec, TrainConfig, create
from impls.numpy_mlp import init_params
from studies.common import StudyResult, Table, digits_split, relative_spread

SIZES = {"tiny": dict(width=6, epochs=2), "full": dict(width=32, epochs=30)}


def distinct_units(W: np.ndarray) -> int:
    """Number of distinct incoming weight vectors (columns of ``W``), up to 1e-9 of the largest weight."""
    scale = max(float(np.abs(W).max()), 1e-300)
    keys = {tuple(np.round(column / scale, 9)) for column in W.T}
    return len(keys)


def unit_spread(W: np.ndarray) -> float:
    """Largest distance of a unit's incoming weights from the layer's mean unit, relative to the layer's norm."""
    mean = W.mean(axis=1, keepdims=True)
    norm = float(np.linalg.norm(W))
    return 0.0 if norm == 0 else float(np.linalg.norm(W - mean, axis=0).max() / norm)


def run(impls: list[str], size: str, out: Path) -> StudyResult:
    width, epochs = SIZES[size]["width"], SIZES[size]["epochs"]
    (X, y), _, (X_test, y_test) = digits_split(0.5)
    config = TrainConfig(epochs=epochs, batch_size=32, learning_rate=0.5, seed=0)
    result = StudyResult("symmetry", "Symmetry: zero versus random initialization",
                         f"Digits, [64, {width}, {width}, 10], sigmoid hidden units, softmax output, float64, "
                         f"{epochs} epochs of SGD (lr 0.5, batch 32); every framework starts from the same "
                         "weights and sees the same batches.")
    rows = []
    for initializer in ("zeros", "xavier_uniform"):
        spec = MLPSpec((64, width, width, 10), "sigmoid", "categorical_crossentropy", initializer)
        start = init_params(spec, seed=0)
        per_impl = {}
        for name in impls:
            model = create(name, spec)
            model.set_params(start)
            model.fit(X, y, config)
            params = model.get_params()
            per_impl[name] = {
                "distinct units, layer 1": distinct_units(params[0][0]),
                "distinct units, layer 2": distinct_units(params[1][0]),
                "unit spread, layer 1": unit_spread(params[0][0]),
                "test accuracy": model.accuracy(X_test, y_test),
            }
        for metric in per_impl[impls[0]]:
            values = {name: per_impl[name][metric] for name in impls}
            rows.append({"initializer": initializer, "metric": metric, **values,
                         "max rel. diff": relative_spread(values)})
    result.tables.append(Table("units", f"hidden units after training ({width} per layer)",
                               ["initializer", "metric", *impls, "max rel. diff"], rows,
                               note="distinct units: incoming weight vectors that differ (1 = all units "
                                    "are copies); unit spread: largest distance of a unit from the mean unit, "
                                    "relative to the layer's norm."))
    zeros = {r["metric"]: r for r in rows if r["initializer"] == "zeros"}
    xavier = {r["metric"]: r for r in rows if r["initializer"] != "zeros"}
    ref = impls[0]
    result.findings.append(
        f"Zero initialization: after training, every framework has "
        f"{zeros['distinct units, layer 1'][ref]} distinct unit(s) in each hidden layer of {width} and reaches "
        f"{zeros['test accuracy'][ref]:.3f} test accuracy; Xavier initialization keeps "
        f"{xavier['distinct units, layer 1'][ref]} distinct units and reaches {xavier['test accuracy'][ref]:.3f}.")
    return result
