"""Port a user's own MLP, with its training setup, between frameworks.

:func:`import_model` reads a native model (a PyTorch ``nn.Sequential`` with its loss, optimizer and
scheduler; a Keras ``Sequential`` or functional chain, compiled or not; a Flax NNX ``nnx.Sequential``
with an Optax transformation, identified by probing it with synthetic gradients; one of this project's
``MLP`` objects or ``.npz`` files; a ``[(W, b), ...]`` pytree with its spec) into a
:class:`Port`: the framework-neutral :class:`~impls.spec.MLPSpec` and canonical parameters, the
:class:`~impls.spec.TrainConfig`, and :class:`Conventions` for what the source trains by and the spec
does not define (decay of the biases, the momentum form under a changing rate, Keras's Adam epsilon, a
rate decayed every ``k`` epochs).  ``notes`` say, in words, every convention that was interpreted.
Anything outside the supported set raises :class:`UnsupportedModel` naming the layer or option: nothing
is approximated silently.

:meth:`Port.export` builds the target framework's own objects, configured so that training them with that
framework's usual loop on the same batches reproduces the source; where a stock optimizer cannot, a small
replacement (``VelocitySGD``, ``KerasAdam``, ``BufferSGD``, :func:`velocity_sgd`, :func:`keras_adam`,
:func:`epoch_decay`) does, and a note says so.  The NumPy and JAX targets are this project's implementations,
which train by the spec alone: they refuse a port whose :class:`Conventions` go beyond it.
:func:`verify` trains copies of the source objects and the exported ones side by side and returns a
:class:`Certificate` of their largest relative differences; what the source computes that no export
reproduces (``Port.deviations``, each a :class:`Deviation` with its cause) is held there to the bound its cause
implies (:data:`DEVIATION_BOUNDS`), and every row of a certificate has a limit.  :meth:`Port.script` and
``python -m impls.port SOURCE --to FRAMEWORK --out FILE.py`` write a standalone training script, every value in it
a Python literal.
"""

from __future__ import annotations

import argparse
import copy
import errno
import functools
import inspect
import itertools
import math
import os
import secrets
import stat
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np

from impls.spec import SGD, Adam, EarlyStopping, MLPSpec, Params, TrainConfig, batch_order

FRAMEWORKS = ("torch", "keras", "flax", "numpy", "jax")
"""What :meth:`Port.export` builds and :func:`verify` trains."""


class UnsupportedModel(ValueError):
    """The model or its training setup has a layer or option that cannot be ported exactly; the message names it."""


class Deviation(str):
    """Something the source computes that no export reproduces exactly, in words (a ``str``), with its ``cause``:
    a key of :data:`DEVIATION_BOUNDS`, which says how far the certificate lets it move each compared quantity."""

    cause: str

    def __new__(cls, text: str, cause: str) -> Deviation:
        if cause not in DEVIATION_BOUNDS:
            raise ValueError(f"unknown deviation cause {cause!r}; expected one of {sorted(DEVIATION_BOUNDS)}")
        made = super().__new__(cls, text)
        made.cause = cause
        return made

    def __reduce__(self) -> tuple:
        return Deviation, (str(self), self.cause)


@dataclass(frozen=True)
class Conventions:
    """What a source trains by beyond the spec; the defaults are the spec's own.

    ``bias_l1``, ``bias_l2``: penalty factors on the biases (``bias_l1 sum|b| + (bias_l2/2) sum b**2``).
    ``momentum_form``: ``"velocity"`` is the spec's ``v <- mu v - lr_t g; theta += v``; ``"buffer"`` is
    ``b <- mu b + g; theta -= lr_t b`` (``torch.optim.SGD``, ``optax.sgd``); they differ only once the rate
    changes.  ``adam_epsilon``: ``"corrected"`` adds epsilon to ``sqrt(v_hat)`` (the spec, PyTorch, Optax),
    ``"uncorrected"`` to ``sqrt(v)`` before the bias correction (Keras; see :class:`impls.spec.Adam`).
    ``decay_every``: the rate is multiplied by ``lr_decay`` every this many epochs (``StepLR``).
    """

    bias_l1: float = 0.0
    bias_l2: float = 0.0
    momentum_form: Literal["velocity", "buffer"] = "velocity"
    adam_epsilon: Literal["corrected", "uncorrected"] = "corrected"
    decay_every: int = 1

    def beyond_spec(self) -> list[str]:
        """The conventions that :class:`~impls.spec.MLPSpec`/:class:`~impls.spec.TrainConfig` cannot express."""
        found = []
        if self.bias_l1 or self.bias_l2:
            found.append(f"a penalty on the biases (l1 {self.bias_l1:g}, l2 {self.bias_l2:g})")
        if self.momentum_form == "buffer":
            found.append("gradient-buffer momentum under a changing learning rate")
        if self.adam_epsilon == "uncorrected":
            found.append("Adam's epsilon added to sqrt(v) before the bias correction")
        if self.decay_every != 1:
            found.append(f"a learning rate decayed every {self.decay_every} epochs")
        return found


@dataclass
class Port:
    """A model moved out of its framework: ``spec``, canonical ``params`` (``[(W (fan_in, fan_out), b), ...]``),
    the training ``config`` (``None`` when no optimizer was given), the ``conventions`` beyond the spec, the
    ``source`` framework and the ``notes`` on what was interpreted."""

    spec: MLPSpec
    params: Params
    config: TrainConfig | None
    source: str
    notes: list[str] = field(default_factory=list)
    conventions: Conventions = field(default_factory=Conventions)
    deviations: list[Deviation] = field(default_factory=list)
    """What the source computes that no export reproduces exactly: :func:`verify` then holds the quantities each
    one moves to the bound its cause implies (:data:`DEVIATION_BOUNDS`) instead of the float64 limits."""
    source_objects: tuple = field(default=(), repr=False)
    """The source's own objects (model, loss, optimizer, ...), for :func:`verify`; never modified."""

    def export(self, framework: str, *, steps_per_epoch: int | None = None) -> tuple:
        """The target's own objects, ready for its usual training loop.

        ``torch``: ``(nn.Sequential, loss_fn, optimizer, scheduler)`` (``scheduler`` ``None`` without decay);
        ``keras``: ``(compiled keras.Sequential, callbacks)``; ``flax``: ``(nnx.Sequential, optax
        transformation, loss_fn)`` with ``loss_fn(logits, targets)`` the per-element loss to average;
        ``numpy``/``jax``: ``(MLP, TrainConfig)``.  ``steps_per_epoch`` is needed by ``flax`` when the rate
        decays (Optax schedules count steps).
        """
        if framework not in FRAMEWORKS:
            raise ValueError(f"unknown framework {framework!r}; expected one of {list(FRAMEWORKS)}")
        if framework == "flax":
            return _export_flax(self, steps_per_epoch)
        if framework in ("numpy", "jax"):
            return _export_ours(framework, self)
        return {"torch": _export_torch, "keras": _export_keras}[framework](self)

    def export_notes(self, framework: str) -> list[str]:
        """What an export to ``framework`` replaces or cannot keep, in words."""
        return _EXPORT_NOTES[framework](self)

    def script(self, framework: str, weights: str = "weights.npz") -> str:
        """A standalone Python file that builds the model in ``framework`` (``torch``, ``keras``, ``flax``), loads
        its parameters from ``weights`` (a ``.npz`` of ``W0, b0, W1, ...`` next to the file, as
        :func:`impls.exchange.save` writes it) and trains it with the ported setup on ``data.npz`` (``X``, ``y``)
        beside it, or on random data.  It imports only NumPy and the framework: paste it into your project."""
        if framework not in SCRIPTS:
            raise ValueError(f"no script for {framework!r}: scripts are written for {sorted(SCRIPTS)} (the numpy "
                             "and jax targets are this project's implementations: use export)")
        if self.config is None:
            raise UnsupportedModel("the port has no training setup to write a training script for")
        return SCRIPTS[framework](self, weights)


# ---- import ---------------------------------------------------------------------------


def import_model(obj: object, *, loss: object = None, optimizer: object = None, scheduler: object = None,
                 early_stopping: object = None, callbacks: Sequence[object] = (), epochs: int = 10,
                 batch_size: int | None = 32, steps_per_epoch: int | None = None, spec: MLPSpec | None = None,
                 config: TrainConfig | None = None) -> Port:
    """Read a native model and its training setup into a :class:`Port`.

    ``obj``: a ``torch.nn.Module`` (with ``loss``, ``optimizer``, ``scheduler``), a ``keras.Model`` (its
    compiled loss and optimizer; ``callbacks``: its ``EarlyStopping``/``LearningRateScheduler``), an
    ``nnx.Sequential`` (``loss``: an Optax loss function; ``optimizer``: an Optax transformation), one of this
    project's :class:`~impls.base.MLP` implementations or ``.npz`` files, or a ``[(W, b), ...]`` pytree with the
    ``spec`` it follows (arrays alone do not say their activations or loss).  ``config``: the
    :class:`~impls.spec.TrainConfig` of those last three.  ``early_stopping``: an
    :class:`~impls.spec.EarlyStopping` for sources without their own.  ``steps_per_epoch``: how many steps an
    epoch has, to read a step-counting schedule (Keras ``ExponentialDecay``, Optax schedules) as a per-epoch
    one.  ``epochs``/``batch_size`` complete the :class:`~impls.spec.TrainConfig` of a framework's model.
    """
    from impls.base import MLP

    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(obj, MLP):
        return Port(obj.spec, obj.get_params(), config, obj.name,
                    [f"read the {obj.name} implementation: its spec and parameters"], source_objects=(obj.name,))
    if isinstance(obj, (str, Path)):
        from impls.exchange import load

        file_spec, params = load(obj)
        return Port(file_spec, params, config, "npz", [f"read {Path(obj).name}: the spec and parameters"],
                    source_objects=("numpy",))
    if _instance_of(obj, "torch", "nn", "Module"):
        return _import_torch(obj, loss, optimizer, scheduler, early_stopping, epochs, batch_size)
    if _instance_of(obj, "keras", "Model"):
        return _import_keras(obj, callbacks, early_stopping, epochs, batch_size, steps_per_epoch)
    if _instance_of(obj, "flax", "nnx", "Module"):
        return _import_flax(obj, loss, optimizer, early_stopping, epochs, batch_size, steps_per_epoch)
    if isinstance(obj, (list, tuple)):
        if spec is None:
            raise UnsupportedModel("a [(W, b), ...] pytree holds only arrays: pass spec=MLPSpec(...) with its "
                                   "activations and loss")
        try:
            params = spec.check_params([(np.asarray(W), np.asarray(b)) for W, b in obj])
        except (TypeError, ValueError) as exc:
            raise UnsupportedModel(f"the pytree does not fit the spec: {exc}") from exc
        return Port(spec, params, config, "jax", ["read a [(W, b), ...] pytree with the given spec"],
                    source_objects=("jax",))
    raise UnsupportedModel(f"cannot port a {type(obj).__module__}.{type(obj).__name__}: expected a torch "
                           "nn.Module, a keras Model, an nnx.Sequential, one of this project's MLPs or .npz files, "
                           "or a [(W, b), ...] pytree")


def _instance_of(obj: object, module: str, *path: str) -> bool:
    """``isinstance(obj, module.path...)`` without importing a framework the caller has not imported."""
    found: Any = sys.modules.get(module)
    for name in path:
        found = getattr(found, name, None)
    return isinstance(found, type) and isinstance(obj, found)


# ---- PyTorch ----------------------------------------------------------------------------


def _import_torch(model: object, loss: object, optimizer: object, scheduler: object, early_stopping: object,
                  epochs: int, batch_size: int | None) -> Port:
    import torch
    from torch import nn

    if not isinstance(model, nn.Module):
        raise UnsupportedModel(f"{type(model).__name__} is not a torch nn.Module")
    notes: list[str] = []
    if type(model).forward is not nn.Sequential.forward:
        _check_torch_chain(model)
        notes.append(f"{type(model).__name__}.forward() was checked, on a probe input, to apply its children in order")
    activations = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Identity: "identity",
                   nn.LeakyReLU: "leaky_relu", nn.ELU: "elu"}
    linears, hidden, rates, extra = [], [], [], {}
    tail = None
    children = list(model.children())
    for position, child in enumerate(children):
        kind = type(child)
        if kind is nn.Linear:
            if child.bias is None:
                raise UnsupportedModel(f"layer {position} (Linear) has no bias")
            if linears and len(hidden) < len(linears):
                raise UnsupportedModel(f"layer {position}: two Linear layers without an activation between them "
                                       "(put nn.Identity() there to mean none)")
            linears.append(child)
            rates.append(0.0)
        elif kind in activations and linears:
            if len(hidden) == len(linears):
                raise UnsupportedModel(f"layer {position} ({kind.__name__}): two activations after one Linear")
            hidden.append(activations[kind])
            if kind is nn.LeakyReLU:
                _same_everywhere(extra, "leaky_slope", float(child.negative_slope))
            if kind is nn.ELU:
                _same_everywhere(extra, "elu_alpha", float(child.alpha))
            if getattr(child, "inplace", False):
                notes.append(f"layer {position} ({kind.__name__}) is in-place; the export is not")
        elif kind is nn.Dropout and linears and len(hidden) == len(linears):
            rates[-1] = float(child.p)
        elif kind in (nn.Softmax, nn.LogSoftmax) and position == len(children) - 1 and linears:
            if child.dim not in (1, -1):
                raise UnsupportedModel(f"layer {position} ({kind.__name__}) over dim {child.dim}, not the outputs")
            tail = kind.__name__
        else:
            raise UnsupportedModel(f"layer {position} ({kind.__name__}) is not supported: an MLP here is Linear, "
                                   "an activation (ReLU, LeakyReLU, ELU, Tanh, Sigmoid, Identity) and Dropout")
    if not linears:
        raise UnsupportedModel(f"{type(model).__name__} has no Linear layer")
    if len(hidden) == len(linears):  # the last Linear is followed by an activation: the output's
        last = hidden.pop()
        if last == "sigmoid":
            tail = "Sigmoid"
        elif last != "identity":
            raise UnsupportedModel(f"the output layer is followed by {last!r}; only Sigmoid, Softmax or LogSoftmax "
                                   "there")
        if rates[-1]:
            raise UnsupportedModel("Dropout after the output layer")
    if len(set(hidden)) > 1:
        raise UnsupportedModel(f"mixed hidden activations {hidden}: the spec has one hidden activation")
    sizes = [linears[0].in_features]
    for layer, linear in enumerate(linears):
        if linear.in_features != sizes[-1]:
            raise UnsupportedModel(f"Linear {layer} takes {linear.in_features} inputs, the layer before gives "
                                   f"{sizes[-1]}")
        sizes.append(linear.out_features)
    dtypes = {linear.weight.dtype for linear in linears}
    if dtypes - {torch.float32, torch.float64} or len(dtypes) > 1:
        raise UnsupportedModel(f"parameter dtypes {sorted(map(str, dtypes))}: one of float32/float64 expected")
    dtype = "float64" if dtypes == {torch.float64} else "float32"
    if model.training and any(rates):
        notes.append("nn.Module starts in training mode: dropout is active until model.eval()")
    spec_loss = _torch_loss(loss, tail, notes)
    spec = MLPSpec(tuple(sizes), hidden_activation=hidden[0] if hidden else "relu", loss=spec_loss,
                   dropout=tuple(rates[:-1]), dtype=dtype, **extra)
    params = [(linear.weight.detach().cpu().numpy().T.copy(), linear.bias.detach().cpu().numpy().copy())
              for linear in linears]
    config, conventions = None, Conventions()
    if optimizer is not None:
        spec, config, conventions = _torch_training(spec, linears, optimizer, scheduler, early_stopping,
                                                    epochs, batch_size, notes)
    elif scheduler is not None:
        raise UnsupportedModel("a scheduler without its optimizer")
    return Port(spec, spec.check_params(params), config, "torch", notes, conventions,
                source_objects=(model, loss, optimizer, scheduler))


def _same_everywhere(extra: dict[str, float], name: str, value: float) -> None:
    """Record an activation's parameter; the spec has one for every hidden layer."""
    if extra.setdefault(name, value) != value:
        raise UnsupportedModel(f"hidden layers with different {name} ({extra[name]} and {value}): the spec has one")


def _check_torch_chain(model: Any) -> None:
    """A module with its own forward() is read only if it applies its children in order: checked on a probe, in
    evaluation mode (no dropout), the module's mode restored."""
    import torch

    children = list(model.children())
    first = next((child for child in children if isinstance(child, torch.nn.Linear)), None)
    if first is None:
        raise UnsupportedModel(f"{type(model).__name__} has its own forward() and no Linear layer to read")
    probe = torch.randn(3, first.in_features, dtype=first.weight.dtype, generator=torch.Generator().manual_seed(0))
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            chained = probe
            for child in children:
                chained = child(chained)
            whole = model(probe)
    except Exception as exc:  # any failure of the user's forward means: not a plain chain
        raise UnsupportedModel(f"{type(model).__name__}.forward() is not a chain of its children ({exc})") from exc
    finally:
        model.train(training)
    if not isinstance(whole, torch.Tensor) or whole.shape != chained.shape or not torch.allclose(whole, chained):
        raise UnsupportedModel(f"{type(model).__name__} has its own forward() that does not apply its children in "
                               "order (a custom forward)")


