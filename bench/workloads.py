"""The workloads: data (all offline), the model, the training settings and the FLOP count.

Each workload is a :class:`Workload`; :func:`get` returns one by name, with sweep
parameters applied (``width``, ``batch``, ``depth`` for the scaling sweeps).
Data sets come from scikit-learn's bundled copies or are generated, so nothing is
downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import json
import os
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from impls.spec import EarlyStopping, MLPSpec, TrainConfig


@dataclass(frozen=True)
class Data:
    """A split data set.  ``y_scale``: factor back to the target's units (regression errors)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    y_scale: float = 1.0

    def cast(self, dtype: str) -> Data:
        """Features in ``dtype`` (targets stay as labels/values; the spec converts them)."""
        def c(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.ascontiguousarray(a, dtype=dtype)
        return replace(self, X_train=c(self.X_train), X_test=c(self.X_test), X_val=c(self.X_val))


@dataclass(frozen=True)
class Workload:
    """One benchmark workload.

    ``layer_sizes``/``loss``/``spec_options`` define the :class:`~impls.spec.MLPSpec`;
    ``train`` holds the :class:`~impls.spec.TrainConfig` fields except the seed;
    ``speed_only`` workloads report step time and throughput, no accuracy.
    ``accuracy_target``: the test accuracy whose first epoch gives the time to accuracy (classification).
    """

    name: str
    description: str
    layer_sizes: tuple[int, ...]
    loss: str
    loader: Callable[[Mapping[str, int]], Data]
    train: Mapping[str, object]
    spec_options: Mapping[str, object] = field(default_factory=dict)
    speed_only: bool = False
    loss_curves: bool = False
    params: Mapping[str, int] = field(default_factory=dict)
    accuracy_target: float | None = None

    @property
    def task(self) -> str:
        return self.spec().task

    @property
    def batch_size(self) -> int:
        return int(self.train["batch_size"])  # type: ignore[call-overload]

    def spec(self, dtype: str = "float32") -> MLPSpec:
        return MLPSpec(self.layer_sizes, loss=self.loss, dtype=dtype, **self.spec_options)

    def config(self, seed: int, epochs: int | None = None) -> TrainConfig:
        """Training settings for one seed (``epochs`` overrides the workload's budget)."""
        kwargs = dict(self.train)
        if epochs is not None:
            kwargs["epochs"] = epochs
        return TrainConfig(seed=seed, **kwargs)  # type: ignore[arg-type]

    def load(self, cache: Path | None = None) -> Data:
        """The data; with a ``cache`` folder, kept there as ``.npz`` (workers then need not import
        scikit-learn).

        The file's name carries :meth:`cache_key` (the loader's code, its parameters, the libraries that
        made the arrays), so an edited loader gets a new file instead of the old data.  The file holds the
        :func:`data_digest` of its arrays; one that cannot be read whole, or whose arrays do not match their
        digest (replaced, truncated, edited by hand), is rebuilt, with a one-line note on stderr.
        """
        if cache is None:
            return self.loader(self.params)
        path = Path(cache) / self.cache_name
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            stored = str(arrays.pop(DIGEST))
            if data_digest(arrays) == stored:
                y_scale = float(arrays.pop("y_scale"))
                return Data(**arrays, y_scale=y_scale)
            print(f"data cache {path}: its arrays do not match their digest (replaced or damaged); rebuilt",
                  file=sys.stderr)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            print(f"data cache {path}: cannot be read ({type(exc).__name__}); rebuilt", file=sys.stderr)
        path.unlink(missing_ok=True)
        data = self.loader(self.params)
        arrays = {"y_scale": np.asarray(data.y_scale, dtype=np.float64),
                  **{k: v for k, v in vars(data).items() if isinstance(v, np.ndarray)}}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        np.savez(tmp, **arrays, **{DIGEST: np.asarray(data_digest(arrays))})
        os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
        return data

    def cache_key(self) -> str:
        """What the cached data depends on, hashed (SHA-256, 16 hex digits): the source of this module (the
        loaders and the helpers they call), the loader's own source and module (a plugin's loader lives
        elsewhere), the parameters, and the versions of NumPy and scikit-learn, which generate and split the data."""
        digest = hashlib.sha256()
        for text in (_file_bytes(__file__), _loader_code(self.loader),
                     json.dumps(sorted((str(k), str(v)) for k, v in self.params.items())).encode(),
                     json.dumps(data_library_versions(), sort_keys=True).encode()):
            digest.update(text + b"\0")
        return digest.hexdigest()[:16]

    @property
    def cache_name(self) -> str:
        """The data's file name in a cache folder: its loader and parameters, readable, then :meth:`cache_key`."""
        key = "-".join(f"{k}{v}" for k, v in sorted(self.params.items()))
        return f"{self.loader.__name__}{'-' + key if key else ''}-{self.cache_key()}.npz"

    def flops_per_step(self, batch: int | None = None) -> int:
        """Analytic FLOPs of one training step on a full batch (see :func:`dense_flops`)."""
        return dense_flops(self.layer_sizes, batch or self.batch_size)


DIGEST = "digest"
"""The entry of a cache file that holds the :func:`data_digest` of its other arrays."""


def data_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) over every array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@functools.cache
def data_library_versions() -> dict[str, str | None]:
    """The versions of the libraries that make the data (read from the package metadata: nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in ("numpy", "scikit-learn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _file_bytes(path: str | None) -> bytes:
    try:
        return Path(path).read_bytes() if path else b""
    except OSError:
        return b""


def _loader_code(loader: Callable) -> bytes:
    """The loader's name, its source and its module's source (read now: an edit shows at once), or, where the
    source is not available, its compiled code."""
    name = f"{getattr(loader, '__module__', '')}.{getattr(loader, '__qualname__', repr(loader))}".encode()
    try:
        source = inspect.getsource(loader).encode()
        module_file = inspect.getsourcefile(loader)
    except (OSError, TypeError):
        code = getattr(loader, "__code__", None)
        source = repr((code.co_code, code.co_consts, code.co_names)).encode() if code is not None else b""
        module_file = None
    same = module_file is not None and Path(module_file).resolve() == Path(__file__).resolve()
    return name + b"\0" + source + b"\0" + (b"" if same else _file_bytes(module_file))


def dense_flops(layer_sizes: tuple[int, ...], batch: int) -> int:
    """FLOPs of one SGD step of the dense layers, counting 2 per multiply-add.

    Forward: ``2 B fan_in fan_out`` per layer.  Backward: the weight gradient
    ``a.T @ delta`` (same count) for every layer, and the input gradient
    ``delta @ W.T`` for every layer but the first (no one needs d loss / d X).
    Biases, activations, the loss and the parameter update are elementwise and not counted.
    """
    return sum(2 * m * k * n for m, k, n in step_matmuls(layer_sizes, batch))


def step_matmuls(layer_sizes: tuple[int, ...], batch: int) -> list[tuple[int, int, int]]:
    """The matrix products of one training step as ``(rows, inner, cols)`` (the FLOP count's shapes)."""
    out: list[tuple[int, int, int]] = []
    pairs = list(itertools.pairwise(layer_sizes))
    for layer, (fan_in, fan_out) in enumerate(pairs):
        out.append((batch, fan_in, fan_out))        # forward: a @ W
        out.append((fan_in, batch, fan_out))        # backward: a.T @ delta
        if layer > 0:
            out.append((batch, fan_out, fan_in))    # backward: delta @ W.T
    return out


# ---- data ------------------------------------------------------------------------


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std == 0, 1.0, std)
    return [(a - mean) / std for a in (train, *others)]


