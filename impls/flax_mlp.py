"""The MLP in Flax NNX and Optax: an ``nnx.Module`` of ``nnx.Linear`` and ``nnx.Dropout`` layers, Optax's
losses, and ``nnx.Optimizer`` running Optax transformations.

The model is the parameter container: :func:`init_params` returns a :class:`Network`, whose
``linears[l].kernel`` is the canonical ``W (fan_in, fan_out)`` and ``linears[l].bias`` is ``b``, with an
``nnx.Dropout`` (its own RNG stream) after each hidden layer.  The skeleton's functions take it where the
reference takes its ``(W, b)`` list, and ``nnx.value_and_grad`` differentiates :func:`objective` with
respect to its ``nnx.Param`` variables.

Optax writes an update rule once for any pytree, a single array included.  :func:`sgd_update` and
:func:`adam_update` apply the spec's two rules to one array, as the skeleton has it; the class applies
the same two transformations to the model's whole parameter ``State`` through ``nnx.Optimizer``, every
hyper-parameter (the learning rate too) injected with ``optax.inject_hyperparams``, so that a decayed
rate is a new value in the optimizer state, not a recompilation:

* SGD is :func:`spec_sgd`, ``chain(scale_by_learning_rate(lr), trace(momentum))``: the trace accumulates
  learning-rate-scaled steps, the spec's velocity.  ``optax.sgd(lr, momentum)`` chains the two the other
  way round (a trace of raw gradients, like ``torch.optim.SGD``), which differs once the rate changes.
* Adam is ``optax.adam``, already the spec's (epsilon added to the bias-corrected ``sqrt(v_hat)``,
  ``eps_root = 0``).
* The penalty stays in the objective: ``optax.add_decayed_weights`` would decay the biases too unless
  masked, and never appears in the reported loss.

Dropout: the model itself is in training mode (its ``nnx.Dropout`` layers draw masks from their streams);
losses, injected-mask gradients and predictions go through an ``nnx.view`` with ``deterministic=True``,
which shares the weights (Flax's "Model Views" guide), instead of toggling ``model.train()``/``eval()``.

Modes: ``default`` calls one ``nnx.jit``-compiled training step per batch, the Flax tutorial's loop.
``scan`` follows Flax's performance guide, which names the overhead of small models: ``nnx.jit`` walks
the object graph of the model and optimizer in Python on every call.  ``nnx.jit_partial`` (the tree-mode
form of the guide's ``nnx.cached_partial``) flattens them once, and each call runs all of an epoch's
full batches in one ``lax.scan`` (the shorter last batch in a second call).  Per call of such an epoch on
the circles network, one thread: ``nnx.split``/``nnx.merge`` around ``jax.jit`` 1.8 ms, ``nnx.jit`` 1.4 ms,
``nnx.cached_partial`` 0.46 ms, ``nnx.jit_partial`` 0.16 ms.  Both modes step through :func:`train_step`,
so they draw the same dropout masks.

Where Flax's and Optax's defaults differ from the spec (each pinned by
``tests/frameworks/test_flax_conventions.py``):

* ``nnx.Linear`` draws its kernel with ``lecun_normal`` (a truncated normal) unless told; the spec's
  initializers are given as ``kernel_init``.  ``initializers.he_normal``/``glorot_normal`` are truncated
  too, so ``variance_scaling(..., "normal")`` is used; ``initializers.uniform(s)`` draws from ``[0, s)``.
* ``nnx.leaky_relu'(0) = 1``: leaky ReLU is ``jnp.where(z > 0, ...)``.  ``jnp.abs'(0) = 1``: :func:`impls.jax_mlp.abs_`
  has the spec's ``sign`` derivative.
* Parameters are float32 unless ``param_dtype`` says otherwise, and float64 needs JAX's x64 mode, which
  is off by default: every entry point of a float64 model runs inside ``jax.enable_x64(True)`` and of a
  float32 one inside ``jax.enable_x64(False)``, so the flag never leaks into other code.
* ``nnx.state(model)`` hands out the model's live variables: :meth:`FlaxMLP.native_params` clones them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from impls.base import MLP, History, NativeRun, check_native_support

# Flax computes with JAX, so the JAX file's mappings serve as they are: |x| with derivative 0 at 0, and x64 per model
from impls.jax_mlp import abs_, in_precision, precision
from impls.spec import SGD, Adam, MLPSpec, Optimizer, Params, TrainConfig

Scales = list[jax.Array | None]
"""Inverted-dropout multipliers ``keep / (1 - p)``, ``(n, width)`` per hidden layer; ``None``: the model's
``nnx.Dropout`` there (the identity in evaluation mode)."""


# ---- parameters ----------------------------------------------------------------------


def init_params(spec: MLPSpec, seed: int) -> Network:
    """The model, drawn from ``nnx.Rngs(seed)``: the weights layer by layer, then one dropout stream forked
    per hidden layer; zero biases."""
    with precision(spec):
        return Network(spec, nnx.Rngs(seed))


class Network(nnx.Module):
    """The spec's layers as NNX modules; the forward pass is :func:`logits`.

    ``linears[l]``: ``nnx.Linear`` with ``kernel`` ``(fan_in, fan_out)`` and ``bias`` ``(fan_out,)`` in the
    spec's dtype; ``dropouts[l]``: the ``nnx.Dropout`` after hidden layer ``l``, with its rate.
    """

    def __init__(self, spec: MLPSpec, rngs: nnx.Rngs) -> None:
        dtype, kernel_init = spec.np_dtype, kernel_initializer(spec)
        self.linears = nnx.List([
            nnx.Linear(fan_in, fan_out, kernel_init=kernel_init, bias_init=nnx.initializers.zeros,
                       dtype=dtype, param_dtype=dtype, rngs=rngs)
            for (fan_in, fan_out), _ in spec.param_shapes()
        ])
        self.dropouts = nnx.List([nnx.Dropout(rate, rngs=rngs) for rate in spec.dropout_rates])


def _symmetric_uniform(limit: float) -> nnx.initializers.Initializer:
    """U(-limit, limit); ``initializers.uniform(limit)`` would draw from ``[0, limit)``."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)

    return init


