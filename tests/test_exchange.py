"""Weights move between every pair of implementations, to and from native objects and a file, unchanged."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
import zipfile
from dataclasses import asdict, fields

import numpy as np
import pytest

from impls import MLPSpec, create, exchange, registry
from impls.exchange import FORMAT, convert, load, load_model, save
from tests.conftest import require
from tests.helpers import params_rel_error, random_problem
from tests.tolerances import COMPUTATION

SPEC = MLPSpec((5, 7, 6, 3), "tanh", "categorical_crossentropy", "xavier_uniform", l2=0.01, dropout=0.2)
# Moving parameters copies numbers; nothing is recomputed, so the round trip is exact in float64.
# Outputs of two frameworks on the same parameters differ by rounding: the equivalence tolerance.


@pytest.mark.parametrize("target", registry.names())
def test_parameters_move_between_every_pair_unchanged(impl_name, target):
    require(target)
    source = create(impl_name, SPEC, seed=11)
    moved = convert(source, target)
    assert params_rel_error(moved.get_params(), source.get_params()) == 0.0
    X, _ = random_problem(SPEC, 20, 3)
    np.testing.assert_allclose(moved.forward(X), source.forward(X), rtol=COMPUTATION["float64"], atol=1e-14)


def test_native_parameters_round_trip(impl_name):
    model = create(impl_name, SPEC, seed=5)
    native = model.native_params()
    other = create(impl_name, SPEC, seed=6)
    assert params_rel_error(other.get_params(), model.get_params()) > 0.1
    other.load_native(native)
    assert params_rel_error(other.get_params(), model.get_params()) == 0.0
    X, _ = random_problem(SPEC, 10, 4)
    np.testing.assert_array_equal(other.forward(X), model.forward(X))


def test_file_round_trip_keeps_spec_and_outputs(impl_name, tmp_path):
    model = create(impl_name, SPEC, seed=2)
    path = save(tmp_path / "weights.npz", model.spec, model.get_params())
    spec, params = load(path)
    assert spec == SPEC
    assert params_rel_error(params, model.get_params()) == 0.0
    X, _ = random_problem(SPEC, 10, 4)
    np.testing.assert_array_equal(load_model(path, impl_name).forward(X), model.forward(X))


def test_file_with_per_layer_dropout_and_float32_round_trips(tmp_path):
    spec = MLPSpec((3, 4, 4, 1), dropout=(0.1, 0.3), dtype="float32")
    model = create("numpy", spec, seed=1)
    spec_back, params = load(save(tmp_path / "w.npz", spec, model.get_params()))
    assert spec_back == spec and params[0][0].dtype == np.float32


def test_loading_a_file_that_is_not_ours_names_the_problem(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, W0=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not a parameter file"):
        load(path)


def test_saving_parameters_of_the_wrong_shape_names_the_layer(tmp_path):
    with pytest.raises(ValueError, match=r"params\[1\] has W\(5, 7\)"):
        save(tmp_path / "w.npz", SPEC, [(np.zeros((5, 7)), np.zeros(7))] * 3)


# ---- damaged and crafted files ---------------------------------------------------------------

FULL_SPEC = json.loads(json.dumps(asdict(MLPSpec((3, 4, 1)))))  # every field, as a file holds it
HEADER = {"format": "mlp-four-frameworks/params-v1", "spec": FULL_SPEC}


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def header(value) -> np.ndarray:
    return np.array(value if isinstance(value, str) else json.dumps(value))


def _damaged(good: bytes) -> dict[str, bytes]:
    bad_crc = bytearray(good)
    bad_crc[good.index(b"W0.npy") + 200] ^= 0xFF  # inside W0's compressed-free data: the CRC no longer matches
    return {
        "truncated": good[: len(good) // 2],
        "bad CRC": bytes(bad_crc),
        "empty": b"",
        "text": b"W0,b0\n1,2\n",
    }


def test_damaged_archives_are_a_value_error_naming_the_file(tmp_path):
    good = save(tmp_path / "good.npz", MLPSpec((3, 4, 1)), create("numpy", MLPSpec((3, 4, 1))).get_params())
    for name, data in _damaged(good.read_bytes()).items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=re.escape(str(path))):
            load(path)


@pytest.mark.parametrize(("arrays", "match"), [
    ({"header": header([1, 2])}, "header must be a JSON object, got list"),
    ({"header": header({"format": HEADER["format"]})}, "the header has no spec"),
    ({"header": header({"format": HEADER["format"], "spec": [3, 4, 1]})}, "the header has no spec"),
    ({"header": header({**HEADER, "spec": {**FULL_SPEC, "evil": 1}})}, r"unknown fields \['evil'\]"),
    ({"header": header({**HEADER, "spec": {**FULL_SPEC, "layer_sizes": [3, 0, 1]}})},
     "invalid spec: layer sizes must be positive"),
    ({"header": header("[" * 30_000 + "]" * 30_000)}, "not valid JSON"),
    ({"header": header("x" * 70_000)}, "at most 65536 characters"),
    ({"header": header(HEADER), "W0": np.zeros((3, 4)), "b0": np.zeros(4)}, "missing array 'W1'"),
    ({"header": header(HEADER), "W0": np.zeros((4, 3)), "b0": np.zeros(4), "W1": np.zeros((4, 1)),
      "b1": np.zeros(1)}, r"'W0' has shape \(4, 3\).*needs shape \(3, 4\)"),
    ({"header": header(HEADER), "W0": np.array([None] * 12).reshape(3, 4), "b0": np.zeros(4)},
     "holds Python objects"),
    ({"header": header({**HEADER, "spec": {**FULL_SPEC, "layer_sizes": [2, 1], "dtype": "float32"}}),
      "W0": np.full((2, 1), 1e39), "b0": np.zeros(1)}, "beyond float32's range"),
])
def test_crafted_files_get_a_value_error_naming_the_problem(tmp_path, arrays, match):
    path = tmp_path / "crafted.npz"
    path.write_bytes(npz_bytes(**arrays))
    with pytest.raises(ValueError, match=match):
        load(path)


def test_array_shapes_are_checked_before_any_data_is_decompressed(tmp_path, monkeypatch):
    """A 390 kB file whose W0 decompresses to 400 MB is refused from the .npy headers alone."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("header.npy", "w") as fh:
            np.lib.format.write_array(fh, header(HEADER))
        with archive.open("W0.npy", "w") as fh:
            np.lib.format.write_array(fh, np.zeros((5000, 10000)))
    assert path.stat().st_size < 1_000_000
    read_array, sizes = np.lib.format.read_array, []

    def recording(*args, **kwargs):
        array = read_array(*args, **kwargs)
        sizes.append(array.nbytes)
        return array

    monkeypatch.setattr(np.lib.format, "read_array", recording)
    with pytest.raises(ValueError, match=r"'W0' has shape \(5000, 10000\)"):
        load(path)
    assert len(sizes) == 1 and sizes[0] < 10_000, "only the header string was read"


