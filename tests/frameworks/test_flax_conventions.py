"""Where Flax NNX's and Optax's defaults differ from the spec: each difference measured, and the mapping shown to hold.

Every "default" test first shows what Flax or Optax does out of the box (asserting the difference is
real, not rounding), then that :mod:`impls.flax_mlp` follows the spec instead.  A release that changes a
default fails here first, and the mapping can be revisited.
"""

from __future__ import annotations

import inspect
import logging
import math

import numpy as np
import pytest

from tests.conftest import import_or_skip

jax = import_or_skip("jax")
optax = import_or_skip("optax")
nnx = import_or_skip("flax.nnx")
flax_mlp = import_or_skip("impls.flax_mlp")

import jax.numpy as jnp  # noqa: E402

from impls import MLPSpec, TrainConfig, create, numpy_mlp  # noqa: E402
from impls.spec import SGD, Adam  # noqa: E402
from tests.helpers import flatten, max_rel_error, params_rel_error, random_params, random_problem  # noqa: E402
from tests.tolerances import COMPUTATION, EXACT_STEP, TRAJECTORY  # noqa: E402

FAN_IN, FAN_OUT = 400, 1000
SPEC = MLPSpec((3, 5, 4, 2), "tanh", "binary_crossentropy", l2=0.1)
RATES = [0.3, 0.1, 0.03]  # a per-epoch decay changes the rate between steps
TRUNCATED_MAX = 2 / 0.87962566103423978  # a normal cut at 2 sigma and rescaled reaches 2.27 sigma at most


def gradient_sequence(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(4, 3)) for _ in range(n)]


# ---- initialization, dtype -----------------------------------------------------------------


def test_linear_default_kernel_is_truncated_lecun_normal_the_model_draws_the_spec():
    """nnx.Linear without kernel_init: std 1/sqrt(fan_in) (He's is sqrt(2) larger), cut at 2 sigma; zero bias."""
    default = nnx.Linear(FAN_IN, FAN_OUT, rngs=nnx.Rngs(0))
    W = np.asarray(default.kernel[...])
    assert W.std() == pytest.approx(1 / math.sqrt(FAN_IN), rel=0.02)
    assert np.abs(W).max() <= TRUNCATED_MAX * W.std() * 1.01
    assert np.all(np.asarray(default.bias[...]) == 0)

    (W_model, b_model), = create("flax", MLPSpec((FAN_IN, FAN_OUT), "identity", "mse", "he_normal"),
                                 seed=0).get_params()
    he_std = math.sqrt(2 / FAN_IN)
    assert W_model.std() == pytest.approx(he_std, rel=0.02)
    assert W.std() / he_std == pytest.approx(1 / math.sqrt(2), rel=0.02)
    assert np.abs(W_model).max() > 3 * he_std  # plain normal: 400k draws reach past 3 sigma
    assert np.all(b_model == 0)


@pytest.mark.parametrize(("name", "std"), [("he_normal", math.sqrt(2 / FAN_IN)),
                                           ("glorot_normal", math.sqrt(2 / (FAN_IN + FAN_OUT)))])
def test_flax_he_and_glorot_normal_are_truncated_the_mapping_is_plain(name, std):
    W = getattr(nnx.initializers, name)()(jax.random.key(0), (FAN_IN, FAN_OUT))
    assert float(jnp.std(W)) == pytest.approx(std, rel=0.02)
    assert float(jnp.abs(W).max()) <= TRUNCATED_MAX * std * (1 + 1e-6)
    spec_name = {"he_normal": "he_normal", "glorot_normal": "xavier_normal"}[name]
    W_plain = flax_mlp.kernel_initializer(MLPSpec((FAN_IN, FAN_OUT), initializer=spec_name))(
        jax.random.key(0), (FAN_IN, FAN_OUT))
    assert float(jnp.abs(W_plain).max()) > 3 * std


