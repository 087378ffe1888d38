"""Keras 3 defaults that differ from the spec, pinned with the measured difference, and the mapping that fixes each.

Runs on the backend of the process (``KERAS_BACKEND``, default TensorFlow); where a default
depends on the backend, the expectation says so.  The last tests run the equivalence suite
on the JAX and torch backends in subprocesses (a backend is fixed at keras's first import).
What every implementation shares (fast modes, dropout per seed, gradients at the kink) is in
``tests/test_modes.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from impls import EarlyStopping, MLPSpec, TrainConfig, batch_order, create
from impls.spec import SGD, Adam, init_rule
from tests.conftest import import_or_skip
from tests.helpers import max_rel_error, random_params, random_problem
from tests.tolerances import COMPUTATION, EXACT_STEP, TRAJECTORY

keras = import_or_skip("keras")
keras_mlp = import_or_skip("impls.keras_mlp")
keras_backend = import_or_skip("impls.keras_backend")
ops = keras.ops

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[2]
EXACT = COMPUTATION["float64"]
"""A float64 mapping agrees within the equivalence tests' tolerance; what it fixes (a float32 rounding, ~3e-8) not."""
# Keras's mean-based losses compute float64 in float32 on JAX (test_keras_mean_losses_are_float32_on_jax...)
NATIVE_LOSS_REL = COMPUTATION["float32"] if BACKEND == "jax" else EXACT
SAMPLE_STD = 0.02
"""Relative tolerance on the std of 400k draws (sampling error ~0.2%; the formulas differ by 2x or more)."""
needs_float64 = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras on torch computes float64 in float32 "
    "(test_torch_backend_matmul_computes_float64_in_float32)")


def grad(f, x: np.ndarray, dtype: str = "float64") -> np.ndarray:
    """Gradient of ``sum(f(v))`` at ``x`` through the backend's autodiff."""
    with keras_backend.floatx(dtype):
        v = keras.Variable(np.asarray(x, dtype=dtype), dtype=dtype)
    _, (g,) = keras_backend.value_and_gradients(lambda: ops.sum(f(v.value)), [v])
    return np.asarray(ops.convert_to_numpy(g))


def value(tensor) -> float:
    return float(ops.convert_to_numpy(tensor))


@pytest.fixture(autouse=True)
def _float64_on_jax():
    keras_backend.enable_float64()  # the tests below use float64 keras tensors directly


# ---- batch order -------------------------------------------------------------------


class Recorder(keras.layers.Layer):
    """Identity layer that records the first feature of every training batch (eager runs only)."""

    def __init__(self, seen: list, **kwargs) -> None:
        super().__init__(**kwargs)
        self.record = seen.append  # a list attribute would be replaced by Keras's tracked copy

    def call(self, x, training=False):
        if training:
            self.record(np.asarray(ops.convert_to_numpy(x))[:, 0].astype(int).tolist())
        return x


def test_keras_fit_shuffles_itself_and_validation_split_takes_the_last_samples_unshuffled():
    """Default: fit(shuffle=True) reorders with Keras's RNG; validation_split holds out the LAST 25%."""
    seen: list = []
    model = keras.Sequential([keras.Input((1,)), Recorder(seen), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e-9), loss="mse", run_eagerly=True)
    X = np.arange(16, dtype="float32")[:, None]
    keras.utils.set_random_seed(0)
    model.fit(X, np.zeros((16, 1)), batch_size=12, epochs=1, validation_split=0.25, verbose=0)
    assert sorted(seen[0]) == list(range(12)), "the held-out samples are 12..15, the last ones"
    assert seen[0] != list(range(12)), "Keras shuffled the training samples"