def test_save_is_atomic_and_takes_numpy_scalars_in_the_spec(tmp_path, monkeypatch):
    spec = MLPSpec((3, 4, 1), dropout=np.float32(0.25), l2=np.float64(0.01))
    path = save(tmp_path / "w.npz", spec, create("numpy", spec).get_params())
    before = path.read_bytes()
    assert load(path)[0] == spec

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # interrupted mid-write

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save(path, spec, create("numpy", spec, seed=1).get_params())
    assert path.read_bytes() == before, "the old file is intact"
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"], "no temporary file is left behind"


# ---- every field of the spec is required; older formats go through MIGRATIONS -----------------

# Every field away from its default, so a field read as its default would be a different network.
EVERY_FIELD = MLPSpec((3, 4, 4, 2), "tanh", "mse", "xavier_uniform", init_scale=0.5, leaky_slope=0.2,
                      elu_alpha=0.5, l1=1e-3, l2=1e-2, dropout=(0.1, 0.2), dtype="float32")


def test_the_every_field_spec_differs_from_the_defaults_in_every_field():
    defaults = MLPSpec(EVERY_FIELD.layer_sizes)
    assert [f.name for f in fields(MLPSpec) if getattr(EVERY_FIELD, f.name) == getattr(defaults, f.name)] == [
        "layer_sizes"]


