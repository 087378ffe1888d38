"""The MLP in JAX: pure functions over a parameter pytree, differentiated and compiled by JAX.

The model is a list of ``(W, b)`` pairs in the canonical layout (``W: (fan_in, fan_out)``,
``b: (fan_out,)``), the same pytree stax-style ``init``/``apply`` functions pass around.
Gradients come from :func:`jax.value_and_grad`; a training step is one :func:`jax.jit`
-compiled function ``(params, optimizer state, X, Y, lr, hyper-parameters, key) -> (params, state,
loss)`` with the learning rate and the optimizer's hyper-parameters traced, so a decaying rate
does not recompile; the update rule (SGD with momentum, or Adam) is static.
The ``scan`` mode runs the epoch's full batches in one compiled :func:`jax.lax.scan`.

Where JAX's defaults differ from the spec they are mapped here:

* ``jax.nn.initializers.he_normal``/``glorot_normal`` draw a *truncated* normal; the spec's
  is plain, so ``variance_scaling(..., "normal")`` is used.  ``initializers.uniform(s)``
  draws from ``[0, s)``; the spec's ``uniform`` is ``(-s, s)``.
* ``jax.nn.leaky_relu'(0) = 1``; the spec's is the slope, so leaky ReLU is written with
  ``jnp.where(z > 0, ...)``.  ``jax.nn.relu'(0) = 0`` and ``jax.nn.elu'(0) = alpha`` already agree.
* ``jnp.abs'(0) = 1``; the spec's ``d|w|/dw`` at 0 is 0 (``sign``), so :func:`abs_` has a custom JVP.
* 64-bit floats are off by default (``jax_enable_x64``) and silently become float32; a
  float64 model runs every entry point inside ``jax.enable_x64(True)`` and a float32 model
  inside ``jax.enable_x64(False)``, so the flag never leaks into other code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.nn import initializers

from impls.base import MLP
from impls.spec import Adam, MLPSpec, Optimizer, Params

JaxParams = list[tuple[jax.Array, jax.Array]]
"""Parameters as a pytree of JAX arrays: one ``(W (fan_in, fan_out), b (fan_out,))`` pair per layer."""

Scales = list[jax.Array | None]
"""Dropout multipliers ``keep / (1 - p)``, ``(n, width)`` per hidden layer; ``None``: no dropout there."""

_Method = TypeVar("_Method", bound=Callable[..., Any])


# ---- initializers ----------------------------------------------------------------

def _symmetric_uniform(limit: float) -> initializers.Initializer:
    """U(-limit, limit); ``initializers.uniform(limit)`` would draw from ``[0, limit)``."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)

    return init


def initializer(spec: MLPSpec) -> initializers.Initializer:
    """The :mod:`jax.nn.initializers` initializer drawing the spec's weight distribution.

    JAX reads ``fan_in``/``fan_out`` from axes -2/-1 of the shape, the canonical layout.
    """
    return {
        "zeros": initializers.zeros,
        "normal": initializers.normal(stddev=spec.init_scale),
        "uniform": _symmetric_uniform(spec.init_scale),
        # initializers.glorot_normal()/he_normal() use "truncated_normal"; the spec's normal is plain
        "xavier_normal": initializers.variance_scaling(1.0, "fan_avg", "normal"),
        "xavier_uniform": initializers.glorot_uniform(),
        "he_normal": initializers.variance_scaling(2.0, "fan_in", "normal"),
        "he_uniform": initializers.he_uniform(),
    }[spec.initializer]


def init_params(spec: MLPSpec, key: jax.Array) -> JaxParams:
    """Draw every weight matrix with its own key split from ``key``; biases start at zero."""
    init, dtype = initializer(spec), spec.np_dtype
    keys = jax.random.split(key, spec.n_layers)
    return [(init(k, w_shape, dtype), jnp.zeros(b_shape, dtype))
            for k, (w_shape, b_shape) in zip(keys, spec.param_shapes())]


# ---- the network as pure functions ------------------------------------------------

@jax.custom_jvp
def abs_(x: jax.Array) -> jax.Array:
    """``|x|`` whose derivative at 0 is 0 (``sign``), as the spec defines; ``jnp.abs'(0)`` is 1."""
    return jnp.abs(x)


@abs_.defjvp
def _abs_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    return jnp.abs(x), jnp.sign(x) * t