def test_flax_uniform_initializer_is_one_sided_the_mapping_is_symmetric():
    W = nnx.initializers.uniform(0.5)(jax.random.key(0), (FAN_IN, FAN_OUT))
    assert float(W.min()) >= 0 and float(W.max()) < 0.5
    (W_model, _), = create("flax", MLPSpec((FAN_IN, FAN_OUT), "identity", "mse", "uniform", init_scale=0.5),
                           seed=0).get_params()
    assert W_model.min() < -0.49 and W_model.max() > 0.49


def test_params_are_float32_by_default_and_float64_needs_x64():
    """param_dtype defaults to float32; asking for float64 without x64 warns and still gives float32."""
    assert nnx.Linear(3, 4, rngs=nnx.Rngs(0)).kernel[...].dtype == jnp.float32
    assert not jax.config.read("jax_enable_x64")
    with pytest.warns(UserWarning, match="float64 .*not available"):
        truncated = nnx.Linear(3, 4, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert truncated.kernel[...].dtype == jnp.float32


def test_float64_model_keeps_x64_inside_its_own_calls():
    spec = MLPSpec((3, 5, 1), "tanh", "binary_crossentropy", l2=0.1, dropout=0.2, dtype="float64")
    X, y = random_problem(spec, 20, 0)
    model = create("flax", spec)
    model.fit(X, y, TrainConfig(epochs=2, batch_size=8), validation=(X, y))
    model.train_step(X, y, 0.1, optimizer=Adam())
    assert all(a.dtype == np.float64 for pair in model.get_params() for a in pair)
    assert all(g.dtype == np.float64 for pair in model.gradients(X, y) for g in pair)
    assert model.forward(X).dtype == np.float64
    assert not jax.config.read("jax_enable_x64")  # nothing leaked
    assert jnp.zeros(1).dtype == jnp.float32


@pytest.mark.parametrize("global_x64", [False, True])
def test_float32_model_computes_in_float32_even_under_global_x64(global_x64):
    spec = MLPSpec((3, 5, 2), "relu", "mse", l1=0.01, dtype="float32")
    X, y = random_problem(spec, 20, 0)
    with jax.enable_x64(global_x64):
        model = create("flax", spec)
        model.fit(X, y, TrainConfig(epochs=2, batch_size=8, momentum=0.5))
        assert all(a.dtype == np.float32 for pair in model.get_params() for a in pair)
        assert all(g.dtype == np.float32 for pair in model.gradients(X, y) for g in pair)
        assert model.forward(X).dtype == np.float32
        hyperparameters = model._optimizers[SGD].opt_state.hyperparams
        assert hyperparameters["learning_rate"][...].dtype == jnp.float32  # Optax takes the params' dtype
        assert jax.config.read("jax_enable_x64") == global_x64


# ---- activations and losses -------------------------------------------------------------


@pytest.mark.parametrize(("name", "flax_fn", "flax_grad_at_0", "spec_grad_at_0"), [
    ("relu", nnx.relu, 0.0, 0.0),
    ("leaky_relu", lambda z: nnx.leaky_relu(z, 0.25), 1.0, 0.25),  # Flax takes the right branch
    ("elu", lambda z: nnx.elu(z, 0.5), 0.5, 0.5),
])
def test_activation_derivative_at_zero(name, flax_fn, flax_grad_at_0, spec_grad_at_0):
    spec = MLPSpec((1, 1, 1), name, "mse", leaky_slope=0.25, elu_alpha=0.5)
    assert float(jax.grad(flax_fn)(0.0)) == flax_grad_at_0
    assert float(jax.grad(lambda z: flax_mlp.activation(spec, z))(0.0)) == spec_grad_at_0


def test_abs_derivative_at_zero_is_zero_not_jax_default_one():
    assert float(jax.grad(jnp.abs)(0.0)) == 1.0
    assert [float(jax.grad(flax_mlp.abs_)(x)) for x in (-2.0, 0.0, 3.0)] == [-1.0, 0.0, 1.0]


def test_optax_l2_loss_is_half_the_squared_error_the_model_uses_squared_error():
    z, y = jnp.array([[1.0], [-2.0]]), jnp.array([[0.0], [1.0]])
    halved, squared = float(optax.l2_loss(z, y).mean()), float(optax.squared_error(z, y).mean())
    assert halved == pytest.approx(0.5 * squared, rel=COMPUTATION["float32"])
    spec = MLPSpec((1, 1), "identity", "mse")
    assert float(flax_mlp.data_loss(spec, z, y)) == pytest.approx(5.0, rel=COMPUTATION["float32"])  # mean((1, 9))


def test_optax_binary_cross_entropy_from_logits_is_finite_at_large_logits():
    """optax.sigmoid_binary_cross_entropy works on logits with log_sigmoid: no clipping, 1000 at a wrong 1000."""
    spec = MLPSpec((1, 1), "identity", "binary_crossentropy")
    model = create("flax", spec)
    model.set_params([(np.array([[1000.0]]), np.zeros(1))])
    assert model.loss(np.array([[1.0], [-1.0]]), [0, 1]) == pytest.approx(1000.0, rel=COMPUTATION["float64"])


# ---- the optimizer ---------------------------------------------------------------------------


def run_transformation(transformation, rates: list[float], param: np.ndarray) -> np.ndarray:
    """Steps of an injected-hyper-parameter Optax transformation on one array, the rate set before each step."""
    param = jnp.asarray(param)
    state = transformation.init(param)
    for rate, grad in zip(rates, gradient_sequence(len(rates))):
        state.hyperparams["learning_rate"] = jnp.asarray(rate)
        update, state = transformation.update(jnp.asarray(grad), state, param)
        param = optax.apply_updates(param, update)
    return np.asarray(param)


def run_reference_sgd(rates: list[float], param: np.ndarray, momentum: float) -> np.ndarray:
    param, velocity = param.copy(), np.zeros_like(param)
    for rate, grad in zip(rates, gradient_sequence(len(rates))):
        numpy_mlp.sgd_update(param, velocity, grad, rate, SGD(momentum))
    return param


def test_optax_sgd_traces_raw_gradients_and_differs_from_the_spec_once_the_rate_changes():
    """optax.sgd = trace(momentum) then scale_by_learning_rate: buf <- mu buf + g; p -= lr buf (torch's form)."""
    assert isinstance(optax.sgd(0.1, 0.9).init(jnp.zeros(2))[0], optax.TraceState)  # the trace comes first
    start = np.random.default_rng(1).normal(size=(4, 3))
    with jax.enable_x64(True):
        optax_sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=RATES[0], momentum=0.9)
        for rates, agree in (([0.3, 0.3, 0.3], True), (RATES, False)):
            error = max_rel_error(run_transformation(optax_sgd, rates, start), run_reference_sgd(rates, start, 0.9))
            if agree:
                assert error <= COMPUTATION["float64"]
            else:
                assert error > 1e-2  # the buffer replays old gradients at the new, smaller rate
        spec_sgd = flax_mlp.TRANSFORMATIONS[SGD]
        mapped = run_transformation(optax.inject_hyperparams(flax_mlp.spec_sgd)(learning_rate=0.0, momentum=0.9),
                                    RATES, start)
        assert max_rel_error(mapped, run_reference_sgd(RATES, start, 0.9)) <= COMPUTATION["float64"]
        assert spec_sgd.init(jnp.zeros(2)).hyperparams.keys() == {"learning_rate", "momentum"}


