"""Bad input gets a clear ValueError/TypeError naming the problem, in every implementation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from impls import EarlyStopping, MLPSpec, TrainConfig, create, load
from tests.conftest import import_or_skip

BINARY = MLPSpec((3, 4, 1), "relu", "binary_crossentropy", dropout=0.2)
MULTI = MLPSpec((3, 4, 5), "tanh", "categorical_crossentropy")
X = np.ones((4, 3))


@pytest.mark.parametrize(("spec", "X", "y", "error", "match"), [
    (BINARY, np.ones((4, 2)), [0, 1, 0, 1], ValueError, "X has 2 features, the model expects 3"),
    (BINARY, np.ones(3), [0], ValueError, "X must be 2-D"),
    (BINARY, X, [0, 1, 0], ValueError, "X has 4 samples but y has shape"),
    (BINARY, X, [0, 1, 2, 1], ValueError, "binary_crossentropy must be 0 or 1; found 2"),
    (BINARY, X, [0, 1, -1, 1], ValueError, "must be 0 or 1"),
    (MULTI, X, [0, 1, 5, 1], ValueError, r"class labels must be in \[0, 5\); found 5 at index 2"),
    (MULTI, X, [0, 1.5, 2, 1], ValueError, "must be integers"),
    (MULTI, X, np.ones((4, 5)), ValueError, "exactly one 1 per row"),
    (BINARY, np.array([[1, 2, np.nan]] * 4), [0, 1, 0, 1], ValueError, "X contains NaN or infinite"),
    (BINARY, np.array([[1, 2, np.inf]] * 4), [0, 1, 0, 1], ValueError, "X contains NaN or infinite"),
    (BINARY, X, [0, 1, np.nan, 1], ValueError, "y contains NaN"),
    (BINARY, np.array([["a", "b", "c"]] * 4), [0, 1, 0, 1], TypeError, "X must be a numeric array"),
    (BINARY, np.zeros((0, 3)), np.zeros(0), ValueError, "X has no samples"),
    (BINARY, [[1, 2, 3], [1, 2], [1, 2, 3], [1, 2, 3]], [0, 1, 0, 1], ValueError, "X is not a rectangular array"),
    (BINARY, X, [0, [1], 0, 1], ValueError, "y is not a rectangular array"),
])
def test_bad_data_is_rejected_by_every_entry_point(impl_name, spec, X, y, error, match):
    model = create(impl_name, spec)
    for call in (lambda: model.loss(X, y), lambda: model.gradients(X, y),
                 lambda: model.train_step(X, y, 0.1),
                 lambda: model.fit(X, y, TrainConfig(epochs=1, batch_size=2))):
        with pytest.raises(error, match=match):
            call()


def test_bad_features_rejected_by_predict(impl_name):
    model = create(impl_name, BINARY)
    with pytest.raises(ValueError, match="X has 2 features"):
        model.predict(np.ones((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        model.predict_proba(np.full((2, 3), np.nan))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"layer_sizes": (3, 0, 1)}, ValueError, "layer sizes must be positive"),
    ({"layer_sizes": (3, -2, 1)}, ValueError, "layer sizes must be positive"),
    ({"layer_sizes": (3,)}, ValueError, "at least an input and an output"),
    ({"layer_sizes": (3, 2.5, 1)}, TypeError, "must hold ints"),
    ({"layer_sizes": (3, 4, 1), "hidden_activation": "swish"}, ValueError, "unknown activation 'swish'"),
    ({"layer_sizes": (3, 4, 1), "initializer": "glorot"}, ValueError, "unknown initializer 'glorot'"),
    ({"layer_sizes": (3, 4, 1), "loss": "hinge"}, ValueError, "unknown loss 'hinge'"),
    ({"layer_sizes": (3, 4, 1), "dtype": "float16"}, ValueError, "unknown dtype 'float16'"),
    ({"layer_sizes": (3, 4, 1), "dropout": 1.0}, ValueError, r"dropout rate must be in \[0, 1\)"),
    ({"layer_sizes": (3, 4, 1), "dropout": -0.1}, ValueError, r"dropout rate must be in \[0, 1\)"),
    ({"layer_sizes": (3, 4, 4, 1), "dropout": (0.1,)}, ValueError, "one rate per hidden layer"),
    ({"layer_sizes": (3, 4, 1), "l2": -1.0}, ValueError, "l2 must be a finite number >= 0"),
    ({"layer_sizes": (3, 4, 1), "l1": float("nan")}, ValueError, "l1 must be a finite number"),
    ({"layer_sizes": (3, 4, 1), "loss": "categorical_crossentropy"}, ValueError, "at least 2 output units"),
])
def test_bad_spec_is_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLPSpec(**kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"epochs": 0}, "epochs must be"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"learning_rate": 0.0}, r"learning_rate must be in \(0, inf\)"),
    ({"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\]"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
])
def test_bad_train_config_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_bad_early_stopping_is_rejected():
    with pytest.raises(ValueError, match="patience must be"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="min_delta must be"):
        EarlyStopping(min_delta=-1.0)


def test_early_stopping_without_validation_is_rejected(impl_name):
    model = create(impl_name, BINARY)
    with pytest.raises(ValueError, match="early stopping monitors the validation loss"):
        model.fit(X, [0, 1, 0, 1], TrainConfig(epochs=2, early_stopping=EarlyStopping()))


@pytest.mark.parametrize(("params", "match"), [
    ("transpose", r"params\[0\] has W\(4, 3\).*needs W\(3, 4\) \(fan_in, fan_out\)"),
    ("short", "list of 2 \\(W, b\\) pairs, got 1"),
    ("bias", r"params\[1\] has W\(4, 1\), b\(2,\)"),
    ("nan", r"params\[0\] W contains NaN"),
])
def test_set_params_rejects_wrong_shapes(impl_name, params, match):
    model = create(impl_name, BINARY)
    good = model.get_params()
    bad = {
        "transpose": [(good[0][0].T, good[0][1]), good[1]],
        "short": good[:1],
        "bias": [good[0], (good[1][0], np.zeros(2))],
        "nan": [(np.full_like(good[0][0], np.nan), good[0][1]), good[1]],
    }[params]
    with pytest.raises(ValueError, match=match):
        model.set_params(bad)
    assert all(np.array_equal(W, W2) for (W, _), (W2, _) in zip(good, model.get_params())), "model left unchanged"


def test_dropout_masks_of_wrong_shape_are_rejected(impl_name):
    model = create(impl_name, BINARY)
    with pytest.raises(ValueError, match=r"dropout mask 0 must have shape \(4, 4\)"):
        model.gradients(X, [0, 1, 0, 1], [np.ones((4, 3))])
    with pytest.raises(ValueError, match="one entry per hidden layer"):
        model.gradients(X, [0, 1, 0, 1], [np.ones((4, 4))] * 2)
    with pytest.raises(ValueError, match="only 0/1"):
        model.gradients(X, [0, 1, 0, 1], [np.full((4, 4), 0.5)])


def test_unknown_implementation_is_named():
    with pytest.raises(ValueError, match="unknown implementation 'mxnet'"):
        load("mxnet")


def test_divergence_is_an_error_not_a_nan_loss(impl_name):
    spec = MLPSpec((3, 8, 1), "identity", "mse", "normal", init_scale=3.0)
    rng = np.random.default_rng(0)
    X_big, y_big = rng.normal(size=(32, 3)) * 100, rng.normal(size=32) * 100
    from impls import TrainingDiverged
    with pytest.raises(TrainingDiverged, match="training diverged in epoch"):
        create(impl_name, spec).fit(X_big, y_big, TrainConfig(epochs=50, batch_size=8, learning_rate=1.0))


# ---- values beyond the dtype, divergence, seeds --------------------------------------------

FLOAT32 = MLPSpec((2, 4, 1), "relu", "binary_crossentropy", dtype="float32")


def test_values_beyond_float32_are_rejected_after_the_cast(impl_name):
    """1e39 is finite in float64 and inf in float32: checked after the conversion, with the dtype's range named."""
    model = create(impl_name, FLOAT32)
    before = model.get_params()
    big = [[1e39, 1.0], [-1e39, 1.0]]
    huge_weights = [(np.full((2, 4), 1e39), np.zeros(4)), (np.ones((4, 1)), np.zeros(1))]
    for call in (lambda: model.forward(big), lambda: model.loss(big, [0, 1]),
                 lambda: model.train_step(big, [0, 1], 0.1), lambda: model.set_params(huge_weights)):
        with pytest.raises(ValueError, match=r"beyond float32's range \(\|x\| <= 3.403e\+38\)"):
            call()
    assert all(np.array_equal(a, b) for pa, pb in zip(before, model.get_params()) for a, b in zip(pa, pb))


