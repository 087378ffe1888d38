"""The scikit-learn baseline (``impls/sklearn_baseline.py``): the spec's SGD step, its history, and what it refuses.

It is registered in ``registry.BASELINES``, not among the implementations, so the equivalence suite does
not run on it; this checks the mapping instead: a full-batch epoch without momentum moves the weights by
exactly ``-lr`` times the reference's gradient (L2 and the regression factor included).
"""

from __future__ import annotations

import numpy as np
import pytest

from impls import EarlyStopping, MLPSpec, TrainConfig, registry
from impls.numpy_mlp import NumpyMLP
from impls.spec import Adam
from tests.conftest import import_or_skip
from tests.helpers import max_rel_error, random_problem
from tests.tolerances import COMPUTATION

import_or_skip("sklearn")
from impls.sklearn_baseline import SklearnMLP  # noqa: E402  (after the check that scikit-learn is installed)


def test_the_baseline_is_registered_beside_the_implementations() -> None:
    entry = registry.BASELINES["sklearn"]
    assert (entry.module, entry.cls) == ("impls.sklearn_baseline", "SklearnMLP")
    assert "sklearn" not in registry.IMPLEMENTATIONS and entry.missing() is None


@pytest.mark.parametrize(("loss", "outputs"), [("binary_crossentropy", 1), ("categorical_crossentropy", 3),
                                               ("mse", 1)])
def test_a_full_batch_epoch_is_one_spec_sgd_step(loss, outputs) -> None:
    spec = MLPSpec((4, 5, outputs), "tanh", loss, dtype="float64", l2=0.01)
    X, y = random_problem(spec, 24, seed=1)
    if spec.task == "binary":
        y = y[:, 0]
    model = SklearnMLP(spec, seed=0)
    step = TrainConfig(epochs=1, batch_size=None, learning_rate=0.1, shuffle=False)
    model.fit(X, y, step)  # scikit-learn draws its weights here
    before = model.get_params()
    history = model.fit(X, y, step)
    reference = NumpyMLP(spec)
    reference.set_params(before)
    expected = [(W - 0.1 * dW, b - 0.1 * db) for (W, b), (dW, db) in zip(before, reference.gradients(X, y))]
    for (W, b), (W_expected, b_expected) in zip(model.get_params(), expected):
        assert max_rel_error(W, W_expected) <= COMPUTATION["float64"]
        assert max_rel_error(b, b_expected) <= COMPUTATION["float64"]
    assert history.loss[0] == pytest.approx(reference.loss(X, y), rel=COMPUTATION["float64"])


def test_training_records_every_epoch_and_stops_early() -> None:
    spec = MLPSpec((4, 8, 1), "relu", "binary_crossentropy", dtype="float32")
    X, y = random_problem(spec, 96, seed=2)
    X_val, y_val = random_problem(spec, 32, seed=3)
    config = TrainConfig(epochs=200, batch_size=16, learning_rate=0.5, momentum=0.9, lr_decay=0.99, seed=0,
                         early_stopping=EarlyStopping(patience=3))
    model = SklearnMLP(spec, seed=0)
    history = model.fit(X, y, config, validation=(X_val, y_val))
    assert history.stopped_epoch is not None and history.stopped_epoch - history.best_epoch == 3
    assert len(history.epoch_time) == len(history.loss) == len(history.val_loss) == history.epochs_run
    assert history.learning_rate[1] == pytest.approx(0.5 * 0.99)
    assert model.estimator._optimizer.learning_rate == pytest.approx(0.5 * 0.99 ** (history.epochs_run - 1))
    assert model.loss(X_val, y_val) == history.val_loss[history.best_epoch - 1]  # the best weights, restored
    assert model.forward(X).shape == (96, 1) and set(np.unique(model.predict(X))) <= {0, 1}


def test_what_scikit_learn_cannot_do_is_refused_by_name() -> None:
    spec = MLPSpec((4, 8, 1), "relu", "binary_crossentropy", dtype="float32", dropout=0.2)
    X, y = random_problem(spec, 32, seed=0)
    model = SklearnMLP(spec)
    with pytest.raises(NotImplementedError, match="no parameters before fit"):
        model.get_params()
    with pytest.raises(NotImplementedError, match="SGD only"):
        model.fit(X, y, TrainConfig(epochs=1, optimizer=Adam()))
    model.fit(X, y, TrainConfig(epochs=1))  # dropout is not applied (a documented difference), not refused
    with pytest.raises(NotImplementedError, match="gradient"):
        model.gradients(X, y)
    with pytest.raises(NotImplementedError, match="single steps"):
        model.train_step(X, y, 0.1)
    with pytest.raises(NotImplementedError, match="no dropout"):
        model.loss(X, y, dropout_masks=[np.ones((32, 8))])
    with pytest.raises(NotImplementedError, match="hidden activation 'elu'"):
        SklearnMLP(MLPSpec((4, 8, 1), "elu", "binary_crossentropy"))
    with pytest.raises(NotImplementedError, match="l1"):
        SklearnMLP(MLPSpec((4, 8, 1), "relu", "binary_crossentropy", l1=0.1))
