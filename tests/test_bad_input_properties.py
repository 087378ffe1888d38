"""Bad input, every kind in every combination, thrown at every implementation: the reference's exception, word for
word, and no change.

Each case takes a valid problem and damages one thing in it (a value that is NaN, infinite or beyond the
dtype's range, a shape, a label, a parameter array, a learning rate).  Each entry point must raise the same
exception type with the same message as the NumPy reference, and leave the model's parameters as they were.
The space is finite, so every combination of task, kind of damage and entry point is enumerated (not sampled);
the sample the damage lands on cycles through every position per kind.  The example tests in
``test_bad_input.py`` pin the messages themselves.
"""

from __future__ import annotations

import functools
import itertools
import re

import numpy as np
import pytest

from impls import MLPSpec, TrainConfig, create, registry

SPECS = {
    "binary": MLPSpec((3, 5, 1), "relu", "binary_crossentropy"),
    "multiclass": MLPSpec((3, 5, 4), "tanh", "categorical_crossentropy", dtype="float32"),
    "regression": MLPSpec((3, 5, 2), "elu", "mse", dtype="float32"),
}
N = 6


@functools.cache
def model(name: str, task: str):
    """One model per implementation and task, reused across examples (each example checks it is unchanged)."""
    return create(name, SPECS[task], seed=3)


def valid_problem(task: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(N, 3))
    y = {"binary": rng.integers(0, 2, N), "multiclass": rng.integers(0, 4, N),
         "regression": rng.normal(size=(N, 2))}[task]
    return X, y


def damage(task: str, kind: str, where: int, rng: np.random.Generator) -> tuple[object, object]:
    """A problem with exactly one thing wrong (``kind``), at sample ``where``."""
    X, y = valid_problem(task, rng)
    if kind == "nan feature":
        X[where, where % 3] = np.nan
    elif kind == "inf feature":
        X[where, 1] = -np.inf
    elif kind == "beyond the dtype's range":
        X[where, 0] = 1e39 if SPECS[task].dtype == "float32" else 1e309  # float64: 1e309 is already inf
    elif kind == "feature count":
        X = np.ones((N, 3 + where % 3 + 1))
    elif kind == "X not 2-D":
        X = X[:, 0] if where % 2 else X[None]
    elif kind == "length mismatch":
        y = y[: where % (N - 1)]
    elif kind == "label":
        y = np.array(y, dtype=np.float64)
        y[where] = {"binary": 2.0, "multiclass": 4.0, "regression": np.nan}[task]
    elif kind == "non-integer label":
        y = np.array(y, dtype=np.float64)
        y[where] = {"binary": 0.5, "multiclass": 1.5, "regression": np.inf}[task]
    elif kind == "text":
        X = np.full((N, 3), "x")
    return X, y


KINDS = ["nan feature", "inf feature", "beyond the dtype's range", "feature count", "X not 2-D", "length mismatch",
         "label", "non-integer label", "text"]
LABEL_KINDS = {"length mismatch", "label", "non-integer label"}
"""Damage to the labels, which ``forward`` does not take."""
CALLS = {
    "forward": lambda m, X, y: m.forward(X),
    "loss": lambda m, X, y: m.loss(X, y),
    "gradients": lambda m, X, y: m.gradients(X, y),
    "train_step": lambda m, X, y: m.train_step(X, y, 0.1, momentum=0.5),
    "fit": lambda m, X, y: m.fit(X, y, TrainConfig(epochs=1, batch_size=4)),
}


def outcome(name: str, task: str, call: str, X: object, y: object) -> tuple[type, str] | None:
    """The exception (type, message) the call raises, ``None`` if it raises none; asserts the parameters are kept."""
    m = model(name, task)
    before = m.get_params()
    try:
        CALLS[call](m, X, y)
    except (ValueError, TypeError) as exc:
        result: tuple[type, str] | None = (type(exc), str(exc))
    else:
        result = None
    after = m.get_params()
    for (W0, b0), (W1, b1) in zip(before, after):
        assert np.array_equal(W0, W1) and np.array_equal(b0, b1), f"{name}.{call} changed the parameters"
    return result


