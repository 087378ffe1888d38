"""The MLP in Keras 3: a ``keras.Sequential`` of ``Dense``/``Dropout`` layers, trained by ``model.fit``.

``keras.ops`` only, so the file runs on every Keras backend (``KERAS_BACKEND=tensorflow|jax|torch``, fixed
at keras's first import); what needs a workaround on some backend lives in :mod:`impls.keras_backend`.
Where a Keras default differs from the spec, the mapping is made here (each one is pinned in
``tests/frameworks/test_keras_conventions.py``): ``HeNormal``/``GlorotNormal`` are truncated
(:func:`kernel_initializer`); ``L1``/``L2`` round their factors on TensorFlow and ``L1``'s ``abs'(0)``
is 1 on JAX (:func:`kernel_penalty`); the probability losses clip at 1e-7 (the model outputs logits:
:data:`DATA_LOSSES`, :func:`output`); ``leaky_relu'(0)`` is 1 on JAX; ``Adam`` adds epsilon before the
bias correction (:class:`SpecAdam`; ``SGD`` already is the spec's, :func:`sgd_update`); ``fit`` shuffles
with its own RNG (it is given the spec's batches); ``EarlyStopping`` restores the best weights if asked.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops

from impls.base import MLP, History, NativeRun, check_native_support
from impls.keras_backend import (
    DropoutStream,
    SpecEpochs,
    Tensor,
    abs_,
    dropout_seed,
    elementwise_mean,
    enable_float64,
    epoch_batches,
    exact,
    floatx,
    optimizer_float,
    steps_per_execution,
    tanh,
    value_and_gradients,
)
from impls.spec import SGD, Adam, InitRule, MLPSpec, Optimizer, Params, TrainConfig

Scales = list[np.ndarray | None]
"""Inverted-dropout multipliers ``keep / (1 - p)``, ``(n, width)`` per hidden layer; ``None``: no dropout there."""


# ---- parameters ----------------------------------------------------------------------


def init_params(spec: MLPSpec, seed: int) -> keras.Sequential:
    """The parameter container: a ``keras.Sequential`` in the spec's dtype, computing logits.

    ``Dense`` layers (hidden activation inside, seeded initializer by the spec's rule, zero bias,
    :func:`kernel_penalty` as regularizer), inverted ``Dropout`` after a hidden layer with a rate.
    """
    dtype = spec.dtype
    regularizer = functools.partial(kernel_penalty, spec) if spec.l1 or spec.l2 else None
    with floatx(dtype):  # every layer gets dtype= too; floatx reaches what Keras builds inside
        layers: list[keras.layers.Layer] = [keras.Input((spec.n_inputs,), dtype=dtype)]
        for layer, (width, rule) in enumerate(zip(spec.layer_sizes[1:], spec.init_rules())):
            hidden = layer < spec.n_layers - 1
            layers.append(keras.layers.Dense(
                width, activation=functools.partial(activation, spec) if hidden else None,
                kernel_initializer=kernel_initializer(rule, seed * 1_000 + layer), bias_initializer="zeros",
                kernel_regularizer=regularizer, dtype=dtype, name=f"dense_{layer}"))
            if hidden and spec.dropout_rates[layer] > 0:
                # Keras's Dropout is inverted (kept units scaled by 1/(1-p)), seeded per model and layer
                layers.append(keras.layers.Dropout(spec.dropout_rates[layer], seed=dropout_seed(seed * 1_000 + layer),
                                                   dtype=dtype, name=f"dropout_{layer}"))
        return keras.Sequential(layers, name="mlp")


def kernel_initializer(rule: InitRule, seed: int) -> keras.initializers.Initializer:
    """A spec rule as a seeded Keras initializer (``RandomNormal`` is the plain, untruncated normal)."""
    if rule.distribution == "normal":
        return keras.initializers.RandomNormal(0.0, rule.scale, seed=seed)
    if rule.distribution == "uniform":
        return keras.initializers.RandomUniform(-rule.scale, rule.scale, seed=seed)
    return keras.initializers.Zeros()


def dense_layers(model: keras.Sequential) -> list[keras.layers.Dense]:
    """The model's ``Dense`` layers, input to output (their kernels are ``(fan_in, fan_out)``, the canonical layout)."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


# ---- activations ---------------------------------------------------------------------