def kernel_initializer(spec: MLPSpec) -> nnx.initializers.Initializer:
    """The ``nnx.initializers`` initializer drawing the spec's weight distribution.

    It reads ``fan_in``/``fan_out`` from axes -2/-1 of the shape: ``nnx.Linear``'s ``(in, out)`` kernel.
    """
    initializers = nnx.initializers
    return {
        "zeros": initializers.zeros,
        "normal": initializers.normal(stddev=spec.init_scale),
        "uniform": _symmetric_uniform(spec.init_scale),
        # initializers.glorot_normal()/he_normal() draw a truncated normal; the spec's normal is plain
        "xavier_normal": initializers.variance_scaling(1.0, "fan_avg", "normal"),
        "xavier_uniform": initializers.glorot_uniform(),
        "he_normal": initializers.variance_scaling(2.0, "fan_in", "normal"),
        "he_uniform": initializers.he_uniform(),
    }[spec.initializer]


# ---- activations ---------------------------------------------------------------------


HIDDEN_ACTIVATIONS: dict[str, Callable[[MLPSpec, jax.Array], jax.Array]] = {
    "sigmoid": lambda spec, z: nnx.sigmoid(z),
    "tanh": lambda spec, z: nnx.tanh(z),
    "relu": lambda spec, z: nnx.relu(z),  # its custom JVP gives relu'(0) = 0, the spec's value
    # nnx.leaky_relu is where(z >= 0, ...): its derivative at 0 is 1, not the slope
    "leaky_relu": lambda spec, z: jnp.where(z > 0, z, spec.leaky_slope * z),
    "elu": lambda spec, z: nnx.elu(z, spec.elu_alpha),  # where(z > 0, ...): elu'(0) = alpha already
    "identity": lambda spec, z: z,
}


