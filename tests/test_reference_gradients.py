"""The NumPy reference's hand-written gradients against central finite differences.

float64, step h = 1e-6: truncation error ~h**2 and rounding ~1e-16/h, so a correct
gradient shows a relative error near 1e-9; the bound is 1e-6, relative to the
largest entry of the whole gradient.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impls.numpy_mlp import NumpyMLP
from impls.spec import ACTIVATIONS, LOSSES, MLPSpec
from tests.helpers import params_rel_error, random_params, random_problem
from tests.tolerances import FINITE_DIFFERENCES

FD_STEP = 1e-6

REGULARIZERS = {
    "none": {},
    "l1": {"l1": 0.03},
    "l2": {"l2": 0.2},
    "dropout": {"dropout": 0.4},
    "l1+l2+dropout": {"l1": 0.02, "l2": 0.1, "dropout": 0.25},
}


def numeric_gradients(model: NumpyMLP, X, y, masks) -> list[tuple[np.ndarray, np.ndarray]]:
    """Central differences of ``model.loss(X, y, masks)`` with respect to every parameter."""
    params = model.get_params()
    grads = []
    for layer in range(len(params)):
        pair = []
        for which in range(2):
            array = params[layer][which]
            numeric = np.zeros_like(array)
            for idx in np.ndindex(array.shape):
                original = array[idx]
                array[idx] = original + FD_STEP
                model.set_params(params)
                plus = model.loss(X, y, masks)
                array[idx] = original - FD_STEP
                model.set_params(params)
                minus = model.loss(X, y, masks)
                array[idx] = original
                numeric[idx] = (plus - minus) / (2 * FD_STEP)
            pair.append(numeric)
        grads.append(tuple(pair))
    model.set_params(params)
    return grads


architectures = st.tuples(
    st.integers(1, 4),                                  # inputs
    st.lists(st.integers(1, 5), min_size=1, max_size=3),  # hidden widths
    st.integers(1, 3),                                  # outputs
    st.integers(1, 6),                                  # samples
    st.integers(0, 2**31 - 1),                          # data/parameter seed
)


@pytest.mark.parametrize(("activation", "loss", "regularizer"),
                         list(itertools.product(ACTIVATIONS, LOSSES, REGULARIZERS)))
@settings(max_examples=4)
@given(arch=architectures)
def test_gradients_match_finite_differences(activation, loss, regularizer, arch):
    n_in, hidden, n_out, n, seed = arch
    if loss == "categorical_crossentropy":
        n_out = max(n_out, 2)
    spec = MLPSpec((n_in, *hidden, n_out), activation, loss, "he_normal",
                   leaky_slope=0.1, elu_alpha=0.7, **REGULARIZERS[regularizer])
    model = NumpyMLP(spec, seed)
    model.set_params(random_params(spec, seed))
    X, y = random_problem(spec, n, seed + 1)
    masks = spec.sample_dropout_masks(n, np.random.default_rng(seed + 2)) if spec.uses_dropout else None

    analytic = model.gradients(X, y, masks)
    numeric = numeric_gradients(model, X, y, masks)
    assert params_rel_error(analytic, numeric) <= FINITE_DIFFERENCES


def test_gradient_is_of_the_reported_loss_with_every_regularizer_on():
    """loss() and gradients() describe one function: a step along -grad lowers loss() by |grad|^2 h."""
    spec = MLPSpec((4, 6, 5, 3), "tanh", "categorical_crossentropy", l1=0.05, l2=0.3, dropout=(0.3, 0.5))
    model = NumpyMLP(spec, 3)
    X, y = random_problem(spec, 9, 4)
    masks = spec.sample_dropout_masks(9, np.random.default_rng(5))
    grads = model.gradients(X, y, masks)
    before = model.loss(X, y, masks)
    h = 1e-7
    model.set_params([(W - h * gW, b - h * gb) for (W, b), (gW, gb) in zip(model.get_params(), grads)])
    decrease = before - model.loss(X, y, masks)
    expected = h * sum(float((gW ** 2).sum() + (gb ** 2).sum()) for gW, gb in grads)
    assert decrease == pytest.approx(expected, rel=1e-4)


def test_penalty_is_not_divided_by_batch_size():
    """The spec's penalty is l1 sum|W| + l2/2 sum W^2 whatever the batch size (the lecture divided by N)."""
    spec = MLPSpec((2, 3, 1), "relu", "mse", l1=0.1, l2=0.5)
    model = NumpyMLP(spec, 0)
    weights = [W for W, _ in model.get_params()]
    expected = sum(0.1 * np.abs(W).sum() + 0.25 * (W ** 2).sum() for W in weights)
    for n in (1, 10, 100):
        X = np.zeros((n, 2))
        y = np.zeros(n)
        # zero input and zero biases give zero output, so the data loss is 0 and only the penalty remains
        assert model.loss(X, y) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_extreme_logits_give_finite_loss_and_gradient(loss):
    n_outputs = 2 if loss == "categorical_crossentropy" else 1
    spec = MLPSpec((1, n_outputs), "identity", loss)
    model = NumpyMLP(spec, 0)
    W = np.full((1, spec.n_outputs), 1000.0)
    W[0, -1] = -1000.0
    model.set_params([(W, np.zeros(spec.n_outputs))])
    X = np.array([[1.0], [-1.0]])
    y = np.array([1, 0]) if spec.task != "regression" else np.array([0.0, 1.0])  # wrong on both samples
    value = model.loss(X, y)
    grads = model.gradients(X, y)
    assert np.isfinite(value) and value > 100  # confidently wrong predictions cost ~1000, not a clipped 20.7
    assert all(np.all(np.isfinite(g)) for pair in grads for g in pair)
