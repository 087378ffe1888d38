"""The spec's training conventions, checked on every implementation through its public interface."""

from __future__ import annotations

import numpy as np
import pytest

from impls import EarlyStopping, MLPSpec, TrainConfig, batch_order, create
from impls.spec import SGD, Adam
from tests.helpers import flatten, params_rel_error, random_params, random_problem
from tests.tolerances import EXACT_STEP, TRAJECTORY

SPEC = MLPSpec((3, 5, 2), "tanh", "binary_crossentropy", l2=0.01)


def test_batch_order_is_a_seeded_partition_with_the_last_partial_batch_kept():
    batches = batch_order(10, 4, seed=1, epoch=1)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches)) == list(range(10))
    again = batch_order(10, 4, seed=1, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(batch_order(10, 4, seed=1, epoch=2)))
    assert np.array_equal(np.concatenate(batch_order(10, 4, 1, 1, shuffle=False)), np.arange(10))
    assert [len(b) for b in batch_order(10, None, 1, 1)] == [10]


def test_learning_rate_decays_per_epoch_from_epoch_one():
    config = TrainConfig(learning_rate=0.3, lr_decay=0.95)
    assert [config.learning_rate_at(e) for e in (1, 2, 3)] == pytest.approx([0.3, 0.285, 0.27075])


def test_momentum_velocity_stores_learning_rate_scaled_steps(impl_name):
    """v1 = -lr1 g1; v2 = mu v1 - lr2 g2; theta2 = theta0 + v1 + v2, with lr changing between steps."""
    model = create(impl_name, SPEC)
    start = random_params(SPEC, 1)
    model.set_params(start)
    X, y = random_problem(SPEC, 6, 2)
    g1 = model.gradients(X, y)
    model.train_step(X, y, learning_rate=0.5, momentum=0.9)
    g2 = model.gradients(X, y)
    model.train_step(X, y, learning_rate=0.1, momentum=0.9)
    expected = []
    for (W, b), (gW1, gb1), (gW2, gb2) in zip(start, g1, g2):
        vW, vb = -0.5 * gW1, -0.5 * gb1
        expected.append((W + vW + (0.9 * vW - 0.1 * gW2), b + vb + (0.9 * vb - 0.1 * gb2)))
    assert params_rel_error(model.get_params(), expected) <= TRAJECTORY


def test_fit_is_train_step_over_the_shared_batch_order(impl_name):
    """fit() = train_step over batch_order with the decayed rate; epoch loss = batch-size-weighted mean."""
    X, y = random_problem(SPEC, 23, 3)
    config = TrainConfig(epochs=3, batch_size=5, learning_rate=0.4, lr_decay=0.8, momentum=0.5, seed=11)
    fitted = create(impl_name, SPEC)
    fitted.set_params(random_params(SPEC, 4))
    history = fitted.fit(X, y, config)

    stepped = create(impl_name, SPEC)
    stepped.set_params(random_params(SPEC, 4))
    epoch_losses = []
    for epoch in range(1, 4):
        batches = batch_order(23, 5, seed=11, epoch=epoch)
        lr = config.learning_rate_at(epoch)
        losses = [stepped.train_step(X[i], y[i], lr, momentum=0.5) for i in batches]
        epoch_losses.append(np.average(losses, weights=[len(i) for i in batches]))
    assert history.learning_rate == pytest.approx([0.4, 0.32, 0.256])
    assert history.loss == pytest.approx(epoch_losses, rel=TRAJECTORY)
    assert params_rel_error(fitted.get_params(), stepped.get_params()) <= TRAJECTORY


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch(impl_name):
    """Validation labels are the training labels flipped, so validation loss is best after epoch 1."""
    spec = MLPSpec((3, 6, 1), "relu", "binary_crossentropy")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(float)
    config = TrainConfig(epochs=30, batch_size=8, learning_rate=0.5, seed=2,
                         early_stopping=EarlyStopping(patience=3, restore_best=True))
    model = create(impl_name, spec, seed=5)
    model.set_params(random_params(spec, 5, scale=0.3))
    history = model.fit(X, y, config, validation=(X, 1 - y))
    assert history.best_epoch == 1
    assert history.stopped_epoch == 4 and history.epochs_run == 4
    assert model.loss(X, 1 - y) == pytest.approx(history.val_loss[0], rel=1e-12)
    assert all(v > history.val_loss[0] for v in history.val_loss[1:])

    kept = create(impl_name, spec, seed=5)
    kept.set_params(random_params(spec, 5, scale=0.3))
    no_restore = TrainConfig(epochs=30, batch_size=8, learning_rate=0.5, seed=2,
                             early_stopping=EarlyStopping(patience=3, restore_best=False))
    kept.fit(X, y, no_restore, validation=(X, 1 - y))
    assert kept.loss(X, 1 - y) == pytest.approx(history.val_loss[-1], rel=1e-12)


