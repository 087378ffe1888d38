"""Where PyTorch's defaults differ from the spec: each difference measured, and the mapping shown to hold.

Every test first shows what PyTorch does out of the box (asserting the difference is real, not
rounding), then that :class:`impls.torch_mlp.TorchMLP` follows the spec instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install '.[torch]')")

import torch.nn.functional as F  # noqa: E402, N812
from torch import nn  # noqa: E402

from impls import MLPSpec, TrainConfig, create  # noqa: E402
from impls.spec import Adam  # noqa: E402
from impls.torch_mlp import TorchMLP  # noqa: E402
from tests.helpers import max_rel_error, params_rel_error, random_params, random_problem  # noqa: E402

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
    assert tuple(model.net.linears[0].weight.shape) == (5, 3)  # torch: (out, in)
    (W, b), *_ = model.get_params()
    assert W.shape == (3, 5) and b.shape == (5,)  # spec: (fan_in, fan_out)
    np.testing.assert_array_equal(W, model.net.linears[0].weight.detach().numpy().T)
    params = random_params(SPEC, 0)
    model.set_params(params)
    X, _ = random_problem(SPEC, 4, 0)
    hidden = np.tanh(np.tanh(X @ params[0][0] + params[0][1]) @ params[1][0] + params[1][1])
    logits = hidden @ params[2][0] + params[2][1]
    np.testing.assert_allclose(model.forward(X), 1 / (1 + np.exp(-logits)), rtol=1e-13)


def test_float64_modules_without_changing_the_default_dtype():
    model = TorchMLP(MLPSpec((3, 4, 1), dtype="float64"))
    assert torch.get_default_dtype() == torch.float32
    assert all(p.dtype == torch.float64 for p in model.net.parameters())
    assert all(p.dtype == torch.float32 for p in TorchMLP(MLPSpec((3, 4, 1), dtype="float32")).net.parameters())


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
    """nn.init computes fans from the (out, in) layout: mode='fan_in' is the spec's fan-in, 'fan_out' is not."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.empty(1000, 100, dtype=torch.float64)  # 100 inputs, 1000 outputs
    nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu", generator=generator)
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
    assert list(native) == [f"linears.{layer}.{kind}" for layer in range(3) for kind in ("weight", "bias")]
    assert tuple(native["linears.0.weight"].shape) == (5, 3)  # (out, in)
    np.testing.assert_array_equal(native["linears.0.weight"].numpy().T, model.get_params()[0][0])
    before = {key: value.clone() for key, value in native.items()}
    X, y = random_problem(SPEC, 4, 0)
    model.train_step(X, y, learning_rate=0.5)
    assert all(torch.equal(native[key], before[key]) for key in native), "a snapshot, not the live tensors"

    with pytest.raises(ValueError, match="state_dict with keys"):
        model.load_native({"weight": torch.zeros(5, 3)})
    transposed = dict(native, **{"linears.0.weight": native["linears.0.weight"].T})
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


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu"])
def test_gradients_at_the_kink_and_at_zero_weights_match_the_reference(activation):
    """X = 0 and b = 0 put every hidden pre-activation at exactly 0; half the weights are exactly 0 (L1)."""
    spec = MLPSpec((3, 4, 4, 2), activation, "mse", leaky_slope=0.1, elu_alpha=0.7, l1=0.05)
    params = random_params(spec, 3)
    params = [(np.where(np.arange(W.size).reshape(W.shape) % 2 == 0, 0.0, W), np.zeros_like(b)) for W, b in params]
    X, y = np.zeros((5, 3)), np.random.default_rng(0).normal(size=(5, 2))
    models = [create(name, spec) for name in ("numpy", "torch")]
    for model in models:
        model.set_params(params)
    reference, grads = (model.gradients(X, y) for model in models)
    assert params_rel_error(grads, reference) <= 1e-14


# ---- losses ---------------------------------------------------------------------------------


