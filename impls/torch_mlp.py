"""The spec in PyTorch: ``nn.Linear`` layers, autograd for gradients, the update written out under ``torch.no_grad``.

The file follows the skeleton every implementation shares (:mod:`impls.base`).  Where PyTorch's
defaults differ from the spec, the mapping is made here (each one is pinned by
``tests/frameworks/test_torch_conventions.py``):

* ``nn.Linear.weight`` is ``(out, in)``: transposed in :meth:`TorchMLP.get_params` and
  :meth:`TorchMLP._set_params`.
* ``nn.Linear`` initializes itself with ``kaiming_uniform_(a=sqrt(5))`` and a uniform bias
  from the *global* RNG: layers are built with ``nn.utils.skip_init`` and drawn with
  ``torch.nn.init`` functions from a per-model ``torch.Generator``; biases are zero.
* ``nn.BCELoss`` on probabilities clamps ``log`` at -100: losses are computed from logits
  (``F.binary_cross_entropy_with_logits``, ``F.cross_entropy`` with probability targets).
* ``torch.optim.SGD`` keeps ``buf <- mu buf + g; p <- p - lr buf``, which equals the spec's
  ``v <- mu v - lr g`` only while ``lr`` is constant; its ``weight_decay`` adds ``wd * p`` to the
  gradient of every parameter in the group (biases too, unless put in a group of their own) and
  never enters the reported loss.  So the update is written out with the spec's velocity, and the
  penalty is part of the objective autograd differentiates.
* ``torch.optim.Adam`` is the spec's :class:`~impls.spec.Adam`, epsilon placement included; the
  update is written out anyway so that the compiled mode covers it.
* ``nn.Dropout`` draws from the global RNG: each model draws its keep-masks from its own
  ``torch.Generator`` and passes them to the forward pass as the spec's inverted-dropout scales,
  so runs are deterministic per model seed, the global RNG is left alone, and a compiled step
  (which takes the scales as inputs) sees the same masks as an eager one.
* ``torch.compile`` guards a Python float argument as a constant (a new value compiles again), and
  a function past ``torch._dynamo.config.recompile_limit`` (8) compiled versions runs eagerly with
  only a logged warning: the compiled mode passes the learning rate as a 0-d tensor and compiles
  with ``fullgraph=True``, under which reaching the limit is an error.

Autograd's derivatives at the kink ``z = 0`` already take the spec's left branch
(``relu'(0) = 0``, ``leaky_relu'(0) = slope``, ``elu'(0) = alpha``, ``d|w|/dw (0) = 0``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  (the PyTorch convention)
from torch import nn, optim

from impls.base import MLP, History, NativeRun, check_native_support
from impls.spec import SGD, Adam, MLPSpec, Optimizer, Params, TrainConfig

DTYPES = {"float32": torch.float32, "float64": torch.float64}

Layers = nn.ModuleList
"""The parameters: one ``nn.Linear`` per layer, ``weight (fan_out, fan_in)`` and ``bias (fan_out,)``."""

Scales = list[torch.Tensor | None]
"""Inverted-dropout multipliers ``keep / (1 - p)``, ``(n, width)`` per hidden layer; ``None``: no dropout there."""


# ---- parameters ----------------------------------------------------------------------


INITIALIZERS: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "normal": lambda weight, scale, generator: nn.init.normal_(weight, 0.0, scale, generator=generator),
    "uniform": lambda weight, scale, generator: nn.init.uniform_(weight, -scale, scale, generator=generator),
    "zeros": lambda weight, scale, generator: nn.init.zeros_(weight),
}
"""``torch.nn.init`` draws by :class:`~impls.spec.InitRule` distribution (``normal_`` is untruncated)."""


def init_params(spec: MLPSpec, seed: int) -> Layers:
    """``nn.Linear`` layers in the spec's dtype, weights drawn by the spec's rules from
    ``torch.Generator().manual_seed(seed)``, layer by layer; zero biases.

    ``nn.utils.skip_init`` skips ``nn.Linear``'s own draw, which would use the global RNG.
    """
    generator = torch.Generator().manual_seed(seed)
    layers = nn.ModuleList(
        nn.utils.skip_init(nn.Linear, fan_in, fan_out, dtype=DTYPES[spec.dtype])
        for fan_in, fan_out in zip(spec.layer_sizes[:-1], spec.layer_sizes[1:])
    )
    with torch.no_grad():
        for linear, rule in zip(layers, spec.init_rules()):
            INITIALIZERS[rule.distribution](linear.weight, rule.scale, generator)
            nn.init.zeros_(linear.bias)
    return layers


# ---- activations ---------------------------------------------------------------------


HIDDEN_ACTIVATIONS: dict[str, Callable[[MLPSpec, torch.Tensor], torch.Tensor]] = {
    "sigmoid": lambda spec, z: torch.sigmoid(z),
    "tanh": lambda spec, z: torch.tanh(z),
    "relu": lambda spec, z: torch.relu(z),
    "leaky_relu": lambda spec, z: F.leaky_relu(z, spec.leaky_slope),
    "elu": lambda spec, z: F.elu(z, spec.elu_alpha),
    "identity": lambda spec, z: z,
}


def activation(spec: MLPSpec, z: torch.Tensor) -> torch.Tensor:
    """The spec's hidden activation of the pre-activations ``z``, elementwise."""
    return HIDDEN_ACTIVATIONS[spec.hidden_activation](spec, z)