def test_a_loss_that_overflows_the_dtype_is_an_error_not_inf(impl_name):
    spec = MLPSpec((2, 3, 1), "relu", "mse", dtype="float32")
    model = create(impl_name, spec)
    model.set_params([(np.ones((2, 3)), np.zeros(3)), (np.ones((3, 1)), np.zeros(1))])
    with pytest.raises(ValueError, match=r"non-finite loss \(NaN or inf\) in float32"):
        model.loss([[1e30, 1e30]], [0.0])


def test_a_diverging_step_restores_the_parameters(impl_name):
    spec = MLPSpec((3, 8, 1), "identity", "mse", "normal", init_scale=3.0)
    model = create(impl_name, spec)
    X_big, y_big = np.full((4, 3), 1e160), np.zeros(4)  # squared errors beyond float64's range
    before = model.get_params()
    from impls import TrainingDiverged
    with pytest.raises(TrainingDiverged, match="restored to their values before the step"):
        model.train_step(X_big, y_big, learning_rate=1.0)
    assert all(np.array_equal(a, b) for pa, pb in zip(before, model.get_params()) for a, b in zip(pa, pb))


def test_divergence_in_fit_leaves_the_last_finite_parameters(impl_name):
    spec = MLPSpec((3, 8, 1), "identity", "mse", "normal", init_scale=3.0)
    rng = np.random.default_rng(0)
    X_big, y_big = rng.normal(size=(32, 3)) * 100, rng.normal(size=32) * 100
    model = create(impl_name, spec)
    from impls import TrainingDiverged
    with pytest.raises(TrainingDiverged, match=r"epoch (\d+).*restored to their values before epoch \1"):
        model.fit(X_big, y_big, TrainConfig(epochs=50, batch_size=8, learning_rate=1.0))
    assert all(np.all(np.isfinite(a)) for pair in model.get_params() for a in pair)


