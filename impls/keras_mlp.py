"""The MLP in Keras 3: ``keras.Sequential`` of ``Dense``/``Activation``/``Dropout``, trained by ``model.fit``.

The model code uses ``keras.ops`` only, so this file runs on every Keras backend
(``KERAS_BACKEND=tensorflow|jax|torch``, fixed when keras is first imported).  The one
backend-specific piece is :func:`value_and_gradients`, which differentiates an arbitrary
objective for :meth:`KerasMLP.gradients` (training itself goes through Keras's own train step).

Where a Keras default differs from the spec, the mapping is made here (each one is pinned
in ``tests/frameworks/test_keras_conventions.py``):

* ``keras.regularizers.L2(x)`` adds ``x * sum W**2``: the spec's ``(l2 / 2) sum W**2`` is ``L2(l2 / 2)``.
  ``L1``'s gradient at ``w = 0`` is ``d|w|/dw`` of the backend (JAX: 1); :class:`SignL1` makes it 0.
* ``HeNormal``/``GlorotNormal`` draw a truncated normal; the spec's plain normal is
  ``VarianceScaling(distribution="untruncated_normal")``.
* Keras's ``leaky_relu`` on JAX has derivative 1 at ``z = 0``; the spec takes the left branch.
* Keras's type promotion maps 64-bit results to 32-bit on every backend but TensorFlow.  On JAX
  (with 64-bit mode on, :func:`enable_float64`) that hits ``ops.mean`` and ``ops.tanh``:
  :class:`ElementwiseMean` reduces elementwise losses without ``ops.mean`` (Keras's
  ``BinaryCrossentropy``/``MeanSquaredError``/``MeanAbsoluteError`` use it) and :func:`float64_tanh`
  replaces ``tanh``.  On torch it hits ``ops.matmul`` itself, so float64 Dense layers compute in
  float32 there: float64 results on the torch backend have float32 precision (a known limitation).
* On TensorFlow, ``ops.cast`` of a Python float to float64 goes through float32: the L2 factor and
  the SGD momentum are given as exact float64 values (:class:`ExactL2`, ``numpy.float64``).
* Losses, the learning-rate variable and the loss tracker compute in ``keras.config.floatx()``
  unless told otherwise: float64 models are built and compiled with floatx set to float64.
* ``fit`` shuffles with Keras's own RNG: batches come from a ``PyDataset`` over
  :func:`impls.spec.batch_order` and ``fit(shuffle=False)``; the epoch it serves is set from
  ``fit``'s own epoch index (``PyDataset.on_epoch_end`` is also called once before training).
* ``EarlyStopping``'s default ``restore_best_weights=False`` is set from the spec (Keras 3.15 then
  restores at the end of training whether it stopped early or not, as the spec asks).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
from keras import ops

from impls.base import MLP, History, accuracy
from impls.spec import SGD, Adam, MLPSpec, Optimizer, Params, TrainConfig, batch_order

# ---- the spec's building blocks in Keras terms ---------------------------------------


@contextlib.contextmanager
def floatx(dtype: str) -> Iterator[None]:
    """Set ``keras.config.floatx()`` for the duration of the block, then restore it.

    Keras creates the optimizer's learning-rate variable, the compiled loss and the loss
    tracker in floatx; a float64 model needs them in float64 too.
    """
    previous = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)


def enable_float64() -> None:
    """Make float64 real on the JAX backend.

    Keras does not enable JAX's 64-bit mode: without it a ``dtype="float64"`` variable silently
    holds float32.  JAX's switch is process-wide, so it is flipped only when a float64 model is built.
    """
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)


class SignL1(keras.regularizers.L1):
    """``l1 * sum|W|`` whose gradient at ``w = 0`` is 0 on every backend (spec: ``sign(0) = 0``).

    ``|w| = w * sign(w)`` in value; autodiff gives ``sign(w) + w * 0``, which is 0 at 0,
    where JAX's ``abs`` has derivative 1.  The factor is converted exactly (see :class:`ExactL2`).
    """

    def __init__(self, l1: float) -> None:
        super().__init__(l1)
        self.l1 = float(l1)  # L1 keeps a float32 tensor: converting that to float64 would keep its rounding

    def __call__(self, x):
        return ops.convert_to_tensor(self.l1, dtype=x.dtype) * ops.sum(x * ops.stop_gradient(ops.sign(x)))


class ExactL2(keras.regularizers.L2):
    """``keras.regularizers.L2`` with its factor exact in float64.

    ``L2`` multiplies by ``ops.cast(self.l2, x.dtype)``; on TensorFlow casting a Python float goes
    through float32 (0.9 -> 0.8999999761581421), a 2.6e-8 relative error in a float64 penalty.
    """

    def __call__(self, x):
        return ops.convert_to_tensor(self.l2, dtype=x.dtype) * ops.sum(ops.square(x))


def penalty_regularizer(spec: MLPSpec) -> keras.regularizers.Regularizer | None:
    """The spec's ``l1 sum|W| + (l2/2) sum W**2`` as a kernel regularizer (``None`` without a penalty)."""
    parts: list[keras.regularizers.Regularizer] = []
    if spec.l1:
        parts.append(SignL1(spec.l1))
    if spec.l2:
        parts.append(ExactL2(spec.l2 / 2))  # Keras's L2(x) is x * sum W**2
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return SumOfRegularizers(parts)