def test_optax_adam_is_the_spec_adam_and_eps_root_would_move_epsilon_inside_the_root():
    """optax.adam divides by sqrt(v_hat) + eps (spec and PyTorch; Keras adds eps before the bias correction);
    eps_root, 0 by default, goes inside the root.  Defaults are the paper's."""
    defaults = inspect.signature(optax.adam).parameters
    assert [defaults[name].default for name in ("b1", "b2", "eps", "eps_root")] == [0.9, 0.999, 1e-8, 0.0]
    assert (Adam().beta1, Adam().beta2, Adam().epsilon) == (0.9, 0.999, 1e-8)
    rule = Adam(beta1=0.8, beta2=0.9, epsilon=1e-3)  # a large epsilon makes its placement visible
    with jax.enable_x64(True):
        start = np.random.default_rng(2).normal(size=(4, 3))
        param, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
        for step, (rate, grad) in enumerate(zip(RATES, gradient_sequence(3)), start=1):
            numpy_mlp.adam_update(param, m, v, grad, rate, step, rule)
        adam = optax.inject_hyperparams(optax.adam)(learning_rate=0.0, b1=0.8, b2=0.9, eps=1e-3)
        assert max_rel_error(run_transformation(adam, RATES, start), param) <= COMPUTATION["float64"]

        grad = jnp.full(3, 1e-4)  # v_hat = 1e-8 at step 1: an eps_root of 1e-8 doubles the root's argument
        first = [np.asarray(optax.adam(1.0, eps=0.0, eps_root=eps_root).update(grad, optax.adam(
            1.0).init(grad))[0]) for eps_root in (0.0, 1e-8)]
        np.testing.assert_allclose(first[0], -1.0, rtol=0, atol=EXACT_STEP)  # step 1 moves by lr * g / |g|
        assert first[1][0] == pytest.approx(-1 / math.sqrt(2), rel=COMPUTATION["float64"])
        keras_eps = 1e-3 / math.sqrt(1 - 0.9)  # Keras's epsilon in the spec's terms at step 1
        assert abs(keras_eps - rule.epsilon) / rule.epsilon > 2  # 3.2x: a placement the mapping must not take


