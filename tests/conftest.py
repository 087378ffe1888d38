"""Fixtures shared by every test: the registry of implementations, parametrized.

A test that takes ``impl_name`` runs once per registered implementation.  An
implementation whose framework is not installed is skipped with the reason,
unless ``MLP_REQUIRE_ALL=1`` (set by ``nox -s tests``), where it fails instead.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from impls import registry

settings.register_profile("default", deadline=None, derandomize=True, max_examples=20)
settings.load_profile("default")

_AVAILABILITY = registry.availability()


def require(name: str) -> None:
    """Skip (or fail under MLP_REQUIRE_ALL) when implementation ``name`` cannot be imported."""
    reason = _AVAILABILITY[name]
    if reason is None:
        return
    if os.environ.get("MLP_REQUIRE_ALL") == "1":
        pytest.fail(f"implementation {name!r} is required here but unavailable: {reason}")
    pytest.skip(f"implementation {name!r} unavailable: {reason}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"implementation {n}: {'available' if r is None else 'SKIPPED - ' + r}"
            for n, r in _AVAILABILITY.items()]


@pytest.fixture(params=registry.names())
def impl_name(request: pytest.FixtureRequest) -> str:
    """Every registered implementation."""
    require(request.param)
    return request.param


@pytest.fixture(params=[n for n in registry.names() if n != registry.REFERENCE])
def other_impl(request: pytest.FixtureRequest) -> str:
    """Every implementation except the NumPy reference."""
    require(request.param)
    return request.param
