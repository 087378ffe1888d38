"""What runs: one row per implementation (and Keras backend), plus the scikit-learn baseline.

A row names where its class lives and the environment its worker needs before any
import (``KERAS_BACKEND``).  Its modes are read from the class's ``modes`` attribute
in the source, without importing the framework: the runner stays light, and only
the worker of a cell pays for an import.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field

from impls import registry

SKLEARN = "sklearn"
"""Name of the baseline row (scikit-learn's MLPClassifier / MLPRegressor)."""


@dataclass(frozen=True)
class Row:
    """One implementation as the benchmark runs it.

    ``target``: ``"module:Class"`` of an :class:`~impls.base.MLP` subclass, or ``"sklearn"``.
    ``env``: variables the worker sets before importing anything.
    ``requires``: top-level modules that must be installed (found, not imported).
    ``modes``: execution modes; ``None`` means "read the class's ``modes`` from its source".
    """

    name: str
    target: str
    env: dict[str, str] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    modes: tuple[str, ...] | None = None

    @property
    def is_baseline(self) -> bool:
        return self.target == SKLEARN

    def module_and_class(self) -> tuple[str, str]:
        module, _, cls = self.target.partition(":")
        return module, cls

    def unavailable(self) -> str | None:
        """Why this row cannot run here (``None`` when it can), checked without importing the framework."""
        for name in self.requires:
            if importlib.util.find_spec(name) is None:
                return f"{name} is not installed"
        if self.is_baseline:
            return None
        module, _ = self.module_and_class()
        try:
            found = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            found = None
        return None if found is not None else f"module {module} does not exist"

    def available_modes(self) -> tuple[str, ...]:
        """The row's modes: given, or the ``modes = (...)`` literal of its class (default: ``("default",)``)."""
        if self.modes is not None:
            return self.modes
        return modes_from_source(*self.module_and_class())


def modes_from_source(module: str, cls: str) -> tuple[str, ...]:
    """Read ``modes = ("default", ...)`` from a class body without importing the module."""
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:
        return ("default",)
    with open(found.origin, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for stmt in node.body:
                targets = (stmt.targets if isinstance(stmt, ast.Assign)
                           else [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
                if any(isinstance(t, ast.Name) and t.id == "modes" for t in targets) and stmt.value is not None:
                    return tuple(ast.literal_eval(stmt.value))
    return ("default",)


def _default_rows() -> dict[str, Row]:
    def target(name: str) -> str:
        entry = registry.IMPLEMENTATIONS[name]
        return f"{entry.module}:{entry.cls}"

    rows = [
        Row("numpy", target("numpy"), requires=("numpy",)),
        Row("torch", target("torch"), requires=("torch",)),
        Row("jax", target("jax"), requires=("jax", "jaxlib")),
        Row("keras[tensorflow]", target("keras"), {"KERAS_BACKEND": "tensorflow"}, ("keras", "tensorflow")),
        Row("keras[jax]", target("keras"), {"KERAS_BACKEND": "jax"}, ("keras", "jax")),
        Row("keras[torch]", target("keras"), {"KERAS_BACKEND": "torch"}, ("keras", "torch")),
        Row(SKLEARN, SKLEARN, requires=("sklearn",), modes=("default",)),
    ]
    return {r.name: r for r in rows}


ROWS: dict[str, Row] = _default_rows()
"""Every row by name, in report order."""

DEFAULT_ROWS: tuple[str, ...] = tuple(ROWS)
"""The rows a profile runs unless it names its own (plugins' rows are not among them)."""


def register(row: Row) -> None:
    """Add a row (used by plugins, e.g. the harness tests' fake implementation)."""
    ROWS[row.name] = row
