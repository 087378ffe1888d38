"""The reference: forward and backward passes written by hand in NumPy.

No autodiff: every derivative below is the chain rule applied to the spec's
definitions, vectorized over the batch.  The other implementations are checked
against this file, and this file is checked against finite differences.

The file follows the skeleton every implementation shares (:mod:`impls.base`).  Where the
others call autodiff, the reference has the derivatives written out beside the function they
differentiate: :func:`activation_derivative`, :func:`data_loss_gradient`, :func:`penalty_gradient`
and :func:`backprop`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from impls.base import MLP, History, NativeRun, check_native_support
from impls.spec import SGD, Adam, MLPSpec, Optimizer, Params, TrainConfig

Scales = list[np.ndarray | None]
"""Inverted-dropout multipliers ``keep / (1 - p)``, ``(n, width)`` per hidden layer; ``None``: no dropout there."""


# ---- parameters ----------------------------------------------------------------------


def init_params(spec: MLPSpec, seed: int) -> Params:
    """Weights drawn by the spec's rules from ``numpy.random.default_rng(seed)``, layer by layer; zero biases."""
    rng = np.random.default_rng(seed)
    params: Params = []
    for ((fan_in, fan_out), b_shape), rule in zip(spec.param_shapes(), spec.init_rules()):
        if rule.distribution == "normal":
            W = rng.normal(0.0, rule.scale, size=(fan_in, fan_out))
        elif rule.distribution == "uniform":
            W = rng.uniform(-rule.scale, rule.scale, size=(fan_in, fan_out))
        else:
            W = np.zeros((fan_in, fan_out))
        params.append((W.astype(spec.dtype), np.zeros(b_shape, dtype=spec.dtype)))
    return params


# ---- activations ---------------------------------------------------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large |z| (no overflow in exp)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


HIDDEN_ACTIVATIONS: dict[str, Callable[[MLPSpec, np.ndarray], np.ndarray]] = {
    "sigmoid": lambda spec, z: sigmoid(z),
    "tanh": lambda spec, z: np.tanh(z),
    "relu": lambda spec, z: np.maximum(z, 0),
    "leaky_relu": lambda spec, z: np.where(z > 0, z, spec.leaky_slope * z),
    "elu": lambda spec, z: np.where(z > 0, z, spec.elu_alpha * np.expm1(np.minimum(z, 0))),
    "identity": lambda spec, z: z,
}


def activation(spec: MLPSpec, z: np.ndarray) -> np.ndarray:
    """The spec's hidden activation of the pre-activations ``z``, elementwise."""
    return HIDDEN_ACTIVATIONS[spec.hidden_activation](spec, z)


ACTIVATION_DERIVATIVES: dict[str, Callable[[MLPSpec, np.ndarray, np.ndarray], np.ndarray]] = {
    "sigmoid": lambda spec, z, h: h * (1 - h),
    "tanh": lambda spec, z, h: 1 - h * h,
    "relu": lambda spec, z, h: (z > 0).astype(z.dtype),
    "leaky_relu": lambda spec, z, h: np.where(z > 0, 1, spec.leaky_slope).astype(z.dtype),
    "elu": lambda spec, z, h: np.where(z > 0, 1, h + spec.elu_alpha).astype(z.dtype),  # alpha e^z = h + alpha
    "identity": lambda spec, z, h: np.ones_like(z),
}


