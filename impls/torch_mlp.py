"""The spec in PyTorch: ``torch.nn`` modules, autograd for gradients, an SGD step under ``torch.no_grad``.

Where PyTorch's defaults differ from the spec, the mapping is made here (each one is
pinned by ``tests/frameworks/test_torch_conventions.py``):

* ``nn.Linear.weight`` is ``(out, in)``: transposed in :meth:`TorchMLP.get_params` and
  :meth:`TorchMLP._set_params`.
* ``nn.Linear`` initializes itself with ``kaiming_uniform_(a=sqrt(5))`` and a uniform bias
  from the *global* RNG: layers are built with ``nn.utils.skip_init`` and drawn with
  ``torch.nn.init`` functions from a per-model ``torch.Generator``; biases are zero.
* ``nn.BCELoss`` on probabilities clamps ``log`` at -100: losses are computed from logits
  (``F.binary_cross_entropy_with_logits``, ``F.cross_entropy`` with probability targets).
* ``torch.optim.Adam`` already computes the spec's Adam (epsilon on the bias-corrected ``sqrt(v_hat)``);
  the update is written out anyway so that the compiled mode covers it.
* ``torch.optim.SGD`` keeps ``buf <- mu buf + g; p <- p - lr buf``, which equals the spec's
  ``v <- mu v - lr g`` only while ``lr`` is constant; its ``weight_decay`` adds ``wd * p`` to the
  gradient of every parameter in the group (biases too, unless put in a group of their own) and
  never enters the reported loss.  So the update is written out with the spec's velocity, and the
  penalty is part of the objective autograd differentiates.
* ``nn.Dropout`` draws from the global RNG: each model keeps its own RNG state and swaps it in
  (``torch.random.fork_rng``) for the training step, so runs are deterministic per model seed.

Autograd's derivatives at the kink ``z = 0`` already take the spec's left branch
(``relu'(0) = 0``, ``leaky_relu'(0) = slope``, ``elu'(0) = alpha``, ``d|w|/dw (0) = 0``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  (the PyTorch convention)
from torch import nn

from impls.base import MLP
from impls.spec import Adam, MLPSpec, Optimizer, Params

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def make_activation(spec: MLPSpec) -> nn.Module:
    """The hidden activation of ``spec`` as a module (slope/alpha from the spec)."""
    name = spec.hidden_activation
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(spec.leaky_slope)
    if name == "elu":
        return nn.ELU(spec.elu_alpha)
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


def init_weight_(weight: torch.Tensor, spec: MLPSpec, generator: torch.Generator) -> None:
    """Draw one ``nn.Linear`` weight ``(fan_out, fan_in)`` by the spec's initializer, in place.

    ``torch.nn.init`` reads ``fan_in`` as ``weight.shape[1]``, which is the spec's fan-in for the
    ``(out, in)`` layout.  ``gain = calculate_gain("relu") = sqrt(2)`` turns Kaiming into He
    (``std sqrt(2 / fan_in)``, limit ``sqrt(6 / fan_in)``); Xavier with the default gain 1 is the
    textbook Glorot formula.  ``normal_`` is a plain, untruncated normal.
    """
    name, scale = spec.initializer, spec.init_scale
    with torch.no_grad():
        if name == "zeros":
            nn.init.zeros_(weight)
        elif name == "normal":
            nn.init.normal_(weight, 0.0, scale, generator=generator)
        elif name == "uniform":
            nn.init.uniform_(weight, -scale, scale, generator=generator)
        elif name == "xavier_normal":
            nn.init.xavier_normal_(weight, generator=generator)
        elif name == "xavier_uniform":
            nn.init.xavier_uniform_(weight, generator=generator)
        elif name == "he_normal":
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu", generator=generator)
        elif name == "he_uniform":
            nn.init.kaiming_uniform_(weight, mode="fan_in", nonlinearity="relu", generator=generator)
        else:
            raise ValueError(f"unknown initializer {name!r}")


class Network(nn.Module):
    """``Linear -> activation -> Dropout`` per hidden layer, then a ``Linear`` producing the logits.

    ``forward(x: (n, n_inputs)) -> logits (n, n_outputs)``.  With ``scales`` (one ``(n, width)``
    tensor or ``None`` per hidden layer) the hidden activations are multiplied by the given
    inverted-dropout scales instead of going through ``nn.Dropout``.
    """

    def __init__(self, spec: MLPSpec, generator: torch.Generator) -> None:
        super().__init__()
        dtype = _DTYPES[spec.dtype]
        # skip_init: no default kaiming_uniform_(a=sqrt(5)) draw, and no use of the global RNG
        self.linears = nn.ModuleList(
            nn.utils.skip_init(nn.Linear, fan_in, fan_out, dtype=dtype)
            for fan_in, fan_out in zip(spec.layer_sizes[:-1], spec.layer_sizes[1:])
        )
        for linear in self.linears:
            init_weight_(linear.weight, spec, generator)
            nn.init.zeros_(linear.bias)
        self.activation = make_activation(spec)
        self.dropouts = nn.ModuleList(nn.Dropout(p) for p in spec.dropout_rates)

    def forward(self, x: torch.Tensor, scales: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        for layer, (linear, dropout) in enumerate(zip(self.linears[:-1], self.dropouts)):
            x = self.activation(linear(x))
            scale = None if scales is None else scales[layer]
            x = dropout(x) if scale is None else x * scale
        return self.linears[-1](x)


def data_loss(loss: str, logits: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Mean loss from logits ``(n, k)`` and dense targets ``Y (n, k)``, as the spec defines it."""
    if loss == "binary_crossentropy":
        return F.binary_cross_entropy_with_logits(logits, Y)  # mean over all elements
    if loss == "categorical_crossentropy":
        return F.cross_entropy(logits, Y)  # probability (one-hot) targets: mean over samples
    if loss == "mse":
        return F.mse_loss(logits, Y)
    if loss == "mae":
        return F.l1_loss(logits, Y)
    raise ValueError(f"unknown loss {loss!r}")