def hidden_activation(spec: MLPSpec, z: jax.Array) -> jax.Array:
    """The spec's hidden activation, elementwise; autodiff gives the left branch at ``z = 0``."""
    name = spec.hidden_activation
    if name == "sigmoid":
        return jax.nn.sigmoid(z)
    if name == "tanh":
        return jnp.tanh(z)
    if name == "relu":
        return jax.nn.relu(z)  # its custom JVP gives relu'(0) = 0, the spec's value
    if name == "leaky_relu":
        # jax.nn.leaky_relu uses jnp.where(z >= 0, ...), so its derivative at 0 is 1, not the slope
        return jnp.where(z > 0, z, spec.leaky_slope * z)
    if name == "elu":
        return jax.nn.elu(z, spec.elu_alpha)  # where(z > 0, ...): elu'(0) = alpha already
    return z


def logits(spec: MLPSpec, params: JaxParams, X: jax.Array, scales: Scales) -> jax.Array:
    """Output-layer pre-activations ``(n, n_outputs)`` of ``X: (n, n_inputs)``; hidden layer ``l``
    is multiplied by ``scales[l]`` (inverted dropout) when that is not ``None``."""
    a = X
    for (W, b), scale in zip(params[:-1], scales):
        a = hidden_activation(spec, a @ W + b)
        if scale is not None:
            a = a * scale
    W, b = params[-1]
    return a @ W + b


def predict(spec: MLPSpec, params: JaxParams, X: jax.Array) -> jax.Array:
    """Outputs ``(n, n_outputs)`` in inference mode: probabilities (sigmoid/softmax) or values."""
    z = logits(spec, params, X, [None] * len(spec.hidden_sizes))
    if spec.loss == "binary_crossentropy":
        return jax.nn.sigmoid(z)
    if spec.loss == "categorical_crossentropy":
        return jax.nn.softmax(z, axis=1)
    return z


def data_loss(spec: MLPSpec, z: jax.Array, Y: jax.Array) -> jax.Array:
    """Mean loss from logits ``z: (n, k)`` and dense targets ``Y: (n, k)``, in the stable forms of the spec."""
    if spec.loss == "binary_crossentropy":
        return jnp.mean(jax.nn.softplus(z) - Y * z)
    if spec.loss == "categorical_crossentropy":
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.sum(Y * z, axis=1))
    if spec.loss == "mse":
        return jnp.mean(jnp.square(z - Y))
    return jnp.mean(abs_(z - Y))  # mae: sign(0) = 0 at an exact fit, like the reference


def penalty(spec: MLPSpec, params: JaxParams) -> jax.Array | float:
    """``l1 sum|W| + (l2/2) sum W**2`` over the weight matrices (not the biases)."""
    total: jax.Array | float = 0.0
    for W, _ in params:
        if spec.l1:
            total = total + spec.l1 * jnp.sum(abs_(W))
        if spec.l2:
            total = total + 0.5 * spec.l2 * jnp.sum(W * W)
    return total


def objective(params: JaxParams, spec: MLPSpec, X: jax.Array, Y: jax.Array, scales: Scales) -> jax.Array:
    """Data loss + penalty, a scalar; ``params`` first so :func:`jax.grad` differentiates it."""
    return data_loss(spec, logits(spec, params, X, scales), Y) + penalty(spec, params)


def sample_dropout_scales(spec: MLPSpec, key: jax.Array, n: int, dtype: Any) -> Scales:
    """Fresh inverted-dropout multipliers ``bernoulli(1 - p) / (1 - p)``, ``(n, width)`` per hidden layer."""
    if not spec.uses_dropout:
        return [None] * len(spec.hidden_sizes)
    keys = jax.random.split(key, len(spec.hidden_sizes))
    return [None if p == 0 else jax.random.bernoulli(k, 1.0 - p, (n, width)).astype(dtype) / (1.0 - p)
            for k, width, p in zip(keys, spec.hidden_sizes, spec.dropout_rates)]


OptState = Any
"""Optimizer state: the velocity pytree (SGD) or ``(m, v, t)`` (Adam)."""


def sgd_update(params: JaxParams, velocity: JaxParams, grads: JaxParams, lr: jax.Array | float,
               momentum: jax.Array | float) -> tuple[JaxParams, JaxParams]:
    """The spec's classical momentum: ``v <- mu v - lr g; theta <- theta + v``."""
    velocity = jax.tree.map(lambda v, g: momentum * v - lr * g, velocity, grads)
    return jax.tree.map(jnp.add, params, velocity), velocity


def adam_update(params: JaxParams, state: tuple[JaxParams, JaxParams, jax.Array], grads: JaxParams,
                lr: jax.Array | float, beta1: jax.Array | float, beta2: jax.Array | float,
                epsilon: jax.Array | float) -> tuple[JaxParams, tuple[JaxParams, JaxParams, jax.Array]]:
    """The spec's Adam (Kingma & Ba, Algorithm 1; epsilon on the bias-corrected ``sqrt(v_hat)``)."""
    m, v, t = state
    t = t + 1
    m = jax.tree.map(lambda m, g: beta1 * m + (1 - beta1) * g, m, grads)
    v = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * g * g, v, grads)
    correction1, correction2 = 1 - beta1 ** t, 1 - beta2 ** t
    params = jax.tree.map(lambda p, m, v: p - lr * (m / correction1) / (jnp.sqrt(v / correction2) + epsilon),
                          params, m, v)
    return params, (m, v, t)


