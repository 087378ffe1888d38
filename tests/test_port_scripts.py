"""Port.script and ``python -m impls.port``: standalone training scripts that import only NumPy and their framework.

Each script runs in a subprocess in which ``import impls`` fails, on ``data.npz`` beside it, and the parameters
it trains are those of the source trained by its own framework's loop (float64, two epochs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from impls import port
from impls.exchange import save
from impls.registry import create
from impls.spec import SGD, Adam, MLPSpec, TrainConfig, batch_order
from tests.conftest import import_or_skip
from tests.helpers import max_rel_error
from tests.tolerances import TRAJECTORY

BLOCK_IMPLS = "import sys, runpy; sys.modules['impls'] = None; runpy.run_path('model.py', run_name='__main__')"
"""Runs the script with this project unimportable: a script that imports it fails."""


def run_script(ported: port.Port, framework: str, X: np.ndarray, y: np.ndarray, folder: Path) -> list[np.ndarray]:
    save(folder / "weights.npz", ported.spec, ported.params)
    np.savez(folder / "data.npz", X=X, y=y)
    text = ported.script(framework)
    assert not re.search(r"^\s*(from|import)\s+impls\b", text, flags=re.MULTILINE)
    (folder / "model.py").write_text(text)
    done = subprocess.run([sys.executable, "-c", BLOCK_IMPLS], cwd=folder, capture_output=True, text=True,
                          env={"PATH": "", "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = np.load(folder / "weights.trained.npz")
    return [trained[f"{kind}{layer}"] for layer in range(ported.spec.n_layers) for kind in ("W", "b")]


def torch_source():
    """Issue 10's torch model and training setup, built afresh (the same weights on every call)."""
    torch = import_or_skip("torch")
    nn, optim = torch.nn, torch.optim
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    return model, nn.CrossEntropyLoss(), optimizer, optim.lr_scheduler.ExponentialLR(optimizer, 0.9)


def torch_trained(X: np.ndarray, y: np.ndarray, epochs: int, batch_size: int) -> list[np.ndarray]:
    """The torch source trained by PyTorch's usual loop."""
    torch = import_or_skip("torch")
    model, loss_fn, optimizer, scheduler = torch_source()
    inputs, targets = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.long)
    for _ in range(epochs):
        for start in range(0, len(X), batch_size):
            optimizer.zero_grad()
            loss_fn(model(inputs[start:start + batch_size]), targets[start:start + batch_size]).backward()
            optimizer.step()
        scheduler.step()
    return [t.detach().numpy().T if t.ndim == 2 else t.detach().numpy()
            for m in model if isinstance(m, torch.nn.Linear) for t in (m.weight, m.bias)]


@pytest.mark.parametrize("framework", ["torch", "keras", "flax"])
def test_the_torch_sequential_of_issue_10_runs_as_a_standalone_script(framework, tmp_path):
    import_or_skip({"torch": "torch", "keras": "keras", "flax": "flax"}[framework])
    model, loss_fn, optimizer, scheduler = torch_source()
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    ported = port.import_model(model, loss=loss_fn, optimizer=optimizer, scheduler=scheduler, epochs=2,
                               batch_size=16)
    trained = run_script(ported, framework, X, y, tmp_path)
    expected = torch_trained(X, y, 2, 16)
    assert max_rel_error(np.concatenate([a.ravel() for a in trained]),
                         np.concatenate([a.ravel() for a in expected])) <= TRAJECTORY


@pytest.mark.parametrize("framework", ["torch", "keras", "flax"])
@pytest.mark.parametrize("rule", [SGD(0.9), Adam()], ids=["sgd", "adam"])
def test_a_spec_port_runs_as_a_standalone_script_and_trains_as_the_reference(framework, rule, tmp_path):
    import_or_skip({"torch": "torch", "keras": "keras", "flax": "flax"}[framework])
    spec = MLPSpec((4, 6, 1), "leaky_relu", "binary_crossentropy", l1=1e-3, l2=1e-3)
    reference = create("numpy", spec, seed=2)
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, lr_decay=0.8, optimizer=rule, shuffle=False)
    ported = port.import_model(reference, config=config)
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 2, 40)
    trained = run_script(ported, framework, X, y, tmp_path)
    for epoch in (1, 2):
        for idx in batch_order(len(X), 16, 0, epoch, shuffle=False):
            reference.train_step(X[idx], y[idx], config.learning_rate_at(epoch), optimizer=rule)
    expected = [a for pair in reference.get_params() for a in pair]
    assert max_rel_error(np.concatenate([a.ravel() for a in trained]),
                         np.concatenate([a.ravel() for a in expected])) <= TRAJECTORY


def test_the_command_line_writes_a_script_and_its_weights(tmp_path):
    import_or_skip("torch")
    spec = MLPSpec((3, 5, 2), "tanh", "categorical_crossentropy")
    save(tmp_path / "model.npz", spec, create("numpy", spec).get_params())
    out = tmp_path / "train_torch.py"
    assert port.main([str(tmp_path / "model.npz"), "--to", "torch", "--out", str(out), "--epochs", "1",
                      "--momentum", "0.9"]) == 0
    assert out.exists() and (tmp_path / "train_torch.npz").exists()
    assert 'WEIGHTS = HERE / "train_torch.npz"' in out.read_text()
    assert port.main([str(tmp_path / "model.npz"), "--to", "torch", "--out", str(out), "--lr-decay", "2"]) == 1


# a compiled model saved before it trained has no optimizer variables yet; Keras 3.15 says so on load
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning")
def test_the_command_line_reads_a_keras_file(tmp_path):
    keras = import_or_skip("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="binary_crossentropy")
    model.save(tmp_path / "model.keras")
    out = tmp_path / "train_flax.py"
    assert port.main([str(tmp_path / "model.keras"), "--to", "flax", "--out", str(out)]) == 0
    assert "optax.sgd" in out.read_text()


def test_no_script_for_our_own_implementations():
    spec = MLPSpec((2, 1))
    ported = port.import_model(create("numpy", spec), config=TrainConfig())
    with pytest.raises(ValueError, match="use export"):
        ported.script("numpy")