def test_the_skeleton_updates_apply_the_optax_rules_to_one_array_as_the_reference_does():
    with jax.enable_x64(True):
        start = np.random.default_rng(3).normal(size=(4, 3))
        param, velocity = jnp.asarray(start), jnp.zeros_like(jnp.asarray(start))
        for rate, grad in zip(RATES, gradient_sequence(3)):
            param, velocity = flax_mlp.sgd_update(param, velocity, jnp.asarray(grad), rate, SGD(0.9))
        assert max_rel_error(np.asarray(param), run_reference_sgd(RATES, start, 0.9)) <= COMPUTATION["float64"]

        rule = Adam(beta1=0.8, beta2=0.9, epsilon=1e-3)
        flax_state = (jnp.asarray(start), jnp.zeros((4, 3)), jnp.zeros((4, 3)))
        reference = (start.copy(), np.zeros((4, 3)), np.zeros((4, 3)))
        for step, (rate, grad) in enumerate(zip(RATES, gradient_sequence(3)), start=1):
            flax_state = flax_mlp.adam_update(*flax_state, jnp.asarray(grad), rate, step, rule)
            numpy_mlp.adam_update(*reference, grad, rate, step, rule)
        for ours, theirs in zip(flax_state, reference):
            assert max_rel_error(np.asarray(ours), theirs) <= COMPUTATION["float64"]


def test_add_decayed_weights_is_the_l2_gradient_but_decays_biases_unless_masked_and_is_not_in_the_loss():
    """add_decayed_weights(l2) before the SGD chain adds l2 W to the gradient, like (l2/2) sum W^2 in the loss;
    without a mask it decays every parameter, and the loss value never contains the penalty."""
    X, y = random_problem(SPEC, 8, 1)
    start = random_params(SPEC, 2)
    spec_model = create("flax", SPEC)
    spec_model.set_params(start)
    spec_loss = spec_model.train_step(X, y, learning_rate=0.5)
    penalty = 0.5 * SPEC.l2 * sum((W**2).sum() for W, _ in start)
    assert penalty > 0.1

    no_penalty = MLPSpec(SPEC.layer_sizes, SPEC.hidden_activation, SPEC.loss)
    kernels_only = lambda params: jax.tree.map(lambda p: p.ndim == 2, params)  # noqa: E731
    for mask, biases_move in ((kernels_only, False), (None, True)):
        decayed = create("flax", no_penalty)
        decayed.set_params(start)
        with jax.enable_x64(True):
            model = decayed.model
            transformation = optax.chain(optax.add_decayed_weights(SPEC.l2, mask=mask), flax_mlp.spec_sgd(0.5, 0.0))
            optimizer = nnx.Optimizer(model, transformation, wrt=nnx.Param)
            Y = jnp.asarray(no_penalty.check_y(y, len(X)))
            data_loss, grads = nnx.value_and_grad(flax_mlp.objective, argnums=1)(
                no_penalty, model, jnp.asarray(X), Y, flax_mlp.layer_dropout(no_penalty))
            optimizer.update(model, grads)
        # the loss misses the penalty
        assert spec_loss - float(data_loss) == pytest.approx(penalty, rel=COMPUTATION["float64"])
        error = params_rel_error(decayed.get_params(), spec_model.get_params())
        if biases_move:
            assert error > 1e-3  # the unmasked decay shrinks the biases too (spec: never)
        else:
            assert error <= COMPUTATION["float64"]


