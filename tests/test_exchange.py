"""Weights move between every pair of implementations, to and from native objects and a file, unchanged."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest

from impls import MLPSpec, create, registry
from impls.exchange import convert, load, load_model, save
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

HEADER = {"format": "mlp-four-frameworks/params-v1", "spec": {"layer_sizes": [3, 4, 1]}}


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
    ({"header": header({"format": HEADER["format"]})}, "no spec with layer_sizes"),
    ({"header": header({**HEADER, "spec": {"layer_sizes": [3, 4, 1], "evil": 1}})}, r"unknown fields \['evil'\]"),
    ({"header": header({**HEADER, "spec": {"layer_sizes": [3, 0, 1]}})}, "invalid spec: layer sizes must be positive"),
    ({"header": header("[" * 30_000 + "]" * 30_000)}, "not valid JSON"),
    ({"header": header("x" * 70_000)}, "at most 65536 characters"),
    ({"header": header(HEADER), "W0": np.zeros((3, 4)), "b0": np.zeros(4)}, "missing array 'W1'"),
    ({"header": header(HEADER), "W0": np.zeros((4, 3)), "b0": np.zeros(4), "W1": np.zeros((4, 1)),
      "b1": np.zeros(1)}, r"'W0' has shape \(4, 3\).*needs shape \(3, 4\)"),
    ({"header": header(HEADER), "W0": np.array([None] * 12).reshape(3, 4), "b0": np.zeros(4)},
     "holds Python objects"),
    ({"header": header({**HEADER, "spec": {"layer_sizes": [2, 1], "dtype": "float32"}}),
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
    assert len(sizes) == 1 and sizes[0] < 1000, "only the header string was read"


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