def train_step(spec: MLPSpec, rule: str, params: JaxParams, state: OptState, X: jax.Array, Y: jax.Array,
               lr: jax.Array | float, hyper: tuple, key: jax.Array) -> tuple[JaxParams, OptState, jax.Array]:
    """One update on the batch ``X: (n, n_inputs)``, ``Y: (n, n_outputs)``.

    ``rule`` is ``"sgd"`` (``hyper = (momentum,)``) or ``"adam"`` (``hyper = (beta1, beta2,
    epsilon)``).  Dropout masks are drawn from ``key``.  Returns the new parameters and
    optimizer state and the batch objective before the update.
    """
    scales = sample_dropout_scales(spec, key, X.shape[0], X.dtype)
    loss, grads = jax.value_and_grad(objective)(params, spec, X, Y, scales)
    if rule == "adam":
        params, state = adam_update(params, state, grads, lr, *hyper)
    else:
        params, state = sgd_update(params, state, grads, lr, *hyper)
    return params, state, loss


def _advance(spec: MLPSpec, rule: str, params: JaxParams, state: OptState, key: jax.Array, X: jax.Array,
             Y: jax.Array, lr: jax.Array | float, hyper: tuple) -> tuple[JaxParams, OptState, jax.Array, jax.Array]:
    """:func:`train_step` with a dropout key split off the model's key; also returns the advanced key.

    Every mode steps through this function, so they draw the same masks in the same order.
    """
    key, dropout_key = jax.random.split(key)
    params, state, loss = train_step(spec, rule, params, state, X, Y, lr, hyper, dropout_key)
    return params, state, key, loss


# ---- compiled entry points: the spec and the rule are static (hashable), everything else traced -------

_predict = jax.jit(predict, static_argnums=0)
_objective = jax.jit(objective, static_argnums=1)
_value_and_grad = jax.jit(jax.value_and_grad(objective), static_argnums=1)
_step = jax.jit(_advance, static_argnums=(0, 1))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _step_on_indices(spec: MLPSpec, rule: str, params: JaxParams, state: OptState, key: jax.Array,
                     X: jax.Array, Y: jax.Array, idx: jax.Array, lr: jax.Array | float,
                     hyper: tuple) -> tuple[JaxParams, OptState, jax.Array, jax.Array]:
    """One step on the batch ``X[idx]`` (``idx: (batch,)``), the gather compiled with the step."""
    return _advance(spec, rule, params, state, key, X[idx], Y[idx], lr, hyper)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _scan_steps(spec: MLPSpec, rule: str, params: JaxParams, state: OptState, key: jax.Array, X: jax.Array,
                Y: jax.Array, idx: jax.Array, lr: jax.Array | float,
                hyper: tuple) -> tuple[JaxParams, OptState, jax.Array, jax.Array]:
    """Steps over equal-size batches ``idx: (n_batches, batch)`` in one :func:`lax.scan`.

    Returns the final parameters, optimizer state and key, and the ``(n_batches,)`` batch objectives.
    """

    def body(carry: tuple[JaxParams, OptState, jax.Array],
             batch: jax.Array) -> tuple[tuple[JaxParams, OptState, jax.Array], jax.Array]:
        params, state, key, loss = _advance(spec, rule, *carry, X[batch], Y[batch], lr, hyper)
        return (params, state, key), loss

    (params, state, key), losses = lax.scan(body, (params, state, key), idx)
    return params, state, key, losses


def precision(spec: MLPSpec) -> contextlib.AbstractContextManager[None]:
    """``jax_enable_x64`` on for a float64 spec, off for a float32 one, until the ``with`` block ends."""
    return jax.enable_x64(spec.dtype == "float64")