def activation(spec: MLPSpec, z: jax.Array) -> jax.Array:
    """The spec's hidden activation of the pre-activations ``z``, elementwise; autodiff takes the left branch
    at the kink ``z = 0``."""
    return HIDDEN_ACTIVATIONS[spec.hidden_activation](spec, z)


OUTPUT_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": nnx.sigmoid,
    "softmax": lambda z: nnx.softmax(z, axis=-1),
    "identity": lambda z: z,
}


def output(spec: MLPSpec, z: jax.Array) -> jax.Array:
    """Probabilities (sigmoid/softmax) or values from the logits ``z: (n, k)``."""
    return OUTPUT_ACTIVATIONS[spec.loss_rule.output_activation](z)


# ---- the forward pass ----------------------------------------------------------------


def logits(spec: MLPSpec, model: Network, X: jax.Array, scales: Scales) -> jax.Array:
    """Output-layer pre-activations ``(n, n_outputs)`` of ``X: (n, n_inputs)``.

    Hidden layer ``l`` is multiplied by ``scales[l]`` where that is given; elsewhere it goes through the
    model's ``nnx.Dropout``, which draws a mask unless deterministic (the inference view, ``model.eval()``).
    """
    a = X
    for linear, dropout, scale in zip(model.linears[:-1], model.dropouts, scales):
        h = activation(spec, linear(a))
        a = dropout(h) if scale is None else h * scale
    return model.linears[-1](a)


def layer_dropout(spec: MLPSpec) -> Scales:
    """Scales that leave every hidden layer to the model's own ``nnx.Dropout``."""
    return [None] * len(spec.hidden_sizes)


# ---- losses --------------------------------------------------------------------------


DATA_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    # -y log_sigmoid(z) - (1 - y) log_sigmoid(-z) == softplus(z) - y z, finite for any z
    "binary_crossentropy": lambda z, Y: jnp.mean(optax.sigmoid_binary_cross_entropy(z, Y)),
    "categorical_crossentropy": lambda z, Y: jnp.mean(optax.softmax_cross_entropy(z, Y)),
    "mse": lambda z, Y: jnp.mean(optax.squared_error(z, Y)),  # not optax.l2_loss, which is half of it
    "mae": lambda z, Y: jnp.mean(abs_(z - Y)),  # Optax has no absolute error
}


def data_loss(spec: MLPSpec, z: jax.Array, Y: jax.Array) -> jax.Array:
    """Mean loss from logits ``z: (n, k)`` and dense targets ``Y: (n, k)``."""
    return DATA_LOSSES[spec.loss](z, Y)


def penalty(spec: MLPSpec, model: Network) -> jax.Array | float:
    """``l1 sum|W| + (l2/2) sum W**2`` over the kernels only, not divided by the batch size."""
    total: jax.Array | float = 0.0
    for linear in model.linears:
        W = linear.kernel[...]
        if spec.l1:
            total = total + spec.l1 * jnp.sum(abs_(W))
        if spec.l2:
            total = total + 0.5 * spec.l2 * jnp.sum(W * W)
    return total


def objective(spec: MLPSpec, model: Network, X: jax.Array, Y: jax.Array, scales: Scales) -> jax.Array:
    """Data loss + penalty, a scalar: what ``nnx.value_and_grad(objective, argnums=1)`` differentiates."""
    return data_loss(spec, logits(spec, model, X, scales), Y) + penalty(spec, model)


# ---- updates -------------------------------------------------------------------------