HIDDEN_ACTIVATIONS: dict[str, Callable[[MLPSpec, Tensor], Tensor]] = {
    "sigmoid": lambda spec, z: keras.activations.sigmoid(z),
    "tanh": lambda spec, z: tanh(z),
    "relu": lambda spec, z: keras.activations.relu(z),  # relu'(0) = 0 on every backend
    # keras.activations.leaky_relu is jnp.where(z >= 0, ...) on JAX: derivative 1 at 0, not the slope
    "leaky_relu": lambda spec, z: ops.where(z > 0, z, spec.leaky_slope * z),
    "elu": lambda spec, z: keras.activations.elu(z, alpha=spec.elu_alpha),  # elu'(0) = alpha on every backend
    "identity": lambda spec, z: z,
}


def activation(spec: MLPSpec, z: Tensor) -> Tensor:
    """The spec's hidden activation of the pre-activations ``z``, elementwise; the left branch at the kink ``z = 0``."""
    return HIDDEN_ACTIVATIONS[spec.hidden_activation](spec, z)


OUTPUT_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": ops.sigmoid,
    "softmax": lambda z: ops.softmax(z, axis=-1),
    "identity": lambda z: z,
}


def output(spec: MLPSpec, z: Tensor) -> Tensor:
    """Probabilities (sigmoid/softmax) or values from the logits ``z: (n, k)``."""
    return OUTPUT_ACTIVATIONS[spec.loss_rule.output_activation](z)


# ---- the forward pass ----------------------------------------------------------------


def logits(spec: MLPSpec, model: keras.Sequential, X: Tensor, scales: Scales) -> Tensor:
    """Output-layer pre-activations ``(n, n_outputs)`` of ``X: (n, n_inputs)`` through the model's Dense layers;
    hidden layer ``l`` is multiplied by ``scales[l]`` unless it is ``None`` (the Dropout layers are for ``fit``)."""
    dense = dense_layers(model)
    a = X
    for layer, scale in zip(dense[:-1], scales):
        a = layer(a)
        if scale is not None:
            a = a * ops.convert_to_tensor(scale)
    return dense[-1](a)


# ---- losses --------------------------------------------------------------------------


DATA_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    # softplus(z) - y z, finite for any z
    "binary_crossentropy": lambda z, Y: elementwise_mean(ops.binary_crossentropy(Y, z, from_logits=True)),
    # logsumexp(z) - z[label] per sample
    "categorical_crossentropy": lambda z, Y: elementwise_mean(ops.categorical_crossentropy(Y, z, from_logits=True)),
    "mse": lambda z, Y: elementwise_mean(ops.square(z - Y)),
    "mae": lambda z, Y: elementwise_mean(abs_(z - Y)),  # |r|'(0) = 0
}


def data_loss(spec: MLPSpec, z: Tensor, Y: Tensor) -> Tensor:
    """Mean loss (a 0-d tensor) from logits ``z: (n, k)`` and dense targets ``Y: (n, k)``."""
    return DATA_LOSSES[spec.loss](z, Y)


class SpecLoss(keras.losses.Loss):
    """:func:`data_loss` for ``model.compile``, in the spec's dtype (a loss given as a function is built
    at the first step, in floatx); a 0-d result passes the ``sum_over_batch_size`` reduction unchanged."""

    def __init__(self, spec: MLPSpec) -> None:
        super().__init__(name=spec.loss, dtype=spec.dtype)
        self.spec = spec

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        return data_loss(self.spec, y_pred, y_true)


def penalty(spec: MLPSpec, model: keras.Sequential) -> Tensor | float:
    """``l1 sum|W| + (l2/2) sum W**2`` over the Dense kernels only, not divided by the batch size."""
    total = 0.0
    for dense in dense_layers(model):
        total = total + kernel_penalty(spec, dense.kernel)
    return total


def kernel_penalty(spec: MLPSpec, W: Tensor) -> Tensor | float:
    """The penalty of one weight matrix, the Dense layers' ``kernel_regularizer`` (``fit`` adds it to the loss).

    Keras's ``L1``/``L2`` would convert their factors with ``ops.cast``, and ``L1`` use the backend's ``abs``.
    """
    dtype = keras.backend.standardize_dtype(W.dtype)
    total = 0.0
    if spec.l1:
        total = total + exact(spec.l1, dtype) * ops.sum(abs_(W))
    if spec.l2:
        total = total + exact(spec.l2 / 2, dtype) * ops.sum(ops.square(W))
    return total


def objective(spec: MLPSpec, model: keras.Sequential, X: Tensor, Y: Tensor, scales: Scales) -> Tensor:
    """Data loss + penalty: what ``fit`` minimizes (its compiled loss plus the regularizers), a 0-d tensor."""
    return data_loss(spec, logits(spec, model, X, scales), Y) + penalty(spec, model)