def circles_data(params: Mapping[str, int]) -> Data:
    """The lecture's data (same as tests/helpers.py ``lecture_circles``)."""
    from sklearn.datasets import make_circles
    from sklearn.model_selection import train_test_split

    X, y = make_circles(n_samples=200, factor=0.5, noise=0.08, random_state=1)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    X_tr, X_te = _standardize(X_tr, X_te)
    return Data(X_tr, y_tr, X_te, y_te)


def digits_data(params: Mapping[str, int]) -> Data:
    """scikit-learn's 8x8 digits (1797 images), pixels / 16, 75/25 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    return Data(X_tr, y_tr, X_te, y_te)


def breast_cancer_data(params: Mapping[str, int]) -> Data:
    """Wisconsin breast cancer (569 x 30), 60/20/20 train/validation/test, stratified, standardized."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    X_tr, X_va, y_tr, y_va = train_test_split(X_tr, y_tr, test_size=0.25, random_state=0, stratify=y_tr)
    X_tr, X_va, X_te = _standardize(X_tr, X_va, X_te)
    return Data(X_tr, y_tr, X_te, y_te, X_va, y_va)


def diabetes_data(params: Mapping[str, int]) -> Data:
    """Diabetes progression (442 x 10), 75/25 split; features and target standardized on train.

    Errors are reported in the target's units (``y_scale`` = the target's std).
    """
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0)
    X_tr, X_te = _standardize(X_tr, X_te)
    mean, std = y_tr.mean(), y_tr.std()
    return Data(X_tr, (y_tr - mean) / std, X_te, (y_te - mean) / std, y_scale=float(std))


def synthetic_data(params: Mapping[str, int]) -> Data:
    """MNIST-shaped random data: ``n`` samples of ``inputs`` N(0, 1) features, ``classes`` labels."""
    rng = np.random.default_rng(0)
    n, d, k = params["n"], params["inputs"], params["classes"]
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, k, size=n)
    return Data(X, y, X[: params["batch"]], y[: params["batch"]])


