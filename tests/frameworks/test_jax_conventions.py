"""JAX's defaults that differ from the spec, pinned; and the JAX implementation's own guarantees.

Each "default" test asserts JAX's own behaviour, so a JAX release that changes it fails here
first and the mapping in ``impls/jax_mlp.py`` can be revisited.  What every framework shares
(fast mode == default mode, dropout determinism, gradients at the kink) is in ``tests/test_modes.py``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tests.conftest import import_or_skip

jax = import_or_skip("jax")
import jax.numpy as jnp  # noqa: E402

from impls import MLPSpec, TrainConfig, create  # noqa: E402
from impls.jax_mlp import abs_, activation, native_fit, sample_dropout_scales  # noqa: E402
from impls.spec import SGD  # noqa: E402
from tests.helpers import max_rel_error, params_rel_error, random_problem  # noqa: E402
from tests.tolerances import TRAJECTORY  # noqa: E402

FAN_IN, FAN_OUT = 400, 1000


def test_x64_is_off_by_default_and_float64_input_silently_becomes_float32():
    """Why a float64 model must switch x64 on: without it JAX downcasts float64 without an error."""
    assert not jax.config.read("jax_enable_x64")
    assert jnp.zeros(1).dtype == jnp.float32
    assert jnp.asarray(np.ones(2, dtype=np.float64)).dtype == jnp.float32


def test_float64_model_keeps_x64_inside_its_own_calls():
    spec = MLPSpec((3, 5, 1), "tanh", "binary_crossentropy", l2=0.1, dropout=0.2, dtype="float64")
    X, y = random_problem(spec, 20, 0)
    for mode in ("default", "scan"):
        model = create("jax", spec, mode=mode)
        model.fit(X, y, TrainConfig(epochs=2, batch_size=8), validation=(X, y))
        model.train_step(X, y, 0.1)
        assert all(a.dtype == np.float64 for pair in model.get_params() for a in pair)
        assert all(g.dtype == np.float64 for pair in model.gradients(X, y) for g in pair)
        assert model.forward(X).dtype == np.float64
    # nothing leaked: JAX is back to its 32-bit default for everyone else
    assert not jax.config.read("jax_enable_x64")
    assert jnp.zeros(1).dtype == jnp.float32


@pytest.mark.parametrize("global_x64", [False, True])
def test_float32_model_computes_in_float32_even_under_global_x64(global_x64):
    spec = MLPSpec((3, 5, 2), "relu", "mse", l1=0.01, dtype="float32")
    X, y = random_problem(spec, 20, 0)
    with jax.enable_x64(global_x64):
        model = create("jax", spec)
        model.fit(X, y, TrainConfig(epochs=2, batch_size=8, momentum=0.5))
        model.train_step(X, y, 0.1, momentum=0.9)
        assert all(a.dtype == np.float32 for pair in model.get_params() for a in pair)
        assert all(g.dtype == np.float32 for pair in model.gradients(X, y) for g in pair)
        assert model.forward(X).dtype == np.float32
        assert model._opt_state[SGD][0][0].dtype == jnp.float32  # no float64 promotion through lr/momentum
        assert jax.config.read("jax_enable_x64") == global_x64  # the caller's setting is restored


@pytest.mark.parametrize(("default", "std"), [
    (jax.nn.initializers.he_normal, np.sqrt(2 / FAN_IN)),
    (jax.nn.initializers.glorot_normal, np.sqrt(2 / (FAN_IN + FAN_OUT))),
])
def test_jax_normal_initializers_are_truncated_the_spec_maps_to_plain_normal(default, std):
    """JAX's he_normal/glorot_normal: normal truncated to +-2 sigma, rescaled to the right std (2/0.8796 = 2.27)."""
    W = default()(jax.random.key(0), (FAN_IN, FAN_OUT))
    assert float(jnp.std(W)) == pytest.approx(std, rel=0.02)
    assert float(jnp.abs(W).max()) <= 2 / 0.87962566103423978 * std * (1 + 1e-6)

    name = "he_normal" if default is jax.nn.initializers.he_normal else "xavier_normal"
    (W_model, _), = create("jax", MLPSpec((FAN_IN, FAN_OUT), "identity", "mse", name), seed=0).get_params()
    assert W_model.std() == pytest.approx(std, rel=0.02)
    assert np.abs(W_model).max() > 3 * std  # plain normal: 400k draws reach past 3 sigma