def ident(*parts: object) -> str:
    return "-".join(re.sub(r"\W+", "_", str(part)) for part in parts)


def data_cases() -> list:
    """Every (task, kind, call) but label damage given to ``forward``: 126 cases.  ``where``, the damaged sample
    (and through it the damaged column, the wrong feature count, the shorter label vector), runs through
    0..N-1 in turn for each kind, so every kind meets every position at least twice; the valid values around
    the damage come from the case's own seed."""
    cases, seen = [], dict.fromkeys(KINDS, 0)
    for seed, (task, kind, call) in enumerate(itertools.product(SPECS, KINDS, CALLS)):
        if call == "forward" and kind in LABEL_KINDS:
            continue
        where, seen[kind] = seen[kind] % N, seen[kind] + 1
        cases.append(pytest.param(task, kind, call, where, seed, id=ident(task, kind, call, where)))
    return cases


@pytest.mark.parametrize(("task", "kind", "call", "where", "seed"), data_cases())
def test_bad_data_gets_the_references_error_and_changes_nothing(other_impl, task, kind, call, where, seed):
    X, y = damage(task, kind, where, np.random.default_rng(seed))
    expected = outcome(registry.REFERENCE, task, call, X, y)
    assert expected is not None, f"the reference accepted {kind} in {call}"
    assert outcome(other_impl, task, call, X, y) == expected


PARAMETER_DAMAGE = ["nan", "inf", "beyond float32", "shape", "missing layer", "text"]
PARAMETER_CASES = [pytest.param(task, layer, part, bad, id=ident(task, bad, f"layer{layer}", "Wb"[part]))
                   for task, bad, layer, part in itertools.product(SPECS, PARAMETER_DAMAGE, (0, 1), (0, 1))
                   if bad != "missing layer" or (layer, part) == (0, 0)]
"""Every (task, damage, layer, weight or bias): 63 cases (a missing layer is one case per task)."""


@pytest.mark.parametrize(("task", "layer", "part", "bad"), PARAMETER_CASES)
def test_bad_parameters_get_the_references_error_and_change_nothing(other_impl, task, layer, part, bad):
    def attempt(name: str) -> tuple[type, str] | None:
        m = model(name, task)
        params = [[np.array(a, dtype=np.float64) for a in pair] for pair in m.get_params()]
        target = params[layer][part]
        if bad == "nan":
            target.flat[0] = np.nan
        elif bad == "inf":
            target.flat[-1] = np.inf
        elif bad == "beyond float32":
            target.flat[0] = 1e39 if m.spec.dtype == "float32" else np.inf
        elif bad == "shape":
            params[layer][part] = np.ones((*target.shape, 2))
        elif bad == "missing layer":
            params = params[:1]
        elif bad == "text":
            params[layer][part] = np.full(target.shape, "w")
        before = m.get_params()
        try:
            m.set_params([tuple(pair) for pair in params])
        except (ValueError, TypeError) as exc:
            result: tuple[type, str] | None = (type(exc), str(exc))
        else:
            result = None
        for (W0, b0), (W1, b1) in zip(before, m.get_params()):
            assert np.array_equal(W0, W1) and np.array_equal(b0, b1), f"{name}.set_params kept part of a bad set"
        return result

    expected = attempt(registry.REFERENCE)
    assert expected is not None, f"the reference accepted {bad} parameters"
    assert attempt(other_impl) == expected


@pytest.mark.parametrize("learning_rate", [float("nan"), -0.1, "0.1", float("inf"), True])
def test_bad_learning_rates_get_the_references_error_and_change_nothing(other_impl, learning_rate):
    X, y = valid_problem("binary", np.random.default_rng(0))

    def attempt(name: str) -> tuple[type, str] | None:
        m = model(name, "binary")
        before = m.get_params()
        try:
            m.train_step(X, y, learning_rate)
        except (ValueError, TypeError) as exc:
            result: tuple[type, str] | None = (type(exc), str(exc))
        else:
            result = None
        assert all(np.array_equal(a, b) for p, q in zip(before, m.get_params()) for a, b in zip(p, q))
        return result

    expected = attempt(registry.REFERENCE)
    assert expected is not None and "learning_rate" in expected[1]
    assert attempt(other_impl) == expected
