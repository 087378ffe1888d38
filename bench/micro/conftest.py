"""The micro suite's process setup: one thread, pinned, before any framework is imported.

``--implementation NAME`` times one registry entry (the nox session runs one process per entry and Keras
backend); without it, every installed implementation in this process's backend.
"""

from __future__ import annotations

import os

import pytest

from bench import env

os.environ.update(env.thread_env(1, "cpu"))  # before NumPy or a framework loads: their pools read it once
env.pin_cpus(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--implementation", default=None,
                     help="registry name to time (default: every installed implementation)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        from bench import micro

        found = micro.cases(metafunc.config.getoption("--implementation"))
        metafunc.parametrize("case", found, ids=[f"{row.name}-{mode}" for row, mode in found])