def _torch_loss(loss: object, tail: str | None, notes: list[str]) -> str:
    from torch import nn

    if loss is None:
        raise UnsupportedModel("a torch model carries no loss: pass loss=nn.CrossEntropyLoss() (or another)")
    kind = type(loss)
    expected_tail = {nn.CrossEntropyLoss: None, nn.BCEWithLogitsLoss: None, nn.MSELoss: None, nn.L1Loss: None,
                     nn.BCELoss: "Sigmoid", nn.NLLLoss: "LogSoftmax"}
    names = {nn.CrossEntropyLoss: "categorical_crossentropy", nn.BCEWithLogitsLoss: "binary_crossentropy",
             nn.BCELoss: "binary_crossentropy", nn.NLLLoss: "categorical_crossentropy", nn.MSELoss: "mse",
             nn.L1Loss: "mae"}
    if kind not in names:
        raise UnsupportedModel(f"loss {kind.__name__} is not supported (CrossEntropyLoss, BCEWithLogitsLoss, "
                               "BCELoss, NLLLoss, MSELoss, L1Loss)")
    if getattr(loss, "reduction", "mean") != "mean":
        raise UnsupportedModel(f"{kind.__name__}(reduction={loss.reduction!r}): only the mean is supported")
    for option in ("weight", "pos_weight"):
        if getattr(loss, option, None) is not None:
            raise UnsupportedModel(f"{kind.__name__}({option}=...) is not supported")
    if getattr(loss, "label_smoothing", 0.0):
        raise UnsupportedModel(f"{kind.__name__}(label_smoothing={loss.label_smoothing}) is not supported")
    if tail != expected_tail[kind]:
        after = f"after a {tail} layer" if tail else "on raw outputs (no output activation)"
        why = {"Softmax": " (it applies softmax itself: softmax twice)"}.get(tail or "", "")
        raise UnsupportedModel(f"{kind.__name__} {after} does not fit{why}; it needs "
                               f"{expected_tail[kind] or 'raw logits'}")
    if kind is nn.BCELoss:
        notes.append("BCELoss on Sigmoid outputs clamps log at -100: ported as the from-logits loss, which "
                     "differs where |z| > 100 (and rounds differently where sigmoid(z) nears 0 or 1)")
    if kind is nn.NLLLoss:
        notes.append("NLLLoss after LogSoftmax is cross-entropy from logits: ported as CrossEntropyLoss")
    return names[kind]


def _torch_training(spec: MLPSpec, linears: list, optimizer: object, scheduler: object, early_stopping: object,
                    epochs: int, batch_size: int | None,
                    notes: list[str]) -> tuple[MLPSpec, TrainConfig, Conventions]:
    from torch import optim

    kind = type(optimizer)
    if kind not in (optim.SGD, optim.Adam):
        raise UnsupportedModel(f"optimizer {kind.__name__} is not supported (SGD, Adam; AdamW decouples its decay)")
    weights = {id(linear.weight) for linear in linears}
    biases = {id(linear.bias) for linear in linears}
    seen: dict[int, dict] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            seen[id(param)] = group
    if set(seen) != weights | biases:
        raise UnsupportedModel("the optimizer's parameters are not exactly the model's")
    common = [key for key in ("lr", "momentum", "dampening", "nesterov", "betas", "eps", "amsgrad", "maximize",
                              "decoupled_weight_decay") if key in optimizer.param_groups[0]]
    for key in common:
        if len({repr(group[key]) for group in optimizer.param_groups}) > 1:
            raise UnsupportedModel(f"parameter groups with different {key!r}")
    group = optimizer.param_groups[0]
    for option, allowed in (("nesterov", False), ("maximize", False), ("amsgrad", False), ("dampening", 0),
                            ("decoupled_weight_decay", False)):
        if group.get(option, allowed) != allowed:
            raise UnsupportedModel(f"{kind.__name__}({option}={group[option]!r}) is not supported")
    if optimizer.state:
        notes.append("the optimizer has state from earlier steps (momentum buffers or moments): the port starts "
                     "from a fresh state")

    def decay_of(ids: set[int], what: str) -> float:
        values = {float(seen[i]["weight_decay"]) for i in ids}
        if len(values) > 1:
            raise UnsupportedModel(f"different weight_decay on the {what} of different layers")
        return values.pop()

    l2, bias_l2 = decay_of(weights, "weights"), decay_of(biases, "biases")
    lr = float(group["lr"])
    decay, every = 1.0, 1
    if scheduler is not None:
        decay, every = _torch_schedule(scheduler, optimizer, notes)
    if kind is optim.SGD:
        momentum = float(group["momentum"])
        rule: SGD | Adam = SGD(momentum)
        # by the schedule, not by this config's epochs: the exports may well be trained for longer
        form = "buffer" if momentum and decay != 1.0 else "velocity"
        if form == "buffer":
            notes.append("torch SGD keeps a buffer of raw gradients (b <- mu b + g; p -= lr b), which differs from "
                         "the spec's velocity once the scheduler changes lr: exported with that buffer form")
    else:
        beta1, beta2 = group["betas"]
        rule, form = Adam(float(beta1), float(beta2), float(group["eps"])), "velocity"
    if l2 or bias_l2:
        notes.append(f"torch weight_decay adds wd * p to the gradient: read as L2 {l2:g} on the weights"
                     + (f" and {bias_l2:g} on the biases (torch decays them too)" if bias_l2 else "")
                     + "; torch's reported loss leaves the penalty out")
    spec = replace(spec, l2=l2)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, lr_decay=decay, optimizer=rule,
                         shuffle=False, early_stopping=_early_stopping(early_stopping))
    return spec, config, Conventions(bias_l2=bias_l2, momentum_form=form, decay_every=every)


def _torch_schedule(scheduler: object, optimizer: object, notes: list[str]) -> tuple[float, int]:
    from torch.optim import lr_scheduler

    if getattr(scheduler, "optimizer", None) is not optimizer:
        raise UnsupportedModel("the scheduler belongs to another optimizer")
    if scheduler.last_epoch != 0:
        notes.append(f"the scheduler has been stepped {scheduler.last_epoch} times: the port starts at its base rate")
    if type(scheduler) is lr_scheduler.ExponentialLR:
        notes.append("ExponentialLR is read as stepped once per epoch (scheduler.step() after each epoch)")
        return float(scheduler.gamma), 1
    if type(scheduler) is lr_scheduler.StepLR:
        notes.append(f"StepLR is read as stepped once per epoch: the rate falls every {scheduler.step_size} epochs")
        return float(scheduler.gamma), int(scheduler.step_size)
    raise UnsupportedModel(f"scheduler {type(scheduler).__name__} is not supported (ExponentialLR, StepLR)")


def _early_stopping(value: object) -> EarlyStopping | None:
    if value is not None and not isinstance(value, EarlyStopping):
        raise UnsupportedModel(f"early_stopping must be impls.spec.EarlyStopping(...), got {type(value).__name__}")
    return value


# ---- Keras ------------------------------------------------------------------------------


def _import_keras(model: object, callbacks: Sequence[object], early_stopping: object, epochs: int,
                  batch_size: int | None, steps_per_epoch: int | None) -> Port:
    import keras

    if not isinstance(model, keras.Model):
        raise UnsupportedModel(f"{type(model).__name__} is not a keras Model")
    if not model.built or len(model.inputs if hasattr(model, "inputs") and model.inputs else [0]) != 1:
        raise UnsupportedModel("the Keras model must be built with one input (give it keras.Input(shape))")
    notes: list[str] = []
    names = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "linear": "identity", "elu": "elu",
             "leaky_relu": "leaky_relu", "softmax": "softmax"}
    dense, acts, rates, extra = [], [], [], {}
    regs: list[tuple[float, float, float, float]] = []
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for position, layer in enumerate(layers):
        if isinstance(layer, keras.layers.Dense):
            if not layer.use_bias:
                raise UnsupportedModel(f"Dense layer {layer.name!r} has no bias")
            for option in ("activity_regularizer", "kernel_constraint", "bias_constraint", "lora_rank"):
                if getattr(layer, option, None):
                    raise UnsupportedModel(f"Dense layer {layer.name!r} has {option}")
            if dense and len(acts) < len(dense):
                acts.append("identity")
            dense.append(layer)
            rates.append(0.0)
            regs.append((*_keras_regularizer(layer.kernel_regularizer, layer.name, "kernel"),
                         *_keras_regularizer(layer.bias_regularizer, layer.name, "bias")))
            name = getattr(layer.activation, "__name__", "")
            if name not in names:
                raise UnsupportedModel(f"Dense layer {layer.name!r}: activation {name or layer.activation!r} "
                                       "is not supported")
            if name != "linear":
                acts.append(names[name])
                for key, value in {"leaky_relu": {"leaky_slope": 0.2}, "elu": {"elu_alpha": 1.0}}.get(name, {}).items():
                    _same_everywhere(extra, key, value)  # Keras's defaults for the named activations
        elif isinstance(layer, (keras.layers.Activation, keras.layers.LeakyReLU, keras.layers.ReLU)) and dense:
            if len(acts) == len(dense):
                raise UnsupportedModel(f"layer {layer.name!r}: two activations after one Dense")
            if isinstance(layer, keras.layers.LeakyReLU):
                acts.append("leaky_relu")
                _same_everywhere(extra, "leaky_slope", float(layer.negative_slope))
            elif isinstance(layer, keras.layers.ReLU):
                if layer.max_value is not None or layer.negative_slope or layer.threshold:
                    raise UnsupportedModel(f"ReLU layer {layer.name!r} with max_value/negative_slope/threshold")
                acts.append("relu")
            else:
                name = getattr(layer.activation, "__name__", "")
                if name not in names:
                    raise UnsupportedModel(f"Activation layer {layer.name!r}: {name!r} is not supported")
                acts.append(names[name])
        elif isinstance(layer, keras.layers.Dropout) and dense:
            if layer.noise_shape is not None:
                raise UnsupportedModel(f"Dropout layer {layer.name!r} with a noise_shape")
            if len(acts) < len(dense):
                raise UnsupportedModel(f"Dropout layer {layer.name!r} before the activation of its Dense layer")
            rates[-1] = float(layer.rate)
        else:
            raise UnsupportedModel(f"layer {layer.name!r} ({type(layer).__name__}) at position {position} is not "
                                   "supported: an MLP here is Dense, Activation, Dropout and Input")
    if not dense:
        raise UnsupportedModel("the Keras model has no Dense layer")
    if len(acts) < len(dense):
        acts.append("identity")
    tail = acts.pop()
    if rates[-1]:
        raise UnsupportedModel("Dropout after the output layer")
    if tail not in ("identity", "sigmoid", "softmax"):
        raise UnsupportedModel(f"output activation {tail!r}: only sigmoid, softmax or linear")
    if "softmax" in acts:
        raise UnsupportedModel("softmax as a hidden activation")
    if len(set(acts)) > 1:
        raise UnsupportedModel(f"mixed hidden activations {acts}: the spec has one hidden activation")
    if len(set(regs)) > 1:
        raise UnsupportedModel("the Dense layers have different regularizers: the spec has one penalty for every "
                               "layer")
    _check_keras_chain(model, layers)
    sizes = [int(dense[0].kernel.shape[0])] + [int(layer.units) for layer in dense]
    dtype = keras.backend.standardize_dtype(dense[0].kernel.dtype)
    kernel_l1, kernel_l2, bias_l1, bias_l2 = (_keras_number(value, dtype) for value in regs[0])
    if "leaky_slope" in extra and keras.backend.backend() == "tensorflow":
        extra["leaky_slope"] = float(np.float32(extra["leaky_slope"]))
        notes.append(f"Keras's leaky_relu passes its slope to TensorFlow as a float32 attribute: ported as "
                     f"{extra['leaky_slope']!r}, the slope it computes with")
    if dtype not in ("float32", "float64"):
        raise UnsupportedModel(f"parameter dtype {dtype}: float32 or float64 expected")
    if dtype == "float64":
        notes.append("model.fit casts float NumPy inputs to keras.config.floatx() (float32 by default): a float64 "
                     "model trains on float64 data only with floatx set to float64")
    if keras.backend.backend() == "tensorflow" and dtype == "float64" and (kernel_l2 or kernel_l1 or bias_l2
                                                                          or bias_l1):
        notes.append("Keras L1/L2 on TensorFlow cast their factor through float32 on float64 weights (0.9 -> "
                     "2.6e-8 relative, 0.05 -> 1.5e-8): ported as the rounded factors Keras computes with")
    deviations = [caveat] if (caveat := _keras_float64_caveat(dtype)) else []
    loss_name = _keras_loss(model, tail, notes, deviations)
    spec = MLPSpec(tuple(sizes), hidden_activation=acts[0] if acts else "relu", loss=loss_name,
                   dropout=tuple(rates[:-1]), l1=kernel_l1, l2=2 * kernel_l2, dtype=dtype, **extra)
    if kernel_l2:
        notes.append(f"Keras L2({kernel_l2:g}) is l2 * sum W**2: the spec's (l2/2) sum W**2 with "
                     f"l2 = {2 * kernel_l2:g}")
    params = [(np.asarray(layer.kernel.numpy()), np.asarray(layer.bias.numpy())) for layer in dense]
    conventions = Conventions(bias_l1=bias_l1, bias_l2=2 * bias_l2)
    config = None
    if getattr(model, "optimizer", None) is not None and getattr(model, "compiled", False):
        config, conventions = _keras_training(model, conventions, callbacks, early_stopping, epochs, batch_size,
                                              steps_per_epoch, notes, deviations)
    elif callbacks:
        raise UnsupportedModel("callbacks given for a model that is not compiled: compile it with its optimizer")
    else:
        notes.append("the model is not compiled: no loss or optimizer to port (read the layers only)")
    return Port(spec, spec.check_params(params), config, "keras", notes, conventions, deviations,
                source_objects=(model, tuple(callbacks)))


def _keras_float64_caveat(dtype: str) -> Deviation | None:
    """Why float64 Keras is not exact on this backend, or ``None`` (TensorFlow): see docs/porting.md, float64."""
    import keras

    backend = keras.backend.backend()
    if dtype != "float64" or backend == "tensorflow":
        return None
    what = {"jax": "ops.mean (in its losses) and ops.tanh compute float64 in float32",
            "torch": "ops.matmul computes float64 in float32"}.get(backend, "float64 is not checked")
    return Deviation(f"Keras on {backend}: {what}", "float32_backend")


def _keras_number(value: object, dtype: str) -> float:
    """The number Keras computes with: on TensorFlow, ``ops.cast`` takes a Python float to float64 through
    float32 (``impls.keras_backend.exact``); a ``numpy.float64`` stays exact."""
    import keras

    if keras.backend.backend() == "tensorflow" and dtype == "float64" and type(value) is float:
        return float(np.float32(value))
    return float(value)


def _keras_regularizer(regularizer: object, layer: str, what: str) -> tuple[float, float]:
    import keras

    if regularizer is None:
        return 0.0, 0.0
    if isinstance(regularizer, keras.regularizers.L1L2):
        return float(regularizer.l1), float(regularizer.l2)
    if isinstance(regularizer, keras.regularizers.L2):
        return 0.0, float(regularizer.l2)
    if isinstance(regularizer, keras.regularizers.L1):
        return float(regularizer.l1), 0.0
    raise UnsupportedModel(f"Dense layer {layer!r}: {what} regularizer {type(regularizer).__name__} is not supported "
                           "(L1, L2, L1L2)")


def _check_keras_chain(model: object, layers: list) -> None:
    """A functional model must apply its layers one after another: checked on a probe input."""
    import keras

    if isinstance(model, keras.Sequential):
        return
    probe = np.random.default_rng(0).normal(size=(3, int(model.inputs[0].shape[-1])))
    probe = probe.astype(keras.backend.standardize_dtype(model.inputs[0].dtype))
    chained = probe
    for layer in layers:
        chained = layer(chained, training=False)
    whole = model(probe, training=False)
    if not isinstance(whole, type(chained)) or np.asarray(whole).shape != np.asarray(chained).shape or not np.allclose(
            np.asarray(whole), np.asarray(chained), rtol=1e-6, atol=1e-6):
        raise UnsupportedModel("the functional model does not apply its layers one after another (a branch, a skip "
                               "connection or several inputs)")