def sgd_update(param: jax.Array, velocity: jax.Array, grad: jax.Array, learning_rate: float,
               rule: SGD) -> tuple[jax.Array, jax.Array]:
    """The spec's SGD step on one array by :func:`spec_sgd`: ``v <- mu v - lr g``, ``theta <- theta + v``.

    ``velocity`` is the state of the chain's ``trace``.
    """
    state = (optax.EmptyState(), optax.TraceState(trace=velocity))
    update, (_, trace) = spec_sgd(learning_rate, rule.momentum).update(grad, state)
    return optax.apply_updates(param, update), trace.trace


def spec_sgd(learning_rate: float | jax.Array, momentum: float | jax.Array) -> optax.GradientTransformation:
    """The spec's SGD as an Optax chain: ``scale_by_learning_rate`` makes the step ``-lr g`` and ``trace``
    accumulates the steps, ``v <- mu v + (-lr g)``; the updates are ``v``."""
    return optax.chain(optax.scale_by_learning_rate(learning_rate), optax.trace(decay=momentum))


def adam_update(param: jax.Array, m: jax.Array, v: jax.Array, grad: jax.Array, learning_rate: float,
                step: int, rule: Adam) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The spec's Adam step ``step`` (from 1) on one array: ``optax.adam``, with ``m``, ``v`` as its moments.

    ``optax.adam`` is ``chain(scale_by_adam, scale_by_learning_rate)``: its state is the moments' and an
    empty one.
    """
    state = (optax.ScaleByAdamState(count=jnp.asarray(step - 1, jnp.int32), mu=m, nu=v), optax.EmptyState())
    update, (moments, _) = optax.adam(learning_rate, rule.beta1, rule.beta2, rule.epsilon).update(grad, state)
    return optax.apply_updates(param, update), moments.mu, moments.nu


def hyperparameters(rule: Optimizer, learning_rate: float) -> dict[str, float]:
    """The values of the hyper-parameters injected into ``rule``'s transformation, by their Optax names."""
    if isinstance(rule, Adam):
        return {"learning_rate": learning_rate, "b1": rule.beta1, "b2": rule.beta2, "eps": rule.epsilon}
    return {"learning_rate": learning_rate, "momentum": rule.momentum}


TRANSFORMATIONS: dict[type, optax.GradientTransformation] = {
    rule: optax.inject_hyperparams(factory)(**hyperparameters(rule(), 0.0))
    for rule, factory in ((SGD, spec_sgd), (Adam, optax.adam))
}
"""Each update rule's transformation of the whole model, every hyper-parameter in its state (the values
here only start the state; every training step writes its own).  Built once: the transformation is a static
part of an ``nnx.Optimizer``, so a new one per model would compile the training step anew."""


# ---- training steps ------------------------------------------------------------------


def train_step(spec: MLPSpec, model: Network, optimizer: nnx.Optimizer, X: jax.Array, Y: jax.Array) -> jax.Array:
    """One update of ``model`` by ``optimizer`` on the batch ``X: (n, n_inputs)``, ``Y: (n, n_outputs)``,
    dropout drawn by the model's ``nnx.Dropout``; returns the batch objective before the update."""
    loss, grads = nnx.value_and_grad(objective, argnums=1)(spec, model, X, Y, layer_dropout(spec))
    optimizer.update(model, grads)
    return loss


def set_hyperparameters(optimizer: nnx.Optimizer, values: dict[str, float | jax.Array]) -> None:
    """Write ``values`` into the optimizer's injected hyper-parameters, each in its variable's dtype.

    Inside a compiled step the values are traced arguments: a new rate neither recompiles nor costs an
    eager array update per hyper-parameter between steps.
    """
    for name, value in values.items():
        variable = optimizer.opt_state.hyperparams[name]
        variable[...] = jnp.asarray(value, variable.dtype)


@nnx.jit(static_argnums=0)
def _step_on_indices(spec: MLPSpec, model: Network, optimizer: nnx.Optimizer, X: jax.Array, Y: jax.Array,
                     idx: jax.Array, values: dict[str, float]) -> jax.Array:
    """:func:`train_step` on the batch ``X[idx]`` (``idx: (batch,)``), the gather compiled with the step,
    with the hyper-parameters ``values``."""
    set_hyperparameters(optimizer, values)
    return train_step(spec, model, optimizer, X[idx], Y[idx])