class SumOfRegularizers(keras.regularizers.Regularizer):
    """Several regularizers on one weight (``L1L2`` would use the backend's ``abs``)."""

    def __init__(self, parts: list[keras.regularizers.Regularizer]) -> None:
        self.parts = parts

    def __call__(self, x):
        total = self.parts[0](x)
        for part in self.parts[1:]:
            total = total + part(x)
        return total


def kernel_initializer(spec: MLPSpec, layer: int, seed: int) -> keras.initializers.Initializer:
    """The spec's rule for layer ``layer``'s kernel as a seeded Keras initializer (plain, untruncated normal)."""
    seed = seed * 1_000 + layer  # one reproducible stream per (model seed, layer)
    s = spec.init_scale
    match spec.initializer:
        case "zeros":
            return keras.initializers.Zeros()
        case "normal":
            return keras.initializers.RandomNormal(0.0, s, seed=seed)
        case "uniform":
            return keras.initializers.RandomUniform(-s, s, seed=seed)
        case "xavier_normal":
            return keras.initializers.VarianceScaling(1.0, "fan_avg", "untruncated_normal", seed=seed)
        case "xavier_uniform":
            return keras.initializers.VarianceScaling(1.0, "fan_avg", "uniform", seed=seed)
        case "he_normal":
            return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=seed)
        case "he_uniform":
            return keras.initializers.VarianceScaling(2.0, "fan_in", "uniform", seed=seed)
    raise ValueError(f"unknown initializer {spec.initializer!r}")


def tanh_keeps_float64() -> bool:
    """Whether ``ops.tanh`` computes float64 in float64.

    On JAX it does not: Keras promotes the input with ``result_type(x.dtype, float)``, which maps
    64-bit results to 32-bit on every backend but TensorFlow.
    """
    return ops.convert_to_numpy(ops.tanh(ops.zeros((1,), dtype="float64"))).dtype == np.float64


def float64_tanh(z):
    """``tanh`` from ``exp``/``expm1`` (which keep float64 on every backend), exact to rounding.

    ``tanh(a) = -expm1(-2a) / (1 + exp(-2a))`` for ``a = |z|``, odd-extended; ``|z|`` is written
    with ``where`` so that the derivative at 0 is 1 (``abs'(0)`` is backend-dependent).
    """
    positive = z >= 0
    a = ops.where(positive, z, -z)
    t = -ops.expm1(-2.0 * a) / (1.0 + ops.exp(-2.0 * a))
    return ops.where(positive, t, -t)


def hidden_activation(spec: MLPSpec) -> Callable:
    """The hidden activation as a function of keras tensors, left branch at the kink ``z = 0``."""
    match spec.hidden_activation:
        case "sigmoid":
            return keras.activations.sigmoid
        case "tanh":
            return keras.activations.tanh if tanh_keeps_float64() else float64_tanh
        case "relu":
            return keras.activations.relu  # relu'(0) = 0 on every backend
        case "leaky_relu":
            slope = spec.leaky_slope
            # keras.activations.leaky_relu has derivative 1 at 0 on JAX (jnp.where(z >= 0, ...))
            return lambda z: ops.where(z > 0, z, slope * z)
        case "elu":
            alpha = spec.elu_alpha
            return lambda z: keras.activations.elu(z, alpha=alpha)  # elu'(0) = alpha on every backend
        case "identity":
            return keras.activations.linear
    raise ValueError(f"unknown activation {spec.hidden_activation!r}")


