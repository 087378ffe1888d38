"""Each implementation's initializers draw the spec's distributions (textbook formulas, plain normal)."""

from __future__ import annotations

import numpy as np
import pytest

from impls import MLPSpec, create
from impls.spec import init_rule

FAN_IN, FAN_OUT = 400, 1000  # 400k draws: the sampling error of the std is ~0.1%, far inside 2%


@pytest.mark.parametrize("initializer", ["normal", "uniform", "xavier_normal", "xavier_uniform",
                                         "he_normal", "he_uniform"])
def test_weight_statistics_match_the_formula(impl_name, initializer):
    spec = MLPSpec((FAN_IN, FAN_OUT), "identity", "mse", initializer, init_scale=0.5)
    (W, b), = create(impl_name, spec, seed=7).get_params()
    rule = init_rule(initializer, FAN_IN, FAN_OUT, 0.5)
    assert W.shape == (FAN_IN, FAN_OUT)
    assert W.std() == pytest.approx(rule.std, rel=0.02)
    assert abs(W.mean()) < 0.02 * rule.std
    assert np.all(b == 0)
    if rule.distribution == "uniform":
        assert np.abs(W).max() <= rule.scale
        assert np.abs(W).max() > 0.99 * rule.scale
    else:
        # plain, not truncated: a normal sample of 400k has values beyond 2 std (truncation cuts there)
        assert np.abs(W).max() > 3 * rule.std


def test_zeros_initializer_gives_zero_weights(impl_name):
    spec = MLPSpec((3, 4, 2), "sigmoid", "mse", "zeros")
    assert all(np.all(W == 0) and np.all(b == 0) for W, b in create(impl_name, spec).get_params())


def test_same_seed_same_weights_different_seed_different_weights(impl_name):
    spec = MLPSpec((5, 7, 3), "relu", "categorical_crossentropy", "he_uniform")
    first = create(impl_name, spec, seed=3).get_params()
    again = create(impl_name, spec, seed=3).get_params()
    other = create(impl_name, spec, seed=4).get_params()
    assert all(np.array_equal(W1, W2) for (W1, _), (W2, _) in zip(first, again))
    assert not np.array_equal(first[0][0], other[0][0])


@pytest.mark.parametrize(("name", "fan_in", "fan_out", "std"), [
    ("he_normal", 100, 50, np.sqrt(2 / 100)),
    ("he_uniform", 100, 50, np.sqrt(6 / 100) / np.sqrt(3)),
    ("xavier_normal", 100, 50, np.sqrt(2 / 150)),
    ("xavier_uniform", 100, 50, np.sqrt(6 / 150) / np.sqrt(3)),
    ("normal", 100, 50, 1.0),
    ("uniform", 100, 50, 1 / np.sqrt(3)),
])
def test_init_rule_formulas(name, fan_in, fan_out, std):
    assert init_rule(name, fan_in, fan_out).std == pytest.approx(std, rel=1e-12)
