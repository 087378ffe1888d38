"""Where PyTorch's defaults differ from the spec: each difference measured, and the mapping shown to hold.

Every test first shows what PyTorch does out of the box (asserting the difference is real, not
rounding), then that :class:`impls.torch_mlp.TorchMLP` follows the spec instead.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from tests.conftest import import_or_skip

torch = import_or_skip("torch")

import torch.nn.functional as F  # noqa: E402, N812
from torch import nn  # noqa: E402

from impls import MLPSpec, TrainConfig  # noqa: E402
from impls.spec import Adam  # noqa: E402
from impls.torch_mlp import TorchMLP, logits, native_fit, objective  # noqa: E402
from tests.helpers import params_rel_error, random_params, random_problem  # noqa: E402
from tests.tolerances import COMPUTATION  # noqa: E402

SPEC = MLPSpec((3, 5, 4, 2), "tanh", "binary_crossentropy", l2=0.1)


@pytest.fixture(autouse=True)
def one_thread():
    """Pin the intra-op thread count (the class never sets it) and restore it afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- layout, dtype, initialization -----------------------------------------------


def test_linear_weight_is_out_by_in_and_get_params_transposes_it():
    model = TorchMLP(SPEC)
    assert tuple(model.params[0].weight.shape) == (5, 3)  # torch: (out, in)
    (W, b), *_ = model.get_params()
    assert W.shape == (3, 5) and b.shape == (5,)  # spec: (fan_in, fan_out)
    np.testing.assert_array_equal(W, model.params[0].weight.detach().numpy().T)
    params = random_params(SPEC, 0)
    model.set_params(params)
    X, _ = random_problem(SPEC, 4, 0)
    hidden = np.tanh(np.tanh(X @ params[0][0] + params[0][1]) @ params[1][0] + params[1][1])
    z = hidden @ params[2][0] + params[2][1]
    np.testing.assert_allclose(model.forward(X), 1 / (1 + np.exp(-z)), rtol=COMPUTATION["float64"])


def test_float64_modules_without_changing_the_default_dtype():
    model = TorchMLP(MLPSpec((3, 4, 1), dtype="float64"))
    assert torch.get_default_dtype() == torch.float32
    assert all(p.dtype == torch.float64 for p in model.params.parameters())
    assert all(p.dtype == torch.float32 for p in TorchMLP(MLPSpec((3, 4, 1), dtype="float32")).params.parameters())


def test_default_linear_init_is_not_the_spec_and_is_overridden():
    """nn.Linear: kaiming_uniform_(a=sqrt(5)) -> std 1/sqrt(3 fan_in), uniform bias. Spec he_uniform: sqrt(2/fan_in)."""
    fan_in, fan_out = 400, 1000
    torch.manual_seed(0)
    default = nn.Linear(fan_in, fan_out, dtype=torch.float64)
    default_std = default.weight.detach().std().item()
    assert default_std == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.02)
    assert default.bias.detach().abs().max().item() > 0.9 / math.sqrt(fan_in)  # bias ~ U(+-1/sqrt(fan_in))

    spec = MLPSpec((fan_in, fan_out), "identity", "mse", "he_uniform")
    (W, b), = TorchMLP(spec, seed=0).get_params()
    he_std = math.sqrt(2 / fan_in)
    assert W.std() == pytest.approx(he_std, rel=0.02)
    assert default_std / he_std == pytest.approx(1 / math.sqrt(6), rel=0.02)  # default is 2.4x too narrow
    assert np.all(b == 0)


def test_kaiming_fan_in_is_the_second_dimension_of_the_out_by_in_weight():
    """nn.init computes fans from the (out, in) layout: mode='fan_in' (the default: native_fit's He normal)
    is the spec's fan-in, 'fan_out' is not."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.empty(1000, 100, dtype=torch.float64)  # 100 inputs, 1000 outputs
    nn.init.kaiming_normal_(weight, nonlinearity="relu", generator=generator)
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 100), rel=0.02)
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu", generator=generator)
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 1000), rel=0.02)  # ~3x smaller: the wrong fan
    assert nn.init.calculate_gain("relu") == pytest.approx(math.sqrt(2))


def test_normal_init_is_plain_not_truncated():
    """nn.init.normal_ is untruncated (the spec); trunc_normal_ would cut at +-2 (absolute, default a/b)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.empty(400_000, dtype=torch.float64)
    assert nn.init.normal_(weight, 0.0, 1.0, generator=generator).abs().max().item() > 3.5
    assert nn.init.trunc_normal_(weight, 0.0, 1.0, generator=generator).abs().max().item() <= 2.0
    spec = MLPSpec((400, 1000), "identity", "mse", "he_normal")
    (W, _), = TorchMLP(spec, seed=0).get_params()
    assert np.abs(W).max() > 3.5 * math.sqrt(2 / 400)