def test_bce_loss_on_probabilities_clamps_where_the_spec_does_not():
    """nn.BCELoss clamps log at -100: confidently wrong logits +-1000 cost 100 instead of 1000."""
    logits = torch.tensor([[1000.0], [-1000.0]], dtype=torch.float64)
    labels = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    clamped = nn.BCELoss()(torch.sigmoid(logits), labels).item()
    from_logits = F.binary_cross_entropy_with_logits(logits, labels).item()
    assert clamped == pytest.approx(100.0)
    assert from_logits == pytest.approx(1000.0)  # the spec: softplus(z) - y z
    assert from_logits - clamped > 800

    model = TorchMLP(MLPSpec((1, 1), "identity", "binary_crossentropy"))
    model.set_params([(np.array([[1000.0]]), np.zeros(1))])
    assert model.loss(np.array([[1.0], [-1.0]]), [0, 1]) == pytest.approx(1000.0, rel=1e-12)


def test_cross_entropy_with_one_hot_targets_is_the_index_form_mean_over_samples():
    logits = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    one_hot = F.one_hot(labels, 4).to(torch.float64)
    by_index, by_probs = F.cross_entropy(logits, labels), F.cross_entropy(logits, one_hot)
    spec_value = (torch.logsumexp(logits, 1) - logits[torch.arange(6), labels]).mean()
    assert by_probs.item() == pytest.approx(spec_value.item(), rel=1e-15)
    assert by_index.item() == pytest.approx(spec_value.item(), rel=1e-15)


# ---- regularization and the optimizer ----------------------------------------------------------


def sgd_groups(model: TorchMLP, **weight_kwargs) -> list[dict]:
    """torch.optim.SGD parameter groups: weights (with ``weight_kwargs``) and biases (without)."""
    weights = [linear.weight for linear in model.net.linears]
    biases = [linear.bias for linear in model.net.linears]
    return [{"params": weights, **weight_kwargs}, {"params": biases}]


def test_sgd_weight_decay_matches_the_l2_gradient_but_not_the_reported_loss():
    """weight_decay = l2 on a weights-only group adds l2 W to the gradient, like the spec's (l2/2) sum W^2;
    the loss autograd sees then lacks the penalty. On every parameter it also decays the biases."""
    X, y = random_problem(SPEC, 8, 1)
    start = random_params(SPEC, 2)
    spec_model = TorchMLP(SPEC)
    spec_model.set_params(start)
    spec_loss = spec_model.train_step(X, y, learning_rate=0.5)

    no_penalty = MLPSpec(SPEC.layer_sizes, SPEC.hidden_activation, SPEC.loss)
    decayed = TorchMLP(no_penalty)
    decayed.set_params(start)
    optimizer = torch.optim.SGD(sgd_groups(decayed, weight_decay=SPEC.l2), lr=0.5)
    X_t, Y_t = torch.from_numpy(X), torch.from_numpy(np.asarray(y, dtype=np.float64))
    data_loss = F.binary_cross_entropy_with_logits(decayed.net(X_t), Y_t)
    data_loss.backward()
    optimizer.step()
    assert params_rel_error(decayed.get_params(), spec_model.get_params()) <= 1e-14  # same update
    penalty = 0.5 * SPEC.l2 * sum((W**2).sum() for W, _ in start)
    assert spec_loss - data_loss.item() == pytest.approx(penalty, rel=1e-12)  # the loss misses the penalty
    assert penalty > 0.1

    everywhere = TorchMLP(no_penalty)
    everywhere.set_params(start)
    optimizer = torch.optim.SGD(everywhere.net.parameters(), lr=0.5, weight_decay=SPEC.l2)
    F.binary_cross_entropy_with_logits(everywhere.net(X_t), Y_t).backward()
    optimizer.step()
    bias_shift = max(np.abs(b1 - b2).max() for (_, b1), (_, b2) in zip(everywhere.get_params(),
                                                                          spec_model.get_params()))
    assert bias_shift > 1e-3  # weight_decay on all parameters also shrinks the biases (spec: never)


