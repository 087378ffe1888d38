"""The reference: forward and backward passes written by hand in NumPy.

No autodiff: every derivative below is the chain rule applied to the spec's
definitions, vectorized over the batch.  The other implementations are checked
against this file, and this file is checked against finite differences.
"""

from __future__ import annotations

import numpy as np

from impls.base import MLP
from impls.spec import Adam, MLPSpec, Optimizer, Params

# ---- activations and their derivatives -----------------------------------------

def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large |z| (no overflow in exp)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def activation(name: str, z: np.ndarray, spec: MLPSpec) -> np.ndarray:
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky_relu":
        return np.where(z > 0, z, spec.leaky_slope * z)
    if name == "elu":
        return np.where(z > 0, z, spec.elu_alpha * np.expm1(np.minimum(z, 0)))
    if name == "identity":
        return z
    raise ValueError(f"unknown activation {name!r}")


def activation_derivative(name: str, z: np.ndarray, h: np.ndarray, spec: MLPSpec) -> np.ndarray:
    """d act(z) / dz, given ``z`` and ``h = act(z)``; at ``z = 0`` the left branch (spec)."""
    if name == "sigmoid":
        return h * (1 - h)
    if name == "tanh":
        return 1 - h * h
    if name == "relu":
        return (z > 0).astype(z.dtype)
    if name == "leaky_relu":
        return np.where(z > 0, 1, spec.leaky_slope).astype(z.dtype)
    if name == "elu":
        return np.where(z > 0, 1, h + spec.elu_alpha).astype(z.dtype)  # alpha e^z = h + alpha
    if name == "identity":
        return np.ones_like(z)
    raise ValueError(f"unknown activation {name!r}")


# ---- output/loss pairs: value and d loss / d logits ------------------------------

def output(loss: str, z: np.ndarray) -> np.ndarray:
    """Output activation of the logits ``z: (n, k)``."""
    if loss == "binary_crossentropy":
        return sigmoid(z)
    if loss == "categorical_crossentropy":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z