def test_optax_schedules_count_updates_and_a_staircase_per_epoch_is_the_spec_decay():
    config = TrainConfig(learning_rate=0.3, lr_decay=0.9)
    steps_per_epoch = 4
    per_epoch = optax.exponential_decay(0.3, transition_steps=steps_per_epoch, decay_rate=0.9, staircase=True)
    smooth = optax.exponential_decay(0.3, transition_steps=steps_per_epoch, decay_rate=0.9)
    every_update = optax.exponential_decay(0.3, transition_steps=1, decay_rate=0.9)
    for step in range(3 * steps_per_epoch):
        expected = config.learning_rate_at(step // steps_per_epoch + 1)
        assert float(per_epoch(step)) == pytest.approx(expected, rel=COMPUTATION["float32"])
    assert float(smooth(2)) == pytest.approx(0.3 * 0.9**0.5, rel=COMPUTATION["float32"])  # decays within the epoch
    assert float(every_update(steps_per_epoch)) == pytest.approx(0.3 * 0.9**steps_per_epoch, rel=COMPUTATION["float32"])
    assert float(every_update(steps_per_epoch)) / config.learning_rate_at(2) < 0.75


@pytest.mark.parametrize("mode", ["default", "scan"])
def test_the_rate_is_injected_per_epoch_and_a_decaying_rate_does_not_recompile(mode, caplog):
    spec = MLPSpec((3, 5, 1), "relu", "binary_crossentropy", dtype="float32")
    X, y = random_problem(spec, 21, 0)
    model = create("flax", spec, mode=mode)
    data = model._prepare_data(*spec.check_Xy(X, y))
    batches = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 21)]
    assert isinstance(model._run_epoch(*data, batches, 0.5, SGD(0.9)), float)  # compiles full and partial batches
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
        losses = [model._run_epoch(*data, batches, rate, SGD(0.9)) for rate in (0.4, 0.3)]
    assert all(isinstance(v, float) for v in losses)
    assert not [r for r in caplog.records if r.getMessage().startswith("Compiling")]
    assert float(model._optimizers[SGD].opt_state.hyperparams["learning_rate"][...]) == pytest.approx(
        0.3, rel=COMPUTATION["float32"])


# ---- dropout -----------------------------------------------------------------------------


def test_dropout_is_inverted_draws_from_its_forked_stream_and_is_off_in_eval_mode_or_an_eval_view():
    rngs = nnx.Rngs(0)  # no "dropout" stream: the layers fork the "default" one
    first, second = nnx.Dropout(0.25, rngs=rngs), nnx.Dropout(0.25, rngs=rngs)
    x = jnp.ones(100_000)
    kept = np.asarray(first(x))
    np.testing.assert_allclose(np.unique(kept), [0.0, 1 / 0.75], rtol=COMPUTATION["float32"])  # kept: 1/(1-p)
    assert (kept == 0).mean() == pytest.approx(0.25, abs=0.01)
    assert not np.array_equal(kept, np.asarray(second(x)))  # each layer has its own stream
    again = nnx.Dropout(0.25, rngs=nnx.Rngs(0))
    assert np.array_equal(np.asarray(again(x)), kept)  # the same seed, the same masks
    assert not np.array_equal(np.asarray(first(x)), kept)  # each call draws a new mask

    view = nnx.view(first, deterministic=True)
    assert np.array_equal(np.asarray(view(x)), np.asarray(x)) and not first.deterministic
    first.eval()  # the older idiom mutates the module instead
    assert np.array_equal(np.asarray(first(x)), np.asarray(x))
    first.train()
    assert not np.array_equal(np.asarray(first(x)), np.asarray(x))