# ---- updates -------------------------------------------------------------------------


def sgd_update(param: Tensor, velocity: Tensor, grad: Tensor, learning_rate: Tensor | float,
               rule: SGD) -> tuple[Tensor, Tensor]:
    """The spec's SGD step on one array: ``v <- mu v - lr g``, ``theta <- theta + v``; the new ``(param, v)``.

    ``keras.optimizers.SGD(momentum=mu)`` computes exactly this (a test pins the two together), so
    ``model.compile`` takes it as it is: the native loop's optimizer, which on torch Keras replaces by a
    fused ``torch._foreach`` version that a subclass calling this function would lose.
    """
    velocity = exact(rule.momentum, keras.backend.standardize_dtype(velocity.dtype)) * velocity - learning_rate * grad
    return param + velocity, velocity


def adam_update(param: Tensor, m: Tensor, v: Tensor, grad: Tensor, learning_rate: Tensor | float,
                step: Tensor | int, rule: Adam) -> tuple[Tensor, Tensor, Tensor]:
    """The spec's Adam step ``step`` (from 1) on one array (see :class:`impls.spec.Adam`): the new ``(param, m, v)``."""
    beta1, beta2, epsilon = (exact(x, keras.backend.standardize_dtype(param.dtype))
                             for x in (rule.beta1, rule.beta2, rule.epsilon))
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    return param - learning_rate * m_hat / (ops.sqrt(v_hat) + epsilon), m, v


class SpecAdam(keras.optimizers.Optimizer):
    """:func:`adam_update` as a Keras optimizer for ``model.compile`` (``keras.optimizers.Adam`` is not the spec's)."""

    def __init__(self, rule: Adam) -> None:
        super().__init__(learning_rate=0.001, name="spec_adam")  # the rate is set per epoch or step
        self.rule = rule

    def build(self, variables: list) -> None:
        if self.built:
            return
        super().build(variables)
        self.first_moments, self.second_moments = self.add_optimizer_variables(variables, ["m", "v"])

    def update_step(self, gradient: Tensor, variable: Tensor, learning_rate: Tensor) -> None:
        dtype = keras.backend.standardize_dtype(variable.dtype)
        # private, as in Keras's own optimizers and its Optimizer docstring's example (checked: Keras 3.15.1)
        index = self._get_variable_index(variable)
        m, v = self.first_moments[index], self.second_moments[index]
        new_param, new_m, new_v = adam_update(variable, m, v, ops.cast(gradient, dtype), ops.cast(learning_rate, dtype),
                                              ops.cast(self.iterations + 1, dtype), self.rule)
        self.assign(m, new_m)
        self.assign(v, new_v)
        self.assign(variable, new_param)


# ---- the interface -------------------------------------------------------------------