def run_torch_sgd(model: TorchMLP, X: np.ndarray, y: np.ndarray, rates: list[float], momentum: float) -> None:
    """Steps of torch.optim.SGD (buf <- mu buf + g; p <- p - lr buf), the rate set per step."""
    optimizer = torch.optim.SGD(model.net.parameters(), lr=rates[0], momentum=momentum)
    X_t, Y_t = torch.from_numpy(X), torch.from_numpy(np.asarray(y, dtype=np.float64))
    for rate in rates:
        for group in optimizer.param_groups:
            group["lr"] = rate
        optimizer.zero_grad()
        model._objective(X_t, Y_t).backward()
        optimizer.step()


def test_torch_sgd_momentum_differs_from_the_spec_once_the_rate_changes():
    """buf <- mu buf + g; p -= lr buf equals v <- mu v - lr g only while lr is constant."""
    X, y = random_problem(SPEC, 8, 1)
    start = random_params(SPEC, 2)
    for rates, agree in (([0.3, 0.3, 0.3], True), ([0.3, 0.1, 0.03], False)):
        spec_model, optim_model = TorchMLP(SPEC), TorchMLP(SPEC)
        spec_model.set_params(start)
        optim_model.set_params(start)
        for rate in rates:
            spec_model.train_step(X, y, learning_rate=rate, momentum=0.9)
        run_torch_sgd(optim_model, X, y, rates, momentum=0.9)
        error = params_rel_error(optim_model.get_params(), spec_model.get_params())
        if agree:
            assert error <= 1e-14
        else:
            assert error > 1e-2  # torch's buffer replays old gradients at the new, smaller rate


def test_the_spec_update_is_torch_sgd_with_buffers_rescaled_when_the_rate_changes():
    """v = -lr buf: rescaling torch's buffers by lr_old / lr_new before each step gives the spec's update."""
    X, y = random_problem(SPEC, 8, 1)
    start = random_params(SPEC, 2)
    rates = [0.3, 0.1, 0.03]
    spec_model, optim_model = TorchMLP(SPEC), TorchMLP(SPEC)
    spec_model.set_params(start)
    optim_model.set_params(start)
    for rate in rates:
        spec_model.train_step(X, y, learning_rate=rate, momentum=0.9)
    optimizer = torch.optim.SGD(optim_model.net.parameters(), lr=rates[0], momentum=0.9)
    X_t, Y_t = torch.from_numpy(X), torch.from_numpy(np.asarray(y, dtype=np.float64))
    for rate in rates:
        for group in optimizer.param_groups:
            for p in group["params"]:
                buffer = optimizer.state[p].get("momentum_buffer")
                if buffer is not None:
                    buffer.mul_(group["lr"] / rate)
            group["lr"] = rate
        optimizer.zero_grad()
        optim_model._objective(X_t, Y_t).backward()
        optimizer.step()
    assert params_rel_error(optim_model.get_params(), spec_model.get_params()) <= 1e-14


def test_torch_optim_adam_is_the_spec_adam_and_its_defaults_are_the_papers():
    """torch.optim.Adam divides by sqrt(v_hat) + eps, as the spec; its defaults are (0.9, 0.999), 1e-8."""
    defaults = torch.optim.Adam([torch.zeros(1, requires_grad=True)]).defaults
    assert (defaults["betas"], defaults["eps"]) == ((0.9, 0.999), 1e-8)
    assert (Adam().beta1, Adam().beta2, Adam().epsilon) == (0.9, 0.999, 1e-8)
    X, y = random_problem(SPEC, 8, 1)
    start = random_params(SPEC, 2)
    rule = Adam(beta1=0.8, beta2=0.9, epsilon=1e-3)  # a large epsilon makes its placement visible
    spec_model, optim_model = TorchMLP(SPEC), TorchMLP(SPEC)
    spec_model.set_params(start)
    optim_model.set_params(start)
    rates = [0.05, 0.02, 0.01]
    for rate in rates:
        spec_model.train_step(X, y, learning_rate=rate, optimizer=rule)
    optimizer = torch.optim.Adam(optim_model.net.parameters(), lr=rates[0], betas=(0.8, 0.9), eps=1e-3)
    X_t, Y_t = torch.from_numpy(X), torch.from_numpy(np.asarray(y, dtype=np.float64))
    for rate in rates:
        for group in optimizer.param_groups:
            group["lr"] = rate  # Adam's state holds no learning rate: changing it needs no rescaling
        optimizer.zero_grad()
        optim_model._objective(X_t, Y_t).backward()
        optimizer.step()
    assert params_rel_error(optim_model.get_params(), spec_model.get_params()) <= 1e-14