def test_jax_uniform_initializer_is_one_sided_the_spec_maps_to_symmetric():
    W = jax.nn.initializers.uniform(0.5)(jax.random.key(0), (FAN_IN, FAN_OUT))
    assert float(W.min()) >= 0 and float(W.max()) < 0.5
    (W_model, _), = create("jax", MLPSpec((FAN_IN, FAN_OUT), "identity", "mse", "uniform", init_scale=0.5),
                           seed=0).get_params()
    assert W_model.min() < -0.49 and W_model.max() > 0.49


def test_prng_keys_take_a_scalar_seed_and_differ_from_numpy_streams():
    """``jax.random.key`` rejects a seed sequence (NumPy's default_rng accepts one); JAX's stream is its own."""
    with pytest.raises(TypeError, match="scalar seed"):
        jax.random.key(np.array([1, 2]))
    spec = MLPSpec((5, 7, 3), "relu", "categorical_crossentropy", "he_normal")
    jax_weights = create("jax", spec, seed=3).get_params()
    numpy_weights = create("numpy", spec, seed=3).get_params()
    assert not np.allclose(jax_weights[0][0], numpy_weights[0][0])  # equivalence tests load params instead


@pytest.mark.parametrize(("name", "jax_fn", "jax_grad_at_0", "spec_grad_at_0"), [
    ("relu", jax.nn.relu, 0.0, 0.0),
    ("leaky_relu", lambda z: jax.nn.leaky_relu(z, 0.25), 1.0, 0.25),  # JAX takes the right branch
    ("elu", lambda z: jax.nn.elu(z, 0.5), 0.5, 0.5),
])
def test_activation_derivative_at_zero(name, jax_fn, jax_grad_at_0, spec_grad_at_0):
    """Slope and alpha exact in binary, so the float32 derivatives compare with ==."""
    spec = MLPSpec((1, 1, 1), name, "mse", leaky_slope=0.25, elu_alpha=0.5)
    assert float(jax.grad(jax_fn)(0.0)) == jax_grad_at_0
    assert float(jax.grad(lambda z: activation(spec, z))(0.0)) == spec_grad_at_0


def test_abs_derivative_at_zero_is_zero_not_jax_default_one():
    assert float(jax.grad(jnp.abs)(0.0)) == 1.0
    assert float(jax.grad(abs_)(0.0)) == 0.0
    assert [float(jax.grad(abs_)(x)) for x in (-2.0, 3.0)] == [-1.0, 1.0]


def test_dropout_scales_keep_at_one_minus_p_scale_by_its_inverse_and_draw_each_layer_from_its_own_key():
    """``sample_dropout_scales``, the masks of every training step: per hidden layer, ``bernoulli(1 - p) / (1 - p)``
    with that layer's rate, ``None`` where the rate is 0, layers from split keys (two layers of the same rate and
    width get different masks), another key another draw.  4000 units a layer: the kept fraction is ``1 - p``
    within 5 binomial standard errors (at most 0.04)."""
    spec = MLPSpec((1, 2000, 2000, 2000, 2000, 1), dropout=(0.25, 0.0, 0.25, 0.6))
    key = jax.random.key(0)
    with jax.enable_x64(True):
        scales = sample_dropout_scales(spec, key, 2, jnp.float64)
        again = sample_dropout_scales(spec, jax.random.key(1), 2, jnp.float64)
    assert scales[1] is None
    for scale, p in ((scales[0], 0.25), (scales[2], 0.25), (scales[3], 0.6)):
        scale = np.asarray(scale)
        assert scale.shape == (2, 2000) and scale.dtype == np.float64
        assert set(np.unique(scale)) == {0.0, 1 / (1 - p)}
        kept = (scale != 0).mean()
        assert abs(kept - (1 - p)) <= 5 * np.sqrt(p * (1 - p) / scale.size), (p, kept)
    assert not np.array_equal(np.asarray(scales[0]), np.asarray(scales[2]))
    assert not np.array_equal(np.asarray(scales[0]), np.asarray(again[0]))