def test_fit_serves_the_spec_batch_order(monkeypatch):
    """The mapping: the model's fit trains on batch_order's batches, epoch by epoch, last partial batch kept.

    The targets are the sample numbers; run eagerly, the loss records the targets of every training
    step (once the epochs have begun: building the model calls the loss on symbolic tensors).
    """
    served: list[list[int]] = []
    training = []
    original_loss, original_begin = keras_mlp.DATA_LOSSES["mse"], keras_backend.SpecEpochs.on_epoch_begin

    def recording(z, Y):
        if training:
            served.append(np.asarray(ops.convert_to_numpy(Y))[:, 0].astype(int).tolist())
        return original_loss(z, Y)

    def begin(self, epoch, logs=None):
        training.append(epoch)
        original_begin(self, epoch, logs)

    monkeypatch.setitem(keras_mlp.DATA_LOSSES, "mse", recording)
    monkeypatch.setattr(keras_backend.SpecEpochs, "on_epoch_begin", begin)
    spec = MLPSpec((3, 4, 1), "tanh", "mse", dtype="float32")
    X, _ = random_problem(spec, 11, 0)
    model = create("keras", spec)
    model.model.run_eagerly = True
    model.fit(X, np.arange(11), TrainConfig(epochs=3, batch_size=4, learning_rate=1e-9, seed=5))
    assert served == [idx.tolist() for epoch in (1, 2, 3) for idx in batch_order(11, 4, 5, epoch)]
    assert [len(b) for b in served[-3:]] == [4, 4, 3], "last partial batch kept"


