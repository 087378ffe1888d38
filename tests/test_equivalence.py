"""Cross-framework equivalence: every implementation against the NumPy reference.

Parameters are loaded from the reference (``set_params``), so differences come from
the computation alone.  Tolerances and their reasons: :mod:`tests.tolerances`.
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

from impls import EarlyStopping, MLPSpec, TrainConfig, create
from impls.spec import ACTIVATIONS, LOSSES, Adam
from tests.helpers import flatten, lecture_circles, max_rel_error, params_rel_error, random_params, random_problem
from tests.tolerances import COMPUTATION, TRAJECTORY

REGULARIZERS = {
    "none": {},
    "l1": {"l1": 0.03},
    "l2": {"l2": 0.2},
    "dropout": {"dropout": 0.4},
    "l1+l2+dropout": {"l1": 0.02, "l2": 0.1, "dropout": 0.25},
}
COMBINATIONS = list(itertools.product(ACTIVATIONS, LOSSES, REGULARIZERS))


def combination_case(activation: str, loss: str, regularizer: str, dtype: str):
    """A random architecture, data, parameters and dropout masks, fixed per combination."""
    seed = zlib.crc32(f"{activation}-{loss}-{regularizer}".encode())
    rng = np.random.default_rng(seed)
    hidden = tuple(int(w) for w in rng.integers(2, 9, size=rng.integers(1, 4)))
    n_out = int(rng.integers(2, 5)) if loss == "categorical_crossentropy" else int(rng.integers(1, 4))
    spec_kwargs = dict(hidden_activation=activation, loss=loss, leaky_slope=0.1, elu_alpha=0.7,
                       **REGULARIZERS[regularizer])
    spec64 = MLPSpec((int(rng.integers(2, 7)), *hidden, n_out), dtype="float64", **spec_kwargs)
    spec = MLPSpec(spec64.layer_sizes, dtype=dtype, **spec_kwargs)
    n = int(rng.integers(3, 12))
    # inputs rounded to the case's dtype, so the float64 reference sees exactly what the model sees
    params = [(W.astype(dtype).astype("float64"), b.astype(dtype).astype("float64"))
              for W, b in random_params(spec64, seed)]
    X, y = random_problem(spec64, n, seed + 1)
    X = X.astype(dtype).astype("float64")
    masks = spec.sample_dropout_masks(n, np.random.default_rng(seed + 2)) if spec.uses_dropout else None
    return spec64, spec, params, X, y, masks


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("activation", "loss", "regularizer"), COMBINATIONS)
def test_gradients_and_loss_match_the_reference(other_impl, activation, loss, regularizer, dtype, error_log):
    spec64, spec, params, X, y, masks = combination_case(activation, loss, regularizer, dtype)
    reference = create("numpy", spec64)
    reference.set_params(params)
    model = create(other_impl, spec)
    model.set_params(params)

    for dropout_masks in ([None] * len(spec.hidden_sizes), masks) if masks is not None else (None,):
        expected_grads = reference.gradients(X, y, dropout_masks)
        grads = model.gradients(X, y, dropout_masks)
        assert all(g.dtype == np.dtype(dtype) for pair in grads for g in pair)
        grad_error = params_rel_error(grads, expected_grads)
        loss_error = max_rel_error(model.loss(X, y, dropout_masks), reference.loss(X, y, dropout_masks))
        error_log.record(other_impl, dtype, "gradient", grad_error, f"{activation}/{loss}/{regularizer}")
        error_log.record(other_impl, dtype, "loss", loss_error, f"{activation}/{loss}/{regularizer}")
        assert grad_error <= COMPUTATION[dtype]
        assert loss_error <= COMPUTATION[dtype]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_predictions_match_the_reference(other_impl, loss, dtype, error_log):
    spec64, spec, params, X, _, _ = combination_case("tanh", loss, "none", dtype)
    reference = create("numpy", spec64)
    reference.set_params(params)
    model = create(other_impl, spec)
    model.set_params(params)
    error = max_rel_error(model.forward(X), reference.forward(X))
    error_log.record(other_impl, dtype, "forward", error, loss)
    assert error <= COMPUTATION[dtype]
    if spec.task != "regression":
        np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), rtol=0,
                                   atol=10 * COMPUTATION[dtype])
        agree = model.predict(X) == reference.predict(X)
        # a float32 probability within rounding of 0.5 could flip; none of these cases is that close
        assert np.all(agree)


TRAJECTORIES = {
    "binary-relu": (MLPSpec((4, 8, 6, 1), "relu", "binary_crossentropy", l2=0.01), 37),
    "multiclass-tanh": (MLPSpec((5, 7, 3), "tanh", "categorical_crossentropy", l2=0.05), 50),
    "multilabel-sigmoid": (MLPSpec((3, 6, 2), "sigmoid", "binary_crossentropy", l2=0.02), 29),
    "regression-elu-mse": (MLPSpec((6, 10, 5, 2), "elu", "mse", l2=0.001), 40),
}


@pytest.mark.parametrize("case", list(TRAJECTORIES))
def test_whole_training_runs_match_the_reference(other_impl, case, error_log):
    """float64, same start and batch order, SGD with decay, momentum and L2: the same run, step by step."""
    spec, n = TRAJECTORIES[case]
    X, y = random_problem(spec, n, 5)
    config = TrainConfig(epochs=6, batch_size=8, learning_rate=0.2, lr_decay=0.9, momentum=0.8, seed=3)
    start = random_params(spec, 9, scale=0.5)
    runs = {}
    for name in ("numpy", other_impl):
        model = create(name, spec)
        model.set_params(start)
        history = model.fit(X, y, config, validation=(X[:10], y[:10]))
        runs[name] = (history, model.get_params())
    (ref_history, ref_params), (history, params) = runs["numpy"], runs[other_impl]
    param_error = params_rel_error(params, ref_params)
    loss_error = max_rel_error(history.loss, ref_history.loss)
    error_log.record(other_impl, "float64", "trajectory", max(param_error, loss_error), case)
    assert max_rel_error(flatten(ref_params), flatten(start)) > 1e-2, "training moved the parameters"
    assert param_error <= TRAJECTORY
    assert loss_error <= TRAJECTORY
    assert max_rel_error(history.val_loss, ref_history.val_loss) <= TRAJECTORY
    assert history.learning_rate == pytest.approx(ref_history.learning_rate, rel=1e-15)


@pytest.mark.parametrize("case", ["binary-relu", "regression-elu-mse"])
def test_adam_training_runs_match_the_reference(other_impl, case, error_log):
    """float64, Adam with per-epoch decay and L2 from the same start: the same run, step by step."""
    spec, n = TRAJECTORIES[case]
    X, y = random_problem(spec, n, 6)
    config = TrainConfig(epochs=5, batch_size=8, learning_rate=0.01, lr_decay=0.9, seed=2,
                         optimizer=Adam(beta1=0.8, beta2=0.99, epsilon=1e-6))
    start = random_params(spec, 4, scale=0.5)
    runs = {}
    for name in ("numpy", other_impl):
        model = create(name, spec)
        model.set_params(start)
        runs[name] = (model.fit(X, y, config), model.get_params())
    (ref_history, ref_params), (history, params) = runs["numpy"], runs[other_impl]
    error = max(params_rel_error(params, ref_params), max_rel_error(history.loss, ref_history.loss))
    error_log.record(other_impl, "float64", "adam", error, case)
    assert max_rel_error(flatten(ref_params), flatten(start)) > 1e-2, "training moved the parameters"
    assert error <= TRAJECTORY


def test_early_stopped_runs_match_the_reference(other_impl):
    """Early stopping on the same validation losses stops at the same epoch and restores the same weights."""
    spec = MLPSpec((4, 8, 1), "tanh", "binary_crossentropy", l2=0.01)
    X, y = random_problem(spec, 60, 1)
    X_val, y_val = random_problem(spec, 30, 2)
    config = TrainConfig(epochs=40, batch_size=16, learning_rate=0.5, seed=4,
                         early_stopping=EarlyStopping(patience=3, min_delta=1e-4))
    start = random_params(spec, 2, scale=0.5)
    results = {}
    for name in ("numpy", other_impl):
        model = create(name, spec)
        model.set_params(start)
        history = model.fit(X, y, config, validation=(X_val, y_val))
        results[name] = (history, model.get_params())
    (ref_history, ref_params), (history, params) = results["numpy"], results[other_impl]
    assert ref_history.stopped_epoch is not None, "the case must actually stop early"
    assert (history.best_epoch, history.stopped_epoch) == (ref_history.best_epoch, ref_history.stopped_epoch)
    assert params_rel_error(params, ref_params) <= TRAJECTORY


@pytest.mark.slow
def test_float32_training_from_the_same_start_learns_circles(other_impl):
    """The lecture's experiment in float32, every framework from the reference's seed-42 initial weights."""
    X_tr, X_te, y_tr, y_te = lecture_circles()
    spec = MLPSpec((2, 4, 4, 1), "relu", "binary_crossentropy", "he_normal", dtype="float32")
    start = create("numpy", spec, seed=42).get_params()
    model = create(other_impl, spec, seed=42)
    model.set_params(start)
    model.fit(X_tr, y_tr, TrainConfig(epochs=150, batch_size=32, learning_rate=0.3, lr_decay=0.95, seed=42))
    assert model.accuracy(X_te, y_te) >= 0.90
