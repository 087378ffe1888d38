"""Every implementation file has the skeleton of :mod:`impls.base`: the same functions, in the same order,
and dispatch tables keyed by exactly the spec's names (so no name the spec accepts lacks an entry)."""

from __future__ import annotations

import inspect

import pytest

from impls import registry
from impls.spec import ACTIVATIONS, LOSSES, OUTPUT_ACTIVATIONS
from tests.conftest import require

SKELETON = ("init_params", "activation", "output", "logits", "data_loss", "penalty", "objective",
            "sgd_update", "adam_update", "native_fit")
"""Module-level functions every implementation defines, in this order (the class sits before native_fit)."""

TABLES = {"HIDDEN_ACTIVATIONS": ACTIVATIONS, "OUTPUT_ACTIVATIONS": OUTPUT_ACTIVATIONS, "DATA_LOSSES": LOSSES}


@pytest.fixture(params=registry.names())
def module(request: pytest.FixtureRequest):
    require(request.param)
    return registry.load_module(request.param)


def test_skeleton_functions_are_defined_in_order(module):
    lines = {}
    for name in SKELETON:
        function = getattr(module, name, None)
        assert callable(function), f"{module.__name__} lacks {name}()"
        lines[name] = inspect.getsourcelines(function)[1]
    assert sorted(SKELETON, key=lines.get) == list(SKELETON), f"{module.__name__}: order {lines}"
    class_line = inspect.getsourcelines(getattr(module, registry.entry(module_name(module)).cls))[1]
    assert lines["adam_update"] < class_line < lines["native_fit"], "the MLP class sits before native_fit"


def test_dispatch_tables_cover_exactly_the_spec_names(module):
    for table, names in TABLES.items():
        assert set(getattr(module, table)) == set(names), f"{module.__name__}.{table}"


def module_name(module) -> str:
    return next(n for n, e in registry.IMPLEMENTATIONS.items() if e.module == module.__name__)