class KerasMLP(MLP):
    """``keras.Sequential`` MLP; ``fit`` is ``model.fit`` with the spec's batches, rate schedule and early stopping.

    Modes: ``default`` compiles with ``jit_compile="auto"`` (TensorFlow on CPU: a ``tf.function`` graph,
    JAX: ``jax.jit``, torch: eager); ``jit`` forces ``jit_compile=True`` (TensorFlow: XLA, torch:
    ``torch.compile``) and runs several batches per call (``steps_per_execution``, within an epoch).
    """

    name = "keras"

    def __init__(self, spec: MLPSpec, seed: int = 0, mode: str = "default") -> None:
        super().__init__(spec, seed, mode)
        if spec.dtype == "float64":
            enable_float64()
        self.model = init_params(spec, self.seed)
        self._dense = dense_layers(self.model)
        self._dropout = DropoutStream(self.seed)
        self._rule: Optimizer | None = None
        self._compile(SGD())

    def get_params(self) -> Params:
        return [(np.array(ops.convert_to_numpy(d.kernel)), np.array(ops.convert_to_numpy(d.bias)))
                for d in self._dense]

    def _set_params(self, params: Params) -> None:
        for dense, (W, b) in zip(self._dense, params):
            dense.kernel.assign(W)  # Dense keeps the canonical (fan_in, fan_out) layout
            dense.bias.assign(b)

    def _forward(self, X: np.ndarray) -> np.ndarray:
        # the compiled inference step, Dropout off: logits(..., no_dropout); a numpy X breaks a torch.compile graph
        z = self.model.predict_on_batch(ops.convert_to_tensor(X))
        return np.asarray(ops.convert_to_numpy(output(self.spec, z)))

    def _loss(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> float:
        return float(ops.convert_to_numpy(self._objective(X, Y, masks)))

    def _gradients(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Params:
        variables = [v for d in self._dense for v in (d.kernel, d.bias)]
        _, grads = value_and_gradients(lambda: self._objective(X, Y, masks), variables)
        grads = [np.asarray(ops.convert_to_numpy(g), dtype=self.spec.dtype) for g in grads]
        return list(zip(grads[0::2], grads[1::2]))

    def _train_step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        self._use_optimizer(optimizer)
        self.model.optimizer.learning_rate = learning_rate
        # train_on_batch resets the loss tracker first: the result is this batch's pre-update objective
        with self._dropout.active():
            return float(self.model.train_on_batch(X, Y, return_dict=True)["loss"])

    def reset_optimizer(self) -> None:
        optimizer = self.model.optimizer
        for variable in optimizer.variables:  # the step count, SGD's velocities, Adam's moments
            if variable.name != "learning_rate":
                variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def native_params(self) -> list[np.ndarray]:
        """``model.get_weights()``: ``[kernel_0 (fan_in, fan_out), bias_0 (fan_out,), kernel_1, ...]``, canonical."""
        return self.model.get_weights()

    def load_native(self, native: list[np.ndarray]) -> None:
        """Load a Keras weight list laid out as :meth:`native_params` returns it (through :meth:`set_params`)."""
        n = 2 * self.spec.n_layers
        if isinstance(native, (str, bytes)) or not isinstance(native, Sequence) or len(native) != n:
            got = len(native) if isinstance(native, Sequence) else type(native).__name__
            raise ValueError(f"a Keras weight list of {n} arrays [kernel_0, bias_0, ...] is needed, got {got}")
        self.set_params(list(zip(native[0::2], native[1::2])))

    def fit(self, X: object, y: object, config: TrainConfig,
            validation: tuple[object, object] | None = None,
            on_epoch_end: Callable[[int, History], None] | None = None) -> History:
        """Train with ``model.fit`` on the spec's batches; the same :class:`History` as :meth:`MLP.fit`."""
        X, Y = self.spec.check_Xy(X, y)
        val = self.spec.check_Xy(*validation) if validation is not None else None
        es = config.early_stopping
        if es is not None and val is None:
            raise ValueError("early stopping monitors the validation loss: pass validation=(X_val, y_val)")
        self._use_optimizer(config.optimizer)
        self.reset_optimizer()
        epochs = SpecEpochs(self.spec, config, X.shape[0], val, self._forward, on_epoch_end,
                            self._check_epoch, self._restore_point())
        callbacks: list[keras.callbacks.Callback] = [
            keras.callbacks.LearningRateScheduler(lambda epoch: config.learning_rate_at(epoch + 1)),
            epochs,  # before EarlyStopping: it adds the val_loss that EarlyStopping monitors
        ]
        stopper = None
        if es is not None:
            # Keras compares val_loss + min_delta < best (the spec's val < best - min_delta) and, with
            # restore_best_weights, restores at the end of training whether it stopped early or not
            stopper = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=es.patience,
                                                    min_delta=es.min_delta, restore_best_weights=es.restore_best)
            callbacks.append(stopper)
        data = epoch_batches(X, Y, config.batch_size or X.shape[0], lambda: epochs.order)
        with self._dropout.active():
            self.model.fit(data, epochs=config.epochs, shuffle=False, verbose=0, callbacks=callbacks)
        history = epochs.history
        if stopper is not None:
            history.best_epoch = stopper.best_epoch + 1
            history.stopped_epoch = stopper.stopped_epoch + 1 if stopper.stopped_epoch > 0 else None
        return history

    def _objective(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Tensor:
        return objective(self.spec, self.model, ops.convert_to_tensor(X), ops.convert_to_tensor(Y),
                         self.spec.dropout_scales(masks))

    def _compile(self, rule: Optimizer) -> None:
        """(Re)compile with the Keras optimizer of ``rule``: ``keras.optimizers.SGD`` or :class:`SpecAdam`."""
        spec = self.spec
        with floatx(spec.dtype):
            if isinstance(rule, Adam):
                optimizer = SpecAdam(rule)
            else:
                optimizer = keras.optimizers.SGD(momentum=optimizer_float(rule.momentum))
            self.model.compile(optimizer=optimizer, loss=SpecLoss(spec),
                               jit_compile=True if self.mode == "jit" else "auto",
                               steps_per_execution=steps_per_execution(self.mode))
        self._rule = rule

    def _use_optimizer(self, rule: Optimizer) -> None:
        """Switch the update rule; between SGD momenta (fixed at construction in Keras) keep the velocities.

        Keras's SGD keeps none while momentum is 0: a momentum step after momentum-0 ``train_step`` calls
        starts from v = 0, where the spec's v is the last step, -lr g (``fit`` starts from v = 0 anyway).
        """
        if rule == self._rule:
            return
        old, old_rule = self.model.optimizer, self._rule
        carry = isinstance(old_rule, SGD) and isinstance(rule, SGD) and old.built and old_rule.momentum != 0
        velocities = [ops.convert_to_numpy(m) for m in old.momentums] if carry else None
        self._compile(rule)
        if velocities is not None and rule.momentum != 0:
            self.model.optimizer.build(self.model.trainable_variables)
            for m, v in zip(self.model.optimizer.momentums, velocities):
                m.assign(v)


# ---- the same training, the way the Keras guides write it ----------------------------


def native_fit(spec: MLPSpec, config: TrainConfig, X: np.ndarray, y: np.ndarray,
               validation: tuple[np.ndarray, np.ndarray] | None = None, mode: str = "default") -> NativeRun:
    """``Sequential`` + ``compile`` + ``fit`` as the Keras guides write them: He-normal ``Dense`` layers,
    ``Dropout``, ``L2``, SGD with momentum, Keras's losses on the output activation, ``fit``'s own shuffle,
    ``LearningRateScheduler`` and ``EarlyStopping``; mode ``jit``: ``jit_compile=True`` and ``steps_per_execution``.
    ``predict`` calls the model (``model.predict`` builds a data pipeline per call).  ``X: (n, n_inputs)``,
    ``y``: 0/1 labels, class indices or values.
    """
    check_native_support(spec, config, validation)
    keras.utils.set_random_seed(config.seed)
    output_activation, loss = {"binary_crossentropy": ("sigmoid", "binary_crossentropy"),
                               "categorical_crossentropy": ("softmax", "sparse_categorical_crossentropy"),
                               "mse": (None, "mse")}[spec.loss]
    l2 = keras.regularizers.L2(spec.l2 / 2) if spec.l2 else None  # L2(x) adds x sum W**2: the spec's (l2/2) sum W**2
    if spec.dtype == "float64":
        enable_float64()
    with floatx(spec.dtype):  # keras.config.set_floatx, restored afterwards
        model = keras.Sequential([keras.Input((spec.n_inputs,))])
        for width, rate in zip(spec.hidden_sizes, spec.dropout_rates):
            model.add(keras.layers.Dense(width, activation=spec.hidden_activation, kernel_initializer="he_normal",
                                         kernel_regularizer=l2))
            if rate > 0:
                model.add(keras.layers.Dropout(rate))
        model.add(keras.layers.Dense(spec.n_outputs, activation=output_activation, kernel_initializer="he_normal",
                                     kernel_regularizer=l2))
        model.compile(optimizer=keras.optimizers.SGD(config.learning_rate, momentum=config.optimizer.momentum),
                      loss=loss, jit_compile=True if mode == "jit" else "auto",
                      steps_per_execution=steps_per_execution(mode))
    epoch_time: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        """Each epoch's updates: from its start to its validation (or its end)."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_test_begin(self, logs: dict | None = None) -> None:
            epoch_time.append(time.perf_counter() - self.start)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if validation is None:
                epoch_time.append(time.perf_counter() - self.start)

    es = config.early_stopping
    callbacks = [keras.callbacks.LearningRateScheduler(lambda epoch: config.learning_rate * config.lr_decay ** epoch),
                 EpochTimer()]
    if es is not None:
        stopper = keras.callbacks.EarlyStopping(patience=es.patience, min_delta=es.min_delta,
                                                restore_best_weights=es.restore_best)
        callbacks.append(stopper)
    logs = model.fit(X, y, batch_size=config.batch_size or len(X), epochs=config.epochs, shuffle=config.shuffle,
                     validation_data=validation, callbacks=callbacks, verbose=0).history
    history = History(loss=logs["loss"], val_loss=logs.get("val_loss", []), learning_rate=logs["learning_rate"],
                      epoch_time=epoch_time)
    if es is not None:
        history.best_epoch = stopper.best_epoch + 1
        history.stopped_epoch = stopper.stopped_epoch + 1 if stopper.stopped_epoch > 0 else None
    return NativeRun(history, lambda X: np.asarray(ops.convert_to_numpy(model(X, training=False))))