class ElementwiseMean(keras.losses.Loss):
    """Binary cross-entropy from logits, squared or absolute error: the mean over every element.

    Keras's ``BinaryCrossentropy``/``MeanSquaredError``/``MeanAbsoluteError`` average the last axis
    with ``ops.mean``, which on JAX computes a float64 tensor in float32 (a ~3e-8 relative error);
    here the elementwise values go straight to the ``sum_over_batch_size`` reduction, which divides
    their sum by their count.
    """

    def __init__(self, loss: str, dtype: str) -> None:
        super().__init__(name=loss, reduction="sum_over_batch_size", dtype=dtype)
        self.loss = loss

    def call(self, y_true, y_pred):
        """Elementwise loss ``(n, k)`` of targets and logits ``(n, k)``."""
        if self.loss == "binary_crossentropy":
            return ops.binary_crossentropy(y_true, y_pred, from_logits=True)  # softplus(z) - y z, stable
        residual = y_pred - y_true
        if self.loss == "mse":
            return ops.square(residual)
        # |r| = r sign(r) with d/dr = sign(r): 0 at r = 0 (the reference's np.sign), where JAX's abs gives 1
        return residual * ops.stop_gradient(ops.sign(residual))


def loss_function(spec: MLPSpec) -> keras.losses.Loss:
    """The spec's loss from logits, computed in the spec's dtype (Keras losses default to floatx)."""
    if spec.loss == "categorical_crossentropy":
        return keras.losses.CategoricalCrossentropy(from_logits=True, dtype=spec.dtype)
    return ElementwiseMean(spec.loss, spec.dtype)


def output_activation(spec: MLPSpec, logits):
    """Probabilities (sigmoid/softmax) or values from logits ``(n, k)``."""
    match spec.loss_rule.output_activation:
        case "sigmoid":
            return ops.sigmoid(logits)
        case "softmax":
            return ops.softmax(logits, axis=-1)
    return logits


def value_and_gradients(objective: Callable[[], object], variables: list) -> tuple[object, list]:
    """``objective()`` and its gradient with respect to ``variables`` (Keras variables).

    The only backend-specific code of the file: each backend differentiates its own way.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = objective()
        return value, tape.gradient(value, variables)
    if backend == "jax":
        import jax

        def pure(values):
            # reads of the model's variables return `values` inside the scope: a pure function for jax.grad
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return objective()

        return jax.value_and_grad(pure)([v.value for v in variables])
    if backend == "torch":
        import torch

        value = objective()
        return value, list(torch.autograd.grad(value, [v.value for v in variables]))
    raise NotImplementedError(f"gradients are not implemented for the {backend!r} backend")


# ---- data and callbacks for model.fit ------------------------------------------------


class SpecBatches(keras.utils.PyDataset):
    """The batches of :func:`impls.spec.batch_order` for the current epoch (last partial batch kept).

    Keras's own hooks do not count epochs: ``fit`` calls ``on_epoch_end`` once before the first
    epoch (``EpochIterator.reset``), and on JAX/torch ``on_epoch_begin`` once more while it builds
    the model.  The epoch is therefore set by :class:`SpecHistory` from ``fit``'s epoch index.
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, config: TrainConfig) -> None:
        super().__init__()  # no workers: batches are slices of arrays in memory
        self.X, self.Y, self.config = X, Y, config
        self.start_epoch(1)

    def start_epoch(self, epoch: int) -> None:
        """Serve the batches of ``epoch`` (1-based) from now on."""
        c = self.config
        self.epoch = epoch
        self._batches = batch_order(self.X.shape[0], c.batch_size, c.seed, epoch, c.shuffle)

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._batches[index]
        return self.X[idx], self.Y[idx]