def _scan_steps(spec: MLPSpec, model: Network, optimizer: nnx.Optimizer, X: jax.Array, Y: jax.Array,
                batches: jax.Array, values: dict[str, float]) -> jax.Array:
    """:func:`train_step` over equal-size batches ``batches: (n_batches, batch)`` in one :func:`jax.lax.scan`,
    with the hyper-parameters ``values``; returns the ``(n_batches,)`` batch objectives.

    Traced under ``nnx.jit_partial`` with ``model`` and ``optimizer`` bound: the scan carries their
    functional form (``nnx.split``), and the final state goes back into them (``nnx.update``).
    """
    set_hyperparameters(optimizer, values)
    graphdef, state = nnx.split((model, optimizer))

    def body(state: nnx.State, idx: jax.Array) -> tuple[nnx.State, jax.Array]:
        model, optimizer = nnx.merge(graphdef, state)
        loss = train_step(spec, model, optimizer, X[idx], Y[idx])
        return nnx.state((model, optimizer)), loss

    state, losses = jax.lax.scan(body, state, batches)
    nnx.update((model, optimizer), state)
    return losses


def _predict(spec: MLPSpec, model: Network, X: jax.Array) -> jax.Array:
    """Outputs ``(n, n_outputs)`` of ``X: (n, n_inputs)``: probabilities (sigmoid/softmax) or values."""
    return output(spec, logits(spec, model, X, layer_dropout(spec)))


# read-only entry points: tree mode (graph=False) takes the inference view as a plain pytree instead of walking
# its object graph in Python, 0.56 instead of 1.4 ms a call on breast_cancer, between every two epochs
_forward = nnx.jit(_predict, static_argnums=0, graph=False)
_objective = nnx.jit(objective, static_argnums=0, graph=False)
_value_and_grad = nnx.jit(nnx.value_and_grad(objective, argnums=1), static_argnums=0, graph=False)




# ---- the interface -------------------------------------------------------------------