def test_one_seed_feeds_the_params_and_dropout_streams_through_the_default_stream():
    """nnx.Linear draws from the "params" stream and nnx.Dropout forks the "dropout" one, each falling back to
    "default": nnx.Rngs(seed) seeds both, as the model's one seed does."""
    x = jnp.ones(1000)

    def kernel(rngs: nnx.Rngs) -> np.ndarray:
        return np.asarray(nnx.Linear(3, 4, rngs=rngs).kernel[...])

    assert np.array_equal(kernel(nnx.Rngs(0)), kernel(nnx.Rngs(params=0)))
    assert not np.array_equal(kernel(nnx.Rngs(0)), kernel(nnx.Rngs(0, params=1)))  # a named stream comes first
    assert np.array_equal(np.asarray(nnx.Dropout(0.5, rngs=nnx.Rngs(0))(x)),
                          np.asarray(nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))(x)))


def test_the_inference_view_shares_the_weights_and_leaves_the_training_model_dropping():
    spec = MLPSpec((4, 30, 1), "tanh", "mse", dropout=0.5)
    model = create("flax", spec)
    assert model._inference.linears[0].kernel is model.model.linears[0].kernel
    assert model._inference.dropouts[0].deterministic and not model.model.dropouts[0].deterministic
    X, y = random_problem(spec, 6, 0)
    model.set_params(random_params(spec, 1))
    assert np.array_equal(model.forward(X), model.forward(X))
    mask = np.random.default_rng(0).random((6, 30)) >= 0.5
    reference = create("numpy", spec)
    reference.set_params(model.get_params())
    assert model.loss(X, y, [mask]) == pytest.approx(reference.loss(X, y, [mask]), rel=COMPUTATION["float64"])


def test_our_network_drops_with_its_rates_in_training_and_its_inference_view_is_the_no_dropout_forward():
    """How impls/flax_mlp.py wires nnx.Dropout: one layer per hidden layer with the spec's rate, dropping in the
    model and deterministic in the inference view; ``logits`` on the model draws a new mask per call.

    ``1 -> 1 -> 1 -> 1``, identity, unit weights, rates (0.25, 0.6): a sample's training logit is the product of
    its two layers' scales, ``1/0.75 * 1/0.4 = 10/3`` when both keep (probability ``0.75 * 0.4 = 0.3``), else 0.
    4000 samples: the kept fraction is 0.3 within 5 binomial standard errors (0.036).
    """
    spec = MLPSpec((1, 1, 1, 1), "identity", "mse", dropout=(0.25, 0.6))
    model = create("flax", spec, seed=0)
    model.set_params([(np.ones((1, 1)), np.zeros(1))] * 3)
    assert [d.rate for d in model.model.dropouts] == [0.25, 0.6]
    assert not any(d.deterministic for d in model.model.dropouts)
    assert all(d.deterministic for d in model._inference.dropouts)
    X = np.ones((4000, 1))
    with flax_mlp.precision(spec):
        train = [np.asarray(flax_mlp.logits(spec, model.model, jnp.asarray(X), flax_mlp.layer_dropout(spec)))[:, 0]
                 for _ in range(2)]
        inference = np.asarray(flax_mlp.logits(spec, model._inference, jnp.asarray(X), flax_mlp.layer_dropout(spec)))
    for draw in train:
        kept = draw != 0
        np.testing.assert_allclose(draw[kept], 10 / 3, rtol=COMPUTATION["float64"])  # 1/(1-p) per layer
        assert abs(kept.mean() - 0.3) <= 5 * math.sqrt(0.3 * 0.7 / len(X)), kept.mean()
    assert not np.array_equal(train[0], train[1]), "a new mask per call"
    assert np.array_equal(inference, np.ones((4000, 1))) and np.array_equal(model.forward(X), inference)
    assert model.loss(X, np.ones(4000)) == 0.0  # the loss without masks is the inference view's