def test_min_delta_requires_a_real_improvement(impl_name):
    """With min_delta larger than any epoch's gain, only epoch 1 counts: stop after patience epochs."""
    spec = MLPSpec((3, 4, 1), "tanh", "mse")
    X, y = random_problem(spec, 30, 1)
    config = TrainConfig(epochs=20, batch_size=10, learning_rate=0.01, seed=0,
                         early_stopping=EarlyStopping(patience=2, min_delta=10.0))
    history = create(impl_name, spec, seed=1).fit(X, y, config, validation=(X, y))
    assert history.best_epoch == 1 and history.stopped_epoch == 3


def test_history_records_validation_accuracy_for_classification(impl_name):
    spec = MLPSpec((3, 4, 3), "relu", "categorical_crossentropy")
    X, y = random_problem(spec, 20, 0)
    history = create(impl_name, spec).fit(X, y, TrainConfig(epochs=2, batch_size=8), validation=(X, y))
    assert len(history.val_loss) == len(history.val_accuracy) == len(history.epoch_time) == 2
    assert all(0 <= a <= 1 for a in history.val_accuracy)
    assert all(t > 0 for t in history.epoch_time)


def test_dropout_is_active_in_training_and_off_at_inference(impl_name):
    """One sample, tanh (no dead units): a unit's outgoing weights stay put exactly when it was dropped."""
    spec = MLPSpec((4, 200, 1), "tanh", "mse", dropout=0.5)
    model = create(impl_name, spec, seed=0)
    X, y = random_problem(spec, 1, 0)
    assert np.array_equal(model.forward(X), model.forward(X)), "inference is deterministic"
    start = model.get_params()
    frozen = []
    for _ in range(2):
        model.set_params(start)
        model.train_step(X, y, learning_rate=1e-3)
        frozen.append(np.all(model.get_params()[1][0] == start[1][0], axis=1))  # (200,) dropped units
    for dropped in frozen:
        assert 0.35 < dropped.mean() < 0.65, "about half the units dropped at rate 0.5"
    assert not np.array_equal(frozen[0], frozen[1]), "a new mask every step"


def test_adam_first_step_moves_each_parameter_by_the_learning_rate_against_its_gradient(impl_name):
    """Step 1: m_hat = g and v_hat = g**2, so the update is lr * g / (|g| + eps), about lr * sign(g)."""
    spec = MLPSpec((3, 4, 2), "tanh", "mse")
    X, y = random_problem(spec, 10, 0)
    model = create(impl_name, spec)
    model.set_params(random_params(spec, 1))
    before, grads = flatten(model.get_params()), flatten(model.gradients(X, y))
    model.train_step(X, y, learning_rate=0.01, optimizer=Adam(epsilon=1e-8))
    expected = before - 0.01 * grads / (np.abs(grads) + 1e-8)
    np.testing.assert_allclose(flatten(model.get_params()), expected, rtol=0, atol=EXACT_STEP)


def test_adam_keeps_its_moments_between_steps_and_reset_clears_them(impl_name):
    """Step 2 uses the bias-corrected moments of both gradients, written out here from the paper."""
    spec = MLPSpec((3, 4, 2), "tanh", "mse")
    X, y = random_problem(spec, 10, 0)
    rule = Adam(beta1=0.8, beta2=0.9, epsilon=1e-3)
    model = create(impl_name, spec)
    model.set_params(random_params(spec, 1))
    g1 = flatten(model.gradients(X, y))
    model.train_step(X, y, 0.05, optimizer=rule)
    theta1, g2 = flatten(model.get_params()), flatten(model.gradients(X, y))
    model.train_step(X, y, 0.05, optimizer=rule)
    m = 0.8 * 0.2 * g1 + 0.2 * g2
    v = 0.9 * 0.1 * g1**2 + 0.1 * g2**2
    expected = theta1 - 0.05 * (m / (1 - 0.8**2)) / (np.sqrt(v / (1 - 0.9**2)) + 1e-3)
    np.testing.assert_allclose(flatten(model.get_params()), expected, rtol=0, atol=EXACT_STEP)
    model.reset_optimizer()
    theta2, g3 = flatten(model.get_params()), flatten(model.gradients(X, y))
    model.train_step(X, y, 0.05, optimizer=rule)  # a first step again
    np.testing.assert_allclose(flatten(model.get_params()), theta2 - 0.05 * g3 / (np.abs(g3) + 1e-3),
                               rtol=0, atol=EXACT_STEP)


def test_momentum_and_optimizer_are_not_given_twice():
    with pytest.raises(ValueError, match="momentum once"):
        TrainConfig(momentum=0.9, optimizer=Adam())
    assert TrainConfig(momentum=0.9).optimizer == SGD(0.9)