def test_construction_leaves_the_global_rng_alone():
    """Layers are built with skip_init and drawn from a per-model Generator: the global stream is not consumed."""
    torch.manual_seed(123)
    state = torch.get_rng_state()
    nn.Linear(3, 4)  # the default constructor does draw from it
    assert not torch.equal(torch.get_rng_state(), state)
    torch.set_rng_state(state)
    first = TorchMLP(SPEC, seed=5).get_params()
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # a different global state gives the same weights
    assert params_rel_error(TorchMLP(SPEC, seed=5).get_params(), first) == 0


def test_native_params_are_a_state_dict_copy_in_torch_layout():
    model = TorchMLP(SPEC, seed=1)
    native = model.native_params()
    assert list(native) == [f"{layer}.{kind}" for layer in range(3) for kind in ("weight", "bias")]
    assert tuple(native["0.weight"].shape) == (5, 3)  # (out, in)
    np.testing.assert_array_equal(native["0.weight"].numpy().T, model.get_params()[0][0])
    before = {key: value.clone() for key, value in native.items()}
    X, y = random_problem(SPEC, 4, 0)
    model.train_step(X, y, learning_rate=0.5)
    assert all(torch.equal(native[key], before[key]) for key in native), "a snapshot, not the live tensors"

    with pytest.raises(ValueError, match="state_dict with keys"):
        model.load_native({"weight": torch.zeros(5, 3)})
    transposed = dict(native, **{"0.weight": native["0.weight"].T})
    with pytest.raises(ValueError, match=r"params\[0\] has W\(5, 3\).*needs W\(3, 5\)"):
        model.load_native(transposed)


# ---- derivatives at the kink --------------------------------------------------------


@pytest.mark.parametrize(("activation", "expected"), [
    (F.relu, 0.0), (lambda z: F.leaky_relu(z, 0.1), 0.1), (lambda z: F.elu(z, 0.7), 0.7), (torch.abs, 0.0)])
def test_autograd_at_exactly_zero_takes_the_spec_branch(activation, expected):
    """relu'(0) = 0, leaky_relu'(0) = slope, elu'(0) = alpha, d|w|/dw(0) = 0: no mapping needed."""
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(activation(z).sum(), z)
    assert grad.tolist() == [expected] * 3


# ---- losses ---------------------------------------------------------------------------------


def test_bce_loss_on_probabilities_clamps_where_the_spec_does_not():
    """nn.BCELoss clamps log at -100: confidently wrong logits +-1000 cost 100 instead of 1000."""
    z = torch.tensor([[1000.0], [-1000.0]], dtype=torch.float64)
    labels = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    clamped = nn.BCELoss()(torch.sigmoid(z), labels).item()
    from_logits = F.binary_cross_entropy_with_logits(z, labels).item()
    assert clamped == pytest.approx(100.0)
    assert from_logits == pytest.approx(1000.0)  # the spec: softplus(z) - y z
    assert from_logits - clamped > 800

    model = TorchMLP(MLPSpec((1, 1), "identity", "binary_crossentropy"))
    model.set_params([(np.array([[1000.0]]), np.zeros(1))])
    assert model.loss(np.array([[1.0], [-1.0]]), [0, 1]) == pytest.approx(1000.0, rel=COMPUTATION["float64"])


def test_cross_entropy_with_one_hot_targets_is_the_index_form_mean_over_samples():
    z = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    one_hot = F.one_hot(labels, 4).to(torch.float64)
    by_index, by_probs = F.cross_entropy(z, labels), F.cross_entropy(z, one_hot)
    spec_value = (torch.logsumexp(z, 1) - z[torch.arange(6), labels]).mean()
    assert by_probs.item() == pytest.approx(spec_value.item(), rel=COMPUTATION["float64"])
    assert by_index.item() == pytest.approx(spec_value.item(), rel=COMPUTATION["float64"])  # native_fit's form


# ---- regularization and the optimizer ----------------------------------------------------------