def activation_derivative(spec: MLPSpec, z: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``d activation(z) / dz`` given ``z`` and ``h = activation(z)``; the left branch at the kink ``z = 0``."""
    return ACTIVATION_DERIVATIVES[spec.hidden_activation](spec, z, h)


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the outputs of each sample (``z: (n, k)``), shifted by the row maximum."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


OUTPUT_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": sigmoid,
    "softmax": softmax,
    "identity": lambda z: z,
}


def output(spec: MLPSpec, z: np.ndarray) -> np.ndarray:
    """Probabilities (sigmoid/softmax) or values from the logits ``z: (n, k)``."""
    return OUTPUT_ACTIVATIONS[spec.loss_rule.output_activation](z)


# ---- the forward pass ----------------------------------------------------------------


def logits(spec: MLPSpec, params: Params, X: np.ndarray, scales: Scales) -> np.ndarray:
    """Output-layer pre-activations ``(n, n_outputs)`` of ``X: (n, n_inputs)``."""
    return forward_pass(spec, params, X, scales)[0]


def forward_pass(spec: MLPSpec, params: Params, X: np.ndarray, scales: Scales):
    """The forward pass, keeping what :func:`backprop` needs.

    Returns the logits ``(n, k)`` and, per hidden layer, the pre-activations ``zs``, the
    activations ``hs`` and the inputs of every layer (``inputs[0] = X``,
    ``inputs[l] = hs[l-1] * scales[l-1]``).
    """
    act = HIDDEN_ACTIVATIONS[spec.hidden_activation]
    inputs, zs, hs = [X], [], []
    a = X
    for (W, b), scale in zip(params[:-1], scales):
        z = a @ W + b
        h = act(spec, z)
        a = h if scale is None else h * scale
        zs.append(z)
        hs.append(h)
        inputs.append(a)
    W, b = params[-1]
    return a @ W + b, zs, hs, inputs


# ---- losses --------------------------------------------------------------------------


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]


DATA_LOSSES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    # softplus(z) - y z == -[y log s(z) + (1 - y) log(1 - s(z))], finite for any z
    "binary_crossentropy": lambda z, Y: float(np.mean(np.logaddexp(0, z) - Y * z)),
    "categorical_crossentropy": lambda z, Y: float(np.mean(_logsumexp(z) - np.sum(Y * z, axis=1))),
    "mse": lambda z, Y: float(np.mean((z - Y) ** 2)),
    "mae": lambda z, Y: float(np.mean(np.abs(z - Y))),
}


def data_loss(spec: MLPSpec, z: np.ndarray, Y: np.ndarray) -> float:
    """Mean loss from logits ``z: (n, k)`` and dense targets ``Y: (n, k)``."""
    return DATA_LOSSES[spec.loss](z, Y)


DATA_LOSS_GRADIENTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "binary_crossentropy": lambda z, Y: (sigmoid(z) - Y) / Y.size,
    "categorical_crossentropy": lambda z, Y: (softmax(z) - Y) / Y.shape[0],
    "mse": lambda z, Y: 2 * (z - Y) / Y.size,
    "mae": lambda z, Y: np.sign(z - Y) / Y.size,  # |r|'(0) = 0
}


def data_loss_gradient(spec: MLPSpec, z: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``d data_loss / d z``, ``(n, k)``."""
    return DATA_LOSS_GRADIENTS[spec.loss](z, Y)


def penalty(spec: MLPSpec, params: Params) -> float:
    """``l1 sum|W| + (l2/2) sum W**2`` over weight matrices only, not divided by the batch size."""
    total = 0.0
    for W, _ in params:
        if spec.l1:
            total += spec.l1 * float(np.abs(W).sum())
        if spec.l2:
            total += 0.5 * spec.l2 * float((W * W).sum())
    return total


def penalty_gradient(spec: MLPSpec, W: np.ndarray) -> np.ndarray | float:
    """``d penalty / d W`` of one weight matrix: ``l1 sign(W) + l2 W`` (``sign(0) = 0``)."""
    grad: np.ndarray | float = 0.0
    if spec.l1:
        grad = grad + spec.l1 * np.sign(W)
    if spec.l2:
        grad = grad + spec.l2 * W
    return grad


def objective(spec: MLPSpec, params: Params, X: np.ndarray, Y: np.ndarray, scales: Scales) -> float:
    """Data loss + penalty: the function whose gradient :func:`backprop` computes."""
    return data_loss(spec, logits(spec, params, X, scales), Y) + penalty(spec, params)


def backprop(spec: MLPSpec, params: Params, X: np.ndarray, Y: np.ndarray,
             scales: Scales) -> tuple[float, Params]:
    """:func:`objective` and its gradient, one ``(dW, db)`` pair per layer: the chain rule, layer by layer."""
    z_out, zs, hs, inputs = forward_pass(spec, params, X, scales)
    value = data_loss(spec, z_out, Y) + penalty(spec, params)
    delta = data_loss_gradient(spec, z_out, Y)  # d objective / d z of the current layer
    grads: Params = []
    for layer in range(spec.n_layers - 1, -1, -1):
        W, _ = params[layer]
        grads.append((inputs[layer].T @ delta + penalty_gradient(spec, W), delta.sum(axis=0)))
        if layer > 0:
            d_input = delta @ W.T
            if scales[layer - 1] is not None:
                d_input = d_input * scales[layer - 1]
            delta = d_input * activation_derivative(spec, zs[layer - 1], hs[layer - 1])
    grads.reverse()
    return value, grads


# ---- updates -------------------------------------------------------------------------


def sgd_update(param: np.ndarray, velocity: np.ndarray, grad: np.ndarray, learning_rate: float,
               rule: SGD) -> tuple[np.ndarray, np.ndarray]:
    """The spec's SGD step on one array, in place: ``v <- mu v - lr g``, ``theta <- theta + v``."""
    velocity *= rule.momentum
    velocity -= learning_rate * grad
    param += velocity
    return param, velocity


def adam_update(param: np.ndarray, m: np.ndarray, v: np.ndarray, grad: np.ndarray, learning_rate: float,
                step: int, rule: Adam) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The spec's Adam step ``step`` (from 1) on one array, in place (see :class:`impls.spec.Adam`)."""
    m *= rule.beta1
    m += (1 - rule.beta1) * grad
    v *= rule.beta2
    v += (1 - rule.beta2) * grad * grad
    m_hat = m / (1 - rule.beta1 ** step)
    v_hat = v / (1 - rule.beta2 ** step)
    param -= learning_rate * m_hat / (np.sqrt(v_hat) + rule.epsilon)
    return param, m, v


# ---- the interface -------------------------------------------------------------------


class NumpyMLP(MLP):
    """Hand-written backpropagation; the reference implementation."""

    name = "numpy"

    def __init__(self, spec: MLPSpec, seed: int = 0, mode: str = "default") -> None:
        super().__init__(spec, seed, mode)
        self.params = init_params(spec, self.seed)
        self._dropout_rng = np.random.default_rng([self.seed, 1])
        self.reset_optimizer()

    def get_params(self) -> Params:
        return [(W.copy(), b.copy()) for W, b in self.params]

    def _set_params(self, params: Params) -> None:
        self.params = [(W.copy(), b.copy()) for W, b in params]

    def _forward(self, X: np.ndarray) -> np.ndarray:
        return output(self.spec, logits(self.spec, self.params, X, self.no_dropout))

    def _loss(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> float:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing loss is reported by loss(), by value
            return objective(self.spec, self.params, X, Y, self.spec.dropout_scales(masks))

    def _gradients(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Params:
        return backprop(self.spec, self.params, X, Y, self.spec.dropout_scales(masks))[1]

    def _train_step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported by fit, by value
            return self._step(X, Y, learning_rate, optimizer)

    def reset_optimizer(self) -> None:
        zeros = [np.zeros_like(a) for pair in self.params for a in pair]
        self.velocity = zeros  # SGD: learning-rate-scaled steps
        self.first_moment = [np.zeros_like(a) for a in zeros]  # Adam: m, v and the step count t
        self.second_moment = [np.zeros_like(a) for a in zeros]
        self.adam_steps = 0

    def native_params(self) -> Params:
        """NumPy's native layout is the canonical one: ``[(W (fan_in, fan_out), b (fan_out,)), ...]``."""
        return self.get_params()

    def load_native(self, native: Params) -> None:
        self.set_params(native)

    def _run_epoch(self, X: np.ndarray, Y: np.ndarray, batches: list[np.ndarray], learning_rate: float,
                   optimizer: Optimizer) -> float:
        total = 0.0
        with np.errstate(over="ignore", invalid="ignore"):  # once per epoch: divergence is reported by fit
            for idx in batches:
                total += self._step(X[idx], Y[idx], learning_rate, optimizer) * len(idx)
        return total / X.shape[0]

    def _step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        """Backprop with fresh dropout masks, then the update of every array; the pre-update objective."""
        spec = self.spec
        scales = (spec.dropout_scales(spec.sample_dropout_masks(X.shape[0], self._dropout_rng))
                  if spec.uses_dropout else self.no_dropout)
        value, grads = backprop(spec, self.params, X, Y, scales)
        params = [a for pair in self.params for a in pair]
        flat_grads = [g for pair in grads for g in pair]
        if isinstance(optimizer, Adam):
            self.adam_steps += 1
            for state in zip(params, self.first_moment, self.second_moment, flat_grads):
                adam_update(*state, learning_rate, self.adam_steps, optimizer)
        else:
            for param, velocity, grad in zip(params, self.velocity, flat_grads):
                sgd_update(param, velocity, grad, learning_rate, optimizer)
        return value


# ---- the same training, written plainly --------------------------------------------


def native_fit(spec: MLPSpec, config: TrainConfig, X: np.ndarray, y: np.ndarray,
               validation: tuple[np.ndarray, np.ndarray] | None = None, mode: str = "default") -> NativeRun:
    """A plain NumPy training loop in the style of the lecture's ``SimpleMLP``: no interface, no validation.

    He-normal weights, closed-form output deltas (``p - y`` for sigmoid/softmax with cross-entropy,
    ``2 (z - y)`` for MSE), ``l2 W`` added to each weight gradient, inverted dropout, classical
    momentum, the rate multiplied by ``lr_decay`` after each epoch, its own shuffle, and early stopping
    on the validation loss that restores the best weights.  ``X: (n, n_inputs)`` float,
    ``y``: 0/1 labels, class indices or values.
    """
    check_native_support(spec, config, validation)
    rng = np.random.default_rng(config.seed)
    dtype = X.dtype
    act, act_grad = {
        "relu": (lambda z: np.maximum(z, 0), lambda h: h > 0),
        "tanh": (np.tanh, lambda h: 1 - h * h),
        "sigmoid": (sigmoid, lambda h: h * (1 - h)),
    }[spec.hidden_activation]
    shapes = list(zip(spec.layer_sizes[:-1], spec.layer_sizes[1:]))
    Ws = [(rng.standard_normal((i, o)) * math.sqrt(2.0 / i)).astype(dtype) for i, o in shapes]
    bs = [np.zeros(o, dtype) for _, o in shapes]
    vWs, vbs = [np.zeros_like(W) for W in Ws], [np.zeros_like(b) for b in bs]
    keep = [1.0 - p for p in spec.dropout_rates]
    mu, l2, k = config.optimizer.momentum, spec.l2, spec.n_outputs

    def targets(labels: np.ndarray) -> np.ndarray:
        if spec.loss == "categorical_crossentropy":
            return np.eye(k, dtype=dtype)[labels]
        return np.asarray(labels, dtype).reshape(len(labels), k)

    def forward(A: np.ndarray, train: bool):
        inputs, hidden, masks = [A], [], []
        for W, b, q in zip(Ws[:-1], bs[:-1], keep):
            h = act(A @ W + b)
            m = (rng.random(h.shape, dtype) < q) / dtype.type(q) if train and q < 1 else None
            A = h if m is None else h * m
            hidden.append(h)
            masks.append(m)
            inputs.append(A)
        return A @ Ws[-1] + bs[-1], inputs, hidden, masks

    def loss_of(Z: np.ndarray, T: np.ndarray) -> float:
        return data_loss(spec, Z, T) + 0.5 * l2 * sum(float((W * W).sum()) for W in Ws)

    def predict(A: np.ndarray) -> np.ndarray:
        return output(spec, forward(np.asarray(A, dtype), train=False)[0])

    Y = targets(y)
    val = None if validation is None else (np.asarray(validation[0], dtype), targets(validation[1]))
    es = config.early_stopping
    history = History()
    best, best_weights, waited = math.inf, None, 0
    lr = config.learning_rate
    size = config.batch_size or len(X)
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(len(X)) if config.shuffle else np.arange(len(X))
        start = time.perf_counter()  # after the shuffle: MLP.fit does not time batch_order either
        total = 0.0
        for first in range(0, len(X), size):
            idx = order[first:first + size]
            A, T = X[idx], Y[idx]
            Z, inputs, hidden, masks = forward(A, train=True)
            total += loss_of(Z, T) * len(idx)
            if spec.loss == "mse":
                delta = (Z - T) * (2.0 / T.size)
            else:  # sigmoid + BCE averages over every output, softmax + CE over samples
                delta = (output(spec, Z) - T) / (T.size if spec.loss == "binary_crossentropy" else len(idx))
            for layer in range(len(Ws) - 1, -1, -1):
                dW = inputs[layer].T @ delta + l2 * Ws[layer]
                db = delta.sum(axis=0)
                if layer > 0:  # with the weights before this step's update
                    delta = delta @ Ws[layer].T
                    if masks[layer - 1] is not None:
                        delta *= masks[layer - 1]
                    delta *= act_grad(hidden[layer - 1])
                vWs[layer] = mu * vWs[layer] - lr * dW
                vbs[layer] = mu * vbs[layer] - lr * db
                Ws[layer] += vWs[layer]
                bs[layer] += vbs[layer]
        history.epoch_time.append(time.perf_counter() - start)
        history.loss.append(total / len(X))
        history.learning_rate.append(lr)
        lr *= config.lr_decay
        if val is not None:
            history.val_loss.append(loss_of(forward(val[0], train=False)[0], val[1]))
        if es is not None:
            if es.improves(history.val_loss[-1], best):
                best, waited, history.best_epoch = history.val_loss[-1], 0, epoch
                best_weights = ([W.copy() for W in Ws], [b.copy() for b in bs])
            else:
                waited += 1
                if waited >= es.patience:
                    history.stopped_epoch = epoch
                    break
    if es is not None and es.restore_best and best_weights is not None:
        Ws[:], bs[:] = best_weights
    return NativeRun(history, predict)
