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

A file says what network its arrays belong to *completely*: every field of :class:`MLPSpec`
must be in its header, and a missing one is refused, never filled with the field's default
(a ``tanh`` model read as the default ``relu`` would compute other outputs without a word).

The format is versioned (:data:`FORMAT`).  Reading applies :data:`MIGRATIONS` in order, each
turning a header of an older format into one of the next, then requires every field.  Adding a
field to :class:`MLPSpec` therefore takes two steps:

1. bump :data:`FORMAT` (``.../params-v1`` to ``.../params-v2``);
2. register one function ``MIGRATIONS["mlp-four-frameworks/params-v1"] = _v1_to_v2`` that copies
   the header, sets its ``"format"`` to v2 and fills the new field in ``header["spec"]`` with the
   value a v1 file can only have meant: what every model behaved as before the field existed,
   which need not be the field's new default.

Files of every older format then load, and a v2 file that lacks the field is refused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
import zipfile
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from impls.base import MLP
from impls.registry import create
from impls.spec import MLPSpec, Params

FORMAT = "mlp-four-frameworks/params-v1"
"""The format :func:`save` writes; :func:`load` reads it and every format in :data:`MIGRATIONS`."""

MIGRATIONS: dict[str, Callable[[dict], dict]] = {}
"""``{older format: function(header) -> header of the next format}``, applied in order by :func:`load`.

Each function takes the whole header (``{"format": ..., "spec": {...}}``, as read from the file) and
returns the header of the next format, its ``"format"`` included.  Empty while v1 is the only format.
"""
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
    never sees half a file and an interrupted save leaves the old file in place.  Permissions are
    those ``np.savez`` gives: a new file ``0o666`` less the umask, an existing file keeps its mode.
    A file that cannot be written raises the ``OSError`` subclass of the cause (``FileNotFoundError``,
    ``PermissionError``, ...) with a message that names ``path``.
    """
    params = spec.check_params(params)
    arrays = {}
    for i, (W, b) in enumerate(params):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    header = json.dumps({"format": FORMAT, "spec": asdict(spec)}, default=_json_value)
    path = Path(path)
    tmp: Path | None = None
    try:
        fd, tmp = _create_beside(path)
        with os.fdopen(fd, "wb") as fh:  # an open file keeps numpy from appending ".npz" to the name
            np.savez(fh, header=np.array(header), **arrays)
        with contextlib.suppress(FileNotFoundError):  # a new file keeps the mode the umask gave it
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))  # a replaced file keeps its permissions
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise _write_error(exc, path) from None  # the cause names the temporary file, which the caller never saw
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    return path


def _create_beside(path: Path) -> tuple[int, Path]:
    """A new, uniquely named hidden file in ``path``'s folder, open for writing: its descriptor and path.

    Created by ``open(2)`` with mode ``0o666``, so the kernel applies the umask (or the folder's default
    ACL) exactly as for the file ``np.savez`` would create.  Reading the umask to compute the mode instead
    would need ``os.umask`` set-and-restore, which changes it for every thread in between, or
    ``/proc/self/status``, which only Linux has.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(path.parent))


def _write_error(exc: OSError, path: Path) -> OSError:
    """``exc`` (raised on the temporary file) as the same ``OSError`` subclass, worded for ``path``."""
    folder = path.parent
    if isinstance(exc, FileNotFoundError) and not os.path.isdir(folder):
        reason = f"the folder {folder} does not exist"
    elif isinstance(exc, NotADirectoryError):
        reason = f"{folder} is not a folder"
    elif isinstance(exc, IsADirectoryError) or os.path.isdir(path):
        reason = "it is a folder"
    elif isinstance(exc, PermissionError):
        reason = (f"permission denied in the folder {folder} (the file is written beside its target and "
                  "renamed over it, so the folder must be writable)")
    elif exc.errno == errno.EROFS:
        reason = f"the folder {folder} is on a read-only file system"
    else:
        reason = exc.strerror or str(exc)
    error = type(exc)(f"cannot write {path}: {reason}")
    error.errno = exc.errno
    return error


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


def _migrate(header: dict, path: Path) -> dict:
    """``header`` brought to :data:`FORMAT` by :data:`MIGRATIONS`, one format at a time."""
    seen: list[str] = []
    while (version := header.get("format")) != FORMAT:
        step = MIGRATIONS.get(version) if isinstance(version, str) else None
        if step is None:
            raise ValueError(f"{path}: unknown format {version!r}; this version reads {[FORMAT, *MIGRATIONS]} "
                             "(a newer version of this project may have written the file)")
        if version in seen:
            raise RuntimeError(f"MIGRATIONS go round in a circle: {[*seen, version]}")
        seen.append(version)
        try:
            header = step(dict(header))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a damaged header of that format
            raise ValueError(f"{path}: a {version!r} header that cannot be read ({type(exc).__name__}: {exc})") from exc
        if not isinstance(header, dict):
            raise RuntimeError(f"the migration from {version!r} returned {type(header).__name__}, not a header dict")
    return header


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
    header = _migrate(header, path)
    raw = header.get("spec")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the header has no spec (a JSON object of MLPSpec's fields)")
    names = {f.name for f in fields(MLPSpec)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{path}: the spec has unknown fields {unknown}")
    missing = sorted(names - set(raw))
    if missing:
        raise ValueError(f"{path}: the spec lacks the fields {missing}; a {FORMAT} file gives every field of "
                         "MLPSpec, and a missing one is not read as its default")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in raw.items()}
    try:
        return MLPSpec(**values)
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