def _keras_loss(model: object, tail: str, notes: list[str], deviations: list[Deviation]) -> str:
    """The spec's loss name of the compiled loss (from the output activation when not compiled)."""
    import keras

    if not getattr(model, "compiled", False):
        rule = {"sigmoid": "binary_crossentropy", "softmax": "categorical_crossentropy"}.get(tail, "mse")
        notes.append(f"no compiled loss: read as {rule} from the output activation {tail!r}")
        return rule
    loss = model.loss
    by_name = {"binary_crossentropy": ("binary_crossentropy", False), "categorical_crossentropy":
               ("categorical_crossentropy", False), "sparse_categorical_crossentropy": ("categorical_crossentropy",
                                                                                         False),
               "mse": ("mse", False), "mean_squared_error": ("mse", False), "mae": ("mae", False),
               "mean_absolute_error": ("mae", False)}
    classes = {keras.losses.BinaryCrossentropy: "binary_crossentropy",
               keras.losses.CategoricalCrossentropy: "categorical_crossentropy",
               keras.losses.SparseCategoricalCrossentropy: "categorical_crossentropy",
               keras.losses.MeanSquaredError: "mse", keras.losses.MeanAbsoluteError: "mae"}
    if isinstance(loss, str):
        if loss not in by_name:
            raise UnsupportedModel(f"compiled loss {loss!r} is not supported")
        name, from_logits = by_name[loss]
    elif type(loss) in classes:
        name, from_logits = classes[type(loss)], bool(getattr(loss, "from_logits", False))
        if getattr(loss, "label_smoothing", 0.0):
            raise UnsupportedModel(f"{type(loss).__name__}(label_smoothing={loss.label_smoothing}) is not supported")
        if getattr(loss, "reduction", "sum_over_batch_size") != "sum_over_batch_size":
            raise UnsupportedModel(f"{type(loss).__name__}(reduction={loss.reduction!r}) is not supported")
    else:
        raise UnsupportedModel(f"compiled loss {loss!r} is not supported (BinaryCrossentropy, CategoricalCrossentropy, "
                               "SparseCategoricalCrossentropy, MeanSquaredError, MeanAbsoluteError)")
    loss_dtype = getattr(loss, "dtype", None)
    model_dtype = keras.backend.standardize_dtype(model.layers[-1].dtype)
    if loss_dtype is not None and keras.backend.standardize_dtype(loss_dtype) != model_dtype:
        deviations.append(Deviation(f"the compiled loss computes in {loss_dtype} (a Keras loss takes floatx() unless "
                                    f"given dtype=), the model in {model_dtype}: the source's losses and gradients "
                                    f"are rounded to {loss_dtype}; the port computes in the model's dtype",
                                    "float32_loss"))
    wanted = {"binary_crossentropy": "sigmoid", "categorical_crossentropy": "softmax"}.get(name, "identity")
    if name in ("mse", "mae") and tail != "identity":
        raise UnsupportedModel(f"{name} on a {tail} output: regression needs a linear output")
    if name not in ("mse", "mae"):
        if from_logits and tail != "identity":
            raise UnsupportedModel(f"from_logits=True after a {tail} output: the activation would be applied twice")
        if not from_logits and tail != wanted:
            raise UnsupportedModel(f"a probability loss ({name}, from_logits=False) on a {tail} output: "
                                   f"it needs a {wanted} output")
        if not from_logits:
            notes.append(f"Keras computes the probability loss from the logits behind its {wanted} layer (the "
                         "logits path: 30.0 at z=30, y=0), not from clipped probabilities: ported as from logits")
    return name


def _keras_training(model: object, conventions: Conventions, callbacks: Sequence[object], early_stopping: object,
                    epochs: int, batch_size: int | None, steps_per_epoch: int | None,
                    notes: list[str], deviations: list[Deviation]) -> tuple[TrainConfig, Conventions]:
    import keras

    opt = model.optimizer
    for option in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "gradient_accumulation_steps"):
        if getattr(opt, option, None):
            raise UnsupportedModel(f"optimizer {type(opt).__name__}({option}={getattr(opt, option)!r}) is not "
                                   "supported")
    if getattr(opt, "use_ema", False):
        raise UnsupportedModel(f"optimizer {type(opt).__name__}(use_ema=True) is not supported")
    if type(opt) is keras.optimizers.SGD:
        if opt.nesterov:
            raise UnsupportedModel("SGD(nesterov=True) is not supported")
        dtype = keras.backend.standardize_dtype(model.layers[-1].dtype)
        rule: SGD | Adam = SGD(_keras_number(opt.momentum, dtype))
        if rule.momentum != float(opt.momentum):
            notes.append(f"Keras SGD on TensorFlow casts momentum={opt.momentum} through float32 on float64 "
                         f"variables: ported as {rule.momentum!r}, the value it computes with")
    elif type(opt) is keras.optimizers.Adam:
        dtype = keras.backend.standardize_dtype(model.layers[-1].dtype)
        rounded = [name for name in ("beta_1", "beta_2") if _keras_number(getattr(opt, name), dtype) != float(
            getattr(opt, name))]
        if rounded:
            deviations.append(Deviation(f"Keras Adam on TensorFlow casts {rounded} through float32 for the bias "
                                        "corrections but not for the moment updates (no single beta reproduces "
                                        "both): give them as numpy.float64 to keep them exact", "rounded_betas"))
        if opt.amsgrad:
            raise UnsupportedModel("Adam(amsgrad=True) is not supported")
        rule = Adam(float(opt.beta_1), float(opt.beta_2), float(opt.epsilon))
        conventions = replace(conventions, adam_epsilon="uncorrected")
        notes.append(f"Keras Adam adds epsilon={opt.epsilon:g} to sqrt(v) before the bias correction; the spec adds "
                     "it to sqrt(v_hat): kept as Keras's form (exports use a small Adam of that form where needed)")
    else:
        raise UnsupportedModel(f"optimizer {type(opt).__name__} is not supported (SGD, Adam)")
    schedule = opt._learning_rate  # private (checked: Keras 3.15.1): the schedule object, not its current value
    decay, every = 1.0, 1
    if isinstance(schedule, keras.optimizers.schedules.ExponentialDecay):
        if not schedule.staircase or steps_per_epoch is None or schedule.decay_steps % steps_per_epoch:
            raise UnsupportedModel("ExponentialDecay counts steps: only staircase=True with decay_steps a multiple of "
                                   "the epoch's steps (give steps_per_epoch=) is a per-epoch decay")
        lr, decay, every = float(schedule.initial_learning_rate), float(schedule.decay_rate), int(
            schedule.decay_steps // steps_per_epoch)
        notes.append(f"ExponentialDecay(staircase=True, decay_steps={schedule.decay_steps}) is a decay every "
                     f"{every} epoch(s) of {steps_per_epoch} steps")
    elif isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        raise UnsupportedModel(f"learning-rate schedule {type(schedule).__name__} is not supported (ExponentialDecay)")
    else:
        lr = float(opt.learning_rate.numpy())
    stopping = _early_stopping(early_stopping)
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.EarlyStopping):
            stopping = _keras_early_stopping(callback, notes)
        elif isinstance(callback, keras.callbacks.LearningRateScheduler):
            if decay != 1.0:
                raise UnsupportedModel("both an ExponentialDecay and a LearningRateScheduler")
            lr, decay, every = _probe_epoch_schedule(callback.schedule, lr, max(epochs, 8))
            notes.append("LearningRateScheduler calls its schedule with a 0-based epoch before each epoch: read as "
                         f"{lr:g} * {decay:g}**(epoch // {every})")
        else:
            raise UnsupportedModel(f"callback {type(callback).__name__} is not supported (EarlyStopping, "
                                   "LearningRateScheduler)")
    conventions = replace(conventions, decay_every=every)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, lr_decay=decay, optimizer=rule,
                         shuffle=False, early_stopping=stopping)
    if isinstance(rule, SGD):
        notes.append("Keras SGD's momentum is the spec's velocity (v <- mu v - lr g)")
    return config, conventions


def _keras_early_stopping(callback: object, notes: list[str]) -> EarlyStopping:
    if callback.monitor != "val_loss" or callback.baseline is not None or callback.start_from_epoch:
        raise UnsupportedModel("EarlyStopping must monitor 'val_loss' without baseline or start_from_epoch")
    notes.append("Keras EarlyStopping monitors val_loss and (Keras 3.15) restores the best weights at the end "
                 "whether it stopped or not, as the spec does")
    return EarlyStopping(patience=int(callback.patience), min_delta=abs(float(callback.min_delta)),
                         restore_best=bool(callback.restore_best_weights))


