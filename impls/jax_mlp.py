"""The MLP in JAX: pure functions over a parameter pytree, differentiated by JAX and compiled by XLA.

The model is a list of ``(W, b)`` pairs in the canonical layout (``W: (fan_in, fan_out)``,
``b: (fan_out,)``), the pytree stax-style ``init``/``apply`` functions pass around.  The file
follows the skeleton every implementation shares (:mod:`impls.base`); where the reference writes
derivatives out, :func:`jax.value_and_grad` differentiates :func:`objective`.

Training compiles, per model and update rule, one step (:func:`train_step`) over a carry of
parameters, optimizer state, dropout key and the epoch's running loss: the batch is gathered from the
device-resident data by an index array passed with the call, the dropout key is split inside, and
the loss is read back once per epoch.  The learning rate is traced, so a decaying rate does not
recompile.  The ``scan`` mode compiles the whole epoch: a :func:`jax.lax.scan` over the full batches,
then the shorter last batch; both modes run the same step, so they draw the same dropout masks.

Where JAX's defaults differ from the spec they are mapped here:

* ``jax.nn.initializers.he_normal``/``glorot_normal`` draw a *truncated* normal; the spec's rules
  are plain, so weights are drawn with ``initializers.normal(std)``.  ``initializers.uniform(s)``
  draws from ``[0, s)``; the spec's ``uniform`` is ``(-s, s)``.
* ``jax.nn.leaky_relu'(0) = 1``; the spec's is the slope, so leaky ReLU is written with
  ``jnp.where(z > 0, ...)``.  ``jax.nn.relu'(0) = 0`` and ``jax.nn.elu'(0) = alpha`` already agree.
* ``jnp.abs'(0) = 1``; the spec's ``d|w|/dw`` at 0 is 0 (``sign``), so :func:`abs_` has a custom JVP.
* JAX has no optimizers of its own: SGD and Adam are written out, epsilon where
  :class:`impls.spec.Adam` puts it.
* 64-bit floats are off by default (``jax_enable_x64``) and silently become float32; a
  float64 model runs every entry point inside ``jax.enable_x64(True)`` and a float32 model
  inside ``jax.enable_x64(False)``, so the flag never leaks into other code.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.nn import initializers

from impls.base import MLP, History, NativeRun, check_native_support
from impls.spec import SGD, Adam, MLPSpec, Optimizer, Params, TrainConfig

JaxParams = list[tuple[jax.Array, jax.Array]]
"""Parameters as a pytree of JAX arrays: one ``(W (fan_in, fan_out), b (fan_out,))`` pair per layer."""

Scales = list[jax.Array | None]
"""Inverted-dropout multipliers ``keep / (1 - p)``, ``(n, width)`` per hidden layer; ``None``: no dropout there."""


# ---- parameters ----------------------------------------------------------------------


def _symmetric_uniform(limit: float) -> initializers.Initializer:
    """U(-limit, limit); ``initializers.uniform(limit)`` would draw from ``[0, limit)``."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)

    return init


INITIALIZERS: dict[str, Callable[[float], initializers.Initializer]] = {
    "zeros": lambda scale: initializers.zeros,
    "normal": lambda scale: initializers.normal(stddev=scale),  # plain: he_normal()/glorot_normal() truncate
    "uniform": _symmetric_uniform,
}
"""The :mod:`jax.nn.initializers` initializer of each :attr:`~impls.spec.InitRule.distribution`, given its scale."""


def init_params(spec: MLPSpec, key: jax.Array) -> JaxParams:
    """Weights drawn by the spec's rules, each layer from its own key split off ``key``; zero biases.

    A key rather than a seed, as JAX threads its randomness (stax's ``init_fun(rng, input_shape)``):
    the model splits its seed's key between these weights and its dropout stream.  JAX reads
    ``fan_in``/``fan_out`` from axes -2/-1, the canonical layout.
    """
    dtype = spec.np_dtype
    keys = jax.random.split(key, spec.n_layers)
    return [(INITIALIZERS[rule.distribution](rule.scale)(layer_key, w_shape, dtype), jnp.zeros(b_shape, dtype))
            for layer_key, (w_shape, b_shape), rule in zip(keys, spec.param_shapes(), spec.init_rules())]


# ---- activations ---------------------------------------------------------------------


