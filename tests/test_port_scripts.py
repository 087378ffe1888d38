"""Port.script and ``python -m impls.port``: standalone training scripts that import only NumPy and their framework.

Each script runs in a subprocess in which ``import impls`` fails, on ``data.npz`` beside it, and the parameters
it trains are those of the source trained by its own framework's loop (float64, two epochs)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from impls import port
from impls.exchange import save
from impls.registry import create
from impls.spec import SGD, Adam, EarlyStopping, MLPSpec, TrainConfig, batch_order
from tests.conftest import import_or_skip
from tests.helpers import max_rel_error
from tests.tolerances import TRAJECTORY

BLOCK_IMPLS = "import sys, runpy; sys.modules['impls'] = None; runpy.run_path(sys.argv[1], run_name='__main__')"
"""Runs the script named by the first argument with this project unimportable: a script that imports it fails."""


def run_in(folder: Path, script: str, n_layers: int, X: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Run ``folder/script`` on ``data.npz`` (``X``, ``y``) beside it; the parameters it trained."""
    assert not re.search(r"^\s*(from|import)\s+impls\b", (folder / script).read_text(), flags=re.MULTILINE)
    np.savez(folder / "data.npz", X=X, y=y)
    done = subprocess.run([sys.executable, "-c", BLOCK_IMPLS, script], cwd=folder, capture_output=True, text=True,
                          env={"PATH": "", "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = np.load(folder / f"{Path(script).stem}.trained.npz")
    return [trained[f"{kind}{layer}"] for layer in range(n_layers) for kind in ("W", "b")]


def run_script(ported: port.Port, framework: str, X: np.ndarray, y: np.ndarray, folder: Path) -> list[np.ndarray]:
    save(folder / "model.npz", ported.spec, ported.params)
    (folder / "model.py").write_text(ported.script(framework, weights="model.npz"))
    return run_in(folder, "model.py", ported.spec.n_layers, X, y)


def reference_run(spec: MLPSpec, params: list, config: TrainConfig, X: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """``params`` trained by the NumPy reference under ``config`` on unshuffled batches."""
    reference = create("numpy", spec)
    reference.set_params(params)
    for epoch in range(1, config.epochs + 1):
        for idx in batch_order(len(X), config.batch_size, 0, epoch, shuffle=False):
            reference.train_step(X[idx], y[idx], config.learning_rate_at(epoch), optimizer=config.optimizer)
    return [a for pair in reference.get_params() for a in pair]


def close(trained: list[np.ndarray], expected: list[np.ndarray]) -> bool:
    return max_rel_error(np.concatenate([a.ravel() for a in trained]),
                         np.concatenate([a.ravel() for a in expected])) <= TRAJECTORY


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


def test_the_command_line_writes_a_script_that_trains_as_the_reference(tmp_path):
    import_or_skip("torch")
    spec = MLPSpec((3, 5, 2), "tanh", "categorical_crossentropy")
    params = create("numpy", spec, seed=1).get_params()
    save(tmp_path / "model.npz", spec, params)
    out = tmp_path / "train_torch.py"
    assert port.main([str(tmp_path / "model.npz"), "--to", "torch", "--out", str(out), "--epochs", "2",
                      "--batch-size", "16", "--momentum", "0.9", "--learning-rate", "0.05"]) == 0
    assert out.exists() and (tmp_path / "train_torch.npz").exists()
    assert 'WEIGHTS = HERE / "train_torch.npz"' in out.read_text()
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    trained = run_in(tmp_path, out.name, spec.n_layers, X, y)
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, momentum=0.9, shuffle=False)
    assert close(trained, reference_run(spec, params, config, X, y))
    assert port.main([str(tmp_path / "model.npz"), "--to", "torch", "--out", str(out), "--lr-decay", "2",
                      "--force"]) == 2


def test_the_command_line_reads_a_keras_file_and_its_script_trains_as_keras(tmp_path):
    keras = import_or_skip("keras")
    import_or_skip("flax")
    from impls.keras_backend import floatx

    with floatx("float64"):  # numpy.float64 factors: exact on TensorFlow, so the script can match to 1e-8
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=keras.optimizers.SGD(np.float64(0.1), momentum=np.float64(0.9)),
                      loss=keras.losses.BinaryCrossentropy())
    model.save(tmp_path / "model.keras")
    out = tmp_path / "train_flax.py"
    assert port.main([str(tmp_path / "model.keras"), "--to", "flax", "--out", str(out), "--epochs", "2",
                      "--batch-size", "16"]) == 0
    assert "optax.sgd" in out.read_text()
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    trained = run_in(tmp_path, out.name, 2, X, y)
    with floatx("float64"):
        model.fit(X, y.astype("float64")[:, None], batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert close(trained, [np.asarray(w) for w in model.get_weights()])


HOSTILE = ['x"""+__import__("os").system("echo pwned")+"""', "'''", 'ends with a quote"', "ends with a backslash\\",
           "back\\slash \\N{BULLET} \\x41 \\u0041 \\n", "{} {0} {__import__} {{", "new\nline\rreturn\r\nboth",
           "form\x0cfeed tab\t nul\x00 bell\x07", "sep\u2028ar\u2029ator\x85nel", "ünïcødé ✓ 中文 😀",
           "lone surrogate \udcff", "# not a comment\nimport os; os.system('echo pwned')"]
"""Text that would change a script's code if pasted into it unescaped: quotes that end a string, backslash
sequences, braces of a format string, characters that end a line."""


def _shape(source: str) -> str:
    """The syntax tree of ``source`` with every string constant emptied: what the code does, whatever its strings
    say."""
    class Empty(ast.NodeTransformer):
        def visit_Constant(self, node: ast.Constant) -> ast.Constant:
            return ast.Constant("") if isinstance(node.value, str) else node

    return ast.dump(Empty().visit(ast.parse(source)))


@pytest.mark.parametrize("framework", ["torch", "keras", "flax"])
def test_no_name_or_note_can_change_a_scripts_code(framework):
    import_or_skip(framework)
    spec = MLPSpec((4, 6, 1), "leaky_relu", "binary_crossentropy", l1=1e-3, l2=1e-3)
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, lr_decay=0.8, optimizer=SGD(0.9),
                         shuffle=False, early_stopping=EarlyStopping(patience=3, min_delta=1e-4))
    clean = port.import_model(create("numpy", spec, seed=2), config=config)
    clean_text = clean.script(framework, weights="weights.npz")
    compile(clean_text, "clean.py", "exec")
    for text in HOSTILE:
        hostile = replace(clean, notes=[text, f"read {text}.npz: the spec and parameters"],
                          deviations=[port.Deviation(text, "float32_rate")])
        script = hostile.script(framework, weights=f"{text}.npz")
        compile(script, "hostile.py", "exec")  # it compiles
        tree = ast.parse(script)
        assert _shape(script) == _shape(clean_text), text  # no call, name or statement the clean one lacks
        doc = ast.get_docstring(tree, clean=False)
        assert all(f"* {note}\n" in doc for note in hostile.notes) and f"* deviation: {text}\n" in doc
        weights = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                       and getattr(node.targets[0], "id", "") == "WEIGHTS")
        assert ast.dump(weights.left) == ast.dump(ast.Name("HERE", ast.Load()))
        assert weights.right.value == f"{text}.npz", text


def test_no_script_for_our_own_implementations():
    spec = MLPSpec((2, 1))
    ported = port.import_model(create("numpy", spec), config=TrainConfig())
    with pytest.raises(ValueError, match="use export"):
        ported.script("numpy")