def _probe_epoch_schedule(schedule: Callable[[int, float], float], lr: float, count: int,
                          rel_tol: float = 1e-12) -> tuple[float, float, int]:
    """``(lr_0, decay, every)`` of a per-epoch schedule called as Keras does (``schedule(epoch, current_rate)``,
    epoch from 0), read from its first ``count`` values; anything not geometric (to ``rel_tol``) is refused."""
    rates, rate = [], lr
    for epoch in range(count):
        rate = float(schedule(epoch, rate))
        rates.append(rate)
    if rates[0] <= 0:
        raise UnsupportedModel(f"the schedule's first rate is {rates[0]}")
    changes = [e for e in range(1, len(rates)) if not math.isclose(rates[e], rates[e - 1], rel_tol=rel_tol)]
    if not changes:
        return rates[0], 1.0, 1
    every = changes[0]
    decay = rates[every] / rates[0]
    expected = [rates[0] * decay ** (e // every) for e in range(len(rates))]
    if not (0 < decay < 1) or not all(math.isclose(a, b, rel_tol=rel_tol) for a, b in zip(rates, expected)):
        raise UnsupportedModel(f"the learning-rate schedule {rates} is not lr * decay**(epoch // k)")
    return rates[0], decay, every


# ---- Flax NNX + Optax -------------------------------------------------------------------


def _import_flax(model: object, loss: object, optimizer: object, early_stopping: object, epochs: int,
                 batch_size: int | None, steps_per_epoch: int | None) -> Port:
    import jax
    import optax
    from flax import nnx

    if type(model) is not nnx.Sequential:
        raise UnsupportedModel(f"{type(model).__name__}: only nnx.Sequential (layers applied in order) can be read "
                               "without running its own __call__")
    notes: list[str] = []
    functions = {jax.nn.relu: "relu", jax.nn.tanh: "tanh", jax.numpy.tanh: "tanh", jax.nn.sigmoid: "sigmoid",
                 jax.nn.elu: "elu", jax.nn.leaky_relu: "leaky_relu"}
    linears, acts, rates, extra = [], [], [], {}
    for position, layer in enumerate(model.layers):
        function, keywords = layer, {}
        if isinstance(layer, functools.partial):
            function, keywords = layer.func, dict(layer.keywords)
        if isinstance(layer, nnx.Linear):
            if layer.bias is None:
                raise UnsupportedModel(f"layer {position} (nnx.Linear) has no bias")
            if linears and len(acts) < len(linears):
                acts.append("identity")
            linears.append(layer)
            rates.append(0.0)
        elif isinstance(layer, nnx.Dropout) and linears and len(acts) == len(linears):
            if layer.broadcast_dims:
                raise UnsupportedModel(f"layer {position} (nnx.Dropout) with broadcast_dims")
            rates[-1] = float(layer.rate)
        elif callable(function) and function in functions and linears and len(acts) < len(linears):
            name = functions[function]
            allowed = {"leaky_relu": "negative_slope", "elu": "alpha"}.get(name)
            if set(keywords) - {allowed} or (layer is not function and not keywords):
                raise UnsupportedModel(f"layer {position}: {name} with arguments {keywords}")
            if name == "leaky_relu":
                _same_everywhere(extra, "leaky_slope", float(keywords.get("negative_slope", 0.01)))
            if name == "elu":
                _same_everywhere(extra, "elu_alpha", float(keywords.get("alpha", 1.0)))
            acts.append(name)
        else:
            raise UnsupportedModel(f"layer {position} ({getattr(layer, '__name__', type(layer).__name__)}) is not "
                                   "supported: an MLP here is nnx.Linear, an activation function and nnx.Dropout, "
                                   "ending in logits")
    if not linears:
        raise UnsupportedModel("the nnx.Sequential has no nnx.Linear")
    if len(acts) == len(linears):
        raise UnsupportedModel(f"the output layer is followed by {acts[-1]!r}: Optax's losses take logits")
    if len(set(acts)) > 1:
        raise UnsupportedModel(f"mixed hidden activations {acts}: the spec has one hidden activation")
    sizes = [linears[0].in_features]
    for layer, linear in enumerate(linears):
        if linear.in_features != sizes[-1]:
            raise UnsupportedModel(f"nnx.Linear {layer} takes {linear.in_features} inputs, the layer before gives "
                                   f"{sizes[-1]}")
        sizes.append(linear.out_features)
    dtype = str(np.asarray(linears[0].kernel.get_value()).dtype)
    losses = {optax.sigmoid_binary_cross_entropy: "binary_crossentropy",
              optax.softmax_cross_entropy: "categorical_crossentropy",
              optax.softmax_cross_entropy_with_integer_labels: "categorical_crossentropy",
              optax.squared_error: "mse"}
    if loss not in losses:
        raise UnsupportedModel(f"loss {getattr(loss, '__name__', loss)!r} is not supported (optax's "
                               "sigmoid_binary_cross_entropy, softmax_cross_entropy[_with_integer_labels], "
                               "squared_error; optax.l2_loss is half the squared error)")
    notes.append("the Optax loss is per element: the training loop is expected to take its mean")
    spec = MLPSpec(tuple(sizes), hidden_activation=acts[0] if acts else "relu", loss=losses[loss],
                   dropout=tuple(rates[:-1]), dtype=dtype, **extra)
    params = [(np.asarray(linear.kernel.get_value()), np.asarray(linear.bias.get_value())) for linear in linears]
    config, conventions, deviations = None, Conventions(), []
    if optimizer is not None:
        if not isinstance(optimizer, optax.GradientTransformation):
            raise UnsupportedModel(f"optimizer {type(optimizer).__name__} is not an Optax GradientTransformation")
        found = _probe_optax(optimizer, nnx.state(model, nnx.Param), epochs, steps_per_epoch)
        spec = replace(spec, l2=found.l2)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=found.learning_rate,
                             lr_decay=found.decay, optimizer=found.rule, shuffle=False,
                             early_stopping=_early_stopping(early_stopping))
        conventions = Conventions(bias_l2=found.bias_l2, momentum_form=found.momentum_form,
                                  decay_every=found.every)
        notes += found.notes
        deviations = found.deviations
    return Port(spec, spec.check_params(params), config, "flax", notes, conventions, deviations,
                source_objects=(model, loss, optimizer))


@dataclass
class OptaxReading:
    """What :func:`_probe_optax` read from a transformation."""

    rule: SGD | Adam
    learning_rate: float
    decay: float
    every: int
    l2: float
    bias_l2: float
    momentum_form: Literal["velocity", "buffer"]
    notes: list[str]
    deviations: list[Deviation] = field(default_factory=list)


PROBE_TOLERANCE = 1e-9
"""Largest relative difference between an Optax transformation's updates and the candidate read from it (float64
probes; a candidate that is right agrees to ~1e-15, a wrong form or a missed option by far more)."""


def _probe_optax(tx: Any, params: Any, epochs: int, steps_per_epoch: int | None) -> OptaxReading:
    """Identify an Optax transformation by its updates on synthetic gradients, in float64.

    Forms recognised: ``sgd``/``chain(scale_by_learning_rate, trace)`` with momentum (buffer or velocity form),
    ``adam`` (``eps_root=0``), each optionally after ``add_decayed_weights`` (masked or not), with a constant rate
    or one decayed per epoch (``exponential_decay(staircase=True)`` over whole epochs).  Every candidate is
    then replayed against the transformation on random gradients and parameters; a mismatch is refused.
    """
    import jax
    import optax

    with jax.enable_x64(True):
        leaves, treedef = jax.tree.flatten(params)
        shapes = [np.shape(leaf) for leaf in leaves]
        if any(len(shape) not in (1, 2) for shape in shapes):
            raise UnsupportedModel("the model's parameters are not kernels and biases")
        kernel = [len(shape) == 2 for shape in shapes]
        horizon = (steps_per_epoch or 1) * max(epochs, 3) + 1
        rng = np.random.default_rng(0)

        def tree(arrays: list[np.ndarray]) -> Any:
            return jax.tree.unflatten(treedef, [jax.numpy.asarray(a, jax.numpy.float64) for a in arrays])

        def run(grads: list[list[np.ndarray]], weights: list[list[np.ndarray]] | None = None) -> list[list[np.ndarray]]:
            zeros = [np.zeros(shape) for shape in shapes]
            state = tx.init(tree(zeros))
            out = []
            for step, grad in enumerate(grads):
                at = zeros if weights is None else weights[step]
                updates, state = tx.update(tree(grad), state, tree(at))
                out.append([np.asarray(u, np.float64) for u in jax.tree.leaves(updates)])
            return out

        def ratio(update: list[np.ndarray], grad: list[np.ndarray]) -> float:
            """The scalar ``c`` with ``update = c * grad`` for every element, or refuse."""
            flat_u, flat_g = np.concatenate([u.ravel() for u in update]), np.concatenate([g.ravel() for g in grad])
            c = float(flat_u @ flat_g / (flat_g @ flat_g))
            if np.max(np.abs(flat_u - c * flat_g)) > PROBE_TOLERANCE * max(np.max(np.abs(flat_u)), 1e-300):
                raise UnsupportedModel("the Optax transformation does not scale every gradient alike (a per-element "
                                       "rule other than SGD/Adam, or clipping)")
            return c

        G = [rng.normal(size=shape) for shape in shapes]
        Z = [np.zeros(shape) for shape in shapes]
        adam_state = functools.partial(lambda kind, s: isinstance(s, kind), optax.ScaleByAdamState)
        is_adam = any(adam_state(s) for s in jax.tree.leaves(tx.init(tree(Z)), is_leaf=adam_state))
        notes = [f"the Optax transformation was identified from its updates over {horizon} steps "
                 f"({horizon // (steps_per_epoch or 1)} epochs): a schedule that changes only later is not seen"]
        if is_adam:
            big = [1e6 * g for g in G]
            rates = [-ratio(u, [np.sign(g) for g in big]) for u in run([big] * horizon)]
            flip = run([[-g for g in big], big])[1]
            same = run([big, big])[1]
            beta1 = float((1 - ratio(flip, same)) / (1 + ratio(flip, same)))
            late = -ratio(run([Z, big])[1], [np.sign(g) for g in big]) / rates[1]
            beta2 = float(((1 + beta1) * late) ** 2 - 1)
            scales = np.logspace(-2, -14, 25)
            small = [np.full(shape, 1.0) for shape in shapes]
            eps_estimates = []
            for s in scales:
                u = np.concatenate([x.ravel() for x in run([[s * g for g in small]])[0]])
                frac = np.abs(u) / rates[0]
                if frac.min() > 0.05 and frac.max() < 0.95:
                    eps_estimates.append(float(np.median(s * (1 / frac - 1))))
            if not eps_estimates:
                raise UnsupportedModel("Adam's epsilon could not be read from the Optax transformation")
            rule: SGD | Adam = Adam(beta1, beta2, float(np.median(eps_estimates)))
            decays = _probe_adam_decay(run, shapes, rates[0], rule.epsilon)
            form: Literal["velocity", "buffer"] = "velocity"
        else:
            every_step = [-ratio(u, G) for u in run([G] * horizon)]
            first_only = [-ratio(u, G) if any(np.any(x) for x in u) else 0.0 for u in run([G] + [Z] * (horizon - 1))]
            rule, rates, form = _sgd_candidate(every_step, first_only)
            P = [rng.normal(size=shape) for shape in shapes]
            decays = [float(np.median(-u / (rates[0] * p))) for u, p in zip(run([Z], [P])[0], P)]
        l2s = {round(d, 15) for d, k in zip(decays, kernel) if k}
        bias_l2s = {round(d, 15) for d, k in zip(decays, kernel) if not k}
        if len(l2s) > 1 or len(bias_l2s) > 1 or min(decays) < 0:
            raise UnsupportedModel(f"the Optax weight decay differs between layers or is negative: {decays}")
        l2, bias_l2 = l2s.pop(), bias_l2s.pop() if bias_l2s else 0.0
        learning_rate, decay, every = _epoch_rates(rates, steps_per_epoch)
        candidate = OptaxReading(rule, learning_rate, decay, every, l2, bias_l2, form, notes)
        grads = [[rng.normal(size=shape) for shape in shapes] for _ in range(horizon)]
        weights = [[rng.normal(size=shape) for shape in shapes] for _ in range(horizon)]
        expected = _simulate(candidate, rates, kernel, grads, weights)
        actual = run(grads, weights)
        worst = max(float(np.max(np.abs(a - e)) / max(np.max(np.abs(e)), 1e-300))
                    for step_a, step_e in zip(actual, expected) for a, e in zip(step_a, step_e))
        if worst > 1e-8:
            raise UnsupportedModel(f"the Optax transformation is not an sgd/adam form this module reads (the closest "
                                   f"candidate {candidate.rule} differs by {worst:.2g}): e.g. nesterov, eps_root, "
                                   "decoupled (AdamW) decay or clipping")
        if l2 or bias_l2:
            notes.append(f"optax.add_decayed_weights before the optimizer is L2 in the gradient: {l2:g} on the "
                         f"kernels, {bias_l2:g} on the biases; it is not in the loss the loop reports")
        epoch_of = [t // (steps_per_epoch or 1) for t in range(len(rates))]
        if any(not math.isclose(rate, learning_rate * decay ** (epoch // every), rel_tol=1e-12)
               for rate, epoch in zip(rates, epoch_of)):
            candidate.deviations.append(Deviation(
                f"the Optax schedule computes its rates in float32 (up to {FLOAT32_RATE:g} relative); read as "
                f"{learning_rate:g} * {decay:g}**(epoch // {every}) exactly, which the exports compute in float64",
                "float32_rate"))
        if form == "buffer":
            notes.append("optax.sgd keeps a trace of raw gradients (b <- mu b + g; p -= lr b), which differs from the "
                         "spec's velocity once the rate changes: kept as that buffer form")
        return candidate


def _sgd_candidate(every_step: list[float], first_only: list[float]) -> tuple[SGD, list[float], str]:
    """Momentum and per-step rates of an SGD transformation from its scale on ``G`` at every step and on ``G`` at
    the first step only; buffer form when the rate changes and the two forms disagree."""
    mu_velocity = first_only[1] / first_only[0]
    velocity_rates = [every_step[0]] + [b - mu_velocity * a for a, b in itertools.pairwise(every_step)]
    lr2 = every_step[1] - first_only[1]
    mu_buffer = first_only[1] / lr2 if lr2 else 0.0
    sums = [sum(mu_buffer ** k for k in range(t + 1)) for t in range(len(every_step))]
    buffer_rates = [b / s for b, s in zip(every_step, sums)]
    buffer_fits = all(math.isclose(a, r * mu_buffer ** t, rel_tol=1e-9, abs_tol=1e-300)
                      for t, (a, r) in enumerate(zip(first_only, buffer_rates)))
    velocity_fits = all(math.isclose(a, velocity_rates[0] * mu_velocity ** t, rel_tol=1e-9, abs_tol=1e-300)
                        for t, a in enumerate(first_only))
    if velocity_fits:
        return SGD(min(max(mu_velocity, 0.0), 1 - 1e-16)), velocity_rates, "velocity"
    if buffer_fits:
        return SGD(mu_buffer), buffer_rates, "buffer"
    raise UnsupportedModel("the Optax transformation is neither SGD with momentum form")


def _probe_adam_decay(run: Callable, shapes: list[tuple], lr: float, epsilon: float) -> list[float]:
    """Per-leaf decay factor of an Adam transformation from one step on zero gradients: the decayed term ``wd p``
    enters Adam as its gradient, ``u = -lr g / (|g| + eps)``, readable where ``|g|`` is near ``eps``."""
    zeros = [np.zeros(shape) for shape in shapes]
    found: list[float | None] = [None] * len(shapes)
    for scale in np.logspace(6, -16, 45):
        P = [np.full(shape, scale) for shape in shapes]
        for leaf, u in enumerate(run([zeros], [P])[0]):
            frac = float(np.max(np.abs(u))) / lr
            if not u.any():
                found[leaf] = 0.0 if found[leaf] is None else found[leaf]
            elif 0.05 < frac < 0.95:
                found[leaf] = epsilon * frac / (1 - frac) / scale
    return [0.0 if value is None else value for value in found]


def _epoch_rates(rates: list[float], steps_per_epoch: int | None) -> tuple[float, float, int]:
    """``(lr, decay, every)`` from per-step rates constant within epochs and geometric over ``every`` epochs."""
    if all(math.isclose(r, rates[0], rel_tol=1e-12) for r in rates):
        return rates[0], 1.0, 1
    if steps_per_epoch is None:
        raise UnsupportedModel("the Optax learning rate changes between steps: give steps_per_epoch= to read it as a "
                               "per-epoch decay")
    per_epoch = rates[::steps_per_epoch]
    if any(not math.isclose(r, per_epoch[t // steps_per_epoch], rel_tol=1e-12) for t, r in enumerate(rates)):
        raise UnsupportedModel("the Optax learning rate changes within an epoch: only a staircase decay over whole "
                               "epochs maps to the spec")
    try:
        return _probe_epoch_schedule(lambda epoch, rate: per_epoch[epoch], per_epoch[0], len(per_epoch))
    except UnsupportedModel:
        # optax.exponential_decay computes in float32 even under x64: the decimal rates it was given, if they
        # reproduce every float32-rounded rate
        lr, decay, every = _probe_epoch_schedule(lambda epoch, rate: per_epoch[epoch], per_epoch[0],
                                                 len(per_epoch), rel_tol=FLOAT32_RATE)
        for digits in (6, 7, 8):  # the shortest decimals that reproduce every rate
            lr_d, decay_d = float(f"{lr:.{digits}g}"), float(f"{decay:.{digits}g}")
            if all(math.isclose(rate, lr_d * decay_d ** (e // every), rel_tol=FLOAT32_RATE)
                   for e, rate in enumerate(per_epoch)):
                return lr_d, decay_d, every
        raise


FLOAT32_RATE = 3e-7
"""How far a rate computed in float32 (Optax's schedules) may be from the exact one: two roundings of 6e-8."""


def _simulate(reading: OptaxReading, rates: list[float], kernel: list[bool], grads: list[list[np.ndarray]],
              weights: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """The updates the candidate ``reading`` makes, step by step, for :func:`_probe_optax`'s replay."""
    rule = reading.rule
    state_a = [np.zeros_like(g) for g in grads[0]]
    state_b = [np.zeros_like(g) for g in grads[0]]
    out = []
    for t, (grad, at) in enumerate(zip(grads, weights)):
        lr, step = rates[t], []
        for leaf, (g, p) in enumerate(zip(grad, at)):
            g = g + (reading.l2 if kernel[leaf] else reading.bias_l2) * p
            if isinstance(rule, Adam):
                state_a[leaf] = rule.beta1 * state_a[leaf] + (1 - rule.beta1) * g
                state_b[leaf] = rule.beta2 * state_b[leaf] + (1 - rule.beta2) * g * g
                m_hat = state_a[leaf] / (1 - rule.beta1 ** (t + 1))
                v_hat = state_b[leaf] / (1 - rule.beta2 ** (t + 1))
                step.append(-lr * m_hat / (np.sqrt(v_hat) + rule.epsilon))
            elif reading.momentum_form == "buffer":
                state_a[leaf] = rule.momentum * state_a[leaf] + g
                step.append(-lr * state_a[leaf])
            else:
                state_a[leaf] = rule.momentum * state_a[leaf] - lr * g
                step.append(state_a[leaf].copy())
        out.append(step)
    return out


# ---- export -----------------------------------------------------------------------------


def _changing_rate(port: Port) -> bool:
    """Whether the rate ever changes (then the two momentum forms differ), whatever the number of epochs."""
    return port.config is not None and port.config.lr_decay != 1.0


def _momentum_form_matters(port: Port, form: str) -> bool:
    """Whether the port trains with SGD momentum in ``form`` ("velocity" or "buffer") under a changing rate, where
    the two forms differ: a target whose stock optimizer has the other form needs a replacement."""
    config = port.config
    return (config is not None and isinstance(config.optimizer, SGD) and bool(config.optimizer.momentum)
            and _changing_rate(port) and port.conventions.momentum_form == form)


def _torch_notes(port: Port) -> list[str]:
    notes = []
    if _momentum_form_matters(port, "velocity"):
        notes.append("torch SGD's buffer momentum differs from the velocity form once the rate changes: exported "
                     "as VelocitySGD, a small torch.optim.Optimizer with v <- mu v - lr g")
    if port.config is not None and port.conventions.adam_epsilon == "uncorrected":
        notes.append("torch Adam adds epsilon to sqrt(v_hat): exported as KerasAdam, a small torch.optim.Optimizer "
                     "with epsilon on sqrt(v)")
    if port.spec.l1 or port.conventions.bias_l1:
        notes.append("L1 has no torch optimizer option: the exported loss_fn adds l1 * sum|W| (PenalizedLoss)")
    if port.spec.l2 or port.conventions.bias_l2:
        notes.append("L2 is exported as weight_decay in two parameter groups (weights, biases); the reported loss "
                     "leaves it out")
    return notes


def _keras_needs_spec_activation(spec: MLPSpec) -> bool:
    """Whether Keras's own activation misses the spec's: ``LeakyReLU``'s slope goes through a float32 attribute
    on TensorFlow and its derivative at 0 is 1 on JAX; ``elu`` has alpha 1; ``tanh`` is float32 on JAX."""
    import keras

    return (spec.hidden_activation == "leaky_relu" or (spec.hidden_activation == "elu" and spec.elu_alpha != 1.0)
            or (spec.hidden_activation == "tanh" and keras.backend.backend() == "jax"))


def _keras_notes(port: Port) -> list[str]:
    notes = ["exported with sigmoid/softmax outputs and a probability loss, which Keras computes from the logits "
             "behind that layer"] if port.spec.loss_rule.output_activation != "identity" else []
    if _keras_needs_spec_activation(port.spec):
        notes.append(f"the hidden activation is impls.keras_mlp.activation ({port.spec.hidden_activation}): Keras's "
                     "own rounds LeakyReLU's slope through float32 on TensorFlow, has elu's alpha fixed at 1 and "
                     "tanh in float32 on JAX")
    if port.spec.dtype == "float64":
        notes.append("model.fit casts float NumPy inputs to keras.config.floatx() (float32 by default; ~1e-9 in the "
                     "parameters after two epochs): fit with floatx set to float64")
    if _momentum_form_matters(port, "buffer"):
        notes.append("Keras SGD keeps the velocity form: exported as BufferSGD, a small keras optimizer with "
                     "b <- mu b + g, p -= lr b")
    if port.config is not None and isinstance(port.config.optimizer, Adam) \
            and port.conventions.adam_epsilon == "corrected":
        notes.append("Keras Adam adds epsilon to sqrt(v): exported as impls.keras_mlp.SpecAdam (epsilon on "
                     "sqrt(v_hat))")
    if port.config is not None and port.config.lr_decay != 1.0:
        notes.append("the decay is a LearningRateScheduler callback (0-based epoch): pass callbacks to fit")
    if port.spec.l1 or port.spec.l2 or port.conventions.bias_l1 or port.conventions.bias_l2:
        notes.append("the penalty is impls.keras_mlp.kernel_penalty as the Dense regularizers: keras.regularizers.L2 "
                     "is l2 * sum W**2 (twice the spec's) and rounds its factor through float32 on TensorFlow")
    return notes


def _flax_notes(port: Port) -> list[str]:
    notes = []
    if _momentum_form_matters(port, "velocity"):
        notes.append("optax.sgd traces raw gradients: exported as chain(scale_by_learning_rate, trace), the velocity "
                     "form")
    if port.config is not None and port.conventions.adam_epsilon == "uncorrected":
        notes.append("optax.adam adds epsilon to sqrt(v_hat): exported as keras_adam, a small Optax transformation "
                     "with epsilon on sqrt(v)")
    if port.spec.l1 or port.conventions.bias_l1:
        notes.append("L1 is exported as add_l1_gradient, a small Optax transformation adding l1 * sign(p)")
    if port.spec.l2 or port.conventions.bias_l2:
        notes.append("L2 is optax.add_decayed_weights (masked to kernels/biases): not in the reported loss")
    if port.config is not None and port.config.lr_decay != 1.0:
        notes.append("the decay is epoch_decay, a staircase schedule in float64 (optax.exponential_decay rounds the "
                     "rate through float32: 3e-9 relative in the parameters after two epochs)")
    if port.spec.dtype == "float64":
        notes.append("float64 needs JAX's x64 mode: build and train inside jax.enable_x64(True)")
    return notes


def _our_notes(port: Port) -> list[str]:
    beyond = port.conventions.beyond_spec() if port.config is not None else []
    return [f"cannot carry: {what}" for what in beyond]


_EXPORT_NOTES = {"torch": _torch_notes, "keras": _keras_notes, "flax": _flax_notes, "numpy": _our_notes,
                 "jax": _our_notes}


def _export_ours(framework: str, port: Port) -> tuple:
    from impls.registry import create

    if port.config is not None and port.conventions.beyond_spec():
        raise UnsupportedModel(f"the {framework} implementation trains by the spec's conventions only; this port "
                               f"needs {', '.join(port.conventions.beyond_spec())}")
    model = create(framework, port.spec)
    model.set_params(port.params)
    return model, port.config


@functools.cache
def _torch_optimizers() -> tuple[type, type, type]:
    """``VelocitySGD``, ``KerasAdam`` and ``PenalizedLoss``, defined once torch is imported."""
    import torch

    class VelocitySGD(torch.optim.Optimizer):
        """SGD with the velocity form of momentum: ``v <- mu v - lr (g + wd p)``; ``p <- p + v``."""

        def __init__(self, params: Any, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
            super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

        @torch.no_grad()
        def step(self, closure: Callable | None = None) -> None:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad + group["weight_decay"] * p if group["weight_decay"] else p.grad
                    velocity = self.state[p].setdefault("velocity", torch.zeros_like(p))
                    velocity.mul_(group["momentum"]).sub_(group["lr"] * grad)
                    p.add_(velocity)

    class KerasAdam(torch.optim.Optimizer):
        """Adam with epsilon added to ``sqrt(v)`` before the bias correction, as ``keras.optimizers.Adam``."""

        def __init__(self, params: Any, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-7,
                     weight_decay: float = 0.0) -> None:
            super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

        @torch.no_grad()
        def step(self, closure: Callable | None = None) -> None:
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad + group["weight_decay"] * p if group["weight_decay"] else p.grad
                    state = self.state[p]
                    if not state:
                        state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                    state["step"] += 1
                    t = state["step"]
                    state["m"].mul_(beta1).add_((1 - beta1) * grad)
                    state["v"].mul_(beta2).add_((1 - beta2) * grad * grad)
                    alpha = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                    p.sub_(alpha * state["m"] / (state["v"].sqrt() + group["eps"]))

    class PenalizedLoss(torch.nn.Module):
        """``base(outputs, targets) + l1 sum|W| + bias_l1 sum|b|`` over the model's ``nn.Linear`` layers."""

        def __init__(self, base: torch.nn.Module, model: torch.nn.Module, l1: float, bias_l1: float) -> None:
            super().__init__()
            self.base, self.linears, self.l1, self.bias_l1 = base, [m for m in model if isinstance(
                m, torch.nn.Linear)], l1, bias_l1

        def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            penalty = sum(self.l1 * m.weight.abs().sum() + self.bias_l1 * m.bias.abs().sum() for m in self.linears)
            return self.base(outputs, targets) + penalty

    return VelocitySGD, KerasAdam, PenalizedLoss


def _export_torch(port: Port) -> tuple:
    import torch
    from torch import nn, optim

    spec, conv, config = port.spec, port.conventions, port.config
    dtype = {"float32": torch.float32, "float64": torch.float64}[spec.dtype]
    hidden = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity,
              "leaky_relu": lambda: nn.LeakyReLU(spec.leaky_slope), "elu": lambda: nn.ELU(spec.elu_alpha)}
    layers: list[nn.Module] = []
    for layer, (W, b) in enumerate(port.params):
        linear = nn.Linear(*W.shape, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(np.array(W.T)))  # a copy: W may be read-only
            linear.bias.copy_(torch.as_tensor(np.array(b)))
        layers.append(linear)
        if layer < spec.n_layers - 1:
            layers.append(hidden[spec.hidden_activation]())
            if spec.dropout_rates[layer]:
                layers.append(nn.Dropout(spec.dropout_rates[layer]))
    model = nn.Sequential(*layers)
    loss_fn: nn.Module = {"binary_crossentropy": nn.BCEWithLogitsLoss, "categorical_crossentropy": nn.CrossEntropyLoss,
                          "mse": nn.MSELoss, "mae": nn.L1Loss}[spec.loss]()
    VelocitySGD, KerasAdam, PenalizedLoss = _torch_optimizers()
    if spec.l1 or conv.bias_l1:
        loss_fn = PenalizedLoss(loss_fn, model, spec.l1, conv.bias_l1)
    if config is None:
        return model, loss_fn, None, None
    linears = [m for m in model if isinstance(m, nn.Linear)]
    groups = [{"params": [m.weight for m in linears], "weight_decay": spec.l2},
              {"params": [m.bias for m in linears], "weight_decay": conv.bias_l2}]
    rule = config.optimizer
    if isinstance(rule, Adam):
        kind = KerasAdam if conv.adam_epsilon == "uncorrected" else optim.Adam
        optimizer = kind(groups, lr=config.learning_rate, betas=(rule.beta1, rule.beta2), eps=rule.epsilon)
    elif rule.momentum and _changing_rate(port) and conv.momentum_form == "velocity":
        optimizer = VelocitySGD(groups, lr=config.learning_rate, momentum=rule.momentum)
    else:
        optimizer = optim.SGD(groups, lr=config.learning_rate, momentum=rule.momentum)
    scheduler = None
    if config.lr_decay != 1.0:
        scheduler = (optim.lr_scheduler.ExponentialLR(optimizer, config.lr_decay) if conv.decay_every == 1 else
                     optim.lr_scheduler.StepLR(optimizer, conv.decay_every, config.lr_decay))
    return model, loss_fn, optimizer, scheduler


@functools.cache
def _keras_buffer_sgd() -> type:
    import keras
    from keras import ops

    class BufferSGD(keras.optimizers.Optimizer):
        """SGD with a buffer of raw gradients, ``b <- mu b + g; p <- p - lr b`` (``torch.optim.SGD``, ``optax.sgd``)."""

        def __init__(self, learning_rate: float, momentum: float, **kwargs: Any) -> None:
            super().__init__(learning_rate=learning_rate, name="buffer_sgd", **kwargs)
            self.momentum = momentum

        def build(self, variables: list) -> None:
            if self.built:
                return
            super().build(variables)
            self.buffers = self.add_optimizer_variables(variables, "buffer")

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
            dtype = keras.backend.standardize_dtype(variable.dtype)
            buffer = self.buffers[self._get_variable_index(variable)]  # private, as Keras's own (checked: 3.15.1)
            momentum = ops.convert_to_tensor(self.momentum, dtype=dtype)
            self.assign(buffer, momentum * buffer + ops.cast(gradient, dtype))
            self.assign_sub(variable, ops.cast(learning_rate, dtype) * buffer)

    return BufferSGD


def _export_keras(port: Port) -> tuple:
    import keras

    from impls.keras_backend import enable_float64, floatx, optimizer_float
    from impls.keras_mlp import activation, kernel_penalty

    spec, conv, config = port.spec, port.conventions, port.config
    dtype = spec.dtype
    if dtype == "float64":
        enable_float64()
    # kernel_penalty, not keras.regularizers.L1L2: exact factors on TensorFlow and abs'(0) = 0 on JAX
    regularizer = functools.partial(kernel_penalty, spec) if spec.l1 or spec.l2 else None
    bias_regularizer = (functools.partial(kernel_penalty, replace(spec, l1=conv.bias_l1, l2=conv.bias_l2))
                        if conv.bias_l1 or conv.bias_l2 else None)
    hidden_activation: Any = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "identity": "linear",
                              "elu": "elu"}.get(spec.hidden_activation)
    if _keras_needs_spec_activation(spec):
        hidden_activation = functools.partial(activation, spec)
    tail = {"sigmoid": "sigmoid", "softmax": "softmax", "identity": "linear"}[spec.loss_rule.output_activation]
    with floatx(dtype):
        layers: list = [keras.Input((spec.n_inputs,), dtype=dtype)]
        for layer, width in enumerate(spec.layer_sizes[1:]):
            hidden = layer < spec.n_layers - 1
            layers.append(keras.layers.Dense(width, activation=hidden_activation if hidden else tail,
                                             kernel_regularizer=regularizer, bias_regularizer=bias_regularizer,
                                             dtype=dtype))
            if hidden and spec.dropout_rates[layer]:
                layers.append(keras.layers.Dropout(spec.dropout_rates[layer], dtype=dtype))
        model = keras.Sequential(layers)
        model.set_weights([a for pair in port.params for a in pair])
        if config is None:
            return model, []
        loss = {"binary_crossentropy": keras.losses.BinaryCrossentropy(),
                "categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy(),
                "mse": keras.losses.MeanSquaredError(), "mae": keras.losses.MeanAbsoluteError()}[spec.loss]
        rule, lr = config.optimizer, optimizer_float(config.learning_rate)
        if isinstance(rule, Adam):
            if conv.adam_epsilon == "uncorrected":
                optimizer = keras.optimizers.Adam(lr, optimizer_float(rule.beta1), optimizer_float(rule.beta2),
                                                  optimizer_float(rule.epsilon))
            else:
                from impls.keras_mlp import SpecAdam

                optimizer = SpecAdam(rule)
        elif rule.momentum and _changing_rate(port) and conv.momentum_form == "buffer":
            optimizer = _keras_buffer_sgd()(lr, optimizer_float(rule.momentum))
        else:
            optimizer = keras.optimizers.SGD(lr, momentum=optimizer_float(rule.momentum))
        optimizer.learning_rate = config.learning_rate  # one line for every optimizer (SpecAdam starts at 0.001)
        model.compile(optimizer=optimizer, loss=loss)
    callbacks: list = []
    if config.lr_decay != 1.0:
        rate, decay, every = config.learning_rate, config.lr_decay, conv.decay_every
        callbacks.append(keras.callbacks.LearningRateScheduler(lambda epoch, _: rate * decay ** (epoch // every)))
    if config.early_stopping is not None:
        stop = config.early_stopping
        callbacks.append(keras.callbacks.EarlyStopping("val_loss", min_delta=stop.min_delta, patience=stop.patience,
                                                       restore_best_weights=stop.restore_best))
    return model, callbacks


def velocity_sgd(learning_rate: Any, momentum: float) -> Any:
    """The spec's velocity form as Optax: ``chain(scale_by_learning_rate, trace)``; see
    :func:`impls.flax_mlp.spec_sgd`, which this is."""
    from impls.flax_mlp import spec_sgd

    return spec_sgd(learning_rate, momentum)


def keras_adam(learning_rate: Any, b1: float, b2: float, eps: float) -> Any:
    """Adam with epsilon on ``sqrt(v)`` before the bias correction (``keras.optimizers.Adam``), as Optax."""
    import jax
    import jax.numpy as jnp
    import optax

    def init(params: Any) -> optax.ScaleByAdamState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=jax.tree.map(jnp.zeros_like, params))

    def update(updates: Any, state: optax.ScaleByAdamState, params: Any = None) -> tuple:
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
        t = count.astype(jax.tree.leaves(updates)[0].dtype)
        correction = jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        steps = jax.tree.map(lambda m, v: correction * m / (jnp.sqrt(v) + eps), mu, nu)
        return steps, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.chain(optax.GradientTransformation(init, update), optax.scale_by_learning_rate(learning_rate))


def add_l1_gradient(kernel_l1: float, bias_l1: float) -> Any:
    """An Optax transformation adding ``l1 * sign(p)`` to each gradient (kernels: 2-D, biases: 1-D)."""
    import jax
    import jax.numpy as jnp
    import optax

    def update(updates: Any, state: Any, params: Any = None) -> tuple:
        def add(g: Any, p: Any) -> Any:
            return g + (kernel_l1 if p.ndim == 2 else bias_l1) * jnp.sign(p)

        return jax.tree.map(add, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def epoch_decay(learning_rate: float, decay: float, steps: int) -> Callable[[Any], Any]:
    """``learning_rate * decay**(count // steps)``: ``optax.exponential_decay(..., staircase=True)`` computed in the
    default float dtype (float64 under x64), where Optax's own rounds the rate through float32 (~1e-8)."""
    return lambda count: learning_rate * decay ** (count // steps)


def _export_flax(port: Port, steps_per_epoch: int | None) -> tuple:
    import jax
    import optax
    from flax import nnx

    spec, conv, config = port.spec, port.conventions, port.config
    dtype = spec.np_dtype
    hidden = {"relu": nnx.relu, "tanh": nnx.tanh, "sigmoid": nnx.sigmoid, "identity": None,
              "leaky_relu": functools.partial(nnx.leaky_relu, negative_slope=spec.leaky_slope),
              "elu": functools.partial(nnx.elu, alpha=spec.elu_alpha)}[spec.hidden_activation]
    loss = {"binary_crossentropy": optax.sigmoid_binary_cross_entropy,
            "categorical_crossentropy": optax.softmax_cross_entropy_with_integer_labels,
            "mse": optax.squared_error, "mae": lambda z, y: abs(z - y)}[spec.loss]
    if spec.loss == "mae":
        raise UnsupportedModel("Optax has no mean absolute error, and jnp.abs'(0) = 1 where the spec has 0")
    with jax.enable_x64(spec.dtype == "float64"):
        rngs = nnx.Rngs(0)
        layers: list = []
        for layer, (W, b) in enumerate(port.params):
            linear = nnx.Linear(*W.shape, dtype=dtype, param_dtype=dtype, rngs=rngs)
            linear.kernel.set_value(jax.numpy.asarray(W))
            linear.bias.set_value(jax.numpy.asarray(b))
            layers.append(linear)
            if layer < spec.n_layers - 1:
                layers += [hidden] if hidden is not None else []
                if spec.dropout_rates[layer]:
                    layers.append(nnx.Dropout(spec.dropout_rates[layer], rngs=rngs))
        model = nnx.Sequential(*layers)
    if config is None:
        return model, None, loss
    schedule: Any = config.learning_rate
    if config.lr_decay != 1.0:
        if steps_per_epoch is None:
            raise ValueError("export('flax') of a decaying rate needs steps_per_epoch= (Optax schedules count steps)")
        schedule = epoch_decay(config.learning_rate, config.lr_decay, steps_per_epoch * conv.decay_every)

    def kernels(params: Any) -> Any:
        return jax.tree.map(lambda p: p.ndim == 2, params)

    def biases(params: Any) -> Any:
        return jax.tree.map(lambda p: p.ndim == 1, params)

    chain = []
    if spec.l1 or conv.bias_l1:
        chain.append(add_l1_gradient(spec.l1, conv.bias_l1))
    if spec.l2:
        chain.append(optax.add_decayed_weights(spec.l2, mask=kernels))
    if conv.bias_l2:
        chain.append(optax.add_decayed_weights(conv.bias_l2, mask=biases))
    rule = config.optimizer
    if isinstance(rule, Adam):
        chain.append(keras_adam(schedule, rule.beta1, rule.beta2, rule.epsilon) if conv.adam_epsilon == "uncorrected"
                     else optax.adam(schedule, rule.beta1, rule.beta2, rule.epsilon))
    elif rule.momentum and _changing_rate(port) and conv.momentum_form == "velocity":
        chain.append(velocity_sgd(schedule, rule.momentum))
    else:
        chain.append(optax.sgd(schedule, rule.momentum or None))
    return model, optax.chain(*chain) if len(chain) > 1 else chain[0], loss


# ---- the certificate ----------------------------------------------------------------------


LIMITS = {"start": 1e-10, "run": 1e-8}
"""Float64 limits of a certificate: one computation (outputs, gradients) and a whole run (parameters, losses);
``tests/tolerances.py`` holds the same values as ``COMPUTATION['float64']`` and ``TRAJECTORY``."""

FLOAT32_COMPUTATION = 1e-4
"""One computation (outputs, gradients, a loss, an update) done in float32 against float64, relative:
``tests/tolerances.py``'s ``COMPUTATION['float32']`` (rounding ~6e-8 per operation, sums of a few hundred terms)."""

FLOAT32_UNIT = 2.0 ** -24
"""The relative rounding error of one float32 operation (unit roundoff)."""

RUN_MARGIN = 10.0
"""How much a perturbation of each update may grow through a short run (:func:`verify`'s few epochs): a perturbed
step moves the parameters, which changes every later gradient, and the reported losses respond to the parameters
with a sensitivity of order one.  The bound of a run is ``RUN_MARGIN`` times the perturbation summed along the
path; measured differences stay at least 10 times below it (Keras's rounded Adam betas move a short run by almost
exactly their per-step error times the path: 2.65e-7 against 6.7e-6 x 0.04)."""


@dataclass(frozen=True)
class DeviationBound:
    """How far one cause may move each quantity of a certificate, relative (``max|a - b| / max|b|``).

    ``outputs``, ``gradients``, ``loss``: added to the limit of the outputs and data-loss gradients at the start
    and of each reported epoch loss.  ``step``: the relative error of every update the cause makes (a number, or a
    function of the port and the number of steps): a run's parameters and losses get ``RUN_MARGIN * step * path``,
    ``path`` the relative distance the source travelled (the sum of each epoch's ``max|delta theta|`` over
    ``max|theta|``).  ``rounding``: relative error per step and side in the stored parameters (``RUN_MARGIN *
    rounding * steps``).  ``path``: a multiple of the path itself (a run that is not reproducible draw by draw).
    ``spread``: a multiple of the relative standard deviation of the source's training-mode loss at the start.
    """

    reason: str
    outputs: float = 0.0
    gradients: float = 0.0
    loss: float = 0.0
    step: float | Callable[[Port, int], float] = 0.0
    rounding: float = 0.0
    path: float = 0.0
    spread: float = 0.0


def _rounded_betas_step(port: Port, steps: int) -> float:
    """The largest relative change of Keras Adam's step size ``lr sqrt(1 - beta2**t) / (1 - beta1**t)`` over ``t = 1
    .. steps`` when beta1, beta2 or both go through float32 in it, as Keras on TensorFlow does with Python floats.

    The moments use the exact betas, so only this factor moves.  ``1 - beta**t`` is small for the first steps (1e-3 for
    beta2 = 0.999), which magnifies the rounding ``|beta - float32(beta)|`` (1.3e-8 for 0.999, 2.4e-8 for 0.9): 0.999
    gives ``1.3e-8 / 1e-3 / 2`` = 6.4e-6 at step 1, 0.9 another ``2.4e-8 / 0.1`` = 2.4e-7, together 6.7e-6, not 1e-8;
    the change shrinks as ``t`` grows."""
    rule = port.config.optimizer if port.config is not None else None
    if not isinstance(rule, Adam):
        return 0.0
    t = np.arange(1, steps + 1, dtype=np.float64)

    def factor(beta1: float, beta2: float) -> np.ndarray:
        return np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)

    exact = factor(rule.beta1, rule.beta2)
    beta1, beta2 = float(np.float32(rule.beta1)), float(np.float32(rule.beta2))
    changes = [np.abs(factor(*betas) / exact - 1)
               for betas in ((beta1, rule.beta2), (rule.beta1, beta2), (beta1, beta2))]  # whichever Keras rounded
    return float(max(np.max(change) for change in changes))


DEVIATION_BOUNDS: dict[str, DeviationBound] = {
    "float32": DeviationBound(
        "the model computes in float32: one computation, and each update, within float32's 1e-4; every stored "
        "parameter rounded to float32 at each step, on each side",
        outputs=FLOAT32_COMPUTATION, gradients=FLOAT32_COMPUTATION, loss=FLOAT32_COMPUTATION,
        step=FLOAT32_COMPUTATION, rounding=2 * FLOAT32_UNIT),
    "float32_backend": DeviationBound(
        "Keras on this backend computes parts of a float64 model in float32: each computation and update held to "
        "float32's 1e-4 (the parameters stay float64)",
        outputs=FLOAT32_COMPUTATION, gradients=FLOAT32_COMPUTATION, loss=FLOAT32_COMPUTATION,
        step=FLOAT32_COMPUTATION),
    "float32_loss": DeviationBound(
        "the source's loss computes in float32: its gradients, its reported losses and so each update within "
        "float32's 1e-4 (the outputs are the model's own, exact)",
        gradients=FLOAT32_COMPUTATION, loss=FLOAT32_COMPUTATION, step=FLOAT32_COMPUTATION),
    "loss_tracker": DeviationBound(
        "Keras reports the loss through a float32 Mean (compiled outside floatx): the reported losses within "
        "float32's 1e-4", loss=FLOAT32_COMPUTATION),
    "rounded_betas": DeviationBound(
        "Keras Adam rounds beta_1/beta_2 through float32 in its bias correction only: every step's size off by the "
        "largest relative change of lr sqrt(1 - beta2**t) / (1 - beta1**t) that rounding makes",
        step=_rounded_betas_step),
    "float32_rate": DeviationBound(
        "the source's schedule computes each rate in float32: every step off by up to FLOAT32_RATE relative",
        step=FLOAT32_RATE),
    "dropout": DeviationBound(
        "dropout: each framework draws its own masks, so runs agree in distribution, not draw by draw; a run may "
        "differ by at most twice the distance the source travelled (an export that moves much farther, or "
        "diverges, fails), a reported loss by 8 standard deviations of the source's training-mode loss (the "
        "difference of two independent draws of it at 5.7 sigma)",
        path=2.0, spread=8.0),
}
"""What may make a certified quantity differ beyond :data:`LIMITS`, by cause, each with its reason and its bound:
the :class:`Deviation` causes a port records, and a port's own float32 and dropout.  :func:`verify` adds the bound
of every cause present to the float64 limit of each row and says so in the row's remark."""


@dataclass
class Certificate:
    """Largest relative differences (``max|a - b| / max|b|``) between the source trained by its framework's loop
    and the export trained by the target's, on the same batches.  ``rows``: ``(quantity, difference, limit,
    remark)``; the limit is the float64 one (:data:`LIMITS`) plus the bound of every cause of deviation present
    (:data:`DEVIATION_BOUNDS`), which the remark names with its share."""

    source: str
    target: str
    rows: list[tuple[str, float | None, float | None, str]]
    causes: list[str] = field(default_factory=list)
    """Each cause of deviation present, in words, with the reason for its bound."""

    @property
    def passed(self) -> bool:
        """Every row has a difference and a limit, and the difference is within it (a row without a limit fails)."""
        return bool(self.rows) and all(diff is not None and limit is not None and diff <= limit
                                       for _, diff, limit, _ in self.rows)

    def to_markdown(self) -> str:
        lines = [f"| {self.source} -> {self.target} | max rel. difference | limit | |", "|---|---|---|---|"]
        for quantity, diff, limit, remark in self.rows:
            shown = "n/a" if diff is None else f"{diff:.2e}"
            lines.append(f"| {quantity} | {shown} | {'none' if limit is None else f'{limit:.1e}'} | {remark} |")
        if self.causes:
            lines += ["", *(f"- {cause}" for cause in self.causes)]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def _rel(a: Any, b: Any) -> float:
    a = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in a]) if isinstance(a, list) else np.asarray(a)
    b = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in b]) if isinstance(b, list) else np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def _flat(params: Params) -> list[np.ndarray]:
    return [a for pair in params for a in pair]


def _penalty(spec: MLPSpec, conventions: Conventions, params: Params) -> float:
    """The port's whole penalty at ``params``: ``l1 sum|W| + (l2/2) sum W**2`` and the biases' by ``conventions``."""
    return float(sum(spec.l1 * np.abs(W).sum() + spec.l2 / 2 * np.square(W).sum()
                     + conventions.bias_l1 * np.abs(b).sum() + conventions.bias_l2 / 2 * np.square(b).sum()
                     for W, b in params))


class _Trainer:
    """One side of :func:`verify`: predictions, data-loss gradients and a training run of a framework's objects.

    ``train`` reports each epoch's loss as the full objective, penalty included, whatever the framework's own loss
    leaves out."""

    def params(self) -> Params:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def gradients(self, X: np.ndarray, y: np.ndarray) -> Params:
        raise NotImplementedError

    def train(self, X: np.ndarray, y: np.ndarray, batches: list[list[np.ndarray]]) -> tuple[list[float], list[Params]]:
        raise NotImplementedError

    def training_loss(self, X: np.ndarray, y: np.ndarray) -> float:
        """The data loss of one forward pass in training mode (dropout drawn by the framework)."""
        raise NotImplementedError


def _spec_output(spec: MLPSpec, z: np.ndarray) -> np.ndarray:
    from impls.numpy_mlp import output

    return output(spec, np.asarray(z, np.float64))


class _TorchTrainer(_Trainer):
    def __init__(self, spec: MLPSpec, model: Any, loss_fn: Any, optimizer: Any, scheduler: Any) -> None:
        from torch import nn

        self.spec, self.model, self.loss_fn, self.optimizer, self.scheduler = spec, model, loss_fn, optimizer, scheduler
        self.linears = [m for m in model if isinstance(m, nn.Linear)]
        base = getattr(loss_fn, "base", loss_fn)
        self.indices = isinstance(base, (nn.CrossEntropyLoss, nn.NLLLoss))
        self.tail = type(list(model.children())[-1]).__name__

    def _targets(self, y: np.ndarray) -> Any:
        import torch

        if self.indices:
            return torch.as_tensor(np.asarray(y), dtype=torch.long)
        return torch.as_tensor(np.asarray(y, self.spec.dtype).reshape(len(y), -1))

    def predict(self, X: np.ndarray) -> np.ndarray:
        import torch

        self.model.eval()
        with torch.no_grad():
            out = self.model(torch.as_tensor(X)).numpy()
        self.model.train()
        if self.tail == "LogSoftmax":
            return np.exp(out)
        return out if self.tail in ("Sigmoid", "Softmax") else _spec_output(self.spec, out)

    def gradients(self, X: np.ndarray, y: np.ndarray) -> Params:
        import torch

        self.model.eval()
        base = getattr(self.loss_fn, "base", self.loss_fn)
        loss = base(self.model(torch.as_tensor(X)), self._targets(y))
        tensors = [t for m in self.linears for t in (m.weight, m.bias)]
        grads = torch.autograd.grad(loss, tensors)
        self.model.train()
        return [(grads[2 * i].numpy().T, grads[2 * i + 1].numpy()) for i in range(len(self.linears))]

    def params(self) -> Params:
        return [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in self.linears]

    def _decay_penalty(self) -> float:
        """``sum wd/2 |p|**2`` over the optimizer's groups: the objective whose gradient ``weight_decay`` adds, which
        the loss torch reports leaves out (an L1 term is in the loss, through ``PenalizedLoss``)."""
        import torch

        with torch.no_grad():
            return sum(group["weight_decay"] / 2 * float(sum((p * p).sum() for p in group["params"]))
                       for group in self.optimizer.param_groups if group["weight_decay"])

    def training_loss(self, X: np.ndarray, y: np.ndarray) -> float:
        import torch

        self.model.train()
        with torch.no_grad():
            return float(getattr(self.loss_fn, "base", self.loss_fn)(self.model(torch.as_tensor(X)), self._targets(y)))

    def train(self, X: np.ndarray, y: np.ndarray, batches: list[list[np.ndarray]]) -> tuple[list[float], list[Params]]:
        import torch

        X_t, Y_t = torch.as_tensor(X), self._targets(y)
        losses, snapshots = [], []
        self.model.train()
        for epoch_batches in batches:
            total = 0.0
            for idx in epoch_batches:
                self.optimizer.zero_grad()
                loss = self.loss_fn(self.model(X_t[idx]), Y_t[idx])
                loss.backward()
                objective = loss.item() + self._decay_penalty()  # before the step: the loss's parameters
                self.optimizer.step()
                total += objective * len(idx)
            if self.scheduler is not None:
                self.scheduler.step()
            losses.append(total / len(X))
            snapshots.append(self.params())
        return losses, snapshots


class _KerasTrainer(_Trainer):
    def __init__(self, spec: MLPSpec, model: Any, callbacks: Sequence[Any], batch_size: int) -> None:
        import keras

        self.spec, self.model, self.callbacks, self.batch_size = spec, model, list(callbacks), batch_size
        self.dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        self.loss = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
        self.tail = getattr(self.dense[-1].activation, "__name__", "linear")
        loss_name = getattr(self.loss, "name", "") or ""
        self.one_hot = "sparse" not in loss_name and "categorical" in loss_name
        # private (checked: Keras 3.15.1): the Mean that fit reports the loss through, made in floatx() at compile
        tracker = getattr(model, "_loss_tracker", None)
        self.loss_dtype = str(getattr(tracker, "dtype", spec.dtype))

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if self.spec.task == "multiclass":
            return np.eye(self.spec.n_outputs, dtype=self.spec.dtype)[y] if self.one_hot else np.asarray(y)
        return np.asarray(y, self.spec.dtype).reshape(len(y), -1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(self.model(X, training=False))
        return out if self.tail in ("sigmoid", "softmax") else _spec_output(self.spec, out)

    def gradients(self, X: np.ndarray, y: np.ndarray) -> Params:
        from impls.keras_backend import value_and_gradients

        Y = self._targets(y)
        variables = [v for layer in self.dense for v in (layer.kernel, layer.bias)]
        _, grads = value_and_gradients(lambda: self.loss(Y, self.model(X, training=False)), variables)
        grads = [np.asarray(g) for g in grads]
        return [(grads[2 * i], grads[2 * i + 1]) for i in range(len(self.dense))]

    def params(self) -> Params:
        return [(np.asarray(layer.kernel.numpy()), np.asarray(layer.bias.numpy())) for layer in self.dense]

    def training_loss(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.asarray(self.loss(self._targets(y), self.model(X, training=True))))

    def train(self, X: np.ndarray, y: np.ndarray, batches: list[list[np.ndarray]]) -> tuple[list[float], list[Params]]:
        import keras

        snapshots: list[Params] = []
        capture = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(self.params()))
        from impls.keras_backend import floatx

        # early stopping is out of the certificate: it trains without validation data, as the other loops do
        callbacks = [c for c in self.callbacks if not isinstance(c, keras.callbacks.EarlyStopping)]
        with floatx(self.spec.dtype):  # fit casts float NumPy inputs to floatx()
            history = self.model.fit(X, self._targets(y), batch_size=self.batch_size, epochs=len(batches),
                                     shuffle=False, verbose=0, callbacks=[*callbacks, capture])
        return [float(v) for v in history.history["loss"]], snapshots


class _FlaxTrainer(_Trainer):
    def __init__(self, spec: MLPSpec, model: Any, tx: Any, loss: Any, conventions: Conventions) -> None:
        import optax
        from flax import nnx

        self.spec, self.model, self.tx, self.loss, self.conventions = spec, model, tx, loss, conventions
        self.linears = [layer for layer in model.layers if isinstance(layer, nnx.Linear)]
        self.indices = loss is optax.softmax_cross_entropy_with_integer_labels

    def _precision(self) -> Any:
        import jax

        return jax.enable_x64(self.spec.dtype == "float64")

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if self.spec.task == "multiclass":
            return np.asarray(y, np.int32) if self.indices else np.eye(self.spec.n_outputs, dtype=self.spec.dtype)[y]
        return np.asarray(y, self.spec.dtype).reshape(len(y), -1)

    def _mean_loss(self, model: Any, X: Any, Y: Any) -> Any:
        return self.loss(model(X), Y).mean()

    def predict(self, X: np.ndarray) -> np.ndarray:
        with self._precision():
            self.model.eval()
            out = np.asarray(self.model(X))
            self.model.train()
        return _spec_output(self.spec, out)

    def gradients(self, X: np.ndarray, y: np.ndarray) -> Params:
        from flax import nnx

        with self._precision():
            self.model.eval()
            grads = nnx.grad(self._mean_loss)(self.model, X, self._targets(y))
            self.model.train()
            holder = nnx.clone(self.model)
            nnx.update(holder, grads)
            linears = [layer for layer in holder.layers if isinstance(layer, nnx.Linear)]
            return [(np.asarray(m.kernel.get_value()), np.asarray(m.bias.get_value())) for m in linears]

    def params(self) -> Params:
        return [(np.asarray(m.kernel.get_value()), np.asarray(m.bias.get_value())) for m in self.linears]

    def training_loss(self, X: np.ndarray, y: np.ndarray) -> float:
        with self._precision():
            self.model.train()
            return float(self._mean_loss(self.model, X, self._targets(y)))

    def train(self, X: np.ndarray, y: np.ndarray, batches: list[list[np.ndarray]]) -> tuple[list[float], list[Params]]:
        from flax import nnx

        losses, snapshots = [], []
        with self._precision():
            optimizer = nnx.Optimizer(self.model, self.tx, wrt=nnx.Param)
            Y = self._targets(y)
            self.model.train()
            for epoch_batches in batches:
                total = 0.0
                for idx in epoch_batches:
                    # the penalty lives in the transformation (decay, L1 gradient), never in the loss: added here
                    penalty = _penalty(self.spec, self.conventions, self.params())
                    loss, grads = nnx.value_and_grad(self._mean_loss)(self.model, X[idx], Y[idx])
                    optimizer.update(self.model, grads)
                    total += (float(loss) + penalty) * len(idx)
                losses.append(total / len(X))
                snapshots.append(self.params())
        return losses, snapshots


class _OurTrainer(_Trainer):
    def __init__(self, model: Any, config: TrainConfig) -> None:
        self.model, self.config, self.spec = model, config, model.spec

    def params(self) -> Params:
        return self.model.get_params()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.forward(X)

    def training_loss(self, X: np.ndarray, y: np.ndarray) -> float:
        from impls.numpy_mlp import penalty

        spec = self.spec
        if not hasattr(self, "_dropout_rng"):
            self._dropout_rng = np.random.default_rng(0)
        masks = spec.sample_dropout_masks(len(X), self._dropout_rng)
        return self.model.loss(X, y, dropout_masks=masks) - penalty(spec, self.model.get_params())

    def gradients(self, X: np.ndarray, y: np.ndarray) -> Params:
        spec = self.spec
        params = self.model.get_params()
        return [(gW - spec.l1 * np.sign(W) - spec.l2 * W, gb)
                for (gW, gb), (W, _) in zip(self.model.gradients(X, y), params)]

    def train(self, X: np.ndarray, y: np.ndarray, batches: list[list[np.ndarray]]) -> tuple[list[float], list[Params]]:
        losses, snapshots = [], []
        for epoch, epoch_batches in enumerate(batches, start=1):
            rate = self.config.learning_rate_at(epoch)
            total = sum(self.model.train_step(X[idx], y[idx], rate, optimizer=self.config.optimizer) * len(idx)
                        for idx in epoch_batches)
            losses.append(total / len(X))
            snapshots.append(self.model.get_params())
        return losses, snapshots


def _trainer(framework: str, port: Port, objects: tuple, batch_size: int) -> _Trainer:
    if framework == "torch":
        return _TorchTrainer(port.spec, *objects)
    if framework == "keras":
        return _KerasTrainer(port.spec, objects[0], objects[1], batch_size)
    if framework == "flax":
        return _FlaxTrainer(port.spec, *objects, port.conventions)
    return _OurTrainer(*objects)


def _source_copies(port: Port) -> tuple:
    """Fresh copies of the source's objects, so that :func:`verify` never trains the user's own."""
    if port.source == "torch":
        model, loss, optimizer, scheduler = port.source_objects
        clone = copy.deepcopy(model)
        twin = dict(zip(map(id, model.parameters()), clone.parameters()))
        groups = [{**{k: v for k, v in group.items() if k != "params"},
                   "params": [twin[id(p)] for p in group["params"]]} for group in optimizer.param_groups]
        fresh = type(optimizer)(groups, **optimizer.defaults)
        if scheduler is not None:  # built anew: a deep copy would keep its hook on the original optimizer's step
            options = {"gamma": scheduler.gamma, **({"step_size": scheduler.step_size} if hasattr(
                scheduler, "step_size") else {})}
            scheduler = type(scheduler)(fresh, **options)
        return clone, copy.deepcopy(loss), fresh, scheduler
    if port.source == "keras":
        import keras

        model, callbacks = port.source_objects
        from impls.keras_backend import floatx

        # private (checked: Keras 3.15.1): the loss tracker's dtype is the floatx() the user compiled under
        compiled_under = str(getattr(getattr(model, "_loss_tracker", None), "dtype", keras.config.floatx()))
        with floatx(compiled_under):
            clone = keras.models.clone_model(model)
            clone.set_weights(model.get_weights())
            optimizer = type(model.optimizer).from_config(model.optimizer.get_config())
            clone.compile(optimizer=optimizer, loss=model.loss)
        return clone, copy.deepcopy(list(callbacks))
    if port.source == "flax":
        from flax import nnx

        model, loss, tx = port.source_objects
        return nnx.clone(model), tx, loss
    from impls.registry import create

    model = create(port.source_objects[0], port.spec)
    model.set_params(port.params)
    return model, port.config


def _causes(port: Port, target: str, sides: Sequence[_Trainer]) -> list[tuple[str, str]]:
    """``(cause, words)`` of everything that lets this comparison differ beyond the float64 limits."""
    causes = []
    for deviation in port.deviations:
        cause = getattr(deviation, "cause", None)
        if cause not in DEVIATION_BOUNDS:
            raise UnsupportedModel(f"the deviation {str(deviation)!r} has no known cause, so no certificate can bound "
                                   f"it: record it as Deviation(text, cause), cause one of {sorted(DEVIATION_BOUNDS)}")
        causes.append((cause, str(deviation)))
    caveat = _keras_float64_caveat(port.spec.dtype) if target == "keras" else None
    if caveat is not None and caveat not in port.deviations:
        causes.append((caveat.cause, str(caveat)))
    if port.spec.dtype == "float32":
        causes.append(("float32", "the model is float32"))
    if port.spec.uses_dropout:
        causes.append(("dropout", f"dropout rates {list(port.spec.dropout_rates)}"))
    rounded = [side.loss_dtype for side in sides if getattr(side, "loss_dtype", port.spec.dtype) != port.spec.dtype]
    if rounded:
        causes.append(("loss_tracker", f"Keras reports the loss through a {rounded[0]} Mean"))
    return causes


def _paths(start: Params, snapshots: list[Params]) -> list[float]:
    """The relative distance travelled through each epoch: the sum of each epoch's ``max|delta theta|``, over
    ``max|theta|`` at that epoch (the normalisation of :func:`_rel`)."""
    paths, walked, previous = [], 0.0, np.concatenate([np.ravel(a) for a in _flat(start)]).astype(np.float64)
    for snapshot in snapshots:
        current = np.concatenate([np.ravel(a) for a in _flat(snapshot)]).astype(np.float64)
        walked += float(np.max(np.abs(current - previous)))
        paths.append(walked / max(float(np.max(np.abs(current))), 1e-300))
        previous = current
    return paths


def _run_limit(port: Port, bounds: list[tuple[str, DeviationBound]], steps: int, path: float, spread: float,
               loss: bool) -> tuple[float, str]:
    """The limit of a run's parameters (``loss=False``) or reported loss after ``steps`` updates, the source having
    travelled ``path``, and the remark that derives it."""
    limit, terms = LIMITS["run"], []
    for cause, bound in bounds:
        step = bound.step(port, steps) if callable(bound.step) else bound.step
        shares = [(RUN_MARGIN * step * path, f"{RUN_MARGIN:g} x {step:.1e}/step x path {path:.2g}"),
                  (RUN_MARGIN * bound.rounding * steps, f"{RUN_MARGIN:g} x {bound.rounding:.1e} x {steps} steps")]
        if loss:
            shares += [(bound.loss, f"{bound.loss:.0e}"),
                       (bound.spread * spread, f"{bound.spread:g} x spread {spread:.2g}")]
        else:
            shares.append((bound.path * path, f"{bound.path:g} x path {path:.2g}"))
        for share, how in shares:
            if share:
                limit += share
                terms.append(f"{cause}: {how}")
    return limit, f"{LIMITS['run']:.0e} + {' + '.join(terms)}" if terms else ""


def verify(port: Port, target: str, X: np.ndarray, y: np.ndarray, epochs: int = 2,
           batch_size: int | None = None) -> Certificate:
    """Train the source's objects with the source framework's loop and ``port.export(target)`` with the target's,
    on the same unshuffled batches, and compare: outputs and data-loss gradients at the start, parameters and
    reported losses after each epoch.  A reported loss is the full objective: where a side leaves the penalty
    out of the loss it reports (torch's ``weight_decay``, Optax's decay), the penalty at each step's parameters
    is added to it.  The source objects are copied first, never trained themselves.

    Every row has a limit: :data:`LIMITS` in float64, plus the bound of each cause of deviation present
    (:data:`DEVIATION_BOUNDS`: the port's :class:`Deviation` s, float32, dropout), derived in the row's remark.
    A bound on a run scales with the distance the *source* travelled, so a wrong export cannot widen its limit.
    """
    if port.config is None:
        raise UnsupportedModel("the port has no training setup (no optimizer was given)")
    spec = port.spec
    X = spec.check_X(X)
    y = np.asarray(y)
    size = batch_size or port.config.batch_size or len(X)
    batches = [batch_order(len(X), size, 0, epoch, shuffle=False) for epoch in range(1, epochs + 1)]
    steps = len(batches[0])
    source = _trainer(port.source, port, _source_copies(port), size)
    exported = port.export(target, steps_per_epoch=steps) if target == "flax" else port.export(target)
    other = _trainer(target, port, exported, size)
    causes = _causes(port, target, (source, other))
    bounds = [(cause, DEVIATION_BOUNDS[cause]) for cause, _ in causes]
    rows: list[tuple[str, float | None, float | None, str]] = []
    for quantity, diff, kind in (
            ("outputs at start", _rel(other.predict(X), source.predict(X)), "outputs"),
            ("data-loss gradients at start", _rel(_flat(other.gradients(X, y)), _flat(source.gradients(X, y))),
             "gradients")):
        shares = [(cause, getattr(bound, kind)) for cause, bound in bounds if getattr(bound, kind)]
        remark = " + ".join([f"{LIMITS['start']:.0e}", *(f"{cause}: {share:.0e}" for cause, share in shares)])
        rows.append((quantity, diff, LIMITS["start"] + sum(share for _, share in shares), remark if shares else ""))
    spread = 0.0
    if any(bound.spread for _, bound in bounds):
        draws = np.array([source.training_loss(X, y) for _ in range(SPREAD_DRAWS)])
        spread = float(np.std(draws, ddof=1) / max(abs(float(np.mean(draws))), 1e-300))
    start = source.params()
    source_losses, source_params = source.train(X, y, batches)
    other_losses, other_params = other.train(X, y, batches)
    paths = _paths(start, source_params)
    for epoch in range(epochs):
        limit, remark = _run_limit(port, bounds, steps * (epoch + 1), paths[epoch], spread, loss=False)
        rows.append((f"parameters after epoch {epoch + 1}", _rel(_flat(other_params[epoch]),
                                                                 _flat(source_params[epoch])), limit, remark))
    for epoch in range(epochs):
        limit, remark = _run_limit(port, bounds, steps * (epoch + 1), paths[epoch], spread, loss=True)
        rows.append((f"reported loss, epoch {epoch + 1}", _rel(other_losses[epoch], source_losses[epoch]), limit,
                     remark))
    return Certificate(port.source, target, rows, [f"{cause}: {words} ({DEVIATION_BOUNDS[cause].reason})"
                                                   for cause, words in causes])


SPREAD_DRAWS = 32
"""Training-mode losses :func:`verify` draws from the source at the start to measure the spread dropout gives."""


def dropout_loss(port: Port, target: str, X: np.ndarray, y: np.ndarray, draws: int = 200) -> tuple[float, float]:
    """Mean and standard error of the training-mode data loss of ``port.export(target)`` over ``draws`` forward
    passes, each with the framework's own dropout masks (``"numpy"``: the spec's masks from the reference): with
    dropout, frameworks agree in distribution, not draw by draw."""
    from impls.registry import create

    spec = port.spec
    X = spec.check_X(X)
    y = np.asarray(y)
    if target == "numpy":
        model = create("numpy", spec)
        model.set_params(port.params)
        trainer: _Trainer = _OurTrainer(model, port.config or TrainConfig())
    else:
        size = port.config.batch_size if port.config is not None and port.config.batch_size else len(X)
        exported = port.export(target, steps_per_epoch=1) if target == "flax" else port.export(target)
        trainer = _trainer(target, port, exported, size)
    values = np.array([trainer.training_loss(X, y) for _ in range(draws)])
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(draws))


# ---- standalone scripts ---------------------------------------------------------------------------


def _source_of(*objects: Any) -> str:
    """The source code of functions and classes, for a script that must not import this project."""
    return "\n\n".join(textwrap.dedent(inspect.getsource(obj)).strip() for obj in objects)


def _literal(value: object) -> str:
    """``value`` as Python source that evaluates to it and can do nothing else: a script's numbers, names and paths.

    Strings go through ``repr`` (every quote, backslash, newline and non-printable character escaped); numbers
    become plain ``int``/``float`` literals (a NumPy scalar's repr would be a call, ``np.float64(0.9)``); a float
    that has no literal (``inf``, ``nan``) is refused rather than written as a name."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (int, np.integer)):
        return repr(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ValueError(f"{value!r} has no Python literal: a script takes finite numbers only")
        return repr(float(value))
    if isinstance(value, str):
        text = repr(value)
        # double quotes, as the rest of the script, where that needs no escaping
        return f'"{text[1:-1]}"' if text.startswith("'") and '"' not in value else text
    if isinstance(value, (list, tuple)):
        items = [_literal(item) for item in value]
        if isinstance(value, list):
            return f"[{', '.join(items)}]"
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    raise TypeError(f"no script literal for {type(value).__name__} {value!r}")


def _docstring(text: str) -> str:
    """``text`` as a triple-quoted literal whose value is exactly ``text``: backslashes and double quotes escaped,
    and every non-printable character but the newline (a carriage return, a form feed, a NUL, a lone surrogate)
    written as its escape, so that no text can end the string or change the code after it."""
    out = []
    for char in text:
        if char in '\\"':
            out.append("\\" + char)
        elif char == "\n" or char.isprintable():
            out.append(char)
        else:
            out.append(repr(char)[1:-1])  # \r, \x0c, \x00, \u2028, \udc80, ...: the escape repr gives
    return '"""' + "".join(out) + '"""'


def _script_head(port: Port, framework: str, weights: str, imports: str) -> str:
    notes = port.notes + port.export_notes(framework) + [f"deviation: {d}" for d in port.deviations]
    config = port.config
    spec = port.spec
    doc = "\n".join([
        f"The {spec.n_inputs}-input MLP {list(spec.layer_sizes)} ported from {port.source} to {framework}, with its "
        "training setup.",
        "",
        f"Written by impls.port; standalone (NumPy and {framework} only). Parameters: {weights} beside this file;",
        "data: data.npz beside it (X, y), or random data of the right shape.",
        "",
        *[f"* {note}" for note in notes],
        ""])
    lines = [
        _docstring(doc),
        "",
        "from __future__ import annotations",
        "",
        "from pathlib import Path",
        "",
        "import numpy as np",
        imports,
        "",
        "HERE = Path(__file__).resolve().parent",
        f"WEIGHTS = HERE / {_literal(weights)}",
        f"LAYER_SIZES = {_literal(list(spec.layer_sizes))}",
        f"DTYPE = {_literal(spec.dtype)}",
        f"EPOCHS, BATCH_SIZE = {_literal(config.epochs)}, {_literal(config.batch_size)}",
        f"LEARNING_RATE, DECAY, DECAY_EVERY = {_literal(config.learning_rate)}, {_literal(config.lr_decay)}, "
        f"{_literal(port.conventions.decay_every)}",
        f"TASK = {_literal(spec.task)}",
        "",
        "",
        "def load_data() -> tuple[np.ndarray, np.ndarray]:",
        '    """``data.npz`` beside this file, or 64 random samples."""',
        '    if (HERE / "data.npz").exists():',
        '        data = np.load(HERE / "data.npz")',
        '        return data["X"].astype(DTYPE), data["y"]',
        "    rng = np.random.default_rng(0)",
        "    X = rng.normal(size=(64, LAYER_SIZES[0])).astype(DTYPE)",
        '    if TASK == "regression":',
        "        return X, rng.normal(size=(64, LAYER_SIZES[-1])).astype(DTYPE)",
        '    return X, rng.integers(0, max(LAYER_SIZES[-1], 2), 64)',
        "",
        "",
        "def save_trained(arrays: list[np.ndarray]) -> None:",
        '    """The trained parameters as W0, b0, W1, ... (kernels (fan_in, fan_out)) beside the weights file."""',
        '    names = [f"{kind}{layer}" for layer in range(len(arrays) // 2) for kind in ("W", "b")]',
        '    np.savez(WEIGHTS.with_suffix(".trained.npz"), **dict(zip(names, arrays)))',
        "",
    ]
    return "\n".join(lines)


def _torch_script(port: Port, weights: str) -> str:
    spec, conv, config = port.spec, port.conventions, port.config
    VelocitySGD, KerasAdam, PenalizedLoss = _torch_optimizers()
    activation = {"relu": "nn.ReLU()", "tanh": "nn.Tanh()", "sigmoid": "nn.Sigmoid()", "identity": "nn.Identity()",
                  "leaky_relu": f"nn.LeakyReLU({_literal(spec.leaky_slope)})",
                  "elu": f"nn.ELU({_literal(spec.elu_alpha)})"}
    layers = []
    for layer, (fan_in, fan_out) in enumerate(zip(spec.layer_sizes, spec.layer_sizes[1:])):
        layers.append(f"nn.Linear({_literal(fan_in)}, {_literal(fan_out)}, dtype=dtype)")
        if layer < spec.n_layers - 1:
            layers.append(activation[spec.hidden_activation])
            if spec.dropout_rates[layer]:
                layers.append(f"nn.Dropout({_literal(spec.dropout_rates[layer])})")
    loss = {"binary_crossentropy": "nn.BCEWithLogitsLoss()", "categorical_crossentropy": "nn.CrossEntropyLoss()",
            "mse": "nn.MSELoss()", "mae": "nn.L1Loss()"}[spec.loss]
    helpers = []
    if spec.l1 or conv.bias_l1:
        helpers.append(PenalizedLoss)
        loss = f"PenalizedLoss({loss}, model, {_literal(spec.l1)}, {_literal(conv.bias_l1)})"
    rule = config.optimizer
    groups = (f'[{{"params": weights, "weight_decay": {_literal(spec.l2)}}}, '
              f'{{"params": biases, "weight_decay": {_literal(conv.bias_l2)}}}]')
    if isinstance(rule, Adam):
        kind = "KerasAdam" if conv.adam_epsilon == "uncorrected" else "optim.Adam"
        if kind == "KerasAdam":
            helpers.append(KerasAdam)
        optimizer = (f"{kind}({groups}, lr=LEARNING_RATE, betas=({_literal(rule.beta1)}, {_literal(rule.beta2)}), "
                     f"eps={_literal(rule.epsilon)})")
    elif rule.momentum and _changing_rate(port) and conv.momentum_form == "velocity":
        helpers.append(VelocitySGD)
        optimizer = f"VelocitySGD({groups}, lr=LEARNING_RATE, momentum={_literal(rule.momentum)})"
    else:
        optimizer = f"optim.SGD({groups}, lr=LEARNING_RATE, momentum={_literal(rule.momentum)})"
    scheduler = "None"
    if config.lr_decay != 1.0:
        scheduler = ("optim.lr_scheduler.ExponentialLR(optimizer, DECAY)" if conv.decay_every == 1 else
                     "optim.lr_scheduler.StepLR(optimizer, DECAY_EVERY, DECAY)")
    targets = ("torch.as_tensor(y, dtype=torch.long)" if spec.task == "multiclass"
               else "torch.as_tensor(np.asarray(y, DTYPE).reshape(len(y), -1))")
    body = f'''

{_source_of(*helpers) if helpers else ""}


def build_model() -> nn.Sequential:
    """The layers, with the parameters of WEIGHTS (a torch weight is the transposed (fan_in, fan_out) kernel)."""
    dtype = getattr(torch, DTYPE)
    model = nn.Sequential({", ".join(layers)})
    arrays = np.load(WEIGHTS)
    with torch.no_grad():
        for layer, linear in enumerate(m for m in model if isinstance(m, nn.Linear)):
            linear.weight.copy_(torch.as_tensor(arrays[f"W{{layer}}"].T))
            linear.bias.copy_(torch.as_tensor(arrays[f"b{{layer}}"]))
    return model


def train(model: nn.Sequential, X: np.ndarray, y: np.ndarray) -> nn.Sequential:
    """The ported setup in PyTorch's usual loop: batches in order, scheduler.step() once per epoch."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    weights, biases = [m.weight for m in linears], [m.bias for m in linears]
    loss_fn = {loss}
    optimizer = {optimizer}
    scheduler = {scheduler}
    inputs, targets = torch.as_tensor(X), {targets}
    size = BATCH_SIZE or len(X)
    model.train()
    for epoch in range(EPOCHS):
        total = 0.0
        for start in range(0, len(X), size):
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[start:start + size]), targets[start:start + size])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(inputs[start:start + size])
        if scheduler is not None:
            scheduler.step()
        print(f"epoch {{epoch + 1}}: loss {{total / len(X):.6f}}")
    return model


if __name__ == "__main__":
    model = train(build_model(), *load_data())
    save_trained([t.detach().numpy().T if t.ndim == 2 else t.detach().numpy()
                  for m in model if isinstance(m, nn.Linear) for t in (m.weight, m.bias)])
'''
    return _script_head(port, "torch", weights, "import torch\nfrom torch import nn, optim") + body


def _keras_script(port: Port, weights: str) -> str:
    from impls.keras_backend import abs_, exact
    from impls.keras_mlp import SpecAdam, adam_update, kernel_penalty

    spec, conv, config = port.spec, port.conventions, port.config
    helpers: list[Any] = []
    activation = {"relu": '"relu"', "tanh": '"tanh"', "sigmoid": '"sigmoid"', "identity": '"linear"',
                  "elu": f"lambda z: keras.activations.elu(z, {_literal(spec.elu_alpha)})",
                  "leaky_relu": f"lambda z: ops.where(z > 0, z, {_literal(spec.leaky_slope)} * z)"}
    regularizers = ""
    for what, l1, l2 in (("kernel", spec.l1, spec.l2), ("bias", conv.bias_l1, conv.bias_l2)):
        if l1 or l2:  # kernel_penalty: exact factors on TensorFlow, abs'(0) = 0 on JAX (keras.regularizers: neither)
            helpers += [exact, abs_, kernel_penalty]
            regularizers += (f"{what}_regularizer=functools.partial(kernel_penalty, "
                             f"Penalty({_literal(l1)}, {_literal(l2)})), ")
    tail = {"sigmoid": '"sigmoid"', "softmax": '"softmax"', "identity": '"linear"'}[spec.loss_rule.output_activation]
    layers = []
    for layer, width in enumerate(spec.layer_sizes[1:]):
        hidden = layer < spec.n_layers - 1
        act = activation[spec.hidden_activation] if hidden else tail
        layers.append(f"keras.layers.Dense({_literal(width)}, activation={act}, {regularizers}dtype=DTYPE)")
        if hidden and spec.dropout_rates[layer]:
            layers.append(f"keras.layers.Dropout({_literal(spec.dropout_rates[layer])}, dtype=DTYPE)")
    loss = {"binary_crossentropy": "keras.losses.BinaryCrossentropy()",
            "categorical_crossentropy": "keras.losses.SparseCategoricalCrossentropy()",
            "mse": "keras.losses.MeanSquaredError()", "mae": "keras.losses.MeanAbsoluteError()"}[spec.loss]
    rule = config.optimizer
    if isinstance(rule, Adam) and conv.adam_epsilon == "uncorrected":
        optimizer = (f"keras.optimizers.Adam(beta_1=np.float64({_literal(rule.beta1)}), "
                     f"beta_2=np.float64({_literal(rule.beta2)}), epsilon=np.float64({_literal(rule.epsilon)}))")
    elif isinstance(rule, Adam):
        helpers += [exact, adam_update, SpecAdam]
        optimizer = f"SpecAdam(AdamRule({_literal(rule.beta1)}, {_literal(rule.beta2)}, {_literal(rule.epsilon)}))"
    elif rule.momentum and _changing_rate(port) and conv.momentum_form == "buffer":
        helpers.append(_keras_buffer_sgd())
        optimizer = f"BufferSGD(LEARNING_RATE, np.float64({_literal(rule.momentum)}))"
    else:
        optimizer = f"keras.optimizers.SGD(momentum=np.float64({_literal(rule.momentum)}))"
    callbacks = ["keras.callbacks.LearningRateScheduler(lambda epoch, _: LEARNING_RATE * DECAY ** (epoch // "
                 "DECAY_EVERY))"]
    if config.early_stopping is not None:
        stop = config.early_stopping
        callbacks.append(f'keras.callbacks.EarlyStopping("val_loss", min_delta={_literal(stop.min_delta)}, '
                         f"patience={_literal(stop.patience)}, restore_best_weights={_literal(stop.restore_best)})")
    unique = list(dict.fromkeys(helpers))
    body = f'''
Penalty = collections.namedtuple("Penalty", "l1 l2")  # what kernel_penalty reads of the spec
AdamRule = collections.namedtuple("AdamRule", "beta1 beta2 epsilon")  # what SpecAdam reads of the spec
Tensor = object


{_source_of(*unique) if unique else ""}


def build_model() -> keras.Sequential:
    """The layers, compiled, with the parameters of WEIGHTS (Keras kernels are (fan_in, fan_out))."""
    keras.config.set_floatx(DTYPE)  # layers, losses, optimizer variables and fit's inputs in DTYPE
    model = keras.Sequential([keras.Input(({_literal(spec.n_inputs)},), dtype=DTYPE),
                              {(", " + chr(10) + "                              ").join(layers)}])
    arrays = np.load(WEIGHTS)
    model.set_weights([arrays[f"{{kind}}{{layer}}"] for layer in range(len(LAYER_SIZES) - 1) for kind in ("W", "b")])
    optimizer = {optimizer}
    optimizer.learning_rate = LEARNING_RATE
    model.compile(optimizer=optimizer, loss={loss})
    return model


def train(model: keras.Sequential, X: np.ndarray, y: np.ndarray) -> keras.Sequential:
    """model.fit on the batches in order (shuffle=False), the rate set per epoch by the scheduler."""
    callbacks = [{", ".join(callbacks)}]
    targets = y if TASK == "multiclass" else np.asarray(y, DTYPE).reshape(len(y), -1)
    model.fit(X, targets, batch_size=BATCH_SIZE or len(X), epochs=EPOCHS, shuffle=False, verbose=2,
              callbacks=[c for c in callbacks if not isinstance(c, keras.callbacks.EarlyStopping)])
    return model


if __name__ == "__main__":
    model = train(build_model(), *load_data())
    save_trained([np.asarray(w) for w in model.get_weights()])
'''
    imports = "import collections\nimport functools\n\nimport keras\nfrom keras import ops"
    return _script_head(port, "keras", weights, imports) + body


def _flax_script(port: Port, weights: str) -> str:
    spec, conv, config = port.spec, port.conventions, port.config
    if spec.loss == "mae":
        raise UnsupportedModel("Optax has no mean absolute error")
    helpers: list[Any] = []
    activation = {"relu": "nnx.relu", "tanh": "nnx.tanh", "sigmoid": "nnx.sigmoid", "identity": None,
                  "leaky_relu": f"functools.partial(nnx.leaky_relu, negative_slope={_literal(spec.leaky_slope)})",
                  "elu": f"functools.partial(nnx.elu, alpha={_literal(spec.elu_alpha)})"}[spec.hidden_activation]
    layers = []
    for layer, (fan_in, fan_out) in enumerate(zip(spec.layer_sizes, spec.layer_sizes[1:])):
        layers.append(f"nnx.Linear({_literal(fan_in)}, {_literal(fan_out)}, dtype=DTYPE, param_dtype=DTYPE, rngs=rngs)")
        if layer < spec.n_layers - 1:
            layers += [activation] if activation else []
            if spec.dropout_rates[layer]:
                layers.append(f"nnx.Dropout({_literal(spec.dropout_rates[layer])}, rngs=rngs)")
    loss = {"binary_crossentropy": "optax.sigmoid_binary_cross_entropy",
            "categorical_crossentropy": "optax.softmax_cross_entropy_with_integer_labels",
            "mse": "optax.squared_error"}[spec.loss]
    schedule = "LEARNING_RATE"
    if config.lr_decay != 1.0:
        helpers.append(epoch_decay)
        schedule = "epoch_decay(LEARNING_RATE, DECAY, steps_per_epoch * DECAY_EVERY)"
    chain = []
    if spec.l1 or conv.bias_l1:
        helpers.append(add_l1_gradient)
        chain.append(f"add_l1_gradient({_literal(spec.l1)}, {_literal(conv.bias_l1)})")
    if spec.l2:
        chain.append(f"optax.add_decayed_weights({_literal(spec.l2)}, mask=kernels)")
    if conv.bias_l2:
        chain.append(f"optax.add_decayed_weights({_literal(conv.bias_l2)}, mask=biases)")
    rule = config.optimizer
    if isinstance(rule, Adam) and conv.adam_epsilon == "uncorrected":
        helpers.append(keras_adam)
        chain.append(f"keras_adam(schedule, {_literal(rule.beta1)}, {_literal(rule.beta2)}, {_literal(rule.epsilon)})")
    elif isinstance(rule, Adam):
        chain.append(f"optax.adam(schedule, {_literal(rule.beta1)}, {_literal(rule.beta2)}, {_literal(rule.epsilon)})")
    elif rule.momentum and _changing_rate(port) and conv.momentum_form == "velocity":
        chain.append(f"optax.chain(optax.scale_by_learning_rate(schedule), "
                     f"optax.trace(decay={_literal(rule.momentum)}))")
    else:
        chain.append(f"optax.sgd(schedule, momentum={_literal(rule.momentum or None)})")
    targets = "y.astype(np.int32)" if spec.task == "multiclass" else "np.asarray(y, DTYPE).reshape(len(y), -1)"
    transformation = chain[0] if len(chain) == 1 else f"optax.chain({', '.join(chain)})"
    body = f'''
jax.config.update("jax_enable_x64", DTYPE == "float64")  # float64 in JAX needs x64 mode


{_source_of(*helpers) if helpers else ""}


def kernels(params):
    return jax.tree.map(lambda p: p.ndim == 2, params)


def biases(params):
    return jax.tree.map(lambda p: p.ndim == 1, params)


def build_model() -> nnx.Sequential:
    """The layers, with the parameters of WEIGHTS (nnx.Linear kernels are (fan_in, fan_out))."""
    rngs = nnx.Rngs(0)
    model = nnx.Sequential({", ".join(layers)})
    arrays = np.load(WEIGHTS)
    for layer, linear in enumerate(m for m in model.layers if isinstance(m, nnx.Linear)):
        linear.kernel.set_value(jnp.asarray(arrays[f"W{{layer}}"]))
        linear.bias.set_value(jnp.asarray(arrays[f"b{{layer}}"]))
    return model


def train(model: nnx.Sequential, X: np.ndarray, y: np.ndarray) -> nnx.Sequential:
    """nnx.value_and_grad and an nnx.Optimizer over the batches in order."""
    size = BATCH_SIZE or len(X)
    steps_per_epoch = -(-len(X) // size)
    schedule = {schedule}
    optimizer = nnx.Optimizer(model, {transformation}, wrt=nnx.Param)
    targets = {targets}

    def mean_loss(model, x, labels):
        return {loss}(model(x), labels).mean()

    @nnx.jit
    def step(model, optimizer, x, labels):
        loss, grads = nnx.value_and_grad(mean_loss)(model, x, labels)
        optimizer.update(model, grads)
        return loss

    for epoch in range(EPOCHS):
        total = 0.0
        for start in range(0, len(X), size):
            total += float(step(model, optimizer, X[start:start + size], targets[start:start + size])) * len(
                X[start:start + size])
        print(f"epoch {{epoch + 1}}: loss {{total / len(X):.6f}}")
    return model


if __name__ == "__main__":
    model = train(build_model(), *load_data())
    save_trained([np.asarray(v) for m in model.layers if isinstance(m, nnx.Linear)
                  for v in (m.kernel.get_value(), m.bias.get_value())])
'''
    imports = "import functools\n\nimport jax\nimport jax.numpy as jnp\nimport optax\nfrom flax import nnx"
    return _script_head(port, "flax", weights, imports) + body


SCRIPTS: dict[str, Callable[[Port, str], str]] = {"torch": _torch_script, "keras": _keras_script,
                                                  "flax": _flax_script}
"""The frameworks :meth:`Port.script` writes for."""


# ---- command line ----------------------------------------------------------------------------

PROG = "python -m impls.port"


class CommandError(Exception):
    """A command-line error: its message is the one line the command prints before it exits with status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors raised as :class:`CommandError` (one line, no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(message)


def _one_line(text: str) -> str:
    """``text`` with every non-printable character (a newline in a file name, a lone surrogate) as its escape."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same resolved path, or one file reached through a link."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a symbolic-link loop: compare what exists below
        pass
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def _check_name(path: Path, what: str) -> None:
    """A name the file system can take: no NUL, and encodable (a lone surrogate other than an undecodable byte's
    is not)."""
    if "\0" in str(path):
        raise CommandError(f"{what} contains a NUL character")
    try:
        os.fsencode(path)
    except UnicodeError:
        raise CommandError(f"{what} {str(path)!r} cannot be encoded as a file name") from None


def _check_source(source: Path) -> None:
    _check_name(source, "the source's name")
    if source.suffix not in (".keras", ".npz"):
        raise CommandError(f"{source}: expected a .keras or .npz file")
    if source.is_dir():
        raise CommandError(f"{source} is a folder, not a .keras or .npz file")
    if not source.exists():
        raise CommandError(f"{source}: no such file")
    if not source.is_file():
        raise CommandError(f"{source} is not a regular file")


def _check_outputs(source: Path, script: Path, weights: Path, force: bool) -> None:
    """Refuse outputs that would destroy a file: the source, each other, a folder, an existing file without
    ``force``; and a folder that is not there."""
    _check_name(script, "--out")
    if script.suffix != ".py":
        raise CommandError(f"--out {script}: the script's name must end in .py (its weights are written beside it, "
                           "the same name ending in .npz)")
    folder = script.parent
    if not folder.exists():
        raise CommandError(f"the folder {folder} does not exist (--out {script})")
    if not folder.is_dir():
        raise CommandError(f"{folder} is not a folder (--out {script})")
    for path, what in ((script, "the script"), (weights, "its weights")):
        if _same_file(path, source):
            raise CommandError(f"--out {script} would write {what} to {path}, which is the source {source}: choose "
                               "another name")
        if path.is_dir():
            raise CommandError(f"--out {script} would write {what} to {path}, which is a folder")
    if _same_file(script, weights):
        raise CommandError(f"--out {script}: the script and its weights {weights} would be one file")
    existing = [str(path) for path in (script, weights) if os.path.lexists(path)]
    if existing and not force:
        raise CommandError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: pass --force "
                           "to replace")


def _reserve_beside(path: Path) -> tuple[int, Path]:
    """A new, uniquely named hidden file beside ``path``, open for writing (mode ``0o666`` less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _commit(tmp: Path, target: Path, force: bool) -> None:
    """Move the finished ``tmp`` to ``target`` in one step: with ``force`` over an existing file (keeping its
    permissions), else only where no file is (a hard link fails on an existing name, with no window in between)."""
    if force:
        if target.is_file():
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise CommandError(f"{target} appeared while writing: nothing replaced (pass --force to replace)") from None
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        # a file system without hard links: check, then rename (the only place where a race is possible)
        if os.path.lexists(target):
            raise CommandError(f"{target} already exists: pass --force to replace") from None
        os.replace(tmp, target)
    else:
        tmp.unlink()


NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV}
"""``os.link`` errors that mean the file system has no hard links (FAT, some network and FUSE file systems)."""


def _write_outputs(script: Path, text: str, weights: Path, ported: Port, force: bool) -> None:
    """The weights (through :func:`impls.exchange.save`) and the script, each to a temporary file beside its target
    and then moved over it, so that no file is ever half written; if the second cannot be placed, the first, if
    new, is removed again."""
    from impls.exchange import save

    staged: list[Path] = []
    placed: list[Path] = []
    target = weights
    try:
        fd, weights_tmp = _reserve_beside(weights)
        staged.append(weights_tmp)
        os.close(fd)
        save(weights_tmp, ported.spec, ported.params)  # atomic itself: writes beside our name and renames over it
        target = script
        fd, script_tmp = _reserve_beside(script)
        staged.append(script_tmp)
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))  # Python source is UTF-8, whatever the locale
        for tmp, target in ((weights_tmp, weights), (script_tmp, script)):
            existed = os.path.lexists(target)
            _commit(tmp, target, force)
            if not existed:
                placed.append(target)
    except BaseException as exc:
        for path in staged:
            path.unlink(missing_ok=True)
        if target == script:
            for path in placed:
                path.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # its file name would be the temporary one: name the target instead
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise CommandError(f"cannot write {target}: {reason}") from None
        raise


def _import_keras_file(source: Path, args: argparse.Namespace) -> tuple[Port, list[str]]:
    """The port of a ``.keras`` file, and what Keras warned while reading it."""
    import warnings
    import zipfile

    for flag in ("learning_rate", "momentum", "lr_decay"):
        if getattr(args, flag) is not None:
            raise CommandError(f"--{flag.replace('_', '-')} sets the training of a .npz source; a .keras file "
                               "carries its own optimizer")
    if "tensorflow" not in sys.modules:  # TensorFlow's C++ start-up messages are not this command's to print
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not zipfile.is_zipfile(source):
        raise CommandError(f"{source} is not a Keras model file (a .keras file is a zip archive; this one is not, or "
                           "is cut short)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            import keras

            model = keras.models.load_model(source)
        except Exception as exc:  # Keras raises anything on a file it cannot read: ValueError, OSError, KeyError...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CommandError(f"{source}: Keras cannot read it ({type(exc).__name__}: {first})") from None
    ported = import_model(model, epochs=args.epochs, batch_size=args.batch_size,
                          steps_per_epoch=args.steps_per_epoch)
    return ported, [f"Keras, reading {source.name}: {warning.message}" for warning in caught]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m impls.port SOURCE --to FRAMEWORK --out FILE.py``: a standalone training script for FRAMEWORK from
    a ``.keras`` file or one of this project's ``.npz`` files, its parameters written beside it (``FILE.npz``).
    A ``.npz`` holds no training setup: the flags give it.  Existing files are replaced only with ``--force``, the
    source never.  Exit status: 0 on success, 2 on an error (one line on stderr)."""
    parser = _Parser(prog=PROG, description=main.__doc__)
    parser.add_argument("source", type=Path, help="a .keras model file or a .npz of this project")
    parser.add_argument("--to", required=True, choices=sorted(SCRIPTS), help="the framework to write for")
    parser.add_argument("--out", required=True, type=Path, help="the script to write (.py); its weights go beside it")
    parser.add_argument("--force", action="store_true", help="replace the script and weights files if they exist")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="steps of an epoch, to read a Keras ExponentialDecay as a per-epoch decay (.keras only)")
    parser.add_argument("--learning-rate", type=float, default=None, help=".npz sources only (default 0.1)")
    parser.add_argument("--momentum", type=float, default=None, help=".npz sources only (default 0)")
    parser.add_argument("--lr-decay", type=float, default=None, help=".npz sources only (default 1, no decay)")
    try:
        args = parser.parse_args(argv)
        source, script = args.source, args.out
        _check_source(source)
        weights = script.with_suffix(".npz") if script.suffix == ".py" else script
        _check_outputs(source, script, weights, args.force)
        warned: list[str] = []
        try:
            if source.suffix == ".keras":
                ported, warned = _import_keras_file(source, args)
            else:
                if args.steps_per_epoch is not None:
                    raise CommandError("--steps-per-epoch reads a Keras schedule: a .npz source has none")
                config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                     learning_rate=0.1 if args.learning_rate is None else args.learning_rate,
                                     momentum=args.momentum or 0.0,
                                     lr_decay=1.0 if args.lr_decay is None else args.lr_decay, shuffle=False)
                ported = import_model(source, config=config)
            text = ported.script(args.to, weights=weights.name)
        except (ValueError, TypeError, OSError) as exc:  # UnsupportedModel is a ValueError
            raise CommandError(str(exc)) from None
        _write_outputs(script, text, weights, ported, args.force)
    except CommandError as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    _say(f"wrote {script} and {weights}")
    for note in ported.notes + ported.export_notes(args.to) + [f"deviation: {d}" for d in ported.deviations] + warned:
        _say(f"- {note}")
    return 0


def _say(text: str) -> None:
    """One line on stdout, whatever characters it holds and whatever the stream's encoding."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    print(_one_line(text).encode(encoding, "backslashreplace").decode(encoding))


if __name__ == "__main__":
    sys.exit(main())