class FlaxMLP(MLP):
    """The spec as a Flax NNX module trained by ``nnx.Optimizer`` with Optax transformations.

    Modes: ``default`` calls one ``nnx.jit``-compiled step per batch.  ``scan`` runs the epoch's full batches
    in one compiled ``lax.scan`` and the shorter last batch in another, through ``nnx.jit_partial``, which
    flattens the model and its optimizer once, when the model is built, where ``nnx.jit`` walks their graph
    on every call (each model compiles its own scan).
    """

    name = "flax"

    def __init__(self, spec: MLPSpec, seed: int = 0, mode: str = "default") -> None:
        super().__init__(spec, seed, mode)
        # the static argument of the compiled functions must be hashable: dropout as a tuple
        self._static = dataclasses.replace(spec, dropout=spec.dropout_rates)
        self.model = init_params(spec, self.seed)  # in training mode: its dropout layers draw masks
        with precision(spec):
            # the same variables, dropout off: losses, gradients with injected masks, predictions
            # (not raising where a network without hidden layers has no dropout layer to set)
            self._inference = nnx.view(self.model, deterministic=True, raise_if_not_found=False)
            # one optimizer per rule, so that switching rules keeps each one's state, as the reference does
            self._optimizers = {rule: nnx.Optimizer(self.model, transformation, wrt=nnx.Param)
                                for rule, transformation in TRANSFORMATIONS.items()}
        self._scans = {rule: nnx.jit_partial(functools.partial(_scan_steps, self._static), self.model, optimizer,
                                             graph=False)
                       for rule, optimizer in self._optimizers.items()} if mode == "scan" else {}

    @in_precision
    def get_params(self) -> Params:
        return [(np.array(linear.kernel[...]), np.array(linear.bias[...])) for linear in self.model.linears]

    @in_precision
    def _set_params(self, params: Params) -> None:
        for linear, (W, b) in zip(self.model.linears, params):
            linear.kernel[...] = jnp.asarray(W)
            linear.bias[...] = jnp.asarray(b)

    @in_precision
    def _forward(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(_forward(self._static, self._inference, jnp.asarray(X)))

    @in_precision
    def _loss(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> float:
        return float(_objective(self._static, self._inference, jnp.asarray(X), jnp.asarray(Y), self._scales(masks)))

    @in_precision
    def _gradients(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Params:
        _, grads = _value_and_grad(self._static, self._inference, jnp.asarray(X), jnp.asarray(Y),
                                   self._scales(masks))
        layers = nnx.to_pure_dict(grads)["linears"]
        return [(np.array(layers[layer]["kernel"]), np.array(layers[layer]["bias"]))
                for layer in range(self.spec.n_layers)]

    def _train_step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        return self._run_epoch(*self._prepare_data(X, Y), [np.arange(len(X))], learning_rate, optimizer)

    @in_precision
    def reset_optimizer(self) -> None:
        for optimizer in self._optimizers.values():
            # in place: the compiled scans hold this optimizer's variables
            nnx.update(optimizer, nnx.state(nnx.Optimizer(self.model, optimizer.tx, wrt=nnx.Param)))

    @in_precision
    def native_params(self) -> nnx.State:
        """A copy of the model's parameter ``nnx.State``: ``linears.{l}.kernel`` ``(fan_in, fan_out)`` and
        ``linears.{l}.bias`` ``(fan_out,)`` for each layer ``l``.

        ``nnx.state`` hands out the model's live ``Param`` variables; ``nnx.clone`` detaches them.
        """
        return nnx.clone(nnx.state(self.model, nnx.Param))

    def load_native(self, native: nnx.State) -> None:
        """Load an ``nnx.State`` laid out as :meth:`native_params` returns it.

        It goes through :meth:`set_params`, so a wrong shape or a NaN gets the same message as canonical
        parameters do.
        """
        expected = {("linears", layer, kind) for layer in range(self.spec.n_layers) for kind in ("kernel", "bias")}
        flat = dict(nnx.to_flat_state(native)) if isinstance(native, nnx.State) else {}
        if set(flat) != expected:
            got = sorted(map(str, flat)) if isinstance(native, nnx.State) else type(native).__name__
            raise ValueError(f"an nnx.State with the paths {sorted(map(str, expected))} is needed, got {got}")
        self.set_params([tuple(np.asarray(flat["linears", layer, kind][...]) for kind in ("kernel", "bias"))
                         for layer in range(self.spec.n_layers)])

    @in_precision
    def _prepare_data(self, X: np.ndarray, Y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """The training set on the device once per fit: ``X: (n, n_inputs)``, ``Y: (n, n_outputs)``."""
        return jnp.asarray(X), jnp.asarray(Y)

    @in_precision
    def _run_epoch(self, X: jax.Array, Y: jax.Array, batches: list[np.ndarray], learning_rate: float,
                   optimizer: Optimizer) -> float:
        values = hyperparameters(optimizer, learning_rate)
        if self.mode == "scan":
            scan = self._scans[type(optimizer)]
            # batch_order's batches all have the first one's size except possibly a shorter last one
            n_full = sum(len(idx) == len(batches[0]) for idx in batches)
            losses = [scan(X, Y, np.stack(group), values) for group in (batches[:n_full], batches[n_full:]) if group]
        else:
            model, tx = self.model, self._optimizers[type(optimizer)]
            losses = [_step_on_indices(self._static, model, tx, X, Y, idx, values) for idx in batches]
        sizes = np.array([len(idx) for idx in batches])
        # the conversion waits for the asynchronous steps: the epoch is timed to its real end
        per_batch = np.concatenate([np.atleast_1d(loss) for loss in losses]).astype(np.float64)
        return float(per_batch @ sizes / sizes.sum())

    def _scales(self, masks: list[np.ndarray | None]) -> Scales:
        return [None if s is None else jnp.asarray(s) for s in self.spec.dropout_scales(masks)]


# ---- the same training, the Flax tutorial's way ---------------------------------------


def native_fit(spec: MLPSpec, config: TrainConfig, X: np.ndarray, y: np.ndarray,
               validation: tuple[np.ndarray, np.ndarray] | None = None, mode: str = "default") -> NativeRun:
    """The training loop of Flax's tutorials, without the spec's machinery.

    An ``nnx.Sequential`` of ``nnx.Linear`` layers (``nnx.initializers.he_normal()``: Flax's truncated He
    normal), the activation and ``nnx.Dropout``; ``nnx.Optimizer`` over
    ``optax.chain(add_decayed_weights(l2, mask=kernels), optax.sgd(schedule, momentum))`` with
    ``schedule = optax.exponential_decay(lr, steps_per_epoch, lr_decay, staircase=True)`` (L2 as Optax's
    weight decay on the kernels: the reported losses are Optax's data losses, without the penalty); an
    ``nnx.jit`` train step with ``nnx.value_and_grad`` that feeds ``nnx.metrics.Average`` (the reported epoch
    loss: the mean of the batch losses, each batch counted once); a NumPy
    permutation per epoch; validation on an ``nnx.view`` with dropout off; early stopping on the validation
    loss that restores the best parameters.  ``mode="scan"``: the same train step scanned over the epoch's
    batches, compiled by ``nnx.jit_partial`` with the model, optimizer and metric bound, as the class's
    ``scan`` mode.  ``X: (n, n_inputs)`` float, ``y``: 0/1 labels, class indices or values.
    """
    check_native_support(spec, config, validation)
    rng = np.random.default_rng(config.seed)
    dtype = np.dtype(spec.dtype)
    hidden = {"relu": nnx.relu, "tanh": nnx.tanh, "sigmoid": nnx.sigmoid}[spec.hidden_activation]
    loss_of = {
        "binary_crossentropy": lambda z, labels: optax.sigmoid_binary_cross_entropy(z, labels).mean(),
        "categorical_crossentropy": lambda z, labels: optax.softmax_cross_entropy_with_integer_labels(
            z, labels).mean(),
        "mse": lambda z, labels: optax.squared_error(z, labels).mean(),
    }[spec.loss]
    n, size = len(X), config.batch_size or len(X)
    steps_per_epoch = math.ceil(n / size)

    def targets(labels: np.ndarray) -> np.ndarray:
        if spec.loss == "categorical_crossentropy":
            return np.asarray(labels, np.int32)
        return np.asarray(labels, dtype).reshape(len(labels), -1)

    def kernels(params: nnx.State) -> nnx.State:
        return jax.tree.map(lambda p: p.ndim == 2, params)  # the weight matrices, not the biases

    def loss_fn(model: nnx.Sequential, x: jax.Array, labels: jax.Array) -> jax.Array:
        return loss_of(model(x), labels)

    def train_step(model: nnx.Sequential, optimizer: nnx.Optimizer, metrics: nnx.metrics.Average,
                   x_all: jax.Array, labels_all: jax.Array, idx: jax.Array) -> None:
        loss, grads = nnx.value_and_grad(loss_fn)(model, x_all[idx], labels_all[idx])
        optimizer.update(model, grads)
        metrics.update(loss=loss)

    def train_steps(model: nnx.Sequential, optimizer: nnx.Optimizer, metrics: nnx.metrics.Average,
                    x_all: jax.Array, labels_all: jax.Array, batches: jax.Array) -> None:
        graphdef, state = nnx.split((model, optimizer, metrics))

        def body(state: nnx.State, idx: jax.Array) -> tuple[nnx.State, None]:
            model, optimizer, metrics = nnx.merge(graphdef, state)
            train_step(model, optimizer, metrics, x_all, labels_all, idx)
            return nnx.state((model, optimizer, metrics)), None

        nnx.update((model, optimizer, metrics), jax.lax.scan(body, state, batches)[0])

    with precision(spec):
        rngs = nnx.Rngs(config.seed)
        layers: list[Callable] = []
        for fan_in, fan_out, rate in zip(spec.layer_sizes, spec.layer_sizes[1:-1], spec.dropout_rates):
            layers += [nnx.Linear(fan_in, fan_out, kernel_init=nnx.initializers.he_normal(), dtype=dtype,
                                  param_dtype=dtype, rngs=rngs), hidden, nnx.Dropout(rate, rngs=rngs)]
        layers.append(nnx.Linear(spec.layer_sizes[-2], spec.n_outputs, kernel_init=nnx.initializers.he_normal(),
                                 dtype=dtype, param_dtype=dtype, rngs=rngs))
        model = nnx.Sequential(*layers)  # in training mode: its dropout layers draw masks
        eval_model = nnx.view(model, deterministic=True, raise_if_not_found=False)  # no hidden layer: no dropout
        schedule = optax.exponential_decay(config.learning_rate, transition_steps=steps_per_epoch,
                                           decay_rate=config.lr_decay, staircase=True)
        weight_decay = [optax.add_decayed_weights(spec.l2, mask=kernels)] if spec.l2 else []
        optimizer = nnx.Optimizer(model, optax.chain(*weight_decay, optax.sgd(schedule, config.optimizer.momentum)),
                                  wrt=nnx.Param)
        metrics = nnx.metrics.Average("loss")
        if mode == "scan":
            scan = nnx.jit_partial(train_steps, model, optimizer, metrics, graph=False)
        else:
            step = nnx.jit(train_step)
        evaluate = nnx.jit(loss_fn)
        x_train, labels_train = jnp.asarray(X, dtype), jnp.asarray(targets(y))
        val = None if validation is None else (jnp.asarray(validation[0], dtype), jnp.asarray(targets(validation[1])))

        es = config.early_stopping
        history = History()
        best, best_params, waited = math.inf, None, 0
        for epoch in range(1, config.epochs + 1):
            order = rng.permutation(n) if config.shuffle else np.arange(n)
            batches = [order[first:first + size] for first in range(0, n, size)]
            start = time.perf_counter()  # after the shuffle: MLP.fit does not time batch_order either
            if mode == "scan":
                n_full = n // size
                for group in (batches[:n_full], batches[n_full:]):
                    if group:
                        scan(x_train, labels_train, np.stack(group))
            else:
                for idx in batches:
                    step(model, optimizer, metrics, x_train, labels_train, idx)
            epoch_loss = float(metrics.compute())  # waits for the asynchronous steps
            history.epoch_time.append(time.perf_counter() - start)
            metrics.reset()
            history.loss.append(epoch_loss)
            history.learning_rate.append(float(schedule((epoch - 1) * steps_per_epoch)))
            if val is not None:
                history.val_loss.append(float(evaluate(eval_model, *val)))
            if es is not None:
                if es.improves(history.val_loss[-1], best):
                    best, waited, history.best_epoch = history.val_loss[-1], 0, epoch
                    best_params = nnx.clone(nnx.state(model, nnx.Param))  # nnx.state is the live variables
                else:
                    waited += 1
                    if waited >= es.patience:
                        history.stopped_epoch = epoch
                        break
        if es is not None and es.restore_best and best_params is not None:
            nnx.update(model, best_params)

    def predict(A: np.ndarray) -> np.ndarray:
        with precision(spec):
            return np.asarray(output(spec, eval_model(jnp.asarray(A, dtype))))

    return NativeRun(history, predict)