def as_tensors(X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(X), torch.from_numpy(np.asarray(y, dtype=np.float64))


def sgd_groups(model: TorchMLP, **weight_kwargs) -> list[dict]:
    """torch.optim.SGD parameter groups as native_fit builds them: weights (with ``weight_kwargs``), biases."""
    return [{"params": [linear.weight for linear in model.params], **weight_kwargs},
            {"params": [linear.bias for linear in model.params]}]


def test_sgd_weight_decay_matches_the_l2_gradient_but_not_the_reported_loss():
    """weight_decay = l2 on a weights-only group (native_fit's groups) adds l2 W to the gradient, like the
    spec's (l2/2) sum W^2; the loss autograd sees then lacks the penalty. On every parameter it also decays
    the biases."""
    X, y = random_problem(SPEC, 8, 1)
    X_t, Y_t = as_tensors(X, y)
    start = random_params(SPEC, 2)
    spec_model = TorchMLP(SPEC)
    spec_model.set_params(start)
    spec_loss = spec_model.train_step(X, y, learning_rate=0.5)

    no_penalty = replace(SPEC, l2=0.0)
    decayed = TorchMLP(no_penalty)
    decayed.set_params(start)
    optimizer = torch.optim.SGD(sgd_groups(decayed, weight_decay=SPEC.l2), lr=0.5)
    data_loss = F.binary_cross_entropy_with_logits(logits(no_penalty, decayed.params, X_t, decayed.no_dropout), Y_t)
    data_loss.backward()
    optimizer.step()
    assert params_rel_error(decayed.get_params(), spec_model.get_params()) <= COMPUTATION["float64"]  # same update
    penalty = 0.5 * SPEC.l2 * sum((W**2).sum() for W, _ in start)
    assert spec_loss - data_loss.item() == pytest.approx(penalty, rel=COMPUTATION["float64"])  # loss lacks it
    assert penalty > 0.1

    everywhere = TorchMLP(no_penalty)
    everywhere.set_params(start)
    optimizer = torch.optim.SGD(everywhere.params.parameters(), lr=0.5, weight_decay=SPEC.l2)
    F.binary_cross_entropy_with_logits(logits(no_penalty, everywhere.params, X_t, everywhere.no_dropout),
                                       Y_t).backward()
    optimizer.step()
    bias_shift = max(np.abs(b1 - b2).max() for (_, b1), (_, b2) in zip(everywhere.get_params(),
                                                                          spec_model.get_params()))
    assert bias_shift > 1e-3  # weight_decay on all parameters also shrinks the biases (spec: never)


def run_torch_sgd(model: TorchMLP, X: np.ndarray, y: np.ndarray, rates: list[float], momentum: float,
                  rescale_buffers: bool = False) -> None:
    """Steps of torch.optim.SGD (buf <- mu buf + g; p <- p - lr buf), the rate set per step; with
    ``rescale_buffers`` each momentum buffer is first multiplied by lr_old / lr_new."""
    optimizer = torch.optim.SGD(model.params.parameters(), lr=rates[0], momentum=momentum)
    X_t, Y_t = as_tensors(X, y)
    for rate in rates:
        for group in optimizer.param_groups:
            for p in group["params"]:
                buffer = optimizer.state[p].get("momentum_buffer")
                if rescale_buffers and buffer is not None:
                    buffer.mul_(group["lr"] / rate)
            group["lr"] = rate
        optimizer.zero_grad()
        objective(model.spec, model.params, X_t, Y_t, model.no_dropout).backward()
        optimizer.step()


def spec_and_torch_sgd_runs(rates: list[float], rescale_buffers: bool = False) -> float:
    """Relative distance between the spec's momentum SGD and torch.optim.SGD after steps at ``rates``."""
    X, y = random_problem(SPEC, 8, 1)
    start = random_params(SPEC, 2)
    spec_model, optim_model = TorchMLP(SPEC), TorchMLP(SPEC)
    spec_model.set_params(start)
    optim_model.set_params(start)
    for rate in rates:
        spec_model.train_step(X, y, learning_rate=rate, momentum=0.9)
    run_torch_sgd(optim_model, X, y, rates, momentum=0.9, rescale_buffers=rescale_buffers)
    return params_rel_error(optim_model.get_params(), spec_model.get_params())


def test_torch_sgd_momentum_differs_from_the_spec_once_the_rate_changes():
    """buf <- mu buf + g; p -= lr buf equals v <- mu v - lr g only while lr is constant."""
    assert spec_and_torch_sgd_runs([0.3, 0.3, 0.3]) <= COMPUTATION["float64"]
    assert spec_and_torch_sgd_runs([0.3, 0.1, 0.03]) > 1e-2  # old gradients replayed at the new, smaller rate


def test_the_spec_update_is_torch_sgd_with_buffers_rescaled_when_the_rate_changes():
    """v = -lr buf: rescaling torch's buffers by lr_old / lr_new before each step gives the spec's update."""
    assert spec_and_torch_sgd_runs([0.3, 0.1, 0.03], rescale_buffers=True) <= COMPUTATION["float64"]


def test_torch_optim_adam_is_the_spec_adam_and_its_defaults_are_the_papers():
    """torch.optim.Adam divides by sqrt(v_hat) + eps, as the spec; its defaults are (0.9, 0.999), 1e-8."""
    defaults = torch.optim.Adam([torch.zeros(1, requires_grad=True)]).defaults
    assert (defaults["betas"], defaults["eps"]) == ((0.9, 0.999), 1e-8)
    assert (Adam().beta1, Adam().beta2, Adam().epsilon) == (0.9, 0.999, 1e-8)
    X, y = random_problem(SPEC, 8, 1)
    X_t, Y_t = as_tensors(X, y)
    start = random_params(SPEC, 2)
    rule = Adam(beta1=0.8, beta2=0.9, epsilon=1e-3)  # a large epsilon makes its placement visible
    spec_model, optim_model = TorchMLP(SPEC), TorchMLP(SPEC)
    spec_model.set_params(start)
    optim_model.set_params(start)
    rates = [0.05, 0.02, 0.01]
    for rate in rates:
        spec_model.train_step(X, y, learning_rate=rate, optimizer=rule)
    optimizer = torch.optim.Adam(optim_model.params.parameters(), lr=rates[0], betas=(0.8, 0.9), eps=1e-3)
    for rate in rates:
        for group in optimizer.param_groups:
            group["lr"] = rate  # Adam's state holds no learning rate: changing it needs no rescaling
        optimizer.zero_grad()
        objective(SPEC, optim_model.params, X_t, Y_t, optim_model.no_dropout).backward()
        optimizer.step()
    assert params_rel_error(optim_model.get_params(), spec_model.get_params()) <= COMPUTATION["float64"]


def test_native_loop_steps_exponential_lr_once_per_epoch_and_is_seeded_through_the_global_generator():
    """ExponentialLR stepped after each epoch gives the spec's lr * decay**(epoch - 1); torch.manual_seed
    (the only seed nn.Dropout obeys) makes the loop reproducible and leaves the global generator moved."""
    spec = MLPSpec((4, 8, 1), "relu", "binary_crossentropy", dtype="float32", dropout=0.3, l2=1e-3)
    X, y = random_problem(spec, 40, 0)
    config = TrainConfig(epochs=4, batch_size=16, learning_rate=0.2, lr_decay=0.5, momentum=0.9, seed=7)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = native_fit(spec, config, X, y).history
    assert not torch.equal(torch.get_rng_state(), state)
    assert first.learning_rate == pytest.approx([config.learning_rate_at(e) for e in range(1, 5)])
    assert native_fit(spec, config, X, y).history.loss == first.loss
    assert native_fit(spec, replace(config, seed=8), X, y).history.loss != first.loss


# ---- dropout --------------------------------------------------------------------------


def test_dropout_is_inverted_in_training_and_identity_in_eval():
    """nn.Dropout (native_fit's) keeps units with probability 1 - p and scales them by 1/(1-p); the masks
    TorchMLP draws for training are the same multipliers."""
    torch.manual_seed(0)
    dropout = nn.Dropout(0.25)
    x = torch.ones(100_000, dtype=torch.float64)
    kept = dropout(x)
    assert set(torch.unique(kept).tolist()) == {0.0, 1 / 0.75}  # kept units scaled by 1/(1-p)
    assert (kept == 0).double().mean().item() == pytest.approx(0.25, abs=0.01)
    dropout.eval()
    assert torch.equal(dropout(x), x)

    (scales,) = TorchMLP(MLPSpec((3, 1000, 1), dropout=0.25))._sample_scales(100)
    assert set(torch.unique(scales).tolist()) == {0.0, 1 / 0.75}
    assert (scales == 0).double().mean().item() == pytest.approx(0.25, abs=0.01)


def test_nn_dropout_draws_from_the_global_generator_and_training_leaves_it_alone():
    """nn.Dropout takes no generator: it advances the global one. TorchMLP draws its masks from its own."""
    torch.manual_seed(7)
    state = torch.get_rng_state()
    nn.Dropout(0.5)(torch.ones(10))
    assert not torch.equal(torch.get_rng_state(), state)

    spec = MLPSpec((4, 50, 1), "tanh", "mse", dropout=0.5)
    X, y = random_problem(spec, 16, 0)
    model = TorchMLP(spec, seed=3)
    torch.set_rng_state(state)
    model.train_step(X, y, 0.1)
    model.fit(X, y, TrainConfig(epochs=2, batch_size=5))
    assert torch.equal(torch.get_rng_state(), state)


def test_injected_masks_are_scaled_by_one_over_keep_probability():
    spec = MLPSpec((3, 6, 1), "identity", "mse", dropout=0.4)
    params = random_params(spec, 0)
    model = TorchMLP(spec)
    model.set_params(params)
    X, y = random_problem(spec, 5, 0)
    mask = np.random.default_rng(1).random((5, 6)) >= 0.4
    (W1, b1), (W2, b2) = params
    expected = np.mean(((X @ W1 + b1) * mask / 0.6 @ W2 + b2 - y) ** 2)
    assert model.loss(X, y, [mask]) == pytest.approx(expected, rel=COMPUTATION["float64"])
    unscaled = np.mean(((X @ W1 + b1) * mask @ W2 + b2 - y) ** 2)
    assert abs(unscaled - expected) > 1e-2  # the 1/(1-p) is not optional


# ---- compile mode -----------------------------------------------------------------------
# How torch.compile caches: compiled code is kept per Python function (code object), behind guards on
# the inputs; a guard that fails compiles again, up to torch._dynamo.config.recompile_limit (8) entries,
# after which Dynamo runs that function eagerly with only a logged warning.

COMPILE_SPEC = MLPSpec((3, 5, 2), "relu", "binary_crossentropy", l2=0.1, dropout=0.2)


def compile_run(seed: int, optimizer: Adam | None = None) -> None:
    """A short compiled fit: two epochs with a decayed rate, batches of 4 and a last one of 2."""
    X, y = random_problem(COMPILE_SPEC, 10, seed)
    config = TrainConfig(epochs=2, batch_size=4, learning_rate=0.3, lr_decay=0.5, seed=seed,
                         **({"optimizer": optimizer} if optimizer else {"momentum": 0.9}))
    TorchMLP(replace(COMPILE_SPEC), seed=seed, mode="compile").fit(X, y, config)  # an equal, new spec object


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inside inductor
def test_a_python_float_recompiles_but_a_new_model_rate_or_mask_does_not():
    """A float argument is a guarded constant on the first call: a new value compiles again. The compiled
    mode passes the learning rate as a 0-d tensor and the masks as inputs, and guards on no model object,
    so once a shape has been seen (the last, partial batch included, and Adam's second step), a new model
    trains without compiling anything (``fail_on_recompile`` would raise)."""
    scaled = torch.compile(lambda x, rate: x * rate, fullgraph=True)
    scaled(torch.ones(2), 0.5)
    with torch.compiler.set_stance("fail_on_recompile"), pytest.raises(RuntimeError, match="recompil"):
        scaled(torch.ones(2), 0.25)

    compile_run(seed=0)
    compile_run(seed=0, optimizer=Adam())
    with torch.compiler.set_stance("fail_on_recompile"):
        compile_run(seed=1)
        compile_run(seed=1, optimizer=Adam())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inside inductor
def test_compiled_mode_fails_instead_of_running_eagerly_at_the_recompile_limit():
    """Without fullgraph, a function past the recompile limit quietly runs eagerly; the compiled mode's
    ``fullgraph=True`` turns that into an error.  (``torch._dynamo.config`` is private: checked with 2.13.)"""
    from torch._dynamo.exc import FailOnRecompileLimitHit

    torch.compiler.reset()  # no entries left from other tests: the limit counts from here
    with torch._dynamo.config.patch(recompile_limit=1):
        doubled = torch.compile(lambda x: 2 * x)
        assert torch.equal(doubled(torch.ones(3)), torch.full((3,), 2.0))
        assert torch.equal(doubled(torch.ones(4, 2)), torch.full((4, 2), 2.0))  # past the limit: eager, no error
        with pytest.raises(FailOnRecompileLimitHit, match="fullgraph=True"):
            compile_run(seed=0)  # the partial last batch needs a second graph of the objective


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inside inductor
def test_native_compiled_model_is_not_compiled_again_for_a_new_loop():
    """native_fit compiles the model, not the step: Dynamo inlines nn.Modules and guards on their parameters'
    shapes, so a new loop (a new model and optimizer of the same shapes) reuses the compiled forward."""
    spec = MLPSpec((4, 8, 1), "relu", "binary_crossentropy", dtype="float32", dropout=0.2, l2=1e-3)
    X, y = random_problem(spec, 20, 0)
    config = TrainConfig(epochs=2, batch_size=8, learning_rate=0.1, lr_decay=0.9, momentum=0.9)
    native_fit(spec, config, X, y, mode="compile")
    with torch.compiler.set_stance("fail_on_recompile"):
        native_fit(spec, replace(config, seed=1), X, y, mode="compile")
