"""Keras 3 behaviours that :mod:`impls.keras_mlp` works around, kept beside it so that file reads like the others.

Each function names the Keras behaviour it works around and the backends where it shows; each
is pinned, with the measured difference, in ``tests/frameworks/test_keras_conventions.py``.

* dtype: Keras computes losses, learning rates and metrics in ``keras.config.floatx()``
  (:func:`floatx`), JAX holds float64 only in its 64-bit mode (:func:`enable_float64`), TensorFlow
  converts Python floats to float64 through float32 in ``ops.cast`` (:func:`exact`), and Keras's type
  promotion computes ``ops.mean`` and ``ops.tanh`` of float64 in float32 on JAX (:func:`elementwise_mean`,
  :func:`tanh`).  On torch it does so for ``ops.matmul`` itself: float64 Dense layers compute in float32
  there, a known limitation that no workaround here covers.
* derivatives: ``abs`` has derivative 1 at 0 on JAX (:func:`abs_`); differentiating an arbitrary
  function takes each backend's own autodiff (:func:`value_and_gradients`).
* ``model.fit``: it shuffles with its own RNG and its data hooks do not count epochs, so it is given
  the spec's batches (:func:`epoch_batches`) in the order a callback sets per epoch, which also keeps
  the spec's history (:class:`SpecEpochs`); how many batches one compiled call runs
  (:func:`steps_per_execution`); where ``Dropout`` draws its masks (:func:`dropout_seed`, :class:`DropoutStream`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

from impls.base import History, accuracy
from impls.spec import MLPSpec, Params, TrainConfig, batch_order

Tensor = Any
"""A tensor of the Keras backend (``tf.Tensor``, ``jax.Array``, ``torch.Tensor``) or a Keras variable."""


# ---- dtype -----------------------------------------------------------------------------


@contextlib.contextmanager
def floatx(dtype: str) -> Iterator[None]:
    """Set ``keras.config.floatx()`` and the global dtype policy for the duration of the block, then restore both.

    Keras creates the optimizer's learning-rate variable, the loss tracker and layers without a dtype
    in floatx; a float64 model needs them in float64 too.  The global dtype policy is derived from
    floatx once, when first asked for: set inside a float64 block, every later layer would be float64.
    """
    previous, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)
        keras.config.set_dtype_policy(policy)


def enable_float64() -> None:
    """Make float64 real on the JAX backend.

    Keras does not enable JAX's 64-bit mode: without it a ``dtype="float64"`` variable silently
    holds float32.  JAX's switch is process-wide, so it is flipped only when a float64 model is built.
    """
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)


def exact(value: float, dtype: str) -> Tensor:
    """The Python number ``value`` as a 0-d tensor of ``dtype``, rounded once.

    ``ops.cast`` of a Python float to float64 goes through float32 on TensorFlow
    (0.9 -> 0.8999999761581421, a 2.6e-8 relative error), which is how Keras's ``L1``/``L2``
    regularizers and optimizers convert their hyper-parameters.
    """
    return ops.convert_to_tensor(float(value), dtype=dtype)


def optimizer_float(value: float) -> float:
    """A hyper-parameter for a Keras optimizer that reaches float64 variables unrounded.

    Keras's optimizers ``ops.cast`` their hyper-parameters to the variable's dtype, which on
    TensorFlow takes a Python float through float32 (see :func:`exact`) but not a numpy float64.
    Elsewhere it stays a Python float: Keras's fused torch SGD tests ``momentum != 0``, which
    ``torch.compile`` cannot trace for a numpy scalar (a graph break in every compiled step).
    """
    return np.float64(value) if keras.backend.backend() == "tensorflow" else float(value)


def elementwise_mean(values: Tensor) -> Tensor:
    """The mean of every element of ``values``: their sum divided by their count.

    ``ops.mean`` computes float64 in float32 on JAX (a ~3e-8 relative error), and Keras's
    ``BinaryCrossentropy``/``MeanSquaredError``/``MeanAbsoluteError`` average the last axis with it.
    The count is taken as Keras's own ``sum_over_batch_size`` reduction takes it: ``ops.size`` turns
    a batch size that ``torch.compile`` traces symbolically into a graph break.
    """
    count = ops.prod(ops.convert_to_tensor(ops.shape(values), dtype="int32"))
    return ops.sum(values) / ops.cast(count, values.dtype)


def float64_tanh(z: Tensor) -> Tensor:
    """``tanh`` from ``exp``/``expm1`` (which keep float64 on every backend), exact to rounding.

    ``tanh(a) = -expm1(-2a) / (1 + exp(-2a))`` for ``a = |z|``, odd-extended; ``|z|`` is written
    with ``where`` so that the derivative at 0 is 1 (``abs'(0)`` is backend-dependent).
    """
    positive = z >= 0
    a = ops.where(positive, z, -z)
    t = -ops.expm1(-2.0 * a) / (1.0 + ops.exp(-2.0 * a))
    return ops.where(positive, t, -t)


def tanh(z: Tensor) -> Tensor:
    """``keras.activations.tanh``, or :func:`float64_tanh` where that returns another dtype than ``z``'s.

    On JAX it computes float64 in float32: Keras promotes the input with ``result_type(x.dtype, float)``,
    which maps 64-bit results to 32-bit on every backend but TensorFlow.  (The dtype is static, so the
    check costs nothing in a compiled step.)
    """
    t = keras.activations.tanh(z)
    dtype = keras.backend.standardize_dtype
    return float64_tanh(z) if dtype(t.dtype) != dtype(z.dtype) else t


# ---- derivatives -------------------------------------------------------------------------


def abs_(x: Tensor) -> Tensor:
    """``|x|`` whose derivative at 0 is 0 (``sign(0)``) on every backend; JAX's ``abs'(0)`` is 1.

    ``|x| = x * sign(x)`` in value; autodiff gives ``sign(x) + x * 0``.
    """
    return x * ops.stop_gradient(ops.sign(x))


def value_and_gradients(objective: Callable[[], Tensor], variables: list) -> tuple[Tensor, list[Tensor]]:
    """``objective()`` and its gradient with respect to ``variables`` (Keras variables).

    ``model.fit`` differentiates its own loss; an arbitrary objective (injected dropout masks)
    takes the backend's autodiff, each backend its own way.
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


# ---- model.fit ---------------------------------------------------------------------------

STEPS_PER_EXECUTION = {"default": 1, "jit": 32}
"""Batches per compiled call, by mode (TensorFlow loops them in one graph, JAX in Python)."""


def steps_per_execution(mode: str) -> int:
    """:data:`STEPS_PER_EXECUTION` of ``mode``; always 1 on torch, which refuses anything else
    ("steps_per_execution must be 1 with the PyTorch backend")."""
    if mode not in STEPS_PER_EXECUTION:
        raise ValueError(f"unknown mode {mode!r} for keras; expected one of {list(STEPS_PER_EXECUTION)}")
    return 1 if keras.backend.backend() == "torch" else STEPS_PER_EXECUTION[mode]


def epoch_batches(X: np.ndarray, Y: np.ndarray, batch_size: int, order: Callable[[], np.ndarray]) -> Any:
    """What ``model.fit`` iterates once per epoch: ``(X[idx], Y[idx])`` for consecutive chunks ``idx``
    of ``batch_size`` entries of ``order()`` (the last, partial chunk kept).

    ``order()`` returns the current epoch's sample order ``(n,)``; it is read after the callbacks'
    ``on_epoch_begin``, so a callback can set it.  ``fit`` on arrays cannot take an order (it shuffles
    with its own RNG).  TensorFlow gets a ``tf.data`` pipeline that gathers the batches in the graph,
    as Keras's own pipeline for arrays does; a ``PyDataset`` reaches TensorFlow through
    ``tf.data.Dataset.from_generator``, a Python call per batch.  JAX and torch get a ``PyDataset``,
    indexed in Python as Keras indexes arrays there; they would iterate ``tf.data`` eagerly (~0.2 ms a batch).
    """
    if keras.backend.backend() == "tensorflow":
        return _tf_batches(X, Y, batch_size, order)
    return OrderedBatches(X, Y, batch_size, order)


def _tf_batches(X: np.ndarray, Y: np.ndarray, batch_size: int, order: Callable[[], np.ndarray]) -> Any:
    import tensorflow as tf

    n_samples = X.shape[0]
    n_full, partial = divmod(n_samples, batch_size)

    def cut(indices):
        full = tf.data.Dataset.from_tensor_slices(tf.reshape(indices[: n_full * batch_size], (n_full, batch_size)))
        return full.concatenate(tf.data.Dataset.from_tensors(indices[n_full * batch_size:])) if partial else full

    def epoch_order(_):
        return tf.ensure_shape(tf.numpy_function(order, [], tf.int64, stateful=True), (n_samples,))

    X, Y = tf.constant(X), tf.constant(Y)
    return (tf.data.Dataset.from_tensors(0).map(epoch_order).flat_map(cut)
            .map(lambda idx: (tf.gather(X, idx), tf.gather(Y, idx)))
            # a known length: Keras warns about running out of data on a dataset of unknown length
            .apply(tf.data.experimental.assert_cardinality(n_full + bool(partial)))
            .prefetch(tf.data.AUTOTUNE))


class OrderedBatches(keras.utils.PyDataset):
    """:func:`epoch_batches` as a ``PyDataset`` (JAX, torch): batch ``i`` is ``order()[i b:(i+1) b]``."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, batch_size: int, order: Callable[[], np.ndarray]) -> None:
        super().__init__()  # no workers: batches are slices of arrays in memory
        self.X, self.Y, self.batch_size, self.order = X, Y, batch_size, order

    def __len__(self) -> int:
        return -(-self.X.shape[0] // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.order()[index * self.batch_size:(index + 1) * self.batch_size]
        return self.X[idx], self.Y[idx]


class SpecEpochs(keras.callbacks.Callback):
    """The spec's epochs inside ``model.fit``: each epoch's sample order, and the :class:`~impls.base.History`.

    ``order``: the current epoch's samples in :func:`impls.spec.batch_order`'s order, set from ``fit``'s
    epoch index (a ``PyDataset``'s ``on_epoch_end`` runs once more than there are epochs).  The epoch loss
    is Keras's loss tracker (the batch-size-weighted mean of pre-update objectives); ``val_loss`` goes
    into the logs for ``EarlyStopping``, which comes after this callback.  ``forward`` maps validation
    features to outputs (for the accuracy).  ``check_epoch`` is :meth:`impls.base.MLP._check_epoch`, given
    the parameters before the epoch: a NaN loss or parameter stops ``fit`` with ``TrainingDiverged``.
    """

    def __init__(self, spec: MLPSpec, config: TrainConfig, n_samples: int,
                 validation: tuple[np.ndarray, np.ndarray] | None, forward: Callable[[np.ndarray], np.ndarray],
                 on_epoch_end: Callable[[int, History], None] | None,
                 check_epoch: Callable[[int, float, float, Params | None], Params], params: Params | None) -> None:
        super().__init__()
        self.check_epoch, self._last_finite = check_epoch, params
        self.spec, self.config, self.n_samples = spec, config, n_samples
        self.validation, self.forward, self.user_callback = validation, forward, on_epoch_end
        # tensors: a numpy input breaks the compiled test step's graph on torch
        self._validation_tensors = None if validation is None else [ops.convert_to_tensor(a) for a in validation]
        self.history = History()
        self.order = self._order(1)  # Keras may look at a batch before the first epoch
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.order = self._order(epoch + 1)  # Keras counts epochs from 0, the spec from 1
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        elapsed = time.perf_counter() - self._start  # fit has no validation_data: only the updates
        epoch += 1
        lr = self.config.learning_rate_at(epoch)
        loss = float(logs["loss"])
        self._last_finite = self.check_epoch(epoch, loss, lr, self._last_finite)
        h = self.history
        h.epoch_time.append(elapsed)
        h.loss.append(loss)
        h.learning_rate.append(lr)
        if self.validation is not None:
            X_val, Y_val = self.validation
            # the objective without dropout by the compiled test step: eager ops here slowed the next
            # epoch's steps on JAX (breast_cancer, jit: ~20%)
            h.val_loss.append(self.model.test_on_batch(*self._validation_tensors, return_dict=True)["loss"])
            logs["val_loss"] = h.val_loss[-1]
            if self.spec.task != "regression":
                h.val_accuracy.append(accuracy(self.spec, self.forward(X_val), Y_val))
        if self.user_callback is not None:
            self.user_callback(epoch, h)

    def _order(self, epoch: int) -> np.ndarray:
        c = self.config
        return np.concatenate(batch_order(self.n_samples, c.batch_size, c.seed, epoch, c.shuffle))


def dropout_seed(seed: int) -> int | None:
    """The seed to give a ``Dropout`` layer: ``seed``, or ``None`` on torch (see :class:`DropoutStream`)."""
    return None if keras.backend.backend() == "torch" else seed


class DropoutStream:
    """Where a model's ``Dropout`` layers draw their masks from, reproducibly per model seed.

    A seeded ``Dropout`` draws from its own ``SeedGenerator``: the way on TensorFlow and JAX.  On torch
    a seeded ``Dropout`` builds a ``torch.Generator`` for every mask, in a function that
    ``torch.compile`` must skip (a graph break inside each compiled step), while an unseeded one is
    ``F.dropout`` on torch's global RNG.  There the layers get no seed (:func:`dropout_seed`) and
    training runs inside :meth:`active`, on this model's own state of the global RNG, as
    :mod:`impls.torch_mlp` does; elsewhere :meth:`active` does nothing.
    """

    def __init__(self, seed: int) -> None:
        self._torch_state = None
        if keras.backend.backend() == "torch":
            import torch

            self._torch_state = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run the block on this stream; the process's own RNG state is restored afterwards."""
        if self._torch_state is None:
            yield
            return
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._torch_state)
            yield
            self._torch_state = torch.get_rng_state()