class SpecHistory(keras.callbacks.Callback):
    """Fills the spec's :class:`History`: epoch loss, update time, validation, divergence check.

    Also tells the dataset which epoch starts.  Runs before ``EarlyStopping`` in the callback
    list and puts ``val_loss`` into the epoch logs it monitors.
    """

    def __init__(self, mlp: KerasMLP, batches: SpecBatches, config: TrainConfig,
                 validation: tuple[np.ndarray, np.ndarray] | None,
                 on_epoch_end: Callable[[int, History], None] | None) -> None:
        super().__init__()
        self.mlp, self.batches, self.config = mlp, batches, config
        self.validation, self.user_callback = validation, on_epoch_end
        self.history = History()
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.batches.start_epoch(epoch + 1)  # Keras counts epochs from 0, the spec from 1
        self._last_finite = self.mlp.get_params()
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        elapsed = time.perf_counter() - self._start  # no validation_data: fit ran only the updates
        epoch += 1  # Keras counts from 0, the spec from 1
        lr = self.config.learning_rate_at(epoch)
        loss = float(logs["loss"])  # Keras's loss tracker: batch-size-weighted mean of pre-update objectives
        self.mlp._check_epoch(epoch, loss, lr, self._last_finite)
        h = self.history
        h.epoch_time.append(elapsed)
        h.loss.append(loss)
        h.learning_rate.append(lr)
        if self.validation is not None:
            X_val, Y_val = self.validation
            h.val_loss.append(float(self.mlp._loss(X_val, Y_val, self.mlp.no_dropout)))
            logs["val_loss"] = h.val_loss[-1]
            if self.mlp.spec.task != "regression":
                h.val_accuracy.append(accuracy(self.mlp.spec, self.mlp._forward(X_val), Y_val))
        if self.user_callback is not None:
            self.user_callback(epoch, h)


class SpecAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with the spec's epsilon placement: ``lr m_hat / (sqrt(v_hat) + epsilon)``.

    Keras's own Adam steps by ``lr sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + epsilon)``,
    which is the spec's update with epsilon replaced by ``epsilon / sqrt(1 - beta2**t)`` (31.6x at
    step 1, fading as ``t`` grows); its default epsilon is 1e-7, the paper's 1e-8.  The hyper-parameters
    are converted to the variable's dtype exactly (see :class:`ExactL2`).
    """

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype

        def exact(value):
            return ops.convert_to_tensor(float(value), dtype=dtype)

        lr, gradient = ops.cast(learning_rate, dtype), ops.cast(gradient, dtype)
        beta1, beta2, epsilon = exact(self.beta_1), exact(self.beta_2), exact(self.epsilon)
        step = ops.cast(self.iterations + 1, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign(m, ops.add(ops.multiply(beta1, m), ops.multiply(1 - beta1, gradient)))
        self.assign(v, ops.add(ops.multiply(beta2, v), ops.multiply(1 - beta2, ops.square(gradient))))
        m_hat = ops.divide(m, 1 - ops.power(beta1, step))
        v_hat = ops.divide(v, 1 - ops.power(beta2, step))
        self.assign_sub(variable, ops.divide(ops.multiply(lr, m_hat), ops.add(ops.sqrt(v_hat), epsilon)))


STEPS_PER_EXECUTION = {"default": 1, "jit": 32}
"""Batches per compiled call (TensorFlow loops them in one graph, JAX in Python).  The torch backend
refuses anything but 1 ("steps_per_execution must be 1 with the PyTorch backend")."""


def steps_per_execution(mode: str) -> int:
    return 1 if keras.backend.backend() == "torch" else STEPS_PER_EXECUTION[mode]


# ---- the model -----------------------------------------------------------------------


class KerasMLP(MLP):
    """``keras.Sequential`` MLP; ``fit`` is ``model.fit`` with the spec's batches, rate schedule and early stopping.

    Modes: ``default`` compiles with ``jit_compile="auto"`` (TensorFlow on CPU: a ``tf.function`` graph,
    JAX: ``jax.jit``, torch: eager); ``jit`` forces ``jit_compile=True`` (TensorFlow: XLA,
    torch: ``torch.compile``) and runs several batches per call (``steps_per_execution``).  That keeps
    the spec's semantics: the loss tracker still adds every batch, and the rate changes only per epoch.
    """

    name = "keras"

    def __init__(self, spec: MLPSpec, seed: int = 0, mode: str = "default") -> None:
        super().__init__(spec, seed, mode)
        dtype = spec.dtype
        if dtype == "float64":
            enable_float64()
        self._activation = hidden_activation(spec)
        with floatx(dtype):  # every layer gets dtype= too; floatx reaches what Keras builds inside
            self._dense = [
                keras.layers.Dense(fan_out, kernel_initializer=kernel_initializer(spec, layer, seed),
                                   bias_initializer="zeros", kernel_regularizer=penalty_regularizer(spec),
                                   dtype=dtype, name=f"dense_{layer}")
                for layer, ((_, fan_out), _) in enumerate(spec.param_shapes())
            ]
            layers: list[keras.layers.Layer] = [keras.Input((spec.n_inputs,), dtype=dtype)]
            for layer, (dense, rate) in enumerate(zip(self._dense[:-1], spec.dropout_rates)):
                layers += [dense, keras.layers.Activation(self._activation, dtype=dtype, name=f"activation_{layer}")]
                if rate > 0:
                    # Keras's Dropout is inverted (kept units scaled by 1/(1-p)), seeded per model and layer
                    layers.append(keras.layers.Dropout(rate, seed=seed * 1_000 + layer, dtype=dtype,
                                                       name=f"dropout_{layer}"))
            layers.append(self._dense[-1])  # linear: the loss takes logits; the output activation is in _forward
            self.model = keras.Sequential(layers, name="mlp")
        self._loss_fn = loss_function(spec)
        self._optimizer: Optimizer | None = None
        self._compile(SGD())

    # ---- optimizer ----------------------------------------------------------------

    def _compile(self, optimizer: Optimizer) -> None:
        """(Re)compile with the Keras optimizer for ``optimizer``.

        Keras's SGD is the spec's ``v <- mu v - lr g; w <- w + v``; Adam is :class:`SpecAdam`.
        """
        with floatx(self.spec.dtype):
            if isinstance(optimizer, Adam):
                keras_optimizer = SpecAdam(learning_rate=0.001, beta_1=optimizer.beta1, beta_2=optimizer.beta2,
                                           epsilon=optimizer.epsilon)
            else:
                # SGD ops.casts a Python-float momentum to the variable's dtype, through float32 on
                # TensorFlow (0.9 -> 0.8999999761581421); a float64 scalar keeps it exact
                keras_optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=np.float64(optimizer.momentum))
            self.model.compile(optimizer=keras_optimizer, loss=loss_function(self.spec),
                               jit_compile=True if self.mode == "jit" else "auto",
                               steps_per_execution=steps_per_execution(self.mode))
        self._optimizer = optimizer

    def _use_optimizer(self, optimizer: Optimizer) -> None:
        """Switch the update rule; between SGD momenta, keep the velocities (Keras fixes momentum at construction).

        Keras's SGD keeps no velocity while momentum is 0, so after momentum-0 steps the next momentum
        step starts from v = 0 where the spec's v is the last step, -lr g (only mixed-momentum
        ``train_step`` sequences see this; ``fit`` uses one momentum and starts from v = 0).
        """
        if optimizer == self._optimizer:
            return
        old, old_rule = self.model.optimizer, self._optimizer
        carry = isinstance(old_rule, SGD) and isinstance(optimizer, SGD) and old.built and old_rule.momentum != 0
        velocities = [ops.convert_to_numpy(m) for m in old.momentums] if carry else None
        self._compile(optimizer)
        if velocities is not None and optimizer.momentum != 0:
            self.model.optimizer.build(self.model.trainable_variables)
            for m, v in zip(self.model.optimizer.momentums, velocities):
                m.assign(v)

    def reset_optimizer(self) -> None:
        optimizer = self.model.optimizer
        if not optimizer.built:
            return
        optimizer.iterations.assign(0)  # Adam's step count t
        if isinstance(optimizer, keras.optimizers.Adam):
            state = [*optimizer._momentums, *optimizer._velocities]  # m and v
        else:
            state = optimizer.momentums if self._optimizer.momentum != 0 else []
        for variable in state:
            variable.assign(ops.zeros_like(variable))

    # ---- parameters ---------------------------------------------------------------

    def get_params(self) -> Params:
        return [(np.array(ops.convert_to_numpy(d.kernel)), np.array(ops.convert_to_numpy(d.bias)))
                for d in self._dense]

    def _set_params(self, params: Params) -> None:
        for dense, (W, b) in zip(self._dense, params):
            dense.kernel.assign(W)  # Dense keeps the canonical (fan_in, fan_out) layout
            dense.bias.assign(b)

    def native_params(self) -> list[np.ndarray]:
        """``model.get_weights()``: ``[kernel_0 (fan_in, fan_out), bias_0 (fan_out,), kernel_1, ...]``.

        Keras's Dense kernel already has the canonical layout; Dropout's seed state is not a weight.
        """
        return self.model.get_weights()

    def load_native(self, native: list[np.ndarray]) -> None:
        """Load a Keras weight list laid out as :meth:`native_params` returns it.

        It goes through :meth:`set_params`, so a wrong shape or a NaN gets the canonical message.
        """
        n = 2 * self.spec.n_layers
        if isinstance(native, (str, bytes)) or not isinstance(native, Sequence) or len(native) != n:
            got = len(native) if isinstance(native, Sequence) else type(native).__name__
            raise ValueError(f"a Keras weight list of {n} arrays [kernel_0, bias_0, ...] is needed, got {got}")
        self.set_params(list(zip(native[0::2], native[1::2])))

    # ---- forward, loss, gradients -------------------------------------------------

    def _logits(self, X, scales: list[np.ndarray | None]):
        """Logits ``(n, k)`` through the same Dense layers, hidden activations multiplied by ``scales``."""
        a = X
        for dense, scale in zip(self._dense[:-1], scales):
            a = self._activation(dense(a))
            if scale is not None:
                a = ops.multiply(a, ops.convert_to_tensor(scale))
        return self._dense[-1](a)

    def _objective(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]):
        """Data loss + penalty as a backend scalar (``model.losses`` are the kernel regularizers)."""
        logits = self._logits(ops.convert_to_tensor(X), self.spec.dropout_scales(masks))
        value = self._loss_fn(ops.convert_to_tensor(Y), logits)
        for penalty in self.model.losses:
            value = value + penalty
        return value

    def _forward(self, X: np.ndarray) -> np.ndarray:
        logits = self.model(ops.convert_to_tensor(X), training=False)
        return np.asarray(ops.convert_to_numpy(output_activation(self.spec, logits)))

    def _loss(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> float:
        return float(ops.convert_to_numpy(self._objective(X, Y, masks)))

    def _gradients(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Params:
        variables = [v for d in self._dense for v in (d.kernel, d.bias)]
        _, grads = value_and_gradients(lambda: self._objective(X, Y, masks), variables)
        grads = [np.asarray(ops.convert_to_numpy(g), dtype=self.spec.dtype) for g in grads]
        return list(zip(grads[0::2], grads[1::2]))

    # ---- training -----------------------------------------------------------------

    def _train_step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        self._use_optimizer(optimizer)
        self.model.optimizer.learning_rate = learning_rate
        # train_on_batch resets the loss tracker first: the result is this batch's pre-update objective
        return float(self.model.train_on_batch(X, Y, return_dict=True)["loss"])

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
        batches = SpecBatches(X, Y, config)
        recorder = SpecHistory(self, batches, config, val, on_epoch_end)
        callbacks: list[keras.callbacks.Callback] = [
            keras.callbacks.LearningRateScheduler(lambda epoch: config.learning_rate_at(epoch + 1)),
            recorder,  # before EarlyStopping: it adds the val_loss that EarlyStopping monitors
        ]
        stopper = None
        if es is not None:
            # Keras compares val_loss + min_delta < best (the spec's val < best - min_delta) and, with
            # restore_best_weights, restores at the end of training whether it stopped early or not
            stopper = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=es.patience,
                                                    min_delta=es.min_delta, restore_best_weights=es.restore_best)
            callbacks.append(stopper)
        self.model.fit(batches, epochs=config.epochs, shuffle=False, verbose=0,
                       callbacks=callbacks)
        history = recorder.history
        if stopper is not None:
            history.best_epoch = stopper.best_epoch + 1
            history.stopped_epoch = stopper.stopped_epoch + 1 if stopper.stopped_epoch > 0 else None
        return history