@pytest.mark.parametrize("batch_size", [8, None, 50, 5])
def test_scan_mode_draws_the_same_masks_and_trains_exactly_like_default_mode(batch_size):
    """float64, dropout, momentum and decay: the scanned epochs (full batches + the partial one) = per-step."""
    spec = MLPSpec((4, 8, 6, 3), "elu", "categorical_crossentropy", l1=0.01, l2=0.01, dropout=(0.3, 0.1))
    X, y = random_problem(spec, 37, 5)
    config = TrainConfig(epochs=4, batch_size=batch_size, learning_rate=0.2, lr_decay=0.9, momentum=0.8, seed=3)
    runs = {}
    for mode in ("default", "scan"):
        model = create("flax", spec, seed=2, mode=mode)
        runs[mode] = (model.fit(X, y, config).loss, model.get_params())
    assert max_rel_error(runs["scan"][0], runs["default"][0]) <= TRAJECTORY
    assert params_rel_error(runs["scan"][1], runs["default"][1]) <= TRAJECTORY


def test_reset_optimizer_forgets_the_state_of_both_rules():
    spec = MLPSpec((3, 4, 2), "tanh", "mse")
    X, y = random_problem(spec, 10, 0)
    for mode in ("default", "scan"):
        model = create("flax", spec, mode=mode)
        model.set_params(random_params(spec, 1))
        model.train_step(X, y, 0.05, momentum=0.9)
        model.train_step(X, y, 0.05, optimizer=Adam())
        model.reset_optimizer()
        before, grads = flatten(model.get_params()), flatten(model.gradients(X, y))
        model.train_step(X, y, 0.05, optimizer=Adam(epsilon=1e-8))  # a first Adam step again
        np.testing.assert_allclose(flatten(model.get_params()), before - 0.05 * grads / (np.abs(grads) + 1e-8),
                                   rtol=0, atol=EXACT_STEP)
        before, grads = flatten(model.get_params()), flatten(model.gradients(X, y))
        model.reset_optimizer()
        model.train_step(X, y, 0.1, momentum=0.9)  # no velocity left: a plain gradient step
        np.testing.assert_allclose(flatten(model.get_params()), before - 0.1 * grads, rtol=0, atol=EXACT_STEP)


# ---- native parameters -------------------------------------------------------------------


def test_native_params_are_a_detached_nnx_state_in_the_canonical_layout():
    """nnx.state hands out the live Param variables; native_params clones them."""
    model = create("flax", SPEC, seed=1)
    live = nnx.state(model.model, nnx.Param)
    assert live["linears"][0]["kernel"] is model.model.linears[0].kernel
    native = model.native_params()
    assert isinstance(native, nnx.State)
    assert native["linears"][0]["kernel"][...].shape == (3, 5)  # (in, out): no transpose
    np.testing.assert_array_equal(native["linears"][0]["kernel"][...], model.get_params()[0][0])
    before = nnx.to_pure_dict(native)
    X, y = random_problem(SPEC, 4, 0)
    model.train_step(X, y, learning_rate=0.5)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(nnx.to_pure_dict(native)), jax.tree.leaves(before)))
    assert not np.array_equal(live["linears"][0]["kernel"][...], before["linears"][0]["kernel"])

    with pytest.raises(ValueError, match=r"nnx\.State with the paths"):
        model.load_native({"linears": {}})
    with pytest.raises(ValueError, match=r"nnx\.State with the paths"):
        model.load_native(nnx.state(create("flax", MLPSpec((3, 5, 2))).model, nnx.Param))
    wrong = nnx.clone(native)
    wrong["linears"][0]["kernel"].set_value(jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"params\[0\] has W\(5, 3\).*needs W\(3, 5\)"):
        model.load_native(wrong)
