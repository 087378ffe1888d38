"""The interface every implementation honours, the training loop they share, and the file skeleton.

An implementation subclasses :class:`MLP` and fills in the underscore methods,
which receive inputs already validated and converted by :class:`~impls.spec.MLPSpec`
(``X: (n, n_inputs)`` and dense targets ``Y: (n, n_outputs)`` in the spec's dtype).
The public methods validate, so every framework rejects bad input with the same
message instead of its own traceback.

Every ``impls/<framework>_mlp.py`` reads top to bottom in the same order, with the same
names, so that a diff between two files is a translation:

1. ``init_params(spec, seed)``: the framework's parameter container, weights drawn by the
   spec's :meth:`~impls.spec.MLPSpec.init_rules` with the framework's own initializers, biases zero.
2. ``activation(spec, z)``: the hidden activation, from the table ``HIDDEN_ACTIVATIONS``.
3. ``output(spec, z)``: the output activation of logits ``(n, k)`` (``spec.loss_rule.output_activation``),
   from the table ``OUTPUT_ACTIVATIONS``.
4. ``logits(spec, params, X, scales)``: the forward pass ``X (n, n_inputs) -> (n, n_outputs)``;
   hidden layer ``l`` is multiplied by ``scales[l]`` (inverted dropout, ``(n, width)``) unless it is ``None``.
5. ``data_loss(spec, z, Y)``: the mean loss from logits, from the table ``DATA_LOSSES``.
6. ``penalty(spec, params)``: ``l1 sum|W| + (l2/2) sum W**2`` over the weights.
7. ``objective(spec, params, X, Y, scales)``: ``data_loss(logits) + penalty``, what is differentiated.
8. ``sgd_update(param, velocity, grad, learning_rate, rule)`` -> ``(param, velocity)``: one step of
   :class:`~impls.spec.SGD` on one array (a framework with mutable arrays may update in place).
9. ``adam_update(param, m, v, grad, learning_rate, step, rule)`` -> ``(param, m, v)``: one step of
   :class:`~impls.spec.Adam` on one array, ``step`` counting from 1.
10. The :class:`MLP` subclass, its methods in this class's order.
11. ``native_fit(spec, config, X, y, validation=None, mode="default") -> NativeRun``: the same training
    written the way the framework's documentation teaches, for the benchmark's native rows.

The tables are dicts keyed by the spec's names (:data:`~impls.spec.ACTIVATIONS`,
:data:`~impls.spec.OUTPUT_ACTIVATIONS`, :data:`~impls.spec.LOSSES`): one dispatch style, and a name
that :class:`~impls.spec.MLPSpec` accepts always has an entry (a test checks every registered file).

Subclasses may override :meth:`MLP.fit` to train the way their framework's users do
(Keras does), as long as the history and the batch order follow the spec.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from impls.spec import SGD, MLPSpec, Optimizer, Params, TrainConfig, batch_order, check_seed


@dataclass
class History:
    """Per-epoch record of a training run (epochs count from 1).

    ``loss``: the spec's epoch loss (batch-size-weighted mean of the per-batch
    objectives); ``val_loss``/``val_accuracy``: on the validation set when given
    (accuracy only for classification); ``learning_rate``: the rate of the epoch;
    ``epoch_time``: wall seconds of the epoch's updates, validation excluded.
    """

    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_epoch: int | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.loss)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NativeRun:
    """What a native training loop (``native_fit``) hands the benchmark.

    ``history``: per-epoch ``loss`` as the framework reports it, ``epoch_time`` (wall seconds
    of the epoch's updates, data conversion and validation excluded), ``val_loss`` and the
    early-stopping epochs where there are any.  ``predict``: ``X (n, n_inputs) -> (n, n_outputs)``
    probabilities (sigmoid/softmax) or values, as :meth:`MLP.forward` returns them.
    """

    history: History
    predict: Callable[[np.ndarray], np.ndarray]


NATIVE_ACTIVATIONS = ("relu", "tanh", "sigmoid")
NATIVE_LOSSES = ("binary_crossentropy", "categorical_crossentropy", "mse")


def check_native_support(spec: MLPSpec, config: TrainConfig,
                         validation: tuple[object, object] | None = None) -> None:
    """Refuse, by name, what the native loops do not cover.

    A native loop (``native_fit``) is the benchmark's yardstick, kept as small as the framework's
    own tutorials: He-normal weights, ReLU/tanh/sigmoid hidden layers, BCE/CCE/MSE, L2, dropout,
    SGD with momentum and a per-epoch decay, and early stopping.  That is every workload's setting.
    """
    problems = []
    if spec.hidden_activation not in NATIVE_ACTIVATIONS:
        problems.append(f"hidden activation {spec.hidden_activation!r} (native loops use {NATIVE_ACTIVATIONS})")
    if spec.loss not in NATIVE_LOSSES:
        problems.append(f"loss {spec.loss!r} (native loops use {NATIVE_LOSSES})")
    if spec.initializer != "he_normal":
        problems.append(f"initializer {spec.initializer!r} (native loops draw the framework's He normal)")
    if spec.l1:
        problems.append("l1 (native loops have L2 only)")
    if not isinstance(config.optimizer, SGD):
        problems.append(f"optimizer {config.optimizer!r} (native loops use SGD with momentum)")
    if config.early_stopping is not None and validation is None:
        problems.append("early stopping without validation data")
    if problems:
        raise ValueError("a native training loop does not cover: " + "; ".join(problems))


def accuracy(spec: MLPSpec, outputs: np.ndarray, Y: np.ndarray) -> float:
    """Fraction of correct predictions from outputs ``(n, k)`` against dense targets ``Y``.

    Binary: threshold 0.5 per output (multi-label counts each output); multiclass: argmax.
    """
    if spec.task == "multiclass":
        return float(np.mean(outputs.argmax(axis=1) == Y.argmax(axis=1)))
    if spec.task == "binary":
        return float(np.mean((outputs >= 0.5) == (Y == 1)))
    raise ValueError("accuracy is defined for classification losses only")


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


class MLP(ABC):
    """One multi-layer perceptron built from a :class:`MLPSpec`.

    Construction draws initial weights with the framework's own initializers
    (the spec's formulas) from ``seed``.
    """

    name: str = "abstract"
    """The registry name; the registry entry lists the implementation's execution modes."""

    def __init__(self, spec: MLPSpec, seed: int = 0, mode: str = "default") -> None:
        if not isinstance(spec, MLPSpec):
            raise TypeError(f"spec must be an MLPSpec, got {type(spec).__name__}")
        modes = self.modes()
        if mode not in modes:
            raise ValueError(f"unknown mode {mode!r} for {self.name}; expected one of {list(modes)}")
        self.spec = spec
        self.seed = check_seed(seed)
        self.mode = mode

    @classmethod
    def modes(cls) -> tuple[str, ...]:
        """Execution modes from the registry: ``default`` is the framework's idiomatic one, the others
        (e.g. compiled) are faster.  A class that is not registered has only ``default``."""
        from impls import registry  # the registry imports this module

        entry = registry.IMPLEMENTATIONS.get(cls.name)
        return entry.modes if entry is not None else ("default",)

    # ---- to implement --------------------------------------------------------

    @abstractmethod
    def get_params(self) -> Params:
        """Copy of the parameters in the canonical layout: ``[(W (fan_in, fan_out), b (fan_out,)), ...]``."""

    @abstractmethod
    def _set_params(self, params: Params) -> None:
        """Load validated canonical parameters (in the spec's dtype)."""

    @abstractmethod
    def _forward(self, X: np.ndarray) -> np.ndarray:
        """Outputs ``(n, n_outputs)`` in inference mode (no dropout)."""

    @abstractmethod
    def _loss(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> float:
        """Data loss + penalty, with hidden layer ``l`` multiplied by ``masks[l] / (1 - p_l)``
        (boolean keep-masks ``(n, width)``; ``None``: no dropout on that layer)."""

    @abstractmethod
    def _gradients(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Params:
        """Gradient of :meth:`_loss` with the same masks, canonical layout."""

    @abstractmethod
    def _train_step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        """One update by ``optimizer`` (:class:`~impls.spec.SGD` or :class:`~impls.spec.Adam`) on one batch,
        dropout active; returns the batch objective before the update."""

    @abstractmethod
    def reset_optimizer(self) -> None:
        """Forget optimizer state (momentum velocities, Adam's moments and step count)."""

    def native_params(self) -> object:
        """The parameters as the framework's own object (a ``state_dict``, a Keras weight list, a pytree).

        Each implementation documents the layout; :meth:`load_native` takes the same object back.
        """
        raise NotImplementedError(f"{self.name} does not expose native parameters")

    def load_native(self, native: object) -> None:
        """Load parameters given as the framework's own object (what :meth:`native_params` returns)."""
        raise NotImplementedError(f"{self.name} does not load native parameters")

    # ---- public surface ------------------------------------------------------

    @property
    def no_dropout(self) -> list[None]:
        """The mask list meaning "inference mode": ``None`` for every hidden layer."""
        return [None] * len(self.spec.hidden_sizes)

    def set_params(self, params: Params) -> None:
        """Load canonical parameters (validated against the spec's shapes)."""
        self._set_params(self.spec.check_params(params))

    def forward(self, X: object) -> np.ndarray:
        """Outputs ``(n, n_outputs)``: probabilities (sigmoid/softmax) or values (regression)."""
        return self._finite("outputs", np.asarray(self._forward(self.spec.check_X(X))))

    def predict_proba(self, X: object) -> np.ndarray:
        """Class probabilities ``(n, n_outputs)``; classification only."""
        if self.spec.task == "regression":
            raise ValueError(f"predict_proba needs a classification loss, the model uses {self.spec.loss}")
        return self.forward(X)

    def predict(self, X: object) -> np.ndarray:
        """Class indices ``(n,)`` (multiclass), 0/1 labels ``(n,)`` or ``(n, k)`` (binary), values (regression)."""
        out = self.forward(X)
        if self.spec.task == "multiclass":
            return out.argmax(axis=1)
        if self.spec.task == "binary":
            labels = (out >= 0.5).astype(np.int64)
            return labels[:, 0] if self.spec.n_outputs == 1 else labels
        return out[:, 0] if self.spec.n_outputs == 1 else out

    def loss(self, X: object, y: object, dropout_masks: list | None = None) -> float:
        """Mean data loss + ``l1 sum|W| + (l2/2) sum W**2``.

        Inference mode unless dropout keep-masks are given (one ``(n, width)`` 0/1
        array or ``None`` per hidden layer); then the masked, rescaled network.
        """
        X, Y = self.spec.check_Xy(X, y)
        return float(self._finite("loss", self._loss(X, Y, self.spec.check_dropout_masks(dropout_masks,
                                                                                             X.shape[0]))))

    def gradients(self, X: object, y: object, dropout_masks: list | None = None) -> Params:
        """Gradient of :meth:`loss` with the same dropout keep-masks, canonical layout."""
        X, Y = self.spec.check_Xy(X, y)
        masks = self.spec.check_dropout_masks(dropout_masks, X.shape[0])
        grads = self._gradients(X, Y, masks)
        for layer, (gW, gb) in enumerate(grads):
            self._finite(f"gradient of layer {layer}", gW)
            self._finite(f"gradient of layer {layer}", gb)
        return grads

    def train_step(self, X: object, y: object, learning_rate: float, momentum: float = 0.0,
                   optimizer: Optimizer | None = None) -> float:
        """One step on the batch ``(X, y)``: SGD with ``momentum``, or ``optimizer``; returns the
        batch objective before the step.  Optimizer state carries over between calls (see
        :meth:`reset_optimizer`)."""
        X, Y = self.spec.check_Xy(X, y)
        rule = TrainConfig(learning_rate=learning_rate, momentum=momentum, optimizer=optimizer).optimizer
        before = self.get_params()
        value = float(self._train_step(X, Y, learning_rate, rule))
        if not (math.isfinite(value) and params_finite(self.get_params())):
            self._set_params(before)
            raise TrainingDiverged(f"the training step diverged: loss {value}, learning rate {learning_rate:g}; "
                                   "the parameters are restored to their values before the step")
        return value

    def accuracy(self, X: object, y: object) -> float:
        """Classification accuracy of :meth:`forward` on ``(X, y)``."""
        X, Y = self.spec.check_Xy(X, y)
        return accuracy(self.spec, np.asarray(self._forward(X)), Y)

    def _finite(self, what: str, value):
        """``value`` (a number or an array), or a ValueError when it holds NaN/inf."""
        if not np.all(np.isfinite(value)):
            raise ValueError(f"non-finite {what} (NaN or inf) in {self.spec.dtype}: the inputs or the "
                             f"parameters are too large for its range (|x| <= {np.finfo(self.spec.dtype).max:.4g})")
        return value

    # ---- training ------------------------------------------------------------

    def _prepare_data(self, X: np.ndarray, Y: np.ndarray) -> tuple[object, object]:
        """Convert a training set once per fit, outside the timed epochs (e.g. to framework tensors).

        Whatever this returns is what :meth:`_run_epoch` receives as ``X`` and ``Y``.
        """
        return X, Y

    def _run_epoch(self, X, Y, batches: list[np.ndarray], learning_rate: float, optimizer: Optimizer) -> float:
        """Train on every batch of an epoch (``X``, ``Y`` from :meth:`_prepare_data`).

        Returns the batch-size-weighted mean objective.
        """
        total = 0.0
        for idx in batches:
            total += self._train_step(X[idx], Y[idx], learning_rate, optimizer) * len(idx)
        return total / X.shape[0]

    def fit(self, X: object, y: object, config: TrainConfig,
            validation: tuple[object, object] | None = None,
            on_epoch_end: Callable[[int, History], None] | None = None) -> History:
        """Train with mini-batches as the spec defines it (``config.optimizer``); returns the :class:`History`.

        ``validation=(X_val, y_val)`` is required by early stopping.  ``on_epoch_end``
        is called after each epoch with the epoch number and the history so far.
        """
        X, Y = self.spec.check_Xy(X, y)
        val = self.spec.check_Xy(*validation) if validation is not None else None
        es = config.early_stopping
        if es is not None and val is None:
            raise ValueError("early stopping monitors the validation loss: pass validation=(X_val, y_val)")
        self.reset_optimizer()
        data = self._prepare_data(X, Y)
        history = History()
        best, best_params, waited = math.inf, None, 0
        params = self._restore_point()  # the last finite parameters: one copy per epoch, checked and reused
        for epoch in range(1, config.epochs + 1):
            lr = config.learning_rate_at(epoch)
            batches = batch_order(X.shape[0], config.batch_size, config.seed, epoch, config.shuffle)
            start = time.perf_counter()
            epoch_loss = self._run_epoch(*data, batches, lr, config.optimizer)
            history.epoch_time.append(time.perf_counter() - start)
            params = self._check_epoch(epoch, epoch_loss, lr, params)
            history.loss.append(float(epoch_loss))
            history.learning_rate.append(lr)
            if val is not None:
                val_loss = float(self._loss(*val, self.no_dropout))
                history.val_loss.append(val_loss)
                if self.spec.task != "regression":
                    history.val_accuracy.append(accuracy(self.spec, np.asarray(self._forward(val[0])), val[1]))
            if on_epoch_end is not None:
                on_epoch_end(epoch, history)
            if es is not None:
                if es.improves(history.val_loss[-1], best):
                    best, waited, history.best_epoch = history.val_loss[-1], 0, epoch
                    best_params = params if es.restore_best else None
                else:
                    waited += 1
                    if waited >= es.patience:
                        history.stopped_epoch = epoch
                        break
        if es is not None and es.restore_best and best_params is not None:
            self._set_params(best_params)
        return history

    def _restore_point(self) -> Params | None:
        """What ``fit`` returns to if its first epoch diverges: the parameters now (``None``: a model that has
        none before its first epoch, like the scikit-learn baseline)."""
        return self.get_params()

    def _check_epoch(self, epoch: int, loss: float, learning_rate: float, last_finite: Params | None) -> Params:
        """After each epoch, in every implementation: a NaN/inf loss or parameter is :class:`TrainingDiverged`,
        and the model goes back to ``last_finite``, its parameters when the epoch started.  Returns a copy of
        the (finite) parameters after the epoch."""
        params = self.get_params()
        if math.isfinite(loss) and params_finite(params):
            return params
        restored = "the parameters are left as they are (there were none before it)"
        if last_finite is not None:
            self._set_params(last_finite)
            restored = f"the parameters are restored to their values before epoch {epoch}"
        raise TrainingDiverged(
            f"training diverged in epoch {epoch}: loss {loss}, learning rate {learning_rate:g}; {restored}; "
            "lower the learning rate or check the inputs' scale")


def params_finite(params: Params) -> bool:
    """Whether every weight and bias is finite."""
    return all(np.all(np.isfinite(array)) for pair in params for array in pair)
