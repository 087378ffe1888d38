"""Fixtures shared by every test: the registry of implementations, parametrized.

A test that takes ``impl_name`` runs once per registered implementation.  An
implementation whose framework is not installed is skipped with the reason,
unless ``MLP_REQUIRE_ALL=1`` (set by ``nox -s tests``), where it fails instead.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import shutil

import pytest
from hypothesis import settings

from impls import registry

settings.register_profile("default", deadline=None, derandomize=True, max_examples=20)
settings.load_profile("default")

def _required() -> bool:
    return os.environ.get("MLP_REQUIRE_ALL") == "1"


@functools.cache
def _unavailable(name: str) -> str | None:
    """Why implementation ``name`` cannot be imported (``None`` when it can); imported on first use only."""
    try:
        registry.load(name)
    except registry.ImplementationUnavailable as exc:
        return str(exc)
    return None


def require(name: str) -> None:
    """Skip (or fail under MLP_REQUIRE_ALL) when implementation ``name`` cannot be imported."""
    reason = _unavailable(name)
    if reason is None:
        return
    if _required():
        pytest.fail(f"implementation {name!r} is required here but unavailable: {reason}")
    pytest.skip(f"implementation {name!r} unavailable: {reason}")


def import_or_skip(module: str):
    """Import ``module`` or skip the test module with the reason; under ``MLP_REQUIRE_ALL=1`` (every framework must
    be there) the import error is raised instead.  Any import-time failure counts, not only ImportError: a
    framework can also fail with e.g. ``ValueError`` (``KERAS_BACKEND=bogus``)."""
    try:
        return importlib.import_module(module)
    except Exception as exc:
        if _required():
            raise
        pytest.skip(f"{module} cannot be imported: {type(exc).__name__}: {exc}", allow_module_level=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    # found, not imported: collection stays light, and a broken framework fails its own tests only
    return [f"implementation {name}: {'installed' if (why := entry.missing()) is None else 'SKIPPED - ' + why}"
            for name, entry in registry.IMPLEMENTATIONS.items()]


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


IMPL_MODES = [(name, mode) for name, entry in registry.IMPLEMENTATIONS.items() for mode in entry.modes]


@pytest.fixture(params=IMPL_MODES, ids=[f"{name}-{mode}" for name, mode in IMPL_MODES])
def impl_mode(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Every registered implementation in every one of its execution modes."""
    require(request.param[0])
    return request.param


FAST_MODES = [(name, mode) for name, mode in IMPL_MODES if mode != "default"]


@pytest.fixture(params=FAST_MODES, ids=[f"{name}-{mode}" for name, mode in FAST_MODES])
def fast_mode(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Every implementation's non-default (compiled) modes."""
    require(request.param[0])
    return request.param


class ErrorLog:
    """Collects the measured errors of the equivalence tests, printed at the end of the run."""

    def __init__(self) -> None:
        self.worst: dict[tuple[str, str, str], tuple[float, str]] = {}

    def record(self, impl: str, dtype: str, what: str, error: float, case: str) -> None:
        key = (impl, dtype, what)
        if error >= self.worst.get(key, (-1.0, ""))[0]:
            self.worst[key] = (error, case)


_ERROR_LOG = ErrorLog()


@pytest.fixture
def error_log() -> ErrorLog:
    return _ERROR_LOG


_WORKER_LOGS = ".pytest-errors"
"""Where pytest-xdist workers leave their measured errors for the controller's summary."""


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(config.rootpath / _WORKER_LOGS, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and _ERROR_LOG.worst:
        folder = session.config.rootpath / _WORKER_LOGS
        folder.mkdir(exist_ok=True)
        rows = [[*key, error, case] for key, (error, case) in _ERROR_LOG.worst.items()]
        (folder / f"{worker}.json").write_text(json.dumps(rows))


def pytest_terminal_summary(terminalreporter) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller prints what every worker measured
    folder = terminalreporter.config.rootpath / _WORKER_LOGS
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        for impl, dtype, what, error, case in json.loads(path.read_text()):
            _ERROR_LOG.record(impl, dtype, what, error, case)
    shutil.rmtree(folder, ignore_errors=True)
    if not _ERROR_LOG.worst:
        return
    terminalreporter.section("largest measured differences from the NumPy reference")
    for (impl, dtype, what), (error, case) in sorted(_ERROR_LOG.worst.items()):
        terminalreporter.write_line(f"{impl:>8} {dtype:>8} {what:>10}: {error:.2e}  ({case})")
