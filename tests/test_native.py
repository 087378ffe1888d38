"""The native loops (``native_fit``): the benchmark's yardstick trains the same model, the framework's own way.

They follow no convention of the spec (their own initializer draws, shuffle and L2 idiom), so they
are held to what any correct training shows: the loss falls, a separable problem is learned, the
history has one entry per epoch, early stopping stops and hands back the best epoch's weights, and what
they do not cover is refused by name.
"""

from __future__ import annotations

import numpy as np
import pytest

from impls import EarlyStopping, MLPSpec, TrainConfig, registry
from impls.spec import Adam
from tests.tolerances import COMPUTATION

TASKS = {
    "binary": ("binary_crossentropy", 1),
    "multiclass": ("categorical_crossentropy", 3),
    "regression": ("mse", 1),
}


def problem(task: str, n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A learnable float32 problem: 4 features, labels from a fixed linear rule."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    score = X @ np.array([1.0, -2.0, 0.5, 1.5])
    if task == "binary":
        return X, (score > 0).astype(np.int64)
    if task == "multiclass":
        return X, np.digitize(score, [-1.0, 1.0])
    return X, (0.5 * score).astype(np.float32)


def native_fit(name: str):
    return registry.load_module(name).native_fit


@pytest.mark.parametrize("task", list(TASKS))
def test_native_loop_learns_and_records_every_epoch(impl_mode, task):
    name, mode = impl_mode
    loss, outputs = TASKS[task]
    spec = MLPSpec((4, 16, 8, outputs), "relu", loss, dtype="float32", l2=1e-4, dropout=0.1)
    X, y = problem(task)
    config = TrainConfig(epochs=25, batch_size=16, learning_rate=0.05, momentum=0.9, lr_decay=0.97, seed=1)
    run = native_fit(name)(spec, config, X, y, mode=mode)
    history = run.history
    assert history.epochs_run == 25 and len(history.epoch_time) == 25
    assert all(t > 0 for t in history.epoch_time)
    assert history.loss[-1] < 0.5 * history.loss[0], history.loss
    out = np.asarray(run.predict(X))
    assert out.shape == (len(X), outputs)
    if task == "binary":
        assert np.mean((out[:, 0] >= 0.5) == y) >= 0.9
    elif task == "multiclass":
        assert np.allclose(out.sum(axis=1), 1, atol=1e-5) and np.mean(out.argmax(axis=1) == y) >= 0.85
    else:
        assert np.mean((out[:, 0] - y) ** 2) < 0.25 * np.var(y)


def test_native_early_stopping_stops_and_reports_the_best_epoch(impl_name):
    """A rate so high that the validation loss soon stops improving: the loop stops within the budget."""
    spec = MLPSpec((4, 16, 1), "relu", "binary_crossentropy", dtype="float32")
    X, y = problem("binary", 128, 2)
    X_val, y_val = problem("binary", 64, 3)
    config = TrainConfig(epochs=200, batch_size=16, learning_rate=0.5, momentum=0.9, seed=0,
                         early_stopping=EarlyStopping(patience=3))
    history = native_fit(impl_name)(spec, config, X, y, validation=(X_val, y_val)).history
    assert history.stopped_epoch is not None and history.stopped_epoch < 200
    assert history.best_epoch is not None and history.stopped_epoch - history.best_epoch == 3
    assert len(history.val_loss) == history.epochs_run


def test_native_early_stopping_hands_back_the_weights_of_the_best_epoch(impl_name):
    """What is restored, not only the epoch bookkeeping: the returned ``predict`` on the validation set gives
    the validation loss recorded at ``best_epoch``, recomputed here from its outputs.

    Regression with MSE (no penalty, no dropout), so the recorded validation loss is exactly
    ``mean((predict(X_val) - y_val)**2)``, whatever the framework's loss code; float32, so they agree to
    ``COMPUTATION["float32"]`` (a mean of 64 float32 terms; measured ~1e-7).  24 noisy samples and 64 hidden
    units overfit: the validation loss rises after its best epoch, and the last epoch's is more than 1 %
    above the best, 100 times the tolerance, so weights left at the last epoch fail here.
    """
    rng = np.random.default_rng(0)
    X, X_val = rng.normal(size=(24, 4)).astype(np.float32), rng.normal(size=(64, 4)).astype(np.float32)
    rule = np.array([1.0, -2.0, 0.5, 1.5])
    y, y_val = ((A @ rule + 1.5 * rng.normal(size=len(A))).astype(np.float32) for A in (X, X_val))
    spec = MLPSpec((4, 64, 1), "relu", "mse", dtype="float32")
    config = TrainConfig(epochs=300, batch_size=8, learning_rate=0.01, momentum=0.9, seed=0,
                         early_stopping=EarlyStopping(patience=5))
    run = native_fit(impl_name)(spec, config, X, y, validation=(X_val, y_val))
    history = run.history
    assert history.stopped_epoch is not None and history.best_epoch is not None, history.val_loss
    best = history.val_loss[history.best_epoch - 1]
    assert best == min(history.val_loss)
    assert history.val_loss[-1] > 1.01 * best, "the setting must leave the last epoch's weights measurably worse"
    outputs = np.asarray(run.predict(X_val), dtype=np.float64)
    assert outputs.shape == (64, 1)
    restored = float(np.mean((outputs[:, 0] - y_val) ** 2))
    tolerance = COMPUTATION["float32"]
    assert restored == pytest.approx(best, rel=tolerance), (
        f"predict's validation loss {restored:.6g} is not the best epoch's ({history.best_epoch}: {best:.6g}); "
        f"the last epoch's ({history.epochs_run}) was {history.val_loss[-1]:.6g}")


@pytest.mark.parametrize(("spec_options", "config_options", "named"), [
    ({"l1": 0.01}, {}, "l1"),
    ({"hidden_activation": "elu"}, {}, "hidden activation 'elu'"),
    ({"initializer": "xavier_uniform"}, {}, "initializer 'xavier_uniform'"),
    ({}, {"optimizer": Adam()}, "optimizer Adam"),
    ({}, {"early_stopping": EarlyStopping()}, "early stopping without validation"),
])
def test_native_loop_refuses_what_it_does_not_cover(impl_name, spec_options, config_options, named):
    spec = MLPSpec((4, 8, 1), **{"loss": "binary_crossentropy", "dtype": "float32", **spec_options})
    X, y = problem("binary")
    with pytest.raises(ValueError, match=f"native training loop does not cover: .*{named}"):
        native_fit(impl_name)(spec, TrainConfig(epochs=1, **config_options), X, y)