def output(loss: str, logits: torch.Tensor) -> torch.Tensor:
    """The output activation of the logits ``(n, k)``: sigmoid, softmax over classes, or identity."""
    if loss == "binary_crossentropy":
        return torch.sigmoid(logits)
    if loss == "categorical_crossentropy":
        return torch.softmax(logits, dim=1)
    return logits


class TorchMLP(MLP):
    """The spec as a ``torch.nn`` module trained by an explicit SGD step.

    Modes: ``default`` runs eagerly; ``compile`` passes the training step (forward, loss,
    backward, update) to ``torch.compile``.  Dynamo does not trace ``Tensor.backward()``, so
    the step becomes two graphs: forward + loss (its backward compiled by AOTAutograd) and
    the parameter update.  The first call of each batch shape compiles (tens of seconds on a CPU).
    """

    name = "torch"

    def __init__(self, spec: MLPSpec, seed: int = 0, mode: str = "default") -> None:
        super().__init__(spec, seed, mode)
        self.dtype = _DTYPES[spec.dtype]
        generator = torch.Generator().manual_seed(self.seed)
        self.net = Network(spec, generator)
        self.param_tensors = list(self.net.parameters())  # W0, b0, W1, b1, ...: updated in place, never replaced
        # nn.Dropout's draws continue the model's stream after the initial weights
        self._dropout_rng_state = generator.get_state()
        self.reset_optimizer()
        self._sgd: Callable[..., torch.Tensor] = self._sgd_step
        self._adam: Callable[..., torch.Tensor] = self._adam_step
        if mode == "compile":
            # fallback_random: inductor draws dropout masks with eager's generator, not its own
            # Philox stream, so compiled and default runs see the same masks
            self._sgd = torch.compile(self._sgd_step, options={"fallback_random": True})
            self._adam = torch.compile(self._adam_step, options={"fallback_random": True})

    # ---- parameters ----------------------------------------------------------

    def get_params(self) -> Params:
        return [(linear.weight.detach().T.numpy().copy(), linear.bias.detach().numpy().copy())
                for linear in self.net.linears]

    @torch.no_grad()
    def _set_params(self, params: Params) -> None:
        for linear, (W, b) in zip(self.net.linears, params):
            linear.weight.copy_(torch.from_numpy(W.T))  # canonical (in, out) -> nn.Linear's (out, in)
            linear.bias.copy_(torch.from_numpy(b))

    def native_params(self) -> dict[str, torch.Tensor]:
        """A copy of the network's ``state_dict``: ``linears.{l}.weight`` ``(fan_out, fan_in)`` and
        ``linears.{l}.bias`` ``(fan_out,)`` for each layer ``l``."""
        return {key: value.detach().clone() for key, value in self.net.state_dict().items()}

    def load_native(self, native: Mapping[str, torch.Tensor]) -> None:
        """Load a ``state_dict`` laid out as :meth:`native_params` returns it.

        It goes through :meth:`set_params`, so a wrong shape or a NaN gets the same message as
        canonical parameters do (in the canonical ``(fan_in, fan_out)`` terms).
        """
        expected = list(self.net.state_dict())
        if not isinstance(native, Mapping) or sorted(native) != sorted(expected):
            got = sorted(native) if isinstance(native, Mapping) else type(native).__name__
            raise ValueError(f"a state_dict with keys {expected} is needed, got {got}")
        arrays = {key: torch.as_tensor(value).detach().cpu().numpy() for key, value in native.items()}
        self.set_params([(arrays[f"linears.{layer}.weight"].T, arrays[f"linears.{layer}.bias"])
                         for layer in range(self.spec.n_layers)])

    def reset_optimizer(self) -> None:
        self.velocity = [torch.zeros_like(p) for p in self.param_tensors]  # SGD
        self.first_moment = [torch.zeros_like(p) for p in self.param_tensors]  # Adam: m, v, t
        self.second_moment = [torch.zeros_like(p) for p in self.param_tensors]
        self.adam_steps = 0

    # ---- computation ---------------------------------------------------------

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=self.dtype)

    def _penalty(self) -> torch.Tensor | float:
        """``l1 sum|W| + (l2/2) sum W**2`` over the weights (not biases), not divided by the batch size."""
        total: torch.Tensor | float = 0.0
        for linear in self.net.linears:
            if self.spec.l1:
                total = total + self.spec.l1 * linear.weight.abs().sum()
            if self.spec.l2:
                total = total + 0.5 * self.spec.l2 * linear.weight.square().sum()
        return total

    def _objective(self, X: torch.Tensor, Y: torch.Tensor,
                   scales: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Data loss + penalty (0-d tensor); ``scales`` as in :meth:`Network.forward`."""
        return data_loss(self.spec.loss, self.net(X, scales), Y) + self._penalty()

    def _scales(self, masks: list[np.ndarray | None]) -> list[torch.Tensor | None]:
        """Injected keep-masks as the multipliers ``mask / (1 - p)`` (the spec's helper)."""
        return [None if s is None else self._tensor(s) for s in self.spec.dropout_scales(masks)]

    @torch.no_grad()
    def _forward(self, X: np.ndarray) -> np.ndarray:
        self.net.eval()
        return output(self.spec.loss, self.net(self._tensor(X))).numpy()

    @torch.no_grad()
    def _loss(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> float:
        self.net.eval()  # dropout only through the injected masks
        return float(self._objective(self._tensor(X), self._tensor(Y), self._scales(masks)))

    def _gradients(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Params:
        self.net.eval()
        value = self._objective(self._tensor(X), self._tensor(Y), self._scales(masks))
        grads = torch.autograd.grad(value, self.param_tensors)
        pairs = zip(grads[0::2], grads[1::2])
        return [(gW.T.numpy().copy(), gb.numpy().copy()) for gW, gb in pairs]

    # ---- training ------------------------------------------------------------

    def _sgd_step(self, X: torch.Tensor, Y: torch.Tensor, learning_rate: torch.Tensor,
                  momentum: torch.Tensor) -> torch.Tensor:
        """Forward, backward and the spec's SGD update on one batch; returns the pre-update objective.

        ``learning_rate`` and ``momentum`` are 0-d tensors so that a compiled step does not
        specialize on (and recompile for) every decayed rate.
        """
        value = self._objective(X, Y)
        value.backward()
        with torch.no_grad():
            for param, velocity in zip(self.param_tensors, self.velocity):
                # v <- mu v - lr g; theta <- theta + v (spec), not torch.optim.SGD's buffer of raw gradients
                velocity.mul_(momentum).sub_(learning_rate * param.grad)
                param.add_(velocity)
        # cleared after the update rather than before the backward: every step then starts with
        # .grad None, so a compiled step's guards on .grad never fail (no recompilation on step 2)
        self.net.zero_grad(set_to_none=True)
        return value.detach()

    def _adam_step(self, X: torch.Tensor, Y: torch.Tensor, learning_rate: torch.Tensor, beta1: torch.Tensor,
                   beta2: torch.Tensor, epsilon: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Forward, backward and the spec's Adam update (step ``step``, 1-based); returns the pre-update objective.

        Written out rather than ``torch.optim.Adam`` so the compiled mode covers it too;
        ``torch.optim.Adam`` computes the same update (``lr m_hat / (sqrt(v_hat) + eps)``),
        which a test pins.
        """
        value = self._objective(X, Y)
        value.backward()
        with torch.no_grad():
            for param, m, v in zip(self.param_tensors, self.first_moment, self.second_moment):
                m.mul_(beta1).add_((1 - beta1) * param.grad)
                v.mul_(beta2).add_((1 - beta2) * param.grad.square())
                m_hat = m / (1 - beta1 ** step)
                v_hat = v / (1 - beta2 ** step)
                param.sub_(learning_rate * m_hat / (v_hat.sqrt() + epsilon))
        self.net.zero_grad(set_to_none=True)
        return value.detach()

    def _train_tensors(self, X: torch.Tensor, Y: torch.Tensor, learning_rate: float,
                       optimizer: Optimizer) -> torch.Tensor:
        """One training step on tensors, dropout active with this model's own RNG stream."""
        self.net.train()

        def scalar(value: float) -> torch.Tensor:
            return torch.tensor(value, dtype=self.dtype)

        if isinstance(optimizer, Adam):
            self.adam_steps += 1
            step = self._adam
            args = (scalar(learning_rate), scalar(optimizer.beta1), scalar(optimizer.beta2),
                    scalar(optimizer.epsilon), scalar(self.adam_steps))
        else:
            step, args = self._sgd, (scalar(learning_rate), scalar(optimizer.momentum))
        if not self.spec.uses_dropout:
            return step(X, Y, *args)
        # nn.Dropout samples from the global CPU generator: run it on this model's state, restore the global one
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._dropout_rng_state)
            value = step(X, Y, *args)
            self._dropout_rng_state = torch.get_rng_state()
        return value

    def _train_step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        return float(self._train_tensors(self._tensor(X), self._tensor(Y), learning_rate, optimizer))

    def _prepare_data(self, X: np.ndarray, Y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self._tensor(X), self._tensor(Y)

    def _run_epoch(self, X: torch.Tensor, Y: torch.Tensor, batches: list[np.ndarray],
                   learning_rate: float, optimizer: Optimizer) -> float:
        total = 0.0
        for idx in batches:
            index = torch.from_numpy(idx)
            total += float(self._train_tensors(X[index], Y[index], learning_rate, optimizer)) * len(idx)
        return total / X.shape[0]