OUTPUT_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "softmax": lambda z: torch.softmax(z, dim=1),
    "identity": lambda z: z,
}


def output(spec: MLPSpec, z: torch.Tensor) -> torch.Tensor:
    """Probabilities (sigmoid/softmax) or values from the logits ``z: (n, k)``."""
    return OUTPUT_ACTIVATIONS[spec.loss_rule.output_activation](z)


# ---- the forward pass ----------------------------------------------------------------


def logits(spec: MLPSpec, params: Layers, X: torch.Tensor, scales: Scales) -> torch.Tensor:
    """Output-layer pre-activations ``(n, n_outputs)`` of ``X: (n, n_inputs)``."""
    a = X
    for linear, scale in zip(params[:-1], scales):
        a = activation(spec, linear(a))
        if scale is not None:
            a = a * scale
    return params[-1](a)


# ---- losses --------------------------------------------------------------------------


DATA_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "binary_crossentropy": F.binary_cross_entropy_with_logits,  # softplus(z) - y z, mean over elements
    "categorical_crossentropy": F.cross_entropy,  # probability (one-hot) targets: mean over samples
    "mse": F.mse_loss,
    "mae": F.l1_loss,
}


def data_loss(spec: MLPSpec, z: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Mean loss (0-d) from logits ``z: (n, k)`` and dense targets ``Y: (n, k)``."""
    return DATA_LOSSES[spec.loss](z, Y)


def penalty(spec: MLPSpec, params: Layers) -> torch.Tensor | float:
    """``l1 sum|W| + (l2/2) sum W**2`` over weight matrices only, not divided by the batch size."""
    weights = [linear.weight for linear in params]
    total: torch.Tensor | float = 0.0
    if spec.l1:
        total = total + spec.l1 * sum(W.abs().sum() for W in weights)
    if spec.l2:
        total = total + 0.5 * spec.l2 * sum(W.square().sum() for W in weights)
    return total


def objective(spec: MLPSpec, params: Layers, X: torch.Tensor, Y: torch.Tensor, scales: Scales) -> torch.Tensor:
    """Data loss + penalty (0-d): what autograd differentiates."""
    return data_loss(spec, logits(spec, params, X, scales), Y) + penalty(spec, params)


# ---- updates -------------------------------------------------------------------------


def sgd_update(param: torch.Tensor, velocity: torch.Tensor, grad: torch.Tensor, learning_rate: torch.Tensor,
               rule: SGD) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec's SGD step on one tensor, in place: ``v <- mu v - lr g``, ``theta <- theta + v`` (``lr`` 0-d)."""
    velocity.mul_(rule.momentum).sub_(learning_rate * grad)
    param.add_(velocity)
    return param, velocity


def adam_update(param: torch.Tensor, m: torch.Tensor, v: torch.Tensor, grad: torch.Tensor,
                learning_rate: torch.Tensor, step: int, rule: Adam) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The spec's Adam step ``step`` (from 1) on one tensor, in place (see :class:`impls.spec.Adam`)."""
    m.mul_(rule.beta1).add_(grad, alpha=1 - rule.beta1)
    v.mul_(rule.beta2).addcmul_(grad, grad, value=1 - rule.beta2)
    m_hat = m / (1 - rule.beta1 ** step)
    v_hat = v / (1 - rule.beta2 ** step)
    param.sub_(learning_rate * m_hat / (v_hat.sqrt() + rule.epsilon))
    return param, m, v


# ---- the interface -------------------------------------------------------------------


class TorchMLP(MLP):
    """The spec as ``nn.Linear`` layers, differentiated by autograd, updated by the spec's rules.

    Modes: ``default`` runs eagerly; ``compile`` passes the objective (forward + loss, its backward
    compiled by AOTAutograd) and the update of every tensor to ``torch.compile``, each as one whole
    graph (``fullgraph=True``); ``torch.autograd.grad`` between them, which Dynamo does not trace,
    runs the compiled backward.  Compiled code is shared by every model of the process: the first
    batch shape compiles (seconds to tens of seconds on a CPU), a second one (the last, partial batch)
    once more with a symbolic batch size, and Adam's second step once more with a symbolic step count;
    a new model, learning rate or dropout mask compiles nothing.
    """

    name = "torch"

    def __init__(self, spec: MLPSpec, seed: int = 0, mode: str = "default") -> None:
        super().__init__(spec, seed, mode)
        self.dtype = DTYPES[spec.dtype]
        self.params = init_params(spec, self.seed)
        self.param_tensors = list(self.params.parameters())  # W0, b0, W1, b1, ...: updated in place, never replaced
        # the masks' own stream, derived as numpy's default_rng([seed, 1]) derives one (torch's CPU
        # generator keeps only the low 32 bits of a seed, so seed + 2**32 would repeat the weights' stream)
        self._dropout_generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, 1]).generate_state(1)[0]))
        self.reset_optimizer()
        self._objective: Callable[..., torch.Tensor] = objective
        self._sgd_updates: Callable[..., None] = self._update_by_sgd
        self._adam_updates: Callable[..., None] = self._update_by_adam
        if mode == "compile":
            self._objective = torch.compile(objective, fullgraph=True)
            self._sgd_updates = torch.compile(self._update_by_sgd, fullgraph=True)
            self._adam_updates = torch.compile(self._update_by_adam, fullgraph=True)

    def get_params(self) -> Params:
        return [(linear.weight.detach().T.numpy().copy(), linear.bias.detach().numpy().copy())
                for linear in self.params]

    @torch.no_grad()
    def _set_params(self, params: Params) -> None:
        for linear, (W, b) in zip(self.params, params):
            linear.weight.copy_(torch.from_numpy(W.T))  # canonical (in, out) -> nn.Linear's (out, in)
            linear.bias.copy_(torch.from_numpy(b))

    @torch.no_grad()
    def _forward(self, X: np.ndarray) -> np.ndarray:
        return output(self.spec, logits(self.spec, self.params, self._tensor(X), self.no_dropout)).numpy()

    @torch.no_grad()
    def _loss(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> float:
        return float(objective(self.spec, self.params, self._tensor(X), self._tensor(Y), self._scales(masks)))

    def _gradients(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Params:
        value = objective(self.spec, self.params, self._tensor(X), self._tensor(Y), self._scales(masks))
        grads = torch.autograd.grad(value, self.param_tensors)
        return [(gW.T.numpy().copy(), gb.numpy().copy()) for gW, gb in zip(grads[0::2], grads[1::2])]

    def _train_step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        return float(self._step(self._tensor(X), self._tensor(Y), self._tensor(learning_rate), optimizer))

    def reset_optimizer(self) -> None:
        self.velocity = [torch.zeros_like(p) for p in self.param_tensors]  # SGD: learning-rate-scaled steps
        self.first_moment = [torch.zeros_like(p) for p in self.param_tensors]  # Adam: m, v and the step count t
        self.second_moment = [torch.zeros_like(p) for p in self.param_tensors]
        self.adam_steps = 0

    def native_params(self) -> dict[str, torch.Tensor]:
        """A copy of the layers' ``state_dict``: ``{l}.weight`` ``(fan_out, fan_in)`` and ``{l}.bias``
        ``(fan_out,)`` for each layer ``l``."""
        return {key: value.detach().clone() for key, value in self.params.state_dict().items()}

    def load_native(self, native: Mapping[str, torch.Tensor]) -> None:
        """Load a ``state_dict`` laid out as :meth:`native_params` returns it.

        It goes through :meth:`set_params`, so a wrong shape or a NaN gets the same message as
        canonical parameters do (in the canonical ``(fan_in, fan_out)`` terms).
        """
        expected = list(self.params.state_dict())
        if not isinstance(native, Mapping) or sorted(native) != sorted(expected):
            got = sorted(native) if isinstance(native, Mapping) else type(native).__name__
            raise ValueError(f"a state_dict with keys {expected} is needed, got {got}")
        arrays = {key: torch.as_tensor(value).detach().cpu().numpy() for key, value in native.items()}
        self.set_params([(arrays[f"{layer}.weight"].T, arrays[f"{layer}.bias"]) for layer in range(self.spec.n_layers)])

    def _prepare_data(self, X: np.ndarray, Y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self._tensor(X), self._tensor(Y)

    def _run_epoch(self, X: torch.Tensor, Y: torch.Tensor, batches: list[np.ndarray], learning_rate: float,
                   optimizer: Optimizer) -> float:
        rate = self._tensor(learning_rate)  # a tensor, so that a compiled update does not specialize on its value
        total = 0.0
        for idx in batches:
            index = torch.from_numpy(idx)
            total += float(self._step(X[index], Y[index], rate, optimizer)) * len(idx)
        return total / X.shape[0]

    def _tensor(self, array: np.ndarray | float) -> torch.Tensor:
        return torch.as_tensor(array, dtype=self.dtype)

    def _scales(self, masks: list[np.ndarray | None]) -> Scales:
        """Injected keep-masks as the multipliers ``mask / (1 - p)`` (the spec's helper)."""
        return [None if s is None else self._tensor(s) for s in self.spec.dropout_scales(masks)]

    def _sample_scales(self, n_samples: int) -> Scales:
        """Fresh inverted-dropout scales for a batch from this model's generator, as
        :meth:`~impls.spec.MLPSpec.sample_dropout_masks` draws keep-masks (``None`` where the rate is 0)."""
        return [None if p == 0 else
                torch.rand(n_samples, width, dtype=self.dtype, generator=self._dropout_generator).ge_(p).div_(1 - p)
                for width, p in zip(self.spec.hidden_sizes, self.spec.dropout_rates)]

    def _step(self, X: torch.Tensor, Y: torch.Tensor, learning_rate: torch.Tensor,
              optimizer: Optimizer) -> torch.Tensor:
        """One training step with fresh dropout masks; the pre-update objective (0-d)."""
        scales = self._sample_scales(X.shape[0]) if self.spec.uses_dropout else self.no_dropout
        value = self._objective(self.spec, self.params, X, Y, scales)
        grads = torch.autograd.grad(value, self.param_tensors)
        if isinstance(optimizer, Adam):
            self.adam_steps += 1
            self._adam_updates(grads, learning_rate, self.adam_steps, optimizer)
        else:
            self._sgd_updates(grads, learning_rate, optimizer)
        return value.detach()

    def _update_by_sgd(self, grads: tuple[torch.Tensor, ...], learning_rate: torch.Tensor, rule: SGD) -> None:
        """:func:`sgd_update` of every tensor; compiled in ``compile`` mode."""
        # a with block, not the decorator: torch.compile would see the decorator's shared wrapper code,
        # and SGD and Adam updates would then share (and count against) one recompile limit
        with torch.no_grad():
            for param, velocity, grad in zip(self.param_tensors, self.velocity, grads):
                sgd_update(param, velocity, grad, learning_rate, rule)

    def _update_by_adam(self, grads: tuple[torch.Tensor, ...], learning_rate: torch.Tensor, step: int,
                        rule: Adam) -> None:
        """:func:`adam_update` of every tensor (step ``step``, from 1); compiled in ``compile`` mode."""
        with torch.no_grad():
            for param, m, v, grad in zip(self.param_tensors, self.first_moment, self.second_moment, grads):
                adam_update(param, m, v, grad, learning_rate, step, rule)


# ---- the same training, written the PyTorch way --------------------------------------


def native_fit(spec: MLPSpec, config: TrainConfig, X: np.ndarray, y: np.ndarray,
               validation: tuple[np.ndarray, np.ndarray] | None = None, mode: str = "default") -> NativeRun:
    """The training loop of PyTorch's tutorials: ``nn.Sequential``, a loss module, ``optim.SGD``, a scheduler.

    ``Linear -> activation -> Dropout`` per hidden layer in X's dtype, ``kaiming_normal_`` weights
    (He normal: ``fan_in`` is dimension 1 of the ``(out, in)`` weight) and zero biases;
    ``BCEWithLogitsLoss`` / ``CrossEntropyLoss`` on class indices / ``MSELoss``; ``optim.SGD`` with
    momentum and ``weight_decay = l2`` on a parameter group of the weights alone (the spec's
    ``(l2/2) sum W**2`` has the gradient ``l2 W`` and spares the biases; the reported loss then lacks
    the penalty, as PyTorch reports it); ``ExponentialLR`` stepped once per epoch; a ``torch.randperm``
    shuffle each epoch; early stopping on the validation loss that restores a ``deepcopy`` of the best
    ``state_dict``.  ``torch.manual_seed(config.seed)`` seeds everything, as the tutorials do:
    ``nn.Dropout`` has no generator argument, so the global generator is the one that makes its masks
    reproducible.  Mode ``compile``: ``torch.compile(model)``; the loss and the optimizer step stay eager.
    (Compiling the whole training step instead, the tutorial's other form, guards on the optimizer
    object: every new loop compiles ``optimizer.step`` again, and the fifth loop in a process reaches
    Dynamo's recompile limit and quietly runs it eagerly.)  ``X: (n, n_inputs)`` float, ``y``: 0/1
    labels, class indices or values.
    """
    check_native_support(spec, config, validation)
    torch.manual_seed(config.seed)
    X_train = torch.as_tensor(X)
    dtype = X_train.dtype
    Activation = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[spec.hidden_activation]
    layers: list[nn.Module] = []
    for fan_in, fan_out, p in zip(spec.layer_sizes[:-2], spec.hidden_sizes, spec.dropout_rates):
        layers += [nn.Linear(fan_in, fan_out), Activation(), *([nn.Dropout(p)] if p else [])]
    layers.append(nn.Linear(*spec.layer_sizes[-2:]))
    model = nn.Sequential(*layers).to(dtype)
    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    for linear in linears:
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
    loss_fn = {"binary_crossentropy": nn.BCEWithLogitsLoss, "categorical_crossentropy": nn.CrossEntropyLoss,
               "mse": nn.MSELoss}[spec.loss]()
    optimizer = optim.SGD([{"params": [linear.weight for linear in linears], "weight_decay": spec.l2},
                           {"params": [linear.bias for linear in linears]}],
                          lr=config.learning_rate, momentum=config.optimizer.momentum)
    scheduler = optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    forward = torch.compile(model) if mode == "compile" else model

    def targets(labels: np.ndarray) -> torch.Tensor:
        if spec.loss == "categorical_crossentropy":
            return torch.as_tensor(labels, dtype=torch.long)
        return torch.as_tensor(labels, dtype=dtype).reshape(len(labels), -1)

    def predict(A: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return output(spec, model(torch.as_tensor(A, dtype=dtype))).numpy()

    Y_train = targets(y)
    val = None if validation is None else (torch.as_tensor(validation[0], dtype=dtype), targets(validation[1]))
    es = config.early_stopping
    history = History()
    best, best_state, waited = math.inf, None, 0
    size = config.batch_size or len(X)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(X_train)) if config.shuffle else torch.arange(len(X_train))
        start = time.perf_counter()  # after the shuffle: MLP.fit does not time batch_order either
        total = 0.0
        for idx in order.split(size):
            optimizer.zero_grad()
            loss = loss_fn(forward(X_train[idx]), Y_train[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        history.epoch_time.append(time.perf_counter() - start)
        history.loss.append(total / len(X_train))
        history.learning_rate.append(scheduler.get_last_lr()[0])
        scheduler.step()
        if val is not None:
            model.eval()
            with torch.no_grad():
                history.val_loss.append(loss_fn(model(val[0]), val[1]).item())
        if es is not None:
            if es.improves(history.val_loss[-1], best):
                best, waited, history.best_epoch = history.val_loss[-1], 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if waited >= es.patience:
                    history.stopped_epoch = epoch
                    break
    if es is not None and es.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    return NativeRun(history, predict)