# ---- the workloads ---------------------------------------------------------------

THROUGHPUT_STEPS = 8
"""Steps per epoch of the speed-only workloads."""


def synthetic_workload(name: str, description: str, layer_sizes: tuple[int, ...], batch: int) -> Workload:
    params = {"n": batch * THROUGHPUT_STEPS, "inputs": layer_sizes[0], "classes": layer_sizes[-1], "batch": batch}
    return Workload(name, description, layer_sizes, "categorical_crossentropy", synthetic_data,
                    {"epochs": 1, "batch_size": batch, "learning_rate": 0.01},
                    {"hidden_activation": "relu", "initializer": "he_normal"},
                    speed_only=True, params=params)


WORKLOADS: dict[str, Workload] = {
    "circles": Workload(
        "circles", "the lecture's experiment: make_circles, ReLU, sigmoid + BCE, lr 0.3 decay 0.95",
        (2, 4, 4, 1), "binary_crossentropy", circles_data,
        {"epochs": 150, "batch_size": 32, "learning_rate": 0.3, "lr_decay": 0.95},
        # target: the committed full-length run (150 epochs, 3 seeds) ended at median test accuracies of 0.78-1.0,
        # 0.85 or more for all but Keras[jax] and scikit-learn; 10 epochs (the quick profile) reach 0.6-0.8
        {"hidden_activation": "relu", "initializer": "he_normal"}, accuracy_target=0.85),
    "digits": Workload(
        "digits", "scikit-learn's 8x8 digits, ReLU, softmax + cross-entropy, momentum 0.9",
        (64, 128, 128, 10), "categorical_crossentropy", digits_data,
        {"epochs": 30, "batch_size": 128, "learning_rate": 0.05, "momentum": 0.9},
        {"hidden_activation": "relu", "initializer": "he_normal"}, loss_curves=True, accuracy_target=0.97),
    "breast_cancer": Workload(
        "breast_cancer", "binary, L2 1e-3, dropout 0.2, early stopping (patience 10) on a validation split",
        (30, 16, 8, 1), "binary_crossentropy", breast_cancer_data,
        {"epochs": 150, "batch_size": 64, "learning_rate": 0.05, "momentum": 0.9,
         "early_stopping": EarlyStopping(patience=10)},
        {"hidden_activation": "relu", "initializer": "he_normal", "l2": 1e-3, "dropout": 0.2},
        accuracy_target=0.95),
    "diabetes": Workload(
        "diabetes", "regression on scikit-learn's diabetes data, MSE (errors in the target's units)",
        (10, 32, 16, 1), "mse", diabetes_data,
        {"epochs": 60, "batch_size": 64, "learning_rate": 0.01, "momentum": 0.9},
        {"hidden_activation": "relu", "initializer": "he_normal"}),
    "throughput": synthetic_workload("throughput", "synthetic MNIST-shaped data, speed only",
                             (784, 1024, 1024, 10), 256),
}
"""The workloads of the benchmark, in report order."""

SWEEPS: dict[str, tuple[int, ...]] = {
    "width": (64, 128, 256, 512, 1024, 2048),
    "batch": (16, 32, 64, 128, 256, 512, 1024),
    "depth": (1, 2, 4, 8),
}
"""Scaling sweeps (full profile): the values of each swept parameter."""

COST_WIDTHS = (32, 128, 512, 1024, 2048)
"""The cost model's width sweep (``sweep`` profile): five hidden widths, 2 000x apart in FLOPs per step."""


def sweep_workload(kind: str, value: int) -> Workload:
    """A speed-only MNIST-shaped workload with one parameter swept.

    Defaults: two hidden layers of width 256, batch 256.
    """
    width, batch, depth = 256, 256, 2
    if kind == "width":
        width = value
    elif kind == "batch":
        batch = value
    elif kind == "depth":
        depth = value
    else:
        raise ValueError(f"unknown sweep {kind!r}; expected one of {sorted(SWEEPS)}")
    sizes = (784, *([width] * depth), 10)
    return synthetic_workload(f"sweep_{kind}", f"scaling: {kind} = {value}", sizes, batch)


def get(name: str, params: Mapping[str, int] | None = None) -> Workload:
    """The workload ``name``; ``sweep_<kind>`` with ``params={"value": v}`` builds a sweep point."""
    if name.startswith("sweep_"):
        if not params or "value" not in params:
            raise ValueError(f"{name} needs params={{'value': ...}}")
        return sweep_workload(name.removeprefix("sweep_"), int(params["value"]))
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; expected one of {sorted(WORKLOADS)}")
    return WORKLOADS[name]


def register(workload: Workload) -> None:
    """Add a workload (used by plugins, e.g. the harness tests' fake workload)."""
    WORKLOADS[workload.name] = workload