@pytest.mark.parametrize(("seed", "error"), [(-1, ValueError), (2**32, ValueError), (2**63, ValueError),
                                             (1.5, TypeError), (True, TypeError), ("3", TypeError)])
def test_one_seed_rule_for_every_implementation(impl_name, seed, error):
    with pytest.raises(error, match=r"seed must be an int in \[0, 2\*\*32\)"):
        create(impl_name, BINARY, seed=seed)
    with pytest.raises(error, match=r"TrainConfig.seed must be an int in \[0, 2\*\*32\)"):
        TrainConfig(seed=seed)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"learning_rate": "0.1"}, TypeError, "learning_rate must be a number"),
    ({"shuffle": "no"}, TypeError, "shuffle must be True or False"),
    ({"epochs": True}, ValueError, "epochs must be an int"),
    ({"batch_size": True}, ValueError, "batch_size must be an int"),
    ({"early_stopping": 3}, TypeError, "early_stopping must be EarlyStopping"),
])
def test_train_config_types_are_checked_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**kwargs)


def test_numpy_scalars_are_accepted_as_hyper_parameters():
    config = TrainConfig(momentum=np.float32(0.5), learning_rate=np.float64(0.1), epochs=np.int64(3))
    assert config.optimizer.momentum == 0.5 and config.epochs == 3 and type(config.epochs) is int


# ---- framework tensors as data -------------------------------------------------------------

