"""docs/porting.md as a guide: its worked ports run, and every claim it adds is measured here.

The worked ports are the guide's fenced ``python`` blocks, executed one by one in a fresh namespace (each
ends by asserting its certificate).  The other tests pin the defaults table and the pitfalls of porting by
hand, each number measured by running the framework.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import import_or_skip

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "porting.md"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)


def test_the_guide_opens_with_three_worked_ports():
    assert len(BLOCKS) >= 3
    titles = re.findall(r"^## \d\. (.*)$", GUIDE.read_text(), flags=re.MULTILINE)
    assert titles[:3] == ["Keras → PyTorch", "PyTorch → Flax NNX + Optax", "NumPy → any"]


@pytest.mark.parametrize("block", range(len(BLOCKS)))
def test_the_worked_ports_run(block, capsys):
    for module in ("torch", "keras", "flax"):
        import_or_skip(module)
    import keras

    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    try:
        exec(compile(BLOCKS[block], f"{GUIDE.name}[block {block}]", "exec"), {"__name__": "__guide__"})
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)
    assert "| outputs at start |" in capsys.readouterr().out  # each prints its certificate


def test_the_defaults_table():
    torch = import_or_skip("torch")
    keras = import_or_skip("keras")
    import_or_skip("flax")
    import optax
    from flax import nnx

    def default(function, name):
        return inspect.signature(function).parameters[name].default

    # learning rate and epsilon
    assert default(torch.optim.SGD, "lr") == 1e-3 and default(torch.optim.Adam, "lr") == 1e-3
    assert default(torch.optim.Adam, "eps") == 1e-8
    assert keras.optimizers.SGD().get_config()["learning_rate"] == pytest.approx(0.01)
    assert keras.optimizers.Adam().get_config()["learning_rate"] == pytest.approx(0.001)
    assert keras.optimizers.Adam().epsilon == 1e-7
    assert default(optax.adam, "eps") == 1e-8 and default(optax.adam, "eps_root") == 0.0
    assert default(optax.sgd, "learning_rate") is inspect.Parameter.empty
    # batch size and shuffling
    loader = torch.utils.data.DataLoader(list(range(5)))
    assert loader.batch_size == 1 and loader.drop_last is False
    steps = []
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((64, 1)), np.zeros((64, 1)), verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))])
    assert len(steps) == 2  # batches of 32
    assert default(keras.Model.fit, "shuffle") is True
    # early stopping
    stop = keras.callbacks.EarlyStopping()
    assert stop.patience == 0 and stop.restore_best_weights is False
    # initialization
    dense = keras.layers.Dense(2)
    assert type(dense.kernel_initializer).__name__ == "GlorotUniform"
    assert type(dense.bias_initializer).__name__ == "Zeros"
    linear = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    assert np.all(np.asarray(linear.bias.get_value()) == 0)
    torch_linear = torch.nn.Linear(3, 2)
    assert torch.any(torch_linear.bias != 0)  # uniform ±1/√fan_in, not zeros
    assert float(torch_linear.bias.detach().abs().max()) <= 1 / np.sqrt(3)
    # train/eval mode
    assert torch.nn.Sequential(torch.nn.Linear(2, 2)).training is True
    # reductions
    assert torch.nn.CrossEntropyLoss().reduction == "mean"
    assert keras.losses.BinaryCrossentropy().reduction == "sum_over_batch_size"
    zeros = np.zeros((3, 2), np.float32)
    assert optax.sigmoid_binary_cross_entropy(zeros, zeros).shape == (3, 2)


def test_dataloader_shuffles_nothing_and_keeps_the_last_batch_by_default():
    torch = import_or_skip("torch")
    batches = [batch.tolist() for batch in torch.utils.data.DataLoader(list(range(7)), batch_size=3)]
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]


def test_keras_probability_loss_takes_the_logits_path_behind_its_own_sigmoid_layer():
    keras = import_or_skip("keras")
    z, y = np.array([[30.0]]), np.array([[0.0]])
    loss = keras.losses.BinaryCrossentropy(dtype="float64")
    after_layer = keras.layers.Activation("sigmoid", dtype="float64")(keras.ops.convert_to_tensor(z, "float64"))
    p = 1 / (1 + np.exp(-z))
    if keras.backend.backend() == "tensorflow":  # the logits ride on the tensor: TensorFlow only
        assert float(loss(y, after_layer)) == pytest.approx(30.0, rel=1e-12)
    assert float(loss(y, p)) == pytest.approx(-np.log(1e-7), rel=1e-9)  # 16.12: clipped at 1e-7
    float32 = float(keras.losses.BinaryCrossentropy()(y.astype("float32"), p.astype("float32")))
    assert float32 == pytest.approx(15.94, abs=0.005)  # 1 - (1 - 1e-7) is 1.19e-7 in float32


def test_the_float32_rounding_of_a_factor_depends_on_the_factor():
    keras = import_or_skip("keras")
    errors = {x: abs(float(np.float32(x)) - x) / x for x in (0.9, 0.05)}
    assert errors[0.9] == pytest.approx(2.6e-8, rel=0.02) and errors[0.05] == pytest.approx(1.5e-8, rel=0.02)
    if keras.backend.backend() == "tensorflow":
        W = keras.ops.convert_to_tensor(np.ones((2, 2)), dtype="float64")
        native = float(keras.regularizers.L2(0.05)(W))
        assert abs(native - 0.2) / 0.2 == pytest.approx(errors[0.05], rel=1e-6)


def test_keras_ops_mean_on_jax_computes_in_float32_and_returns_float64():
    import_or_skip("jax")
    import_or_skip("keras")
    probe = ("import jax; jax.config.update('jax_enable_x64', True)\n"
             "import numpy as np; from keras import ops\n"
             "x = ops.convert_to_tensor(np.array([0.1, 0.2, 0.7]), dtype='float64')\n"
             "m = ops.mean(x); t = ops.tanh(x)\n"
             "print(m.dtype, abs(float(m) - 1 / 3), t.dtype)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={"KERAS_BACKEND": "jax", "PATH": "", "OMP_NUM_THREADS": "1"}).stdout.split()
    assert out[0] == "float64" and 1e-9 < float(out[1]) < 1e-7 and out[2] == "float32"


def test_sklearn_alpha_is_divided_by_each_batch_length():
    sklearn = import_or_skip("sklearn")
    del sklearn
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 3)), rng.normal(size=16)

    def step(alpha: float, n: int) -> list[np.ndarray]:
        model = MLPRegressor(hidden_layer_sizes=(4,), solver="sgd", momentum=0.0, learning_rate_init=0.1,
                             alpha=alpha, random_state=0)
        model.partial_fit(X[:n], y[:n])
        return model.coefs_

    # the same initial weights W0: the penalty's share of one step is -lr * alpha / n * W0, n the batch length
    shares = {n: step(1.0, n)[0] - step(0.0, n)[0] for n in (4, 16)}
    np.testing.assert_allclose(shares[4], 4 * shares[16], rtol=1e-10)


def test_a_state_dict_goes_into_keras_set_weights_transposed():
    torch = import_or_skip("torch")
    keras = import_or_skip("keras")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
    model = keras.Sequential([keras.Input((3,), dtype="float64"), keras.layers.Dense(3, "tanh", dtype="float64"),
                              keras.layers.Dense(1, dtype="float64")])
    x = np.random.default_rng(0).normal(size=(5, 3))
    expected = net(torch.as_tensor(x)).detach().numpy()
    arrays = [t.detach().numpy() for t in net.state_dict().values()]  # weights (out, in), Keras kernels (in, out)
    with pytest.raises(ValueError):
        model.set_weights(arrays)  # the (1, 3) weight of the last layer is refused by its shape...
    model.set_weights([arrays[0], arrays[1], arrays[2].T, arrays[3]])  # ...the square (3, 3) one is not
    assert not np.allclose(np.asarray(model(x)), expected)  # silently wrong
    model.set_weights([a.T if a.ndim == 2 else a for a in arrays])
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-12)


def test_train_and_eval_mode_defaults():
    torch = import_or_skip("torch")
    keras = import_or_skip("keras")
    torch.manual_seed(0)
    dropping = torch.nn.Sequential(torch.nn.Dropout(0.5))
    ones = torch.ones(1, 1000)
    assert dropping.training and (dropping(ones) == 0).any()  # starts in training mode: dropout on
    model = keras.Sequential([keras.Input((1000,)), keras.layers.Dropout(0.5)])
    np.testing.assert_array_equal(np.asarray(model(np.ones((1, 1000)))), 1.0)  # a plain call is inference


def test_nll_loss_of_log_probabilities_is_the_torch_route_for_probabilities():
    torch = import_or_skip("torch")
    z = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    probabilities = torch.softmax(z, dim=1)
    nll = torch.nn.NLLLoss()(torch.log(probabilities), labels)
    assert float(nll) == pytest.approx(float(torch.nn.CrossEntropyLoss()(z, labels)), rel=1e-12)
    twice = torch.nn.CrossEntropyLoss()(probabilities, labels)  # CrossEntropyLoss on probabilities: softmax twice
    assert abs(float(twice) - float(nll)) > 0.1


def test_learning_rate_scheduler_passes_a_zero_based_epoch():
    keras = import_or_skip("keras")
    seen = []
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: seen.append(epoch) or lr)
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=3, verbose=0, callbacks=[schedule])
    assert seen == [0, 1, 2]


def test_exponential_lr_multiplies_once_per_scheduler_step():
    torch = import_or_skip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5)
    rates = []
    for _ in range(3):  # stepped once per epoch, as the guide's loops do
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == [1.0, 0.5, 0.25]