HIDDEN_ACTIVATIONS: dict[str, Callable[[MLPSpec, jax.Array], jax.Array]] = {
    "sigmoid": lambda spec, z: jax.nn.sigmoid(z),
    "tanh": lambda spec, z: jnp.tanh(z),
    "relu": lambda spec, z: jax.nn.relu(z),  # its custom JVP gives relu'(0) = 0, the spec's left branch
    # jax.nn.leaky_relu selects with z >= 0, so its derivative at 0 is 1, not the slope
    "leaky_relu": lambda spec, z: jnp.where(z > 0, z, spec.leaky_slope * z),
    "elu": lambda spec, z: jax.nn.elu(z, spec.elu_alpha),  # selects with z > 0: elu'(0) = alpha already
    "identity": lambda spec, z: z,
}


def activation(spec: MLPSpec, z: jax.Array) -> jax.Array:
    """The spec's hidden activation of the pre-activations ``z``, elementwise."""
    return HIDDEN_ACTIVATIONS[spec.hidden_activation](spec, z)


OUTPUT_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "softmax": lambda z: jax.nn.softmax(z, axis=1),
    "identity": lambda z: z,
}


def output(spec: MLPSpec, z: jax.Array) -> jax.Array:
    """Probabilities (sigmoid/softmax) or values from the logits ``z: (n, k)``."""
    return OUTPUT_ACTIVATIONS[spec.loss_rule.output_activation](z)


# ---- the forward pass ----------------------------------------------------------------


def logits(spec: MLPSpec, params: JaxParams, X: jax.Array, scales: Scales) -> jax.Array:
    """Output-layer pre-activations ``(n, n_outputs)`` of ``X: (n, n_inputs)``."""
    a = X
    for (W, b), scale in zip(params[:-1], scales):
        h = activation(spec, a @ W + b)
        a = h if scale is None else h * scale
    W, b = params[-1]
    return a @ W + b


def sample_dropout_scales(spec: MLPSpec, key: jax.Array, n_samples: int, dtype: Any) -> Scales:
    """Fresh multipliers ``bernoulli(1 - p) / (1 - p)``, ``(n_samples, width)`` per hidden layer, from ``key``.

    The counterpart of :meth:`~impls.spec.MLPSpec.sample_dropout_masks` and
    :meth:`~impls.spec.MLPSpec.dropout_scales` inside a compiled step, where NumPy cannot draw.
    """
    keys = jax.random.split(key, len(spec.hidden_sizes))
    return [None if p == 0 else jax.random.bernoulli(k, 1.0 - p, (n_samples, width)).astype(dtype) / (1.0 - p)
            for k, width, p in zip(keys, spec.hidden_sizes, spec.dropout_rates)]


# ---- losses --------------------------------------------------------------------------


@jax.custom_jvp
def abs_(x: jax.Array) -> jax.Array:
    """``|x|`` whose derivative at 0 is 0 (``sign``), as the spec defines; ``jnp.abs'(0)`` is 1."""
    return jnp.abs(x)


@abs_.defjvp
def _abs_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    return jnp.abs(x), jnp.sign(x) * t


DATA_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    # softplus(z) - y z == -[y log s(z) + (1 - y) log(1 - s(z))], finite for any z
    "binary_crossentropy": lambda z, Y: jnp.mean(jax.nn.softplus(z) - Y * z),
    "categorical_crossentropy": lambda z, Y: jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.sum(Y * z, axis=1)),
    "mse": lambda z, Y: jnp.mean(jnp.square(z - Y)),
    "mae": lambda z, Y: jnp.mean(abs_(z - Y)),  # |r|'(0) = 0
}


def data_loss(spec: MLPSpec, z: jax.Array, Y: jax.Array) -> jax.Array:
    """Mean loss from logits ``z: (n, k)`` and dense targets ``Y: (n, k)``, a scalar."""
    return DATA_LOSSES[spec.loss](z, Y)


def penalty(spec: MLPSpec, params: JaxParams) -> jax.Array | float:
    """``l1 sum|W| + (l2/2) sum W**2`` over weight matrices only, not divided by the batch size."""
    total: jax.Array | float = 0.0
    for W, _ in params:
        if spec.l1:
            total = total + spec.l1 * jnp.sum(abs_(W))
        if spec.l2:
            total = total + 0.5 * spec.l2 * jnp.sum(W * W)
    return total


def objective(spec: MLPSpec, params: JaxParams, X: jax.Array, Y: jax.Array, scales: Scales) -> jax.Array:
    """Data loss + penalty, a scalar: what :func:`jax.value_and_grad` differentiates (``argnums=1``)."""
    return data_loss(spec, logits(spec, params, X, scales), Y) + penalty(spec, params)


