"""The native loops (``native_fit``): the benchmark's yardstick trains the same model, the framework's own way.

They follow no convention of the spec (their own initializer draws, shuffle and L2 idiom), so they
are held to what any correct training shows: the loss falls, a separable problem is learned, the
history has one entry per epoch, early stopping stops, and what they do not cover is refused by name.
"""

from __future__ import annotations

import numpy as np
import pytest

from impls import EarlyStopping, MLPSpec, TrainConfig, registry
from impls.spec import Adam

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