# ---- dropout --------------------------------------------------------------------------


def test_dropout_is_inverted_in_training_and_identity_in_eval():
    torch.manual_seed(0)
    dropout = nn.Dropout(0.25)
    x = torch.ones(100_000, dtype=torch.float64)
    kept = dropout(x)
    assert set(torch.unique(kept).tolist()) == {0.0, 1 / 0.75}  # kept units scaled by 1/(1-p)
    assert (kept == 0).double().mean().item() == pytest.approx(0.25, abs=0.01)
    dropout.eval()
    assert torch.equal(dropout(x), x)


def test_training_dropout_is_deterministic_per_model_seed_and_leaves_the_global_rng_alone():
    spec = MLPSpec((4, 50, 1), "tanh", "mse", dropout=0.5)
    X, y = random_problem(spec, 16, 0)
    start = random_params(spec, 1)

    def two_steps(seed: int) -> list:
        model = TorchMLP(spec, seed=seed)
        model.set_params(start)
        torch.manual_seed(seed * 1000 + 7)  # unrelated global state must not matter
        state = torch.get_rng_state()
        model.train_step(X, y, 0.1)
        model.train_step(X, y, 0.1)
        assert torch.equal(torch.get_rng_state(), state), "the global generator is untouched"
        return model.get_params()

    assert params_rel_error(two_steps(3), two_steps(3)) == 0
    assert params_rel_error(two_steps(3), two_steps(4)) > 1e-3


def test_injected_masks_are_scaled_by_one_over_keep_probability():
    spec = MLPSpec((3, 6, 1), "identity", "mse", dropout=0.4)
    params = random_params(spec, 0)
    model = TorchMLP(spec)
    model.set_params(params)
    X, y = random_problem(spec, 5, 0)
    mask = np.random.default_rng(1).random((5, 6)) >= 0.4
    (W1, b1), (W2, b2) = params
    expected = np.mean(((X @ W1 + b1) * mask / 0.6 @ W2 + b2 - y) ** 2)
    assert model.loss(X, y, [mask]) == pytest.approx(expected, rel=1e-13)
    unscaled = np.mean(((X @ W1 + b1) * mask @ W2 + b2 - y) ** 2)
    assert abs(unscaled - expected) > 1e-2  # the 1/(1-p) is not optional


# ---- compile mode -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inside inductor
def test_compiled_training_step_follows_the_same_trajectory():
    """torch.compile of forward + loss + backward + update: same run as eager, dropout masks included
    (the compiled step uses eager's RNG via inductor's fallback_random)."""
    spec = MLPSpec((4, 8, 1), "relu", "binary_crossentropy", l2=0.01, dropout=0.2)
    X, y = random_problem(spec, 24, 0)
    config = TrainConfig(epochs=3, batch_size=8, learning_rate=0.3, lr_decay=0.8, momentum=0.7, seed=1)
    start = random_params(spec, 1, scale=0.5)
    runs = []
    for mode in TorchMLP.modes:
        model = TorchMLP(spec, seed=2, mode=mode)
        model.set_params(start)
        runs.append((model.fit(X, y, config).loss, model.get_params()))
    (eager_loss, eager_params), (compiled_loss, compiled_params) = runs
    assert params_rel_error(compiled_params, eager_params) <= 1e-8
    assert max_rel_error(compiled_loss, eager_loss) <= 1e-8
    assert params_rel_error(eager_params, start) > 1e-2, "training moved the parameters"
