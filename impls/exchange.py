"""Moving weights between implementations, and a framework-neutral file format.

The canonical parameters (``[(W (fan_in, fan_out), b (fan_out,)), ...]``) are
the exchange format: any implementation's ``get_params()`` loads into any
other's ``set_params()``.  On disk they are a ``.npz`` archive holding
``W0, b0, W1, b1, ...`` and the spec as JSON, so a file says what network its
arrays belong to.  Each framework's native objects (a ``state_dict``, a Keras
weight list, a JAX pytree) are reached through the implementation's
``native_params()`` / ``load_native()``.

A file is untrusted input: :func:`load` reads no pickles, checks every array's shape and
dtype from its ``.npy`` header before decompressing any data, bounds the JSON header, and
turns every defect into a ``ValueError`` that names the file and the problem.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from impls.base import MLP
from impls.registry import create
from impls.spec import MLPSpec, Params

FORMAT = "mlp-four-frameworks/params-v1"
MAX_HEADER_CHARS = 65_536
"""Largest JSON header accepted (a spec is a few hundred characters)."""


def convert(model: MLP, target: str, mode: str = "default") -> MLP:
    """A new implementation ``target`` of ``model.spec`` holding ``model``'s current parameters."""
    other = create(target, model.spec, seed=model.seed, mode=mode)
    other.set_params(model.get_params())
    return other


def _json_value(value: object) -> object:
    """NumPy scalars in a spec (``np.float32(0.2)``) as the Python numbers JSON knows."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} {value!r} into a parameter file's header")


def save(path: str | Path, spec: MLPSpec, params: Params) -> Path:
    """Write ``params`` (validated against ``spec``) and the spec to ``path`` (``.npz``), atomically.

    The archive is written to a temporary file beside ``path`` and renamed over it, so a reader
    never sees half a file and an interrupted save leaves the old file in place.
    """
    params = spec.check_params(params)
    arrays = {}
    for i, (W, b) in enumerate(params):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    header = json.dumps({"format": FORMAT, "spec": asdict(spec)}, default=_json_value)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:  # an open file keeps numpy from appending ".npz" to the name
            np.savez(fh, header=np.array(header), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
"""``.npy`` header readers by format version (``np.savez`` writes 1.0; 2.0 for headers over 64 KiB)."""


def _array_header(archive: zipfile.ZipFile, name: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of member ``name.npy`` from its header alone (no data is decompressed)."""
    member = f"{name}.npy"
    if member not in archive.namelist():
        raise ValueError(f"{path}: missing array {name!r}")
    with archive.open(member) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            reader = HEADER_READERS.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = reader(fh)  # bounded: the readers refuse headers over 10,000 bytes
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: array {name!r} is damaged ({exc})") from exc
    if dtype.hasobject:
        raise ValueError(f"{path}: array {name!r} holds Python objects (pickled data is never loaded)")
    return shape, dtype


def _read_array(archive: zipfile.ZipFile, name: str, path: Path) -> np.ndarray:
    with archive.open(f"{name}.npy") as fh:
        try:
            return np.lib.format.read_array(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: array {name!r} cannot be read ({type(exc).__name__}: {exc})") from exc


def _read_spec(archive: zipfile.ZipFile, path: Path) -> MLPSpec:
    if "header.npy" not in archive.namelist():
        raise ValueError(f"{path} is not a parameter file of this project (no header)")
    shape, dtype = _array_header(archive, "header", path)
    if shape != () or dtype.kind != "U" or dtype.itemsize // 4 > MAX_HEADER_CHARS:
        raise ValueError(f"{path}: the header must be one string of at most {MAX_HEADER_CHARS} characters, "
                         f"got shape {shape} dtype {dtype}")
    try:
        header = json.loads(str(_read_array(archive, "header", path)))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: the header is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header must be a JSON object, got {type(header).__name__}")
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {header.get('format')!r}, expected {FORMAT!r}")
    raw = header.get("spec")
    if not isinstance(raw, dict) or "layer_sizes" not in raw:
        raise ValueError(f"{path}: the header has no spec with layer_sizes")
    unknown = sorted(set(raw) - set(MLPSpec.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{path}: the spec has unknown fields {unknown}")
    fields = {key: tuple(value) if isinstance(value, list) else value for key, value in raw.items()}
    try:
        return MLPSpec(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid spec: {exc}") from exc


def load(path: str | Path) -> tuple[MLPSpec, Params]:
    """Read a file written by :func:`save`: the spec and its parameters (in the spec's dtype).

    Every array's shape and dtype are checked against the spec from the ``.npy`` headers before
    any array data is decompressed, so a small crafted file cannot allocate a huge array.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            spec = _read_spec(archive, path)
            for layer, (w_shape, b_shape) in enumerate(spec.param_shapes()):
                for name, expected in ((f"W{layer}", w_shape), (f"b{layer}", b_shape)):
                    shape, dtype = _array_header(archive, name, path)
                    if shape != expected or dtype.kind not in "fiu":
                        raise ValueError(f"{path}: array {name!r} has shape {shape} dtype {dtype}; the spec "
                                         f"{list(spec.layer_sizes)} needs shape {expected}, real numbers")
            params = [(_read_array(archive, f"W{layer}", path), _read_array(archive, f"b{layer}", path))
                      for layer in range(spec.n_layers)]
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from exc
    except (EOFError, zipfile.LargeZipFile) as exc:
        raise ValueError(f"{path}: damaged archive ({type(exc).__name__}: {exc})") from exc
    try:
        return spec, spec.check_params(params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def load_model(path: str | Path, implementation: str, mode: str = "default") -> MLP:
    """Build ``implementation`` from a saved file, with the file's parameters loaded."""
    spec, params = load(path)
    model = create(implementation, spec, mode=mode)
    model.set_params(params)
    return model
