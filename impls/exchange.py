"""Moving weights between implementations, and a framework-neutral file format.

The canonical parameters (``[(W (fan_in, fan_out), b (fan_out,)), ...]``) are
the exchange format: any implementation's ``get_params()`` loads into any
other's ``set_params()``.  On disk they are a ``.npz`` archive holding
``W0, b0, W1, b1, ...`` and the spec as JSON, so a file says what network its
arrays belong to.  Each framework's native objects (a ``state_dict``, a Keras
weight list, a JAX pytree) are reached through the implementation's
``native_params()`` / ``load_native()``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from impls.base import MLP
from impls.registry import create
from impls.spec import MLPSpec, Params

FORMAT = "mlp-four-frameworks/params-v1"


def convert(model: MLP, target: str, mode: str = "default") -> MLP:
    """A new implementation ``target`` of ``model.spec`` holding ``model``'s current parameters."""
    other = create(target, model.spec, seed=model.seed, mode=mode)
    other.set_params(model.get_params())
    return other


def save(path: str | Path, spec: MLPSpec, params: Params) -> Path:
    """Write ``params`` (validated against ``spec``) and the spec to ``path`` (``.npz``)."""
    params = spec.check_params(params)
    arrays = {}
    for i, (W, b) in enumerate(params):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    header = json.dumps({"format": FORMAT, "spec": asdict(spec)})
    path = Path(path)
    with open(path, "wb") as fh:  # an open file keeps numpy from appending ".npz" to the name
        np.savez(fh, header=np.array(header), **arrays)
    return path


def load(path: str | Path) -> tuple[MLPSpec, Params]:
    """Read a file written by :func:`save`: the spec and its parameters (in the spec's dtype)."""
    with np.load(path, allow_pickle=False) as archive:
        if "header" not in archive.files:
            raise ValueError(f"{path} is not a parameter file of this project (no header)")
        header = json.loads(str(archive["header"]))
        if header.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown format {header.get('format')!r}, expected {FORMAT!r}")
        raw = header["spec"]
        raw["layer_sizes"] = tuple(raw["layer_sizes"])
        if isinstance(raw["dropout"], list):
            raw["dropout"] = tuple(raw["dropout"])
        spec = MLPSpec(**raw)
        params = [(archive[f"W{i}"], archive[f"b{i}"]) for i in range(spec.n_layers)]
    return spec, spec.check_params(params)


def load_model(path: str | Path, implementation: str, mode: str = "default") -> MLP:
    """Build ``implementation`` from a saved file, with the file's parameters loaded."""
    spec, params = load(path)
    model = create(implementation, spec, mode=mode)
    model.set_params(params)
    return model