def data_loss_and_delta(loss: str, z: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean loss from logits ``z: (n, k)`` and its gradient with respect to ``z``."""
    n = z.shape[0]
    if loss == "binary_crossentropy":
        # softplus(z) - y z == -[y log s(z) + (1 - y) log(1 - s(z))], finite for any z
        value = np.mean(np.logaddexp(0, z) - Y * z)
        return float(value), (sigmoid(z) - Y) / Y.size
    if loss == "categorical_crossentropy":
        shifted = z - z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_norm
        value = -np.sum(Y * log_probs) / n
        return float(value), (np.exp(log_probs) - Y) / n
    residual = z - Y
    if loss == "mse":
        return float(np.mean(residual ** 2)), 2 * residual / Y.size
    if loss == "mae":
        return float(np.mean(np.abs(residual))), np.sign(residual) / Y.size
    raise ValueError(f"unknown loss {loss!r}")


def penalty(spec: MLPSpec, params: Params) -> float:
    """``l1 sum|W| + (l2/2) sum W**2`` over weight matrices only."""
    total = 0.0
    for W, _ in params:
        if spec.l1:
            total += spec.l1 * float(np.abs(W).sum())
        if spec.l2:
            total += 0.5 * spec.l2 * float((W * W).sum())
    return total


def init_params(spec: MLPSpec, seed: int) -> Params:
    """Draw weights by the spec's initializer rules from ``numpy.random.default_rng(seed)``; zero biases."""
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


class NumpyMLP(MLP):
    """Hand-written backpropagation; the reference implementation."""

    name = "numpy"

    def __init__(self, spec: MLPSpec, seed: int = 0, mode: str = "default") -> None:
        super().__init__(spec, seed, mode)
        self.params = init_params(spec, seed)
        self._dropout_rng = np.random.default_rng([seed, 1])
        self.reset_optimizer()

    def get_params(self) -> Params:
        return [(W.copy(), b.copy()) for W, b in self.params]

    def _set_params(self, params: Params) -> None:
        self.params = [(W.copy(), b.copy()) for W, b in params]

    def native_params(self) -> Params:
        """NumPy's native layout is the canonical one: ``[(W (fan_in, fan_out), b (fan_out,)), ...]``."""
        return self.get_params()

    def load_native(self, native: Params) -> None:
        self.set_params(native)

    def reset_optimizer(self) -> None:
        zeros = [np.zeros_like(a) for pair in self.params for a in pair]
        self.velocity = zeros  # SGD: learning-rate-scaled steps
        self.first_moment = [np.zeros_like(a) for a in zeros]  # Adam: m, v and the step count t
        self.second_moment = [np.zeros_like(a) for a in zeros]
        self.adam_steps = 0

    def _forward_cache(self, X: np.ndarray, masks: list[np.ndarray | None]):
        """Forward pass keeping what backprop needs.

        Returns the logits ``(n, k)``, the pre-activations ``zs`` and post-activations
        ``hs`` of hidden layers, and the inputs of each layer (``inputs[0] = X``,
        ``inputs[l] = hs[l-1] * dropout scale``).
        """
        scales = self.spec.dropout_scales(masks)
        inputs, zs, hs = [X], [], []
        a = X
        for (W, b), scale in zip(self.params[:-1], scales):
            z = a @ W + b
            h = activation(self.spec.hidden_activation, z, self.spec)
            a = h if scale is None else h * scale
            zs.append(z)
            hs.append(h)
            inputs.append(a)
        W, b = self.params[-1]
        return a @ W + b, zs, hs, inputs, scales

    def _forward(self, X: np.ndarray) -> np.ndarray:
        return output(self.spec.loss, self._forward_cache(X, self.no_dropout)[0])

    def _loss(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> float:
        logits = self._forward_cache(X, masks)[0]
        return data_loss_and_delta(self.spec.loss, logits, Y)[0] + penalty(self.spec, self.params)

    def _loss_and_gradients(self, X: np.ndarray, Y: np.ndarray,
                            masks: list[np.ndarray | None]) -> tuple[float, Params]:
        spec = self.spec
        logits, zs, hs, inputs, scales = self._forward_cache(X, masks)
        value, delta = data_loss_and_delta(spec.loss, logits, Y)  # delta = dL/dz of the current layer
        grads: Params = []
        for layer in range(spec.n_layers - 1, -1, -1):
            W, _ = self.params[layer]
            dW = inputs[layer].T @ delta
            if spec.l1:
                dW = dW + spec.l1 * np.sign(W)
            if spec.l2:
                dW = dW + spec.l2 * W
            grads.append((dW, delta.sum(axis=0)))
            if layer > 0:
                d_input = delta @ W.T
                if scales[layer - 1] is not None:
                    d_input = d_input * scales[layer - 1]
                delta = d_input * activation_derivative(
                    spec.hidden_activation, zs[layer - 1], hs[layer - 1], spec)
        grads.reverse()
        return value + penalty(spec, self.params), grads

    def _gradients(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Params:
        return self._loss_and_gradients(X, Y, masks)[1]

    def _train_step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        masks = self.spec.sample_dropout_masks(X.shape[0], self._dropout_rng)
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported by fit, by value
            value, grads = self._loss_and_gradients(X, Y, masks)
            params = [a for pair in self.params for a in pair]
            flat_grads = [g for pair in grads for g in pair]
            if isinstance(optimizer, Adam):
                self.adam_steps += 1
                for state in zip(params, flat_grads, self.first_moment, self.second_moment):
                    adam_update(*state, learning_rate, self.adam_steps, optimizer)
            else:
                for param, grad, velocity in zip(params, flat_grads, self.velocity):
                    velocity *= optimizer.momentum  # v <- mu v - lr g ; theta <- theta + v  (spec)
                    velocity -= learning_rate * grad
                    param += velocity
        return value


def adam_update(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, learning_rate: float,
                step: int, rule: Adam) -> None:
    """The spec's Adam step ``step`` (1-based) on one array, in place (Kingma & Ba, Algorithm 1)."""
    m *= rule.beta1
    m += (1 - rule.beta1) * grad
    v *= rule.beta2
    v += (1 - rule.beta2) * grad * grad
    m_hat = m / (1 - rule.beta1 ** step)
    v_hat = v / (1 - rule.beta2 ** step)
    param -= learning_rate * m_hat / (np.sqrt(v_hat) + rule.epsilon)