def rewrite_header(path, edit) -> None:
    """Rewrite the archive at ``path`` with ``edit(header dict)`` as its header, the arrays unchanged."""
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["header"] = header(edit(json.loads(str(arrays["header"]))))
    path.write_bytes(npz_bytes(**arrays))


@pytest.mark.parametrize("field", [f.name for f in fields(MLPSpec)])
def test_a_file_without_a_spec_field_is_refused_naming_the_file_and_the_field(tmp_path, field):
    path = save(tmp_path / "w.npz", EVERY_FIELD, create("numpy", EVERY_FIELD).get_params())
    rewrite_header(path, lambda h: {**h, "spec": {k: v for k, v in h["spec"].items() if k != field}})
    with pytest.raises(ValueError, match=re.escape(f"{path}: the spec lacks the fields {[field]}")):
        load(path)


def test_a_file_without_several_fields_lists_them_all_sorted(tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(npz_bytes(header=header({**HEADER, "spec": {"loss": "mse", "layer_sizes": [3, 4, 1]}})))
    missing = sorted({f.name for f in fields(MLPSpec)} - {"loss", "layer_sizes"})
    assert len(missing) == 9
    with pytest.raises(ValueError, match=re.escape(f"{path}: the spec lacks the fields {missing}")):
        load(path)


def test_older_formats_are_migrated_in_order_before_every_field_is_required(tmp_path, monkeypatch):
    """Two fake older formats: v0 files lacked ``elu_alpha`` (always 2.0 then), v0.5 files lacked ``dropout``."""
    calls = []

    def v0_to_v05(head: dict) -> dict:
        calls.append(head["format"])
        return {**head, "format": "test/params-v0.5", "spec": {**head["spec"], "elu_alpha": 2.0}}

    def v05_to_v1(head: dict) -> dict:
        calls.append(head["format"])
        return {**head, "format": FORMAT, "spec": {**head["spec"], "dropout": 0.0}}

    monkeypatch.setattr(exchange, "MIGRATIONS", {"test/params-v0.5": v05_to_v1, "test/params-v0": v0_to_v05})
    path = save(tmp_path / "w.npz", EVERY_FIELD, create("numpy", EVERY_FIELD).get_params())
    rewrite_header(path, lambda h: {"format": "test/params-v0", "spec": {
        k: v for k, v in h["spec"].items() if k not in ("elu_alpha", "dropout")}})
    spec, _ = load(path)
    assert calls == ["test/params-v0", "test/params-v0.5"]
    assert (spec.elu_alpha, spec.dropout) == (2.0, 0.0)
    assert spec == MLPSpec(**{**asdict(EVERY_FIELD), "elu_alpha": 2.0, "dropout": 0.0})

    calls.clear()
    rewrite_header(path, lambda h: {"format": "test/params-v0.5", "spec": {**h["spec"], "elu_alpha": 2.0}})
    assert load(path)[0] == spec and calls == ["test/params-v0.5"], "a chain starting midway runs its tail only"

    rewrite_header(path, lambda h: {"format": "test/params-v0", "spec": [1, 2]})  # damaged: the migration fails
    with pytest.raises(ValueError, match=re.escape(f"{path}: a 'test/params-v0' header that cannot be read")):
        load(path)

    rewrite_header(path, lambda h: {"format": "test/params-v0", "spec": {"layer_sizes": [3, 4, 4, 2]}})
    with pytest.raises(ValueError, match=r"the spec lacks the fields \['dtype', 'hidden_activation'"):
        load(path)  # a migration fills what it knows; everything else is still required


@pytest.mark.parametrize("version", ["mlp-four-frameworks/params-v2", "test/params-v0", None, ["v1"], 1])
def test_an_unknown_format_is_refused_by_name(tmp_path, version):
    path = tmp_path / "w.npz"
    path.write_bytes(npz_bytes(header=header({"format": version, "spec": FULL_SPEC})))
    with pytest.raises(ValueError, match=re.escape(f"{path}: unknown format {version!r}; this version reads "
                                                   f"{[FORMAT]}")):
        load(path)


def test_a_new_spec_field_needs_a_new_format():
    """Adding a field to MLPSpec bumps FORMAT and registers a migration that fills it (the module docstring)."""
    assert (FORMAT, {f.name for f in fields(MLPSpec)}) == ("mlp-four-frameworks/params-v1", {
        "layer_sizes", "hidden_activation", "loss", "initializer", "init_scale", "leaky_slope", "elu_alpha",
        "l1", "l2", "dropout", "dtype"}), "a new MLPSpec field needs a new FORMAT and a migration from the old one"


# ---- permissions and write errors ------------------------------------------------------------

@pytest.fixture
def umask():
    """Set the process umask for one test, restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_new_file_gets_the_permissions_the_umask_gives(tmp_path, umask, mask, mode):
    umask(mask)
    path = save(tmp_path / "w.npz", MLPSpec((3, 4, 1)), create("numpy", MLPSpec((3, 4, 1))).get_params())
    assert stat.S_IMODE(path.stat().st_mode) == mode


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_an_existing_file_keeps_its_mode(tmp_path, umask, mode):
    umask(0o022)
    path = tmp_path / "w.npz"
    path.write_bytes(b"old")
    path.chmod(mode)
    save(path, MLPSpec((3, 4, 1)), create("numpy", MLPSpec((3, 4, 1))).get_params())
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert load(path)[0] == MLPSpec((3, 4, 1))


def _save_small(path):
    return save(path, MLPSpec((3, 4, 1)), create("numpy", MLPSpec((3, 4, 1))).get_params())


def test_a_missing_folder_is_named_not_the_temporary_file(tmp_path):
    target = tmp_path / "x" / "y" / "weights.npz"
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"cannot write {target}: the folder {target.parent} does not exist")) as info:
        _save_small(target)
    assert ".tmp" not in str(info.value) and info.value.errno == errno.ENOENT
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_target_that_is_a_folder_or_under_a_file_is_named(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match=re.escape(f"cannot write {tmp_path / 'd'}: it is a folder")):
        _save_small(tmp_path / "d")
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match=re.escape(
            f"cannot write {tmp_path / 'f' / 'w.npz'}: {tmp_path / 'f'} is not a folder")):
        _save_small(tmp_path / "f" / "w.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"] and not any((tmp_path / "d").iterdir())


def test_a_read_only_folder_is_named(tmp_path, monkeypatch):
    """The kernel's refusal to create the temporary file (as in a folder without write permission; simulated,
    since the tests may run as root, whom permissions do not stop) is reported for the target."""
    real_open = os.open

    def read_only(file, flags, *args, **kwargs):
        if os.path.dirname(file) == str(tmp_path) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    target = tmp_path / "weights.npz"
    with pytest.raises(PermissionError, match=re.escape(
            f"cannot write {target}: permission denied in the folder {tmp_path} (the file is written")) as info:
        _save_small(target)
    assert ".tmp" not in str(info.value) and info.value.errno == errno.EACCES


def test_a_full_disk_is_named_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = _save_small(tmp_path / "w.npz")
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OSError, match=re.escape(f"cannot write {path}: No space left on device")) as info:
        _save_small(path)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["w.npz"]