TANH = MLPSpec((3, 4, 2), "tanh", "categorical_crossentropy")


def test_a_torch_tensor_that_requires_grad_is_read_as_data(impl_name):
    """Tensors with ``requires_grad=True`` (and ``nn.Parameter``s) are detached and read, in every entry point."""
    torch = import_or_skip("torch")
    rng = np.random.default_rng(0)
    X_np, y_np = rng.normal(size=(6, 3)), rng.integers(0, 2, 6).astype(np.float64)
    X_t, y_t = torch.tensor(X_np, requires_grad=True), torch.tensor(y_np, requires_grad=True)
    model, twin = create(impl_name, TANH, seed=1), create(impl_name, TANH, seed=1)
    start = [(W + 0.1, b + 0.1) for W, b in model.get_params()]
    params = [(torch.nn.Parameter(torch.tensor(W)), torch.tensor(b, requires_grad=True)) for W, b in start]
    model.set_params(params)
    twin.set_params(start)
    assert all(np.array_equal(a, b) for pa, pb in zip(model.get_params(), twin.get_params()) for a, b in zip(pa, pb))
    np.testing.assert_array_equal(model.forward(X_t), twin.forward(X_np))
    assert model.loss(X_t, y_t) == twin.loss(X_np, y_np)
    for pair, pair_np in zip(model.gradients(X_t, y_t), twin.gradients(X_np, y_np)):
        for g, g_np in zip(pair, pair_np):
            np.testing.assert_array_equal(g, g_np)
    assert model.train_step(X_t, y_t, 0.1) == twin.train_step(X_np, y_np, 0.1)
    config = TrainConfig(epochs=1, batch_size=3)
    assert model.fit(X_t, y_t, config).loss == twin.fit(X_np, y_np, config).loss
    assert X_t.grad is None and y_t.grad is None and X_t.requires_grad, "the caller's tensors are left as they were"
    np.testing.assert_array_equal(X_t.detach().numpy(), X_np)
    for (W_t, b_t), (W, b) in zip(params, start):  # training the model did not write into the caller's tensors
        np.testing.assert_array_equal(W_t.detach().numpy(), W)
        np.testing.assert_array_equal(b_t.detach().numpy(), b)


class _TensorOn:
    """What a tensor on an accelerator shows of itself: a ``detach`` method and a ``device`` with a ``type``."""

    def __init__(self, kind: str) -> None:
        self.device = type("Device", (), {"type": kind, "__str__": lambda _: f"{kind}:0"})()

    def detach(self) -> _TensorOn:
        return self

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"can't convert {self.device.type}:0 device type tensor to numpy")


@pytest.mark.parametrize("where", ["X", "y", "params"])
def test_a_tensor_on_an_accelerator_is_refused_by_name(impl_name, where):
    model = create(impl_name, TANH)
    before = model.get_params()
    X_ok, y_ok = np.ones((2, 3)), [0, 1]
    call = {"X": lambda: model.loss(_TensorOn("cuda"), y_ok),
            "y": lambda: model.fit(X_ok, _TensorOn("cuda"), TrainConfig(epochs=1)),
            "params": lambda: model.set_params([(before[0][0], _TensorOn("cuda")), before[1]])}[where]
    what = {"X": "X", "y": "y", "params": "params[0] b"}[where]
    with pytest.raises(TypeError, match=re.escape(f"{what} is a tensor on device cuda:0; the models read host "
                                                  "memory: pass it as tensor.detach().cpu()")):
        call()
    assert all(np.array_equal(a, b) for pa, pb in zip(before, model.get_params()) for a, b in zip(pa, pb))


def test_tensors_numpy_cannot_hold_are_refused_by_name():
    torch = import_or_skip("torch")
    with pytest.raises(TypeError, match="X is a tensor on device meta, which holds no values"):
        TANH.check_X(torch.ones((2, 3), device="meta"))
    with pytest.raises(TypeError, match=r"X \(Tensor\) cannot be read as a NumPy array: .*BFloat16"):
        TANH.check_X(torch.ones((2, 3), dtype=torch.bfloat16))
