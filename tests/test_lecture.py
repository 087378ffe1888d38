"""The lecture's worked examples, recomputed through the public interface of every implementation."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from impls import MLPSpec, TrainConfig, create
from tests.helpers import lecture_circles

# The 1-1-1 network: x = 3.14, y = 1, weights from Python's random.seed(42), biases 0.
X_ONE = np.array([[3.14]])
Y_ONE = np.array([1])
ONE_ONE_ONE = MLPSpec((1, 1, 1), "sigmoid", "binary_crossentropy")


def lecture_start() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = random.Random(42)
    w1, w2 = rng.random(), rng.random()
    return [(np.array([[w1]]), np.zeros(1)), (np.array([[w2]]), np.zeros(1))]


def sigma(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_one_one_one_closed_form_derivatives(impl_name):
    model = create(impl_name, ONE_ONE_ONE)
    model.set_params(lecture_start())
    (w1,), (w2,) = (p[0][0] for p in lecture_start())
    a1 = sigma(w1 * 3.14)
    y_hat = sigma(w2 * a1)
    (gW1, gb1), (gW2, gb2) = model.gradients(X_ONE, Y_ONE)
    assert gW2[0, 0] == pytest.approx((y_hat - 1) * a1, rel=1e-12)
    assert gb2[0] == pytest.approx(y_hat - 1, rel=1e-12)
    assert gW1[0, 0] == pytest.approx((y_hat - 1) * w2 * a1 * (1 - a1) * 3.14, rel=1e-12)
    assert gb1[0] == pytest.approx((y_hat - 1) * w2 * a1 * (1 - a1), rel=1e-12)


def test_one_one_one_500_steps_move_prediction_from_half_to_one(impl_name):
    """Lecture: 'Before: y_hat = 0.51, loss = 0.68' and 'After: y_hat = 0.99, loss = 0.01' with lr 0.1."""
    model = create(impl_name, ONE_ONE_ONE)
    model.set_params(lecture_start())
    assert model.predict_proba(X_ONE)[0, 0] == pytest.approx(0.51, abs=0.005)
    assert model.loss(X_ONE, Y_ONE) == pytest.approx(0.68, abs=0.005)
    for _ in range(500):
        model.train_step(X_ONE, Y_ONE, learning_rate=0.1)
    assert model.predict_proba(X_ONE)[0, 0] == pytest.approx(0.99, abs=0.005)
    assert model.loss(X_ONE, Y_ONE) == pytest.approx(0.01, abs=0.005)


def softmax_layer(impl_name: str, k: int = 3):
    """A network whose output is softmax of its input: one layer, W = I, b = 0."""
    model = create(impl_name, MLPSpec((k, k), "identity", "categorical_crossentropy"))
    model.set_params([(np.eye(k), np.zeros(k))])
    return model


def test_softmax_table(impl_name):
    logits = np.array([[1.47, -0.39, 0.22], [5.0, 6.0, 4.0], [0.9, 0.8, 1.1], [-2.0, 2.0, -3.0]])
    table = np.array([[0.69, 0.11, 0.20], [0.24, 0.67, 0.09], [0.32, 0.29, 0.39], [0.02, 0.98, 0.01]])
    probs = softmax_layer(impl_name).predict_proba(logits)
    np.testing.assert_allclose(probs, table, atol=0.005)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize(("probs", "expected"), [
    ([0.22, 0.70, 0.08], 0.3567), ([0.70, 0.22, 0.08], 1.5141), ([0.70, 0.08, 0.22], 2.5257)])
def test_cross_entropy_examples(impl_name, probs, expected):
    """True class 'Setosa' = index 1; feeding log-probabilities makes the softmax return them exactly."""
    model = softmax_layer(impl_name)
    X = np.log([probs])
    assert model.loss(X, [1]) == pytest.approx(expected, abs=5e-5)
    assert model.loss(X, [[0, 1, 0]]) == pytest.approx(expected, abs=5e-5)  # one-hot labels, same loss


@pytest.mark.slow
def test_circles_experiment_reaches_090_test_accuracy():
    """[2,4,4,1] ReLU, He init, lr 0.3 decayed 0.95 per epoch, 150 epochs, batch 32, the lecture's seed 42.

    The reference only: the other frameworks train from the same start in the equivalence tests.
    """
    X_tr, X_te, y_tr, y_te = lecture_circles()
    model = create("numpy", MLPSpec((2, 4, 4, 1), "relu", "binary_crossentropy", "he_normal"), seed=42)
    history = model.fit(X_tr, y_tr, TrainConfig(epochs=150, batch_size=32, learning_rate=0.3, lr_decay=0.95, seed=42))
    assert history.learning_rate[-1] == pytest.approx(0.3 * 0.95 ** 149)
    assert history.loss[-1] < history.loss[0]
    assert model.accuracy(X_te, y_te) >= 0.90
