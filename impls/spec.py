"""The framework-neutral model and training specification.

Every convention of the project is defined here, once.  Implementations map
these definitions onto their framework; none of them redefines one.

Conventions (the README's conventions table restates them):

* Weight layout: layer ``l`` has ``W`` of shape ``(fan_in, fan_out)`` and ``b``
  of shape ``(fan_out,)``; ``z = a @ W + b``.
* Hidden activations: see :data:`ACTIVATIONS`.  Derivatives at the kink
  ``z = 0`` take the left branch (``relu'(0) = 0``, ``leaky_relu'(0) = slope``,
  ``elu'(0) = alpha``).
* Output/loss pairs: see :data:`LOSSES`.  Losses are computed from logits in a
  numerically stable form and averaged over every element of the target
  (samples, and outputs for multi-output binary/regression heads).
* Penalty: ``loss = data_loss + l1 * sum|W| + (l2 / 2) * sum W**2`` over the
  weights of every layer, never the biases, and *not* divided by the batch
  size.  ``d|w|/dw`` at ``w = 0`` is 0.
* Dropout: inverted dropout after the activation of each hidden layer; a unit
  is kept with probability ``1 - p`` and scaled by ``1 / (1 - p)`` in training,
  identity at inference.  Masks are boolean "keep" arrays of shape
  ``(batch, width)``.
* Initializers: see :func:`init_rule`; biases always start at zero.
* Adam: Kingma & Ba (2015), Algorithm 1, with epsilon added to the
  bias-corrected ``sqrt(v_hat)``; see :class:`Adam`.  Penalties stay in the
  loss (Adam with L2, not AdamW's decoupled decay).
* SGD: per-epoch learning rate ``lr * decay**(epoch - 1)`` (epochs count from
  1); momentum in the classical form ``v <- mu * v - lr_t * g``,
  ``theta <- theta + v`` (velocity stores learning-rate-scaled steps).
* Batches: :func:`batch_order` is the one shuffler every implementation uses;
  the last partial batch is kept and its gradient is the mean over its own
  samples.
* Reported epoch loss: the mean of the per-batch objectives (data loss +
  penalty, computed before that batch's update, with dropout active), weighted
  by batch size.  Validation loss is :meth:`loss` on the validation set
  (inference mode, penalty included).
* Early stopping monitors the validation loss: an epoch improves when
  ``val_loss < best - min_delta``; training stops after ``patience`` epochs
  without improvement; with ``restore_best`` the weights of the best epoch are
  restored at the end of training, whether it stopped early or not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Params = list[tuple[np.ndarray, np.ndarray]]
"""Canonical parameters: one ``(W, b)`` pair per layer, ``W: (fan_in, fan_out)``."""

ACTIVATIONS: dict[str, str] = {
    "sigmoid": "1 / (1 + exp(-z))",
    "tanh": "tanh(z)",
    "relu": "max(z, 0)",
    "leaky_relu": "z if z > 0 else slope * z",
    "elu": "z if z > 0 else alpha * (exp(z) - 1)",
    "identity": "z",
}
"""Hidden activations by name, with their definition."""


OUTPUT_ACTIVATIONS: dict[str, str] = {
    "sigmoid": "1 / (1 + exp(-z)), elementwise",
    "softmax": "exp(z_k) / sum_j exp(z_j), over the outputs of a sample",
    "identity": "z",
}
"""Output activations by name (each loss names its own in :attr:`LossRule.output_activation`)."""

SEED_LIMIT = 2**32
"""Seeds are ints in ``[0, 2**32)``: what every framework's RNG accepts without folding two seeds together."""


