"""Execution modes: every (implementation, mode) pair trains like the default mode and like the reference.

The per-framework files pin how a mode is built (``torch.compile``, ``lax.scan``, XLA); these
tests hold every mode of every registered implementation to the same three checks.
"""

from __future__ import annotations

import numpy as np
import pytest

from impls import MLPSpec, TrainConfig, create
from tests.helpers import max_rel_error, params_rel_error, random_params, random_problem
from tests.tolerances import COMPUTATION, TRAJECTORY


def test_fast_mode_trains_exactly_like_the_default_mode(fast_mode):
    """float64, momentum, decay, L1 + L2, 37 samples in batches of 8 (a partial last batch): the same run.

    No dropout: a compiled mode may draw its masks from another stream; the next test covers it.
    """
    name, mode = fast_mode
    spec = MLPSpec((4, 8, 6, 3), "elu", "categorical_crossentropy", l1=0.01, l2=0.01)
    X, y = random_problem(spec, 37, 5)
    config = TrainConfig(epochs=4, batch_size=8, learning_rate=0.2, lr_decay=0.9, momentum=0.8, seed=3)
    start = random_params(spec, 2, scale=0.5)
    runs = {}
    for run_mode in ("default", mode):
        model = create(name, spec, seed=2, mode=run_mode)
        model.set_params(start)
        history = model.fit(X, y, config)
        runs[run_mode] = (history.loss, model.get_params())
    assert params_rel_error(runs["default"][1], start) > 1e-2, "training moved the parameters"
    assert max_rel_error(runs[mode][0], runs["default"][0]) <= TRAJECTORY
    assert params_rel_error(runs[mode][1], runs["default"][1]) <= TRAJECTORY


def test_dropout_training_is_deterministic_per_seed(impl_mode):
    """Same model seed, same masks: bit-identical runs; another seed: other masks, another run."""
    name, mode = impl_mode
    spec = MLPSpec((4, 30, 2), "tanh", "mse", dropout=0.5)
    X, y = random_problem(spec, 16, 0)
    start = random_params(spec, 1)
    config = TrainConfig(epochs=2, batch_size=5, learning_rate=0.1, seed=0)

    def run(seed: int) -> tuple[list[float], list]:
        model = create(name, spec, seed=seed, mode=mode)
        model.set_params(start)
        return model.fit(X, y, config).loss, model.get_params()

    first, again, other = run(3), run(3), run(4)
    assert first[0] == again[0] and params_rel_error(first[1], again[1]) == 0
    assert first[0] != other[0] and params_rel_error(first[1], other[1]) > 1e-3


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu"])
def test_gradients_at_the_kink_and_at_zero_weights_match_the_reference(impl_mode, activation):
    """Zero inputs and biases put hidden pre-activations at exactly 0 (the spec's left branch); half the
    output weights are exactly 0 (L1's ``sign(0) = 0``); MAE residuals of 0 (``|r|'(0) = 0``)."""
    name, mode = impl_mode
    spec = MLPSpec((3, 4, 2), activation, "mae", leaky_slope=0.1, elu_alpha=0.7, l1=0.05)
    params = random_params(spec, 0)
    params[0] = (params[0][0], np.zeros(4))
    params[1] = (np.where(np.arange(8).reshape(4, 2) % 2 == 0, 0.0, params[1][0]), np.zeros(2))
    X = np.vstack([np.zeros((3, 3)), random_problem(spec, 3, 1)[0]])
    y = np.vstack([np.zeros((3, 2)), np.ones((3, 2))])  # zero inputs give zero outputs: residual exactly 0
    reference, model = create("numpy", spec), create(name, spec, mode=mode)
    reference.set_params(params)
    model.set_params(params)
    assert params_rel_error(model.gradients(X, y), reference.gradients(X, y)) <= COMPUTATION["float64"]