def test_py_dataset_on_epoch_end_is_called_once_more_than_there_are_epochs():
    """Why the order follows fit's epoch index (SpecEpochs): fit calls on_epoch_end once before the first epoch too."""

    class Counting(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.ends = 0

        def __len__(self) -> int:
            return 2

        def __getitem__(self, index):
            return np.ones((2, 1)), np.zeros((2, 1))

        def on_epoch_end(self) -> None:
            self.ends += 1

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    data = Counting()
    model.fit(data, epochs=3, verbose=0)
    assert data.ends == 4


# ---- penalty -----------------------------------------------------------------------


def test_keras_l2_is_twice_the_spec_penalty_and_l2_half_maps_it():
    W = np.random.default_rng(0).normal(size=(4, 3))
    spec_penalty = 0.5 * 0.25 * np.sum(W**2)
    # 0.25 is exact in float32 too (see the next test for other factors on TensorFlow)
    keras_l2 = value(keras.regularizers.L2(0.25)(ops.convert_to_tensor(W)))
    assert keras_l2 == pytest.approx(2 * spec_penalty, rel=EXACT)
    native = value(keras.regularizers.L2(0.25 / 2)(ops.convert_to_tensor(W)))
    assert native == pytest.approx(spec_penalty, rel=EXACT), "native_fit's L2(l2 / 2)"
    mapped = keras_mlp.kernel_penalty(MLPSpec((4, 3), l2=0.25), ops.convert_to_tensor(W))
    assert value(mapped) == pytest.approx(spec_penalty, rel=EXACT)
    both = keras_mlp.kernel_penalty(MLPSpec((4, 3), l1=0.03, l2=0.25), ops.convert_to_tensor(W))
    assert value(both) == pytest.approx(0.03 * np.abs(W).sum() + spec_penalty, rel=EXACT)


def test_keras_l2_factor_is_float32_rounded_on_tensorflow_the_mapping_is_exact():
    """L2 multiplies by ops.cast(python float, float64), which goes through float32 on TensorFlow."""
    W = ops.convert_to_tensor(np.ones((2, 2)), dtype="float64")
    native = value(keras.regularizers.L2(0.9)(W))
    assert native == pytest.approx(4 * (float(np.float32(0.9)) if BACKEND == "tensorflow" else 0.9), rel=EXACT)
    assert value(keras_mlp.kernel_penalty(MLPSpec((2, 2), l2=1.8), W)) == pytest.approx(3.6, rel=EXACT)
    assert value(keras_mlp.kernel_penalty(MLPSpec((2, 2), l1=0.9), W)) == pytest.approx(3.6, rel=EXACT)
    assert value(keras_backend.exact(0.9, "float64")) == 0.9


def test_l1_gradient_at_zero_is_zero_after_mapping():
    """keras.regularizers.L1 differentiates |w| with the backend's abs: JAX gives 1 at w = 0, the spec 0."""
    w = np.array([0.0, -2.0, 3.0])
    native = grad(keras.regularizers.L1(1.0), w)
    assert native[0] == (1.0 if BACKEND == "jax" else 0.0)
    np.testing.assert_array_equal(grad(lambda W: keras_mlp.kernel_penalty(MLPSpec((3, 1), l1=1.0), W), w),
                                  [0.0, -1.0, 1.0])


@needs_float64
def test_fit_loss_includes_the_penalty():
    """Keras's compute_loss adds model.losses (the kernel regularizers) to the loss fit reports."""
    spec = MLPSpec((3, 4, 1), "tanh", "binary_crossentropy", l1=0.05, l2=0.3)
    X, y = random_problem(spec, 10, 1)
    model = create("keras", spec)
    model.set_params(random_params(spec, 2))
    before = model.loss(X, y)
    no_penalty = create("keras", MLPSpec((3, 4, 1), "tanh", "binary_crossentropy"))
    no_penalty.set_params(random_params(spec, 2))
    assert before - no_penalty.loss(X, y) > 0.1
    history = model.fit(X, y, TrainConfig(epochs=1, batch_size=None, learning_rate=0.1))
    assert history.loss[0] == pytest.approx(before, rel=EXACT), "full batch, pre-update, penalty included"


# ---- losses ------------------------------------------------------------------------


@needs_float64
def test_probability_losses_clip_at_epsilon_logit_losses_do_not():
    """BCE on probabilities clips at 1e-7: at logit 20 with label 0 the loss is -log(1e-7) = 16.1, not 20."""
    z = np.array([[20.0]])
    y = np.array([[0.0]])
    exact = float(np.logaddexp(0, 20.0))
    from_probs = value(keras.losses.BinaryCrossentropy(dtype="float64")(y, 1 / (1 + np.exp(-z))))
    assert from_probs == pytest.approx(-np.log(1e-7), rel=COMPUTATION["float32"])
    assert exact - from_probs > 3.8
    spec = MLPSpec((1, 1), loss="binary_crossentropy")
    assert value(keras_mlp.data_loss(spec, ops.convert_to_tensor(z), ops.convert_to_tensor(y))) == pytest.approx(
        exact, rel=EXACT)


@needs_float64
def test_loss_reductions_are_the_spec_means():
    """sum_over_batch_size: BCE/MSE average over every element, (sparse) CCE over samples: native_fit's losses
    (on the output activation) are the spec's means."""
    rng = np.random.default_rng(0)
    z, Y = rng.normal(size=(5, 3)), rng.integers(0, 2, size=(5, 3)).astype(float)
    labels = rng.integers(0, 3, size=5)

    def loss(keras_loss, y, logits):
        return value(keras_loss(y, logits))

    assert loss(keras.losses.BinaryCrossentropy(from_logits=True, dtype="float64"), Y, z) == pytest.approx(
        np.mean(np.logaddexp(0, z) - Y * z), rel=NATIVE_LOSS_REL)
    log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
    assert loss(sparse, labels, z) == pytest.approx(-np.mean(log_softmax[np.arange(5), labels]), rel=NATIVE_LOSS_REL)
    assert loss(keras.losses.MeanSquaredError(dtype="float64"), Y, z) == pytest.approx(np.mean((z - Y) ** 2),
                                                                                       rel=NATIVE_LOSS_REL)


@needs_float64
def test_keras_mean_losses_are_float32_on_jax_the_mapping_is_exact():
    """ops.mean (and so BinaryCrossentropy/MSE/MAE over the last axis) computes float64 in float32 on JAX."""
    z, y = np.array([[0.3], [1.7]]), np.array([[1.0], [0.0]])
    exact = np.mean(np.logaddexp(0, z) - y * z)
    native = value(keras.losses.BinaryCrossentropy(from_logits=True, dtype="float64")(y, z))
    mean = value(ops.mean(ops.convert_to_tensor(np.array([0.1, 0.2, 0.7]))))
    if BACKEND == "jax":
        assert abs(native - exact) / exact > EXACT
        assert abs(mean - 1 / 3) > EXACT
    else:
        assert native == pytest.approx(exact, rel=EXACT)
    for loss, expected in (("binary_crossentropy", exact), ("mse", np.mean((z - y) ** 2)),
                           ("mae", np.mean(np.abs(z - y)))):
        mapped = keras_mlp.data_loss(MLPSpec((1, 1), loss=loss), ops.convert_to_tensor(z), ops.convert_to_tensor(y))
        assert value(mapped) == pytest.approx(expected, rel=EXACT), loss


# ---- dtype -------------------------------------------------------------------------


@needs_float64
def test_keras_computes_in_floatx_unless_told_and_the_model_restores_floatx():
    """Losses, optimizer learning rates and metrics default to floatx (float32), even on float64 inputs."""
    assert keras.config.floatx() == "float32"
    z = np.array([[0.3]])
    assert ops.convert_to_numpy(keras.losses.BinaryCrossentropy(from_logits=True)(z * 0, z)).dtype == np.float32
    assert ops.convert_to_numpy(keras.losses.BinaryCrossentropy(from_logits=True, dtype="float64")(z * 0, z)).dtype \
        == np.float64
    assert keras.optimizers.SGD(0.1).learning_rate.dtype == "float32"
    assert keras.metrics.Mean().dtype == "float32"
    with keras_backend.floatx("float64"):
        assert keras.optimizers.SGD(0.1).learning_rate.dtype == "float64"
        assert keras.metrics.Mean().dtype == "float64"
    model = create("keras", MLPSpec((3, 4, 1), dtype="float64"))
    assert keras.config.floatx() == "float32", "floatx restored after construction"
    assert all(v.dtype == "float64" for v in model.model.weights)
    assert model.model.optimizer.learning_rate.dtype == "float64"
    assert all(layer.dtype_policy.compute_dtype == "float64" for layer in model.model.layers)
    assert keras.layers.Dense(1).dtype_policy.name == "float32", "the global dtype policy restored too"


def test_global_dtype_policy_is_fixed_by_floatx_when_first_asked_the_mapping_restores_it():
    """keras.config.dtype_policy() is derived from floatx once, when a layer first asks for it: asked while floatx
    is float64, every later layer is float64.  keras_backend.floatx sets and restores both (fresh processes)."""
    native = ("import keras; keras.config.set_floatx('float64'); keras.layers.Dense(1); "
              "keras.config.set_floatx('float32'); print(keras.layers.Dense(1).dtype_policy.name)")
    mapped = ("import keras; from impls.keras_backend import floatx\n"
              "with floatx('float64'): keras.layers.Dense(1)\n"
              "print(keras.layers.Dense(1).dtype_policy.name)")
    for code, expected in ((native, "float64"), (mapped, "float32")):
        result = run_on_backend(BACKEND, ["-c", code], timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split()[-1] == expected


def test_gradients_are_float64_for_float64_models():
    spec = MLPSpec((3, 4, 2), "relu", "mse", dtype="float64")
    X, y = random_problem(spec, 5, 0)
    grads = create("keras", spec).gradients(X, y)
    assert all(g.dtype == np.float64 for pair in grads for g in pair)


def test_ops_tanh_is_float32_on_jax_the_mapping_keeps_float64():
    """Keras promotes with result_type, which maps 64-bit to 32-bit off TensorFlow: ops.tanh(float64) on JAX."""
    z = np.array([-30.0, -2.0, -1e-9, 0.0, 1e-9, 0.5, 3.0])
    native = ops.convert_to_numpy(ops.tanh(ops.convert_to_tensor(z))).dtype
    assert native == (np.float32 if BACKEND == "jax" else np.float64)
    mapped = np.asarray(ops.convert_to_numpy(keras_backend.tanh(ops.convert_to_tensor(z))))
    assert mapped.dtype == np.float64
    assert max_rel_error(mapped, np.tanh(z)) <= EXACT
    t = np.asarray(ops.convert_to_numpy(keras_backend.float64_tanh(ops.convert_to_tensor(z))))
    assert max_rel_error(t, np.tanh(z)) <= EXACT
    assert max_rel_error(grad(keras_backend.float64_tanh, z), 1 - np.tanh(z) ** 2) <= EXACT


# ---- initializers ------------------------------------------------------------------


@needs_float64
def test_keras_he_and_glorot_normal_are_truncated_the_mapping_is_not():
    """HeNormal cuts at 2 (corrected) std: max|w| <= 2 std; the spec's plain normal exceeds 4 std in 400k draws."""
    shape = (400, 1000)
    for native, std in ((keras.initializers.HeNormal(seed=1), np.sqrt(2 / 400)),
                        (keras.initializers.GlorotNormal(seed=1), np.sqrt(2 / 1400))):
        W = np.asarray(ops.convert_to_numpy(native(shape, dtype="float64")))
        assert W.std() == pytest.approx(std, rel=SAMPLE_STD), "std-corrected: the std is still the formula's"
        assert np.abs(W).max() <= 2 * std / 0.87962566103423978 * (1 + EXACT)
    mapped = keras_mlp.kernel_initializer(init_rule("he_normal", *shape), 1)
    W = np.asarray(ops.convert_to_numpy(mapped(shape, dtype="float64")))
    assert W.std() == pytest.approx(np.sqrt(2 / 400), rel=SAMPLE_STD)
    assert np.abs(W).max() > 4 * np.sqrt(2 / 400)


def test_dense_default_initializer_is_glorot_uniform_the_model_sets_the_spec():
    """keras.layers.Dense's default kernel initializer is glorot_uniform, whatever the spec says."""
    assert isinstance(keras.layers.Dense(3).kernel_initializer, keras.initializers.GlorotUniform)
    model = create("keras", MLPSpec((4, 3), "relu", "mse", "he_normal"))
    initializer = model._dense[0].kernel_initializer
    assert isinstance(initializer, keras.initializers.RandomNormal)
    assert (initializer.mean, initializer.stddev) == (0.0, init_rule("he_normal", 4, 3).scale)


# ---- activations at the kink ---------------------------------------------------------


def test_keras_leaky_relu_derivative_at_zero_is_one_on_jax():
    """Native leaky_relu on JAX has derivative 1 at 0 (jnp.where(z >= 0, ...)); the spec takes the slope.

    The mapping (HIDDEN_ACTIVATIONS) is checked through the model, in every mode, by
    tests/test_modes.py::test_gradients_at_the_kink_and_at_zero_weights_match_the_reference.
    """
    native = grad(lambda t: keras.activations.leaky_relu(t, negative_slope=0.1), np.array([0.0, -1.0, 1.0]))
    assert native[0] == pytest.approx(1.0 if BACKEND == "jax" else 0.1)


# ---- SGD ---------------------------------------------------------------------------


def sgd_two_steps(momentum: float, lr1: float, lr2: float) -> float:
    """w after two keras.optimizers.SGD steps on gradient 1 from w = 0, the rate changed between them (float64)."""
    with keras_backend.floatx("float64"):
        w = keras.Variable(np.zeros(1), dtype="float64")
        optimizer = keras.optimizers.SGD(learning_rate=lr1, momentum=momentum)
    optimizer.apply_gradients([(ops.ones((1,), dtype="float64"), w)])
    optimizer.learning_rate = lr2
    optimizer.apply_gradients([(ops.ones((1,), dtype="float64"), w)])
    return float(np.asarray(ops.convert_to_numpy(w))[0])


def test_keras_sgd_momentum_is_the_spec_formula_with_a_float32_momentum_unless_float64():
    """v <- mu v - lr g; w <- w + v (velocity stores lr-scaled steps): w2 = -lr1 - (mu lr1 + lr2), sgd_update's.

    A Python-float momentum reaches the update through ops.cast, i.e. float32, on TensorFlow
    (0.9 -> 0.8999999761581421, 2.6e-8 relative); KerasMLP passes numpy.float64.
    """
    g, zero = ops.ones((1,), dtype="float64"), ops.zeros((1,), dtype="float64")
    w, v = keras_mlp.sgd_update(zero, zero, g, 0.5, SGD(0.9))
    w, v = keras_mlp.sgd_update(w, v, g, 0.1, SGD(0.9))
    exact = -0.5 - (0.9 * 0.5 + 0.1)
    assert float(ops.convert_to_numpy(w)[0]) == pytest.approx(exact, rel=EXACT)
    assert sgd_two_steps(np.float64(0.9), 0.5, 0.1) == pytest.approx(exact, rel=EXACT)
    python_float = sgd_two_steps(0.9, 0.5, 0.1)
    if BACKEND != "tensorflow":
        assert python_float == pytest.approx(exact, rel=EXACT)
    else:
        assert python_float == pytest.approx(-0.5 - (float(np.float32(0.9)) * 0.5 + 0.1), rel=EXACT)
        assert abs(python_float - exact) > EXACT


# ---- Adam --------------------------------------------------------------------------


def adam_steps(optimizer, gradients: list[float]) -> float:
    """w after Adam steps on the given scalar gradients from w = 0 (float64)."""
    with keras_backend.floatx("float64"):
        w = keras.Variable(np.zeros(1), dtype="float64")
    for g in gradients:
        optimizer.apply_gradients([(ops.convert_to_tensor(np.array([g])), w)])
    return float(np.asarray(ops.convert_to_numpy(w))[0])


def spec_adam(gradients: list[float], lr: float, beta1: float, beta2: float, epsilon: float) -> float:
    """Kingma & Ba, Algorithm 1, written out: epsilon on the bias-corrected sqrt(v_hat)."""
    w = m = v = 0.0
    for t, g in enumerate(gradients, start=1):
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        w -= lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + epsilon)
    return w


@needs_float64
def test_keras_adam_puts_epsilon_before_the_bias_correction_spec_adam_does_not():
    """Keras: lr sqrt(1 - b2^t)/(1 - b1^t) m / (sqrt(v) + eps) = the spec with eps / sqrt(1 - b2^t).

    With gradients of size 1e-3 and eps 1e-3 the difference is large; SpecAdam (adam_update) matches the paper.
    The default epsilon differs too: Keras 1e-7, the paper (and the spec, and torch) 1e-8.
    """
    assert keras.optimizers.Adam().epsilon == 1e-7
    grads, rule = [1e-3, -2e-3, 5e-4], Adam(beta1=0.9, beta2=0.999, epsilon=1e-3)
    expected = spec_adam(grads, 0.1, 0.9, 0.999, 1e-3)
    with keras_backend.floatx("float64"):
        native = keras.optimizers.Adam(learning_rate=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-3)
        mapped = keras_mlp.SpecAdam(rule)
        mapped.learning_rate = 0.1
    native_w, mapped_w = adam_steps(native, grads), adam_steps(mapped, grads)
    assert abs(native_w - expected) > 0.5 * abs(expected)
    assert abs(mapped_w - expected) <= EXACT_STEP
    zero = ops.zeros((1,), dtype="float64")
    w, _, _ = keras_mlp.adam_update(zero, zero, zero, ops.convert_to_tensor(np.array([grads[0]])), 0.1, 1, rule)
    assert abs(float(ops.convert_to_numpy(w)[0]) - spec_adam(grads[:1], 0.1, 0.9, 0.999, 1e-3)) <= EXACT_STEP


# ---- epoch loss ----------------------------------------------------------------------


@needs_float64
def test_epoch_loss_is_the_batch_size_weighted_mean_of_pre_update_objectives():
    """Keras's loss tracker weights each batch's loss by its size (23 = 5+5+5+5+3): the spec's epoch loss."""
    spec = MLPSpec((3, 5, 2), "tanh", "binary_crossentropy", l2=0.01)
    X, y = random_problem(spec, 23, 3)
    config = TrainConfig(epochs=1, batch_size=5, learning_rate=0.4, seed=11)
    fitted, stepped = create("keras", spec), create("keras", spec)
    history = fitted.fit(X, y, config)
    batches = batch_order(23, 5, 11, 1)
    losses = [stepped.train_step(X[i], y[i], 0.4) for i in batches]
    weighted = np.average(losses, weights=[len(i) for i in batches])
    assert max_rel_error(history.loss[0], weighted) <= TRAJECTORY
    assert max_rel_error(history.loss[0], np.mean(losses)) > TRAJECTORY, "unweighted would differ"


# ---- early stopping ----------------------------------------------------------------


def test_keras_early_stopping_defaults_and_min_delta_comparison():
    """Default restore_best_weights=False (spec: restore); Keras tests val + min_delta < best."""
    assert keras.callbacks.EarlyStopping().restore_best_weights is False
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", min_delta=0.1)
    stopper._set_monitor_op()
    spec_rule = EarlyStopping(min_delta=0.1)
    for val in (0.5, 0.85, 0.95, 1.0, 1.2):
        assert bool(stopper._is_improvement(val, 1.0)) == spec_rule.improves(val, 1.0), val


@needs_float64
def test_restore_best_weights_also_restores_when_training_ends_without_stopping():
    """Keras 3.15 restores in on_train_end whether it stopped early or not, as the spec asks."""
    spec = MLPSpec((3, 6, 1), "relu", "binary_crossentropy")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(float)
    model = create("keras", spec, seed=5)
    model.set_params(random_params(spec, 5, scale=0.3))
    config = TrainConfig(epochs=4, batch_size=8, learning_rate=0.5, seed=2,
                         early_stopping=EarlyStopping(patience=10, restore_best=True))
    history = model.fit(X, y, config, validation=(X, 1 - y))
    assert history.stopped_epoch is None and history.epochs_run == 4
    assert history.best_epoch == 1
    assert model.loss(X, 1 - y) == pytest.approx(history.val_loss[0], rel=EXACT)


# ---- dropout -----------------------------------------------------------------------


def test_keras_dropout_is_inverted_seeded_and_off_at_inference():
    x = np.ones((50, 40))
    out = np.asarray(ops.convert_to_numpy(keras.layers.Dropout(0.25, seed=3, dtype="float64")(x, training=True)))
    assert set(np.unique(out)) == {0.0, 1 / 0.75}
    again = np.asarray(ops.convert_to_numpy(keras.layers.Dropout(0.25, seed=3, dtype="float64")(x, training=True)))
    np.testing.assert_array_equal(out, again)
    np.testing.assert_array_equal(ops.convert_to_numpy(keras.layers.Dropout(0.25, seed=3)(x, training=False)), x)


# ---- modes -------------------------------------------------------------------------


def test_jit_compile_auto_means_per_backend():
    """auto: TensorFlow on CPU no XLA (tf.function graph), JAX jax.jit, torch eager; the jit mode forces it."""
    spec = MLPSpec((3, 4, 1))
    assert create("keras", spec).model.jit_compile is (BACKEND == "jax")
    jit = create("keras", spec, mode="jit").model
    assert jit.jit_compile is True and jit.steps_per_execution == (1 if BACKEND == "torch" else 32)


# ---- other backends ----------------------------------------------------------------


def run_on_backend(backend: str, args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERAS_BACKEND=backend, MLP_REQUIRE_ALL="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_jax_float64_needs_x64_mode():
    """Keras does not enable JAX's 64-bit mode: a float64 variable silently holds float32 (hence enable_float64)."""
    import_or_skip("jax")
    code = ("import keras, numpy; print(keras.Variable(numpy.zeros(1), dtype='float64').value.dtype); "
            "from impls.keras_mlp import KerasMLP; from impls import MLPSpec; "
            "print(KerasMLP(MLPSpec((2, 1))).model.weights[0].value.dtype)")
    result = run_on_backend("jax", ["-c", code], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["float32", "float64"]


COMBINATIONS = "(relu-binary_crossentropy or leaky_relu-mse or elu-categorical_crossentropy or sigmoid-mae" \
    " or tanh-binary_crossentropy)"
BACKEND_SUBSET = {
    # JAX runs each new shape op by op through XLA's compiler: two pairs keep the run to minutes
    "jax": (
        "keras and (test_gradients_and_loss_match_the_reference and (tanh-binary_crossentropy or leaky_relu-mse)"
        " or test_whole_training_runs_match_the_reference and multiclass-tanh"
        " or test_predictions_match_the_reference and float64"
        " or test_early_stopped_runs_match_the_reference or test_adam_training_runs_match_the_reference)"
    ),
    # float64 is out of reach on torch (see the next test): float32 only
    "torch": (
        f"keras and float32 and (test_gradients_and_loss_match_the_reference and {COMBINATIONS}"
        " or test_predictions_match_the_reference)"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_equivalence_holds_on_other_backends(backend):
    """A subset of the equivalence suite on another Keras backend: gradients for every regularizer and
    predictions (JAX: two activation/loss pairs, both dtypes, plus a whole training run and early stopping;
    torch: five pairs, float32 only)."""
    import_or_skip(backend)
    if backend == BACKEND:
        pytest.skip(f"this process already runs the suite on {backend}")
    result = run_on_backend(backend, ["-m", "pytest", "tests/test_equivalence.py", "-q", "-x", "-p",
                                      "no:cacheprovider", "-k", BACKEND_SUBSET[backend]])
    assert result.returncode == 0, result.stdout[-5000:]
    summary = result.stdout.strip().splitlines()[-1]  # e.g. "93 passed, 669 deselected in 120.5s"
    assert re.match(r"\d+ passed, \d+ deselected", summary), summary


def test_torch_backend_matmul_computes_float64_in_float32():
    """Known limitation: Keras's result_type maps float64 to float32 off TensorFlow, and the torch backend's
    matmul computes and returns that type: float64 Dense layers compute in float32 on torch (~1e-8 relative)."""
    import_or_skip("torch")
    code = ("import keras, numpy as np; from keras import ops; rng = np.random.default_rng(0); "
            "a, b = rng.normal(size=(4, 30)), rng.normal(size=(30, 3)); "
            "out = ops.convert_to_numpy(ops.matmul(ops.convert_to_tensor(a), ops.convert_to_tensor(b))); "
            "print(out.dtype, np.abs(out - a @ b).max() / np.abs(a @ b).max())")
    result = run_on_backend("torch", ["-c", code], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    dtype, error = result.stdout.split()[-2:]
    assert dtype == "float32" and float(error) > EXACT
