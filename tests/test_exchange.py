"""Weights move between every pair of implementations, to and from native objects and a file, unchanged."""

from __future__ import annotations

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