def check_seed(seed: object, what: str = "seed") -> int:
    """Validate a seed (an int in ``[0, 2**32)``) and return it as a Python int."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{what} must be an int in [0, 2**32), got {seed!r} ({type(seed).__name__})")
    if not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"{what} must be an int in [0, 2**32), got {seed!r}")
    return int(seed)


def check_real(what: str, value: object, low: float, high: float = math.inf, *, low_open: bool = False,
               high_open: bool = True) -> float:
    """Validate a real hyper-parameter (int/float or a NumPy scalar, not bool) inside its interval; returns a float.

    ``low_open``/``high_open`` say whether the interval excludes its ends (default ``[low, high)``).
    """
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number in {interval}, got {value!r} ({type(value).__name__})")
    number = float(value)
    inside = (number > low if low_open else number >= low) and (number < high if high_open else number <= high)
    if not (math.isfinite(number) and inside):
        raise ValueError(f"{what} must be in {interval}, got {value!r}")
    return number


def check_count(what: str, value: object, low: int = 1) -> int:
    """Validate a count (an int, not bool, at least ``low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{what} must be an int >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class LossRule:
    """An output activation paired with the loss computed from its logits."""

    output_activation: Literal["sigmoid", "softmax", "identity"]
    task: Literal["binary", "multiclass", "regression"]
    definition: str


LOSSES: dict[str, LossRule] = {
    "binary_crossentropy": LossRule(
        "sigmoid", "binary",
        "mean over elements of softplus(z) - y*z  (= -[y log s(z) + (1-y) log(1-s(z))])",
    ),
    "categorical_crossentropy": LossRule(
        "softmax", "multiclass",
        "mean over samples of logsumexp(z) - z[label]  (= -sum_k y_k log softmax(z)_k)",
    ),
    "mse": LossRule("identity", "regression", "mean over elements of (z - y)**2"),
    "mae": LossRule("identity", "regression", "mean over elements of |z - y|"),
}
"""Output/loss pairs by loss name."""

INITIALIZERS: tuple[str, ...] = (
    "zeros", "normal", "uniform",
    "xavier_normal", "xavier_uniform", "he_normal", "he_uniform",
)
DTYPES: tuple[str, ...] = ("float32", "float64")


@dataclass(frozen=True)
class InitRule:
    """How to draw one weight matrix: ``normal`` with ``std``, or ``uniform`` on ``(-limit, limit)``."""

    distribution: Literal["zeros", "normal", "uniform"]
    scale: float  # std for normal, limit for uniform, 0 for zeros

    @property
    def std(self) -> float:
        """Standard deviation of the distribution."""
        if self.distribution == "uniform":
            return self.scale / math.sqrt(3.0)
        return self.scale


def init_rule(name: str, fan_in: int, fan_out: int, init_scale: float = 1.0) -> InitRule:
    """Textbook initializer formulas (plain, untruncated normal).

    ``normal``: N(0, init_scale**2); ``uniform``: U(-init_scale, init_scale);
    ``xavier_normal``: std sqrt(2 / (fan_in + fan_out));
    ``xavier_uniform``: limit sqrt(6 / (fan_in + fan_out));
    ``he_normal``: std sqrt(2 / fan_in); ``he_uniform``: limit sqrt(6 / fan_in).
    """
    rules = {
        "zeros": ("zeros", 0.0),
        "normal": ("normal", init_scale),
        "uniform": ("uniform", init_scale),
        "xavier_normal": ("normal", math.sqrt(2.0 / (fan_in + fan_out))),
        "xavier_uniform": ("uniform", math.sqrt(6.0 / (fan_in + fan_out))),
        "he_normal": ("normal", math.sqrt(2.0 / fan_in)),
        "he_uniform": ("uniform", math.sqrt(6.0 / fan_in)),
    }
    if name not in rules:
        raise ValueError(f"unknown initializer {name!r}; expected one of {sorted(rules)}")
    distribution, scale = rules[name]
    return InitRule(distribution, scale)


def _as_array(value: object, what: str) -> np.ndarray:
    """``value`` (an array, a nested list, a framework tensor) as a NumPy array, or an error naming ``what``.

    A tensor that records gradients (a torch tensor with ``requires_grad=True``, an ``nn.Parameter``) is
    data here, never part of a graph: it is detached and read, as a tensor without gradients is.  Tensors
    are recognised by their ``detach`` method, so this module imports no framework.  A tensor on an
    accelerator (``cuda``, ``mps``) or without data (``meta``) is refused by name rather than copied to the
    host behind the caller's back: the copy is a device synchronisation the caller should see.
    """
    if callable(getattr(value, "detach", None)):
        device = getattr(value, "device", None)
        kind = getattr(device, "type", None)
        if kind == "meta":
            raise TypeError(f"{what} is a tensor on device meta, which holds no values")
        if isinstance(kind, str) and kind != "cpu":
            raise TypeError(f"{what} is a tensor on device {device}; the models read host memory: "
                            f"pass it as tensor.detach().cpu()")
        try:
            value = value.detach()
        except Exception as exc:  # a foreign object with a detach of its own: say which, do not guess
            raise TypeError(f"{what} ({type(value).__name__}) cannot be detached for reading: {exc}") from exc
    try:
        return np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{what} is not a rectangular array ({type(value).__name__}): {exc}") from exc
    except (TypeError, RuntimeError) as exc:  # e.g. a bfloat16 tensor NumPy has no dtype for
        raise TypeError(f"{what} ({type(value).__name__}) cannot be read as a NumPy array: {exc}") from exc


def _check_choice(kind: str, value: object, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {sorted(choices)}")


@dataclass(frozen=True)
class MLPSpec:
    """A multi-layer perceptron, independent of any framework.

    ``layer_sizes`` lists the widths from input to output, e.g. ``(2, 4, 4, 1)``.
    ``dropout`` is one rate for every hidden layer or one rate per hidden layer.
    """

    layer_sizes: tuple[int, ...]
    hidden_activation: str = "relu"
    loss: str = "binary_crossentropy"
    initializer: str = "he_normal"
    init_scale: float = 1.0
    leaky_slope: float = 0.01
    elu_alpha: float = 1.0
    l1: float = 0.0
    l2: float = 0.0
    dropout: float | tuple[float, ...] = 0.0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        sizes = self.layer_sizes
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
            raise TypeError(f"layer_sizes must be a sequence of ints, got {sizes!r}")
        if len(sizes) < 2:
            raise ValueError(f"layer_sizes needs at least an input and an output size, got {list(sizes)}")
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
                raise TypeError(f"layer_sizes must hold ints, got {s!r} in {list(sizes)}")
            if s <= 0:
                raise ValueError(f"layer sizes must be positive, got {list(sizes)}")
        object.__setattr__(self, "layer_sizes", tuple(int(s) for s in sizes))
        _check_choice("activation", self.hidden_activation, tuple(ACTIVATIONS))
        _check_choice("loss", self.loss, tuple(LOSSES))
        _check_choice("initializer", self.initializer, INITIALIZERS)
        _check_choice("dtype", self.dtype, DTYPES)
        if self.loss == "categorical_crossentropy" and self.layer_sizes[-1] < 2:
            raise ValueError("categorical_crossentropy needs at least 2 output units")
        for name in ("init_scale", "leaky_slope", "elu_alpha", "l1", "l2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.floating)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        rates = self.dropout_rates  # validates the count
        for p in rates:
            if not isinstance(p, (int, float, np.floating)) or not (0.0 <= p < 1.0):
                raise ValueError(f"dropout rate must be in [0, 1), got {p!r}")

    @property
    def n_layers(self) -> int:
        """Number of weight layers (= len(layer_sizes) - 1)."""
        return len(self.layer_sizes) - 1

    @property
    def n_inputs(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return self.layer_sizes[1:-1]

    @property
    def dropout_rates(self) -> tuple[float, ...]:
        """One dropout rate per hidden layer."""
        n_hidden = len(self.layer_sizes) - 2
        if isinstance(self.dropout, (int, float, np.floating)):
            return (float(self.dropout),) * n_hidden
        rates = tuple(self.dropout)
        if len(rates) != n_hidden:
            raise ValueError(
                f"dropout needs one rate per hidden layer ({n_hidden}), got {len(rates)}: {rates}"
            )
        return tuple(float(p) for p in rates)

    @property
    def uses_dropout(self) -> bool:
        return any(p > 0 for p in self.dropout_rates)

    @property
    def loss_rule(self) -> LossRule:
        return LOSSES[self.loss]

    @property
    def task(self) -> str:
        return self.loss_rule.task

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def param_shapes(self) -> list[tuple[tuple[int, int], tuple[int]]]:
        """Canonical shapes: ``[((fan_in, fan_out), (fan_out,)), ...]``."""
        return [((i, o), (o,)) for i, o in zip(self.layer_sizes[:-1], self.layer_sizes[1:])]

    def init_rules(self) -> list[InitRule]:
        """The initializer rule of each weight matrix."""
        return [init_rule(self.initializer, i, o, self.init_scale)
                for i, o in zip(self.layer_sizes[:-1], self.layer_sizes[1:])]

    # ---- input validation: one place, so every framework rejects the same input ----

    def check_params(self, params: object) -> Params:
        """Validate canonical parameters and return them as arrays of this spec's dtype."""
        shapes = self.param_shapes()
        if not isinstance(params, Sequence) or len(params) != len(shapes):
            n = len(params) if isinstance(params, Sequence) else type(params).__name__
            raise ValueError(f"params must be a list of {len(shapes)} (W, b) pairs, got {n}")
        out: Params = []
        for layer, (pair, (w_shape, b_shape)) in enumerate(zip(params, shapes)):
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"params[{layer}] must be a (W, b) pair")
            W = self._as_float_array(pair[0], f"params[{layer}] W")
            b = self._as_float_array(pair[1], f"params[{layer}] b")
            if W.shape != w_shape or b.shape != b_shape:
                raise ValueError(
                    f"params[{layer}] has W{W.shape}, b{b.shape}; layer {layer} needs "
                    f"W{w_shape} (fan_in, fan_out) and b{b_shape}"
                )
            out.append((W, b))
        return out

    def check_X(self, X: object) -> np.ndarray:
        """Validate features: a finite array of shape ``(n_samples, n_inputs)``."""
        X = self._as_float_array(X, "X")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, {self.n_inputs}), got shape {X.shape}")
        if X.shape[1] != self.n_inputs:
            raise ValueError(f"X has {X.shape[1]} features, the model expects {self.n_inputs}")
        if X.shape[0] == 0:
            raise ValueError("X has no samples")
        return X

    def check_y(self, y: object, n_samples: int) -> np.ndarray:
        """Validate targets and return them as a dense ``(n_samples, n_outputs)`` array.

        Binary: 0/1 labels, shape ``(n,)`` for one output or ``(n, n_outputs)``.
        Multiclass: integer class indices ``(n,)`` in ``[0, n_outputs)`` or one-hot
        ``(n, n_outputs)``.  Regression: ``(n,)`` for one output or ``(n, n_outputs)``.
        """
        k = self.n_outputs
        arr = _as_array(y, "y")
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"y must be numeric, got dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError("y must be real, got a complex array")
        if arr.shape[:1] != (n_samples,):
            raise ValueError(f"X has {n_samples} samples but y has shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("y contains NaN or infinite values")
        dtype = self.np_dtype
        if self.task == "multiclass":
            if arr.ndim == 1:
                if not np.all(arr == np.round(arr)):
                    raise ValueError("class labels for categorical_crossentropy must be integers")
                labels = arr.astype(np.int64)
                bad = (labels < 0) | (labels >= k)
                if bad.any():
                    raise ValueError(
                        f"class labels must be in [0, {k}); found {labels[bad][0].item()} "
                        f"at index {int(np.flatnonzero(bad)[0])}"
                    )
                return np.eye(k, dtype=dtype)[labels]
            if arr.shape != (n_samples, k):
                raise ValueError(f"one-hot y must have shape ({n_samples}, {k}), got {arr.shape}")
            if not (np.all((arr == 0) | (arr == 1)) and np.all(arr.sum(axis=1) == 1)):
                raise ValueError("one-hot y must hold 0/1 values with exactly one 1 per row")
            return arr.astype(dtype)
        if arr.ndim == 1 and k == 1:
            arr = arr[:, None]
        if arr.shape != (n_samples, k):
            raise ValueError(f"y must have shape ({n_samples},) or ({n_samples}, {k}), got {arr.shape}")
        if self.task == "binary":
            bad = (arr != 0) & (arr != 1)
            if bad.any():
                raise ValueError(
                    f"labels for binary_crossentropy must be 0 or 1; found {arr[bad][0].item()!r}"
                )
        return self._cast_finite(arr, "y")

    def check_Xy(self, X: object, y: object) -> tuple[np.ndarray, np.ndarray]:
        """Validate a feature matrix and its targets together."""
        X = self.check_X(X)
        return X, self.check_y(y, X.shape[0])

    def check_dropout_masks(self, masks: object, n_samples: int) -> list[np.ndarray | None]:
        """Validate injected keep-masks: one ``(n_samples, width)`` boolean array per hidden layer.

        ``None`` (or ``None`` for a layer) means no dropout on that layer.
        """
        widths = self.hidden_sizes
        if masks is None:
            return [None] * len(widths)
        if not isinstance(masks, Sequence) or len(masks) != len(widths):
            raise ValueError(f"dropout_masks needs one entry per hidden layer ({len(widths)})")
        out: list[np.ndarray | None] = []
        for layer, (mask, width) in enumerate(zip(masks, widths)):
            if mask is None:
                out.append(None)
                continue
            m = _as_array(mask, f"dropout mask {layer}")
            if m.shape != (n_samples, width):
                raise ValueError(f"dropout mask {layer} must have shape ({n_samples}, {width}), got {m.shape}")
            if not np.all((m == 0) | (m == 1)):
                raise ValueError(f"dropout mask {layer} must hold only 0/1 (keep) values")
            out.append(m.astype(bool))
        return out

    def dropout_scales(self, masks: list[np.ndarray | None]) -> list[np.ndarray | None]:
        """Turn keep-masks into the multiplier each hidden activation gets: ``keep / (1 - p)``."""
        out: list[np.ndarray | None] = []
        for m, p in zip(masks, self.dropout_rates):
            out.append(None if m is None else m.astype(self.dtype) / self.np_dtype.type(1.0 - p))
        return out

    def sample_dropout_masks(self, n_samples: int, rng: np.random.Generator) -> list[np.ndarray | None]:
        """Draw keep-masks with each layer's rate (``None`` where the rate is 0)."""
        return [None if p == 0 else rng.random((n_samples, w)) >= p
                for w, p in zip(self.hidden_sizes, self.dropout_rates)]

    def _as_float_array(self, value: object, what: str) -> np.ndarray:
        arr = _as_array(value, what)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{what} must be a numeric array, got dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError(f"{what} must be real, got a complex array")
        return self._cast_finite(arr, what)

    def _cast_finite(self, arr: np.ndarray, what: str) -> np.ndarray:
        """``arr`` in the spec's dtype; NaN/inf, or values beyond the dtype's range (1e39 in float32), are errors."""
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} contains NaN or infinite values")
        with np.errstate(over="ignore"):
            out = arr.astype(self.dtype, copy=False)
        if not np.all(np.isfinite(out)):
            limit = float(np.finfo(self.dtype).max)
            raise ValueError(f"{what} has values beyond {self.dtype}'s range (|x| <= {limit:.4g})")
        return out


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when the validation loss has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int = 10
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "patience", check_count("patience", self.patience))
        object.__setattr__(self, "min_delta", check_real("min_delta", self.min_delta, 0.0))
        if not isinstance(self.restore_best, bool):
            raise TypeError(f"restore_best must be True or False, got {self.restore_best!r}")

    def improves(self, value: float, best: float) -> bool:
        """Whether a validation loss counts as an improvement over the best so far."""
        return value < best - self.min_delta


@dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent with classical momentum: ``v <- mu v - lr_t g``; ``theta <- theta + v``.

    The velocity stores learning-rate-scaled steps, so when ``lr_t`` changes between
    epochs the old velocity keeps the old rate (frameworks that store raw gradients
    in their buffer and multiply by the current rate do not agree after a change).
    """

    momentum: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "momentum", check_real("momentum", self.momentum, 0.0, 1.0))


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba, 2015, Algorithm 1), one step ``t = 1, 2, ...`` per batch::

        m <- beta1 m + (1 - beta1) g          v <- beta2 v + (1 - beta2) g**2
        m_hat = m / (1 - beta1**t)            v_hat = v / (1 - beta2**t)
        theta <- theta - lr_t * m_hat / (sqrt(v_hat) + epsilon)

    ``epsilon`` is added to the bias-corrected ``sqrt(v_hat)`` (PyTorch's placement);
    Keras adds it to ``sqrt(v)`` before the correction, which amounts to an epsilon of
    ``epsilon / sqrt(1 - beta2**t)`` here (31.6x larger at step 1).  Defaults are the
    paper's (Keras's default epsilon is 1e-7).
    """

    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8

    def __post_init__(self) -> None:
        for name in ("beta1", "beta2"):
            object.__setattr__(self, name, check_real(name, getattr(self, name), 0.0, 1.0))
        object.__setattr__(self, "epsilon", check_real("epsilon", self.epsilon, 0.0, low_open=True))


Optimizer = SGD | Adam
"""An update rule: :class:`SGD` (with momentum) or :class:`Adam`."""


@dataclass(frozen=True)
class TrainConfig:
    """Mini-batch training.  ``batch_size=None`` is full-batch; ``lr_decay`` multiplies the rate each epoch.

    The update rule is ``optimizer`` (:class:`SGD` or :class:`Adam`); ``momentum`` is a
    shorthand for ``optimizer=SGD(momentum)``.
    """

    epochs: int = 10
    batch_size: int | None = 32
    learning_rate: float = 0.1
    lr_decay: float = 1.0
    momentum: float = 0.0
    shuffle: bool = True
    seed: int = 0
    early_stopping: EarlyStopping | None = field(default=None)
    optimizer: Optimizer | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("momentum", check_real("momentum", self.momentum, 0.0, 1.0))
        if self.optimizer is None:
            put("optimizer", SGD(self.momentum))
        elif not isinstance(self.optimizer, (SGD, Adam)):
            raise TypeError(f"optimizer must be SGD(...) or Adam(...), got {self.optimizer!r}")
        elif self.momentum and self.optimizer != SGD(self.momentum):
            raise ValueError("give momentum once: either momentum=... or optimizer=SGD(momentum=...)")
        put("epochs", check_count("epochs", self.epochs))
        if self.batch_size is not None:
            put("batch_size", check_count("batch_size", self.batch_size))
        put("learning_rate", check_real("learning_rate", self.learning_rate, 0.0, low_open=True))
        put("lr_decay", check_real("lr_decay", self.lr_decay, 0.0, 1.0, low_open=True, high_open=False))
        if not isinstance(self.shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {self.shuffle!r}")
        put("shuffle", bool(self.shuffle))
        put("seed", check_seed(self.seed, "TrainConfig.seed"))
        if self.early_stopping is not None and not isinstance(self.early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping must be EarlyStopping(...) or None, got {self.early_stopping!r}")

    def learning_rate_at(self, epoch: int) -> float:
        """The rate used throughout ``epoch`` (1-based): ``lr * decay**(epoch - 1)``."""
        return self.learning_rate * self.lr_decay ** (epoch - 1)


def batch_order(n_samples: int, batch_size: int | None, seed: int, epoch: int,
                shuffle: bool = True) -> list[np.ndarray]:
    """The mini-batches of one epoch (1-based) as index arrays; the same in every framework.

    The permutation comes from ``numpy.random.default_rng([seed, epoch])``, so an
    epoch's order does not depend on what happened in earlier epochs.
    """
    if n_samples < 1:
        raise ValueError("cannot make batches of an empty data set")
    idx = (np.random.default_rng([seed, epoch]).permutation(n_samples) if shuffle
           else np.arange(n_samples))
    size = n_samples if batch_size is None else batch_size
    return [idx[i:i + size] for i in range(0, n_samples, size)]