def _in_precision(method: _Method) -> _Method:
    """Run a model method with ``jax_enable_x64`` set for the model's dtype, restored afterwards.

    Without x64, JAX turns float64 inputs into float32 silently; setting the flag globally
    would change every other JAX computation in the process.  The flag is part of JAX's
    trace context, so the compiled functions are cached per setting.
    """

    @functools.wraps(method)
    def wrapper(self: JaxMLP, *args: Any, **kwargs: Any) -> Any:
        with precision(self.spec):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class JaxMLP(MLP):
    """The MLP as pure JAX functions over a parameter pytree.

    Modes: ``default`` compiles one training step and calls it per batch; ``scan`` compiles
    the epoch's full batches into one :func:`lax.scan` (the last, shorter batch takes a step).
    """

    name = "jax"

    def __init__(self, spec: MLPSpec, seed: int = 0, mode: str = "default") -> None:
        super().__init__(spec, seed, mode)
        # the static argument of the compiled functions must be hashable: dropout as a tuple
        self._static = dataclasses.replace(spec, dropout=spec.dropout_rates)
        with precision(spec):
            # jax.random.key takes one scalar seed; one stream for the weights, one for dropout
            init_key, self._key = jax.random.split(jax.random.key(self.seed))
            self.params = init_params(spec, init_key)
            self.reset_optimizer()

    @_in_precision
    def get_params(self) -> Params:
        return [(np.array(W), np.array(b)) for W, b in self.params]

    @_in_precision
    def _set_params(self, params: Params) -> None:
        self.params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in params]

    def native_params(self) -> JaxParams:
        """The parameter pytree: ``[(W (fan_in, fan_out), b (fan_out,)), ...]`` as JAX arrays.

        JAX arrays are immutable, so a new list of the same arrays is already a copy.
        """
        return [(W, b) for W, b in self.params]

    def load_native(self, native: JaxParams) -> None:
        """Load a pytree laid out as :meth:`native_params` returns it (the canonical layout).

        It goes through :meth:`set_params`, so a wrong structure, shape or a NaN gets the same
        message as canonical parameters do.
        """
        leaves, treedef = jax.tree.flatten(native)
        self.set_params(jax.tree.unflatten(treedef, [np.asarray(leaf) for leaf in leaves]))

    @_in_precision
    def reset_optimizer(self) -> None:
        zeros = jax.tree.map(jnp.zeros_like, self.params)
        self._opt_state = {"sgd": zeros, "adam": (zeros, zeros, jnp.zeros((), self.spec.np_dtype))}

    def _rule(self, optimizer: Optimizer) -> tuple[str, tuple[float, ...]]:
        """The static rule name and the traced hyper-parameters of ``optimizer``."""
        if isinstance(optimizer, Adam):
            return "adam", (optimizer.beta1, optimizer.beta2, optimizer.epsilon)
        return "sgd", (optimizer.momentum,)

    def _scales(self, masks: list[np.ndarray | None]) -> Scales:
        return [None if s is None else jnp.asarray(s) for s in self.spec.dropout_scales(masks)]

    @_in_precision
    def _forward(self, X: np.ndarray) -> np.ndarray:
        return np.array(_predict(self._static, self.params, jnp.asarray(X)))

    @_in_precision
    def _loss(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> float:
        return float(_objective(self.params, self._static, jnp.asarray(X), jnp.asarray(Y), self._scales(masks)))

    @_in_precision
    def _gradients(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Params:
        _, grads = _value_and_grad(self.params, self._static, jnp.asarray(X), jnp.asarray(Y), self._scales(masks))
        return [(np.array(gW), np.array(gb)) for gW, gb in grads]

    @_in_precision
    def _train_step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        rule, hyper = self._rule(optimizer)
        self.params, self._opt_state[rule], self._key, loss = _step(
            self._static, rule, self.params, self._opt_state[rule], self._key, jnp.asarray(X), jnp.asarray(Y),
            learning_rate, hyper)
        return float(loss)

    @_in_precision
    def _prepare_data(self, X: np.ndarray, Y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """The training set on the device once per fit: ``X: (n, n_inputs)``, ``Y: (n, n_outputs)``."""
        return jnp.asarray(X), jnp.asarray(Y)

    @_in_precision
    def _run_epoch(self, X: jax.Array, Y: jax.Array, batches: list[np.ndarray], learning_rate: float,
                   optimizer: Optimizer) -> float:
        rule, hyper = self._rule(optimizer)
        if self.mode == "scan":
            # batch_order's batches all have the first one's size except possibly a shorter last one
            n_full = sum(len(idx) == len(batches[0]) for idx in batches)
            self.params, self._opt_state[rule], self._key, full_losses = _scan_steps(
                self._static, rule, self.params, self._opt_state[rule], self._key, X, Y,
                np.stack(batches[:n_full]), learning_rate, hyper)
            losses = [full_losses]
            rest = batches[n_full:]
        else:
            losses, rest = [], batches
        for idx in rest:
            self.params, self._opt_state[rule], self._key, loss = _step_on_indices(
                self._static, rule, self.params, self._opt_state[rule], self._key, X, Y, idx, learning_rate, hyper)
            losses.append(loss)
        # device_get waits for the asynchronous steps: the epoch is timed to its real end
        per_batch = np.concatenate([np.atleast_1d(v) for v in jax.device_get(losses)]).astype(np.float64)
        return float(np.average(per_batch, weights=[len(idx) for idx in batches]))