# ---- updates -------------------------------------------------------------------------


def sgd_update(param: jax.Array, velocity: jax.Array, grad: jax.Array, learning_rate: jax.Array | float,
               rule: SGD) -> tuple[jax.Array, jax.Array]:
    """The spec's SGD step on one array: ``v <- mu v - lr g``, ``theta <- theta + v``; new arrays."""
    velocity = rule.momentum * velocity - learning_rate * grad
    return param + velocity, velocity


def adam_update(param: jax.Array, m: jax.Array, v: jax.Array, grad: jax.Array, learning_rate: jax.Array | float,
                step: jax.Array | int, rule: Adam) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The spec's Adam step ``step`` (from 1) on one array, new arrays (see :class:`impls.spec.Adam`)."""
    m = rule.beta1 * m + (1 - rule.beta1) * grad
    v = rule.beta2 * v + (1 - rule.beta2) * grad * grad
    m_hat = m / (1 - rule.beta1 ** step)
    v_hat = v / (1 - rule.beta2 ** step)
    return param - learning_rate * m_hat / (jnp.sqrt(v_hat) + rule.epsilon), m, v


OptState = Any
"""Optimizer state: the velocity pytree (SGD), or ``(m, v, t)`` with ``t`` the steps taken (Adam)."""

Carry = tuple[JaxParams, OptState, jax.Array, jax.Array]
"""What training threads from step to step: parameters, optimizer state, the dropout key as raw data
(:func:`jax.random.key_data`), and the sum of the batch objectives times the batch sizes so far (the
epoch loss's numerator).  Raw data, because a typed key returned by a compiled call is rebuilt in
Python (``prngkeyarray_unflatten``: 2.5 us a call with jax 0.10.2, measured)."""


def update(rule: Optimizer, params: JaxParams, state: OptState, grads: JaxParams,
           learning_rate: jax.Array | float) -> tuple[JaxParams, OptState]:
    """``rule``'s step on every array of the pytree (:func:`sgd_update` or :func:`adam_update` by
    :func:`jax.tree.map`); returns the new parameters and optimizer state."""
    structure = jax.tree.structure(params)
    if isinstance(rule, Adam):
        m, v, t = state
        t = t + 1
        new = jax.tree.map(lambda p, m, v, g: adam_update(p, m, v, g, learning_rate, t, rule), params, m, v, grads)
        params, m, v = jax.tree.transpose(structure, None, new)
        return params, (m, v, t)
    new = jax.tree.map(lambda p, v, g: sgd_update(p, v, g, learning_rate, rule), params, state, grads)
    return jax.tree.transpose(structure, None, new)


def train_step(spec: MLPSpec, rule: Optimizer, carry: Carry, X: jax.Array, Y: jax.Array,
               learning_rate: jax.Array | float) -> tuple[Carry, jax.Array]:
    """One step of ``rule`` on the batch ``X: (n, n_inputs)``, ``Y: (n, n_outputs)`` with fresh dropout masks.

    Returns the new carry and the batch objective before the update.
    """
    params, state, key_data, total = carry
    scales: Scales = [None] * len(spec.hidden_sizes)
    if spec.uses_dropout:
        key, dropout_key = jax.random.split(jax.random.wrap_key_data(key_data))
        key_data = jax.random.key_data(key)
        scales = sample_dropout_scales(spec, dropout_key, X.shape[0], X.dtype)
    value, grads = jax.value_and_grad(objective, argnums=1)(spec, params, X, Y, scales)
    params, state = update(rule, params, state, grads, learning_rate)
    return (params, state, key_data, total + value * X.shape[0]), value


# ---- the interface -------------------------------------------------------------------

_Method = TypeVar("_Method", bound=Callable[..., Any])


def precision(spec: MLPSpec) -> contextlib.AbstractContextManager[None]:
    """``jax_enable_x64`` on for a float64 spec, off for a float32 one, until the ``with`` block ends."""
    return jax.enable_x64(spec.dtype == "float64")