def test_each_training_step_splits_the_models_dropout_key():
    """A new mask every step: the key the model carries is split inside each step, so two steps from the same
    parameters draw differently, and a model with the same seed draws the same."""
    spec = MLPSpec((4, 30, 1), "tanh", "mse", dropout=0.5)
    X, y = random_problem(spec, 8, 0)
    model, twin = create("jax", spec, seed=4), create("jax", spec, seed=4)
    start = model.get_params()
    keys = [np.asarray(model._dropout_key)]
    losses = []
    for _ in range(2):
        model.set_params(start)
        losses.append(model.train_step(X, y, 0.1))
        keys.append(np.asarray(model._dropout_key))
    assert not np.array_equal(keys[0], keys[1]) and not np.array_equal(keys[1], keys[2])
    assert losses[0] != losses[1]
    assert twin.train_step(X, y, 0.1) == losses[0]


@pytest.mark.parametrize("batch_size", [None, 50, 5, 8])
def test_scan_mode_draws_the_same_dropout_masks_as_the_default_mode(batch_size):
    """Both modes run one compiled step with the key split inside it, so even dropout runs agree; full-batch,
    a batch larger than the data and remainders of 2 and 5 cover every shape the scan is given."""
    spec = MLPSpec((4, 8, 6, 3), "elu", "categorical_crossentropy", l1=0.01, l2=0.01, dropout=(0.3, 0.1))
    X, y = random_problem(spec, 37, 5)
    config = TrainConfig(epochs=4, batch_size=batch_size, learning_rate=0.2, lr_decay=0.9, momentum=0.8, seed=3)
    runs = {}
    for mode in ("default", "scan"):
        model = create("jax", spec, seed=2, mode=mode)
        history = model.fit(X, y, config)
        runs[mode] = (history.loss, model.get_params())
    assert max_rel_error(runs["scan"][0], runs["default"][0]) <= TRAJECTORY
    assert params_rel_error(runs["scan"][1], runs["default"][1]) <= TRAJECTORY


@pytest.mark.parametrize("mode", ["default", "scan"])
def test_epochs_return_a_python_float_and_a_decaying_rate_does_not_recompile(mode, caplog):
    spec = MLPSpec((3, 5, 1), "relu", "binary_crossentropy", dropout=0.1, dtype="float32")
    X, y = random_problem(spec, 21, 0)
    model = create("jax", spec, mode=mode)
    data = model._prepare_data(*spec.check_Xy(X, y))
    batches = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 21)]
    assert isinstance(model._run_epoch(*data, batches, 0.5, SGD(0.9)), float)  # compiles: full and partial batch
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
        losses = [model._run_epoch(*data, batches, lr, SGD(0.9)) for lr in (0.4, 0.3)]
    assert all(isinstance(v, float) for v in losses)
    assert not [r for r in caplog.records if r.getMessage().startswith("Compiling")]


@pytest.mark.parametrize("mode", ["default", "scan"])
def test_native_loop_on_float64_data_trains_in_float64_and_leaks_no_x64(mode):
    spec = MLPSpec((4, 8, 1), "relu", "binary_crossentropy", dtype="float64")
    X, y = random_problem(spec, 40, 0)
    run = native_fit(spec, TrainConfig(epochs=2, batch_size=16, momentum=0.9), X, y[:, 0].astype(int), mode=mode)
    assert run.predict(X).dtype == np.float64
    assert not jax.config.read("jax_enable_x64")
    assert run.predict(X.astype(np.float32)).shape == (40, 1)
