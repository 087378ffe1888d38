"""The registry: names, modes and availability, also when a framework is missing or broken."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from impls import MLPSpec, create, registry

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_names_and_modes_are_named():
    with pytest.raises(ValueError, match="unknown implementation 'mxnet'"):
        registry.entry("mxnet")
    with pytest.raises(ValueError, match=r"unknown mode 'turbo' for numpy; expected one of \['default'\]"):
        create("numpy", MLPSpec((2, 1)), mode="turbo")


def test_entries_list_default_first_and_backends_with_their_variable():
    for name, entry in registry.IMPLEMENTATIONS.items():
        assert entry.modes[0] == "default", name
        assert bool(entry.backends) == bool(entry.backend_env), name
    with pytest.raises(ValueError, match="modes must start with 'default'"):
        registry.Entry("m", "C", modes=("fast",))


def test_a_framework_that_fails_to_import_is_unavailable_with_its_reason(monkeypatch, tmp_path):
    """Not only ImportError: a framework can raise anything while importing."""
    (tmp_path / "broken_framework_mlp.py").write_text("raise RuntimeError('no device library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.IMPLEMENTATIONS, "broken", registry.Entry("broken_framework_mlp", "BrokenMLP"))
    reason = registry.availability()["broken"]
    assert reason == "broken: RuntimeError: no device library"
    with pytest.raises(registry.ImplementationUnavailable, match="no device library"):
        create("broken", MLPSpec((2, 1)))


def test_a_bogus_keras_backend_breaks_neither_the_registry_nor_test_collection():
    env = {**os.environ, "KERAS_BACKEND": "bogus", "MLP_REQUIRE_ALL": "0"}
    code = "from impls import registry; print(registry.availability()['keras'])"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "keras: ValueError" in done.stdout and "bogus" in done.stdout
    collect = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              "tests/frameworks", "tests/test_bad_input.py"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert collect.returncode == 0, collect.stdout[-3000:]


def test_readme_lists_exactly_the_registry() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- registry:begin -->\n", 1)[1].split("\n<!-- registry:end -->", 1)[0]
    assert block == registry.markdown_table(), "README's implementation table is stale: paste `python -m impls`"
    for name in [*registry.IMPLEMENTATIONS, *registry.BASELINES]:
        assert f"| `{name}` |" in block