def in_precision(method: _Method) -> _Method:
    """Run a model method with ``jax_enable_x64`` set for the model's dtype, restored afterwards.

    Without x64, JAX turns float64 inputs into float32 silently; setting the flag globally
    would change every other JAX computation in the process.  The flag is part of JAX's
    trace context, so the compiled functions are cached per setting.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:  # a model with a ``spec``
        with precision(self.spec):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class JaxMLP(MLP):
    """The MLP as pure JAX functions over a parameter pytree.

    Modes: ``default`` calls one compiled training step per batch; ``scan`` compiles the whole
    epoch (a :func:`lax.scan` over the full batches, then the shorter last one).

    NumPy arguments (index arrays, validation data, masks) go to the compiled functions as they are:
    a jitted call moves them to the device in C++ (a few us), where ``jnp.asarray`` takes a Python
    path (~20 us an array).  Only the training set is put on the device beforehand, once per fit.
    """

    name = "jax"

    def __init__(self, spec: MLPSpec, seed: int = 0, mode: str = "default") -> None:
        super().__init__(spec, seed, mode)
        with precision(spec):
            # jax.random.key takes one scalar seed: one stream for the weights, one for dropout
            init_key, dropout_key = jax.random.split(jax.random.key(self.seed))
            self._dropout_key = jax.random.key_data(dropout_key)  # raw, as the compiled steps carry it
            self.params = init_params(spec, init_key)
            self.reset_optimizer()
            self._zero_loss = jnp.zeros((), spec.np_dtype)
        # compiled per model, closing over the spec: the calls take arrays only (no static spec to hash and
        # compare per call, and no hashable copy of a spec whose dropout rates came as a list)
        no_dropout = self.no_dropout
        self._outputs = jax.jit(lambda params, X: output(spec, logits(spec, params, X, no_dropout)))
        self._objective = jax.jit(functools.partial(objective, spec))
        self._value_and_grad = jax.jit(jax.value_and_grad(functools.partial(objective, spec)))
        self._compiled: dict[Optimizer, tuple[Callable[..., tuple[Carry, jax.Array]], Callable[..., Carry]]] = {}

    def get_params(self) -> Params:
        return [(np.array(W), np.array(b)) for W, b in self.params]

    @in_precision
    def _set_params(self, params: Params) -> None:
        self.params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in params]

    @in_precision
    def _forward(self, X: np.ndarray) -> np.ndarray:
        return np.array(self._outputs(self.params, X))

    @in_precision
    def _loss(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> float:
        return float(self._objective(self.params, X, Y, self.spec.dropout_scales(masks)))

    @in_precision
    def _gradients(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Params:
        _, grads = self._value_and_grad(self.params, X, Y, self.spec.dropout_scales(masks))
        return [(np.array(gW), np.array(gb)) for gW, gb in grads]

    @in_precision
    def _train_step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        step, _ = self._steps(optimizer)
        carry, value = step(self._carry(optimizer), X, Y, np.arange(X.shape[0]), learning_rate)
        self._keep(optimizer, carry)
        return float(value)

    @in_precision
    def reset_optimizer(self) -> None:
        zeros = jax.tree.map(jnp.zeros_like, self.params)
        self._opt_state: dict[type, OptState] = {
            SGD: zeros,  # learning-rate-scaled steps
            Adam: (zeros, zeros, jnp.zeros((), self.spec.np_dtype)),  # m, v and the step count t
        }

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

    @in_precision
    def _prepare_data(self, X: np.ndarray, Y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """The training set on the device once per fit: ``X: (n, n_inputs)``, ``Y: (n, n_outputs)``."""
        return jnp.asarray(X), jnp.asarray(Y)

    @in_precision
    def _run_epoch(self, X: jax.Array, Y: jax.Array, batches: list[np.ndarray], learning_rate: float,
                   optimizer: Optimizer) -> float:
        step, epoch = self._steps(optimizer)
        carry = self._carry(optimizer)
        if self.mode == "scan":
            carry = epoch(carry, X, Y, np.concatenate(batches), learning_rate, len(batches[0]))
        else:
            for idx in batches:
                carry, _ = step(carry, X, Y, idx, learning_rate)
        self._keep(optimizer, carry)
        # reading the sum waits for the asynchronous steps: the epoch is timed to its real end
        return float(carry[-1]) / X.shape[0]

    def _carry(self, optimizer: Optimizer) -> Carry:
        """The state a training step starts from, with the loss sum at zero."""
        return self.params, self._opt_state[type(optimizer)], self._dropout_key, self._zero_loss

    def _keep(self, optimizer: Optimizer, carry: Carry) -> None:
        """Store the state the last training step left."""
        self.params, self._opt_state[type(optimizer)], self._dropout_key, _ = carry

    def _steps(self, rule: Optimizer) -> tuple[Callable[..., tuple[Carry, jax.Array]], Callable[..., Carry]]:
        """The compiled step and epoch of ``rule``, made on first use.

        ``step(carry, X, Y, idx, learning_rate)`` trains on the batch ``X[idx]``, ``Y[idx]``
        (one compilation per batch size); ``epoch(carry, X, Y, order, learning_rate, size)`` on every
        batch of ``order`` in turn, ``size`` indices each (static), the last one shorter when ``size``
        does not divide ``len(order)``.
        """
        if rule not in self._compiled:
            spec = self.spec

            def step(carry: Carry, X: jax.Array, Y: jax.Array, idx: jax.Array,
                     learning_rate: jax.Array | float) -> tuple[Carry, jax.Array]:
                return train_step(spec, rule, carry, X[idx], Y[idx], learning_rate)

            def epoch(carry: Carry, X: jax.Array, Y: jax.Array, order: jax.Array, learning_rate: jax.Array | float,
                      size: int) -> Carry:
                n_full = order.shape[0] // size
                full = order[:n_full * size].reshape(n_full, size)
                carry, _ = lax.scan(lambda c, idx: step(c, X, Y, idx, learning_rate), carry, full)
                if n_full * size < order.shape[0]:
                    carry, _ = step(carry, X, Y, order[n_full * size:], learning_rate)
                return carry

            self._compiled[rule] = (jax.jit(step), jax.jit(epoch, static_argnums=5))
        return self._compiled[rule]


# ---- the same training, written plainly --------------------------------------------


def native_fit(spec: MLPSpec, config: TrainConfig, X: np.ndarray, y: np.ndarray,
               validation: tuple[np.ndarray, np.ndarray] | None = None, mode: str = "default") -> NativeRun:
    """Plain JAX as its tutorials train a network: no interface, no spec conventions, no optimizer library.

    A parameter pytree from ``jax.nn.initializers.he_normal()`` (JAX's He normal, truncated) with zero
    biases; a ``jax.jit`` step that gathers its batch from the device-resident data by the epoch's
    ``jax.random.permutation``, drops units with ``jax.random.bernoulli`` on split keys, takes
    ``jax.value_and_grad`` of the loss with ``(l2/2) sum W**2`` added, and applies momentum written out.
    The learning rate is an argument, so its decay does not recompile.  ``mode="scan"``: the epoch's
    full batches in one jitted ``lax.scan``, a shorter last batch by the plain step.  Early stopping on
    a jitted validation loss restores the best weights.  float32, or float64 under ``jax.enable_x64``
    when ``X`` is float64.  ``X: (n, n_inputs)``; ``y``: 0/1 labels, class indices or values.
    """
    check_native_support(spec, config, validation)
    if mode not in JaxMLP.modes():
        raise ValueError(f"unknown mode {mode!r} for jax; expected one of {list(JaxMLP.modes())}")
    x64 = np.asarray(X).dtype == np.float64
    dtype = jnp.float64 if x64 else jnp.float32
    act = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}[spec.hidden_activation]
    out = {"binary_crossentropy": jax.nn.sigmoid, "categorical_crossentropy": jax.nn.softmax,
           "mse": lambda z: z}[spec.loss]
    keep = [1.0 - p for p in spec.dropout_rates]
    dropout = any(q < 1 for q in keep)
    mu, l2, k = config.optimizer.momentum, spec.l2, spec.n_outputs
    n = len(X)
    size = min(config.batch_size or n, n)

    def targets(labels: np.ndarray) -> jax.Array:
        if spec.loss == "categorical_crossentropy":
            return jax.nn.one_hot(labels, k, dtype=dtype)
        return jnp.asarray(labels, dtype).reshape(len(labels), k)

    def forward(params: JaxParams, A: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Logits ``(n, k)``; inverted dropout after each hidden layer when a key is given."""
        for (W, b), q in zip(params[:-1], keep):
            A = act(A @ W + b)
            if key is not None and q < 1:
                key, layer_key = jax.random.split(key)
                A = jnp.where(jax.random.bernoulli(layer_key, q, A.shape), A / q, 0)
        W, b = params[-1]
        return A @ W + b

    def loss_fn(params: JaxParams, A: jax.Array, T: jax.Array, key: jax.Array | None = None) -> jax.Array:
        Z = forward(params, A, key)
        if spec.loss == "binary_crossentropy":
            data = -jnp.mean(T * jax.nn.log_sigmoid(Z) + (1 - T) * jax.nn.log_sigmoid(-Z))
        elif spec.loss == "categorical_crossentropy":
            data = -jnp.mean(jnp.sum(T * jax.nn.log_softmax(Z), axis=1))
        else:
            data = jnp.mean((Z - T) ** 2)
        return data + 0.5 * l2 * sum(jnp.sum(W * W) for W, _ in params)

    State = tuple[JaxParams, JaxParams, jax.Array, jax.Array]  # params, velocity, key, the epoch's loss sum

    def train_step(state: State, X: jax.Array, Y: jax.Array, perm: jax.Array, start: jax.Array | int,
                   lr: float, batch: int) -> State:
        """SGD with momentum on the batch ``perm[start:start + batch]``, adding its loss times ``batch`` to the sum."""
        params, velocity, key, loss_sum = state
        idx = lax.dynamic_slice_in_dim(perm, start, batch)
        key, dropout_key = jax.random.split(key) if dropout else (key, None)
        loss, grads = jax.value_and_grad(loss_fn)(params, X[idx], Y[idx], dropout_key)
        velocity = jax.tree.map(lambda v, g: mu * v - lr * g, velocity, grads)
        params = jax.tree.map(jnp.add, params, velocity)
        return params, velocity, key, loss_sum + loss * batch

    def train_full_batches(state: State, X: jax.Array, Y: jax.Array, perm: jax.Array, lr: float) -> State:
        starts = jnp.arange(n // size) * size
        return lax.scan(lambda s, start: (train_step(s, X, Y, perm, start, lr, size), None), state, starts)[0]

    with jax.enable_x64(x64):
        key = jax.random.key(config.seed)
        init_key, shuffle_key, key = jax.random.split(key, 3)
        he_normal = initializers.he_normal()
        params = [(he_normal(layer_key, (fan_in, fan_out), dtype), jnp.zeros(fan_out, dtype))
                  for layer_key, fan_in, fan_out in zip(jax.random.split(init_key, spec.n_layers),
                                                        spec.layer_sizes[:-1], spec.layer_sizes[1:])]
        velocity = jax.tree.map(jnp.zeros_like, params)
        step = jax.jit(train_step, static_argnums=6)
        scan_epoch = jax.jit(train_full_batches)
        shuffle = jax.jit(lambda epoch: jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
                          if config.shuffle else jnp.arange(n))
        val_loss = jax.jit(loss_fn)
        predict_fn = jax.jit(lambda params, A: out(forward(params, A)))
        X_train, Y_train, zero = jnp.asarray(X, dtype), targets(y), jnp.zeros((), dtype)
        val = None if validation is None else (jnp.asarray(validation[0], dtype), targets(validation[1]))
        es = config.early_stopping
        history = History()
        best, best_params, waited = math.inf, None, 0
        lr = config.learning_rate
        for epoch in range(1, config.epochs + 1):
            # not timed, as MLP.fit does not time batch_order: the on-device shuffle sorts (0.1-0.7 ms per
            # epoch on these data sizes), which would otherwise flatter every spec/native ratio
            perm = shuffle(epoch).block_until_ready()
            start_time = time.perf_counter()
            state = (params, velocity, key, zero)
            first = 0
            if mode == "scan":
                state = scan_epoch(state, X_train, Y_train, perm, lr)
                first = n - n % size
            for start in range(first, n, size):
                state = step(state, X_train, Y_train, perm, start, lr, min(size, n - start))
            params, velocity, key, loss_sum = state
            history.loss.append(float(loss_sum) / n)
            history.epoch_time.append(time.perf_counter() - start_time)
            history.learning_rate.append(lr)
            lr *= config.lr_decay
            if val is not None:
                history.val_loss.append(float(val_loss(params, *val)))
            if es is not None:
                if es.improves(history.val_loss[-1], best):
                    best, best_params, waited, history.best_epoch = history.val_loss[-1], params, 0, epoch
                else:
                    waited += 1
                    if waited >= es.patience:
                        history.stopped_epoch = epoch
                        break
        if es is not None and es.restore_best and best_params is not None:
            params = best_params

    def predict(A: np.ndarray) -> np.ndarray:
        with jax.enable_x64(x64):
            return np.asarray(predict_fn(params, jnp.asarray(A, dtype)))

    return NativeRun(history, predict)
