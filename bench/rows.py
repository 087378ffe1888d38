"""What runs: rows made from the registry, nothing else.

Every entry of :data:`impls.registry.IMPLEMENTATIONS` gives, for each of its backends (Keras:
``keras[tensorflow]``, ``keras[jax]``, ...), a *spec* row (its :class:`~impls.base.MLP` class
trained through ``fit``) and a *native* row (its module's ``native_fit``: the same training
written the framework's own way, the yardstick for the adapter's overhead).  Every entry of
:data:`impls.registry.BASELINES` gives one *baseline* row (an adapter around a library that is
itself the native idiom).  Rows of one entry and backend share a *group*: one worker process.
Registering an entry is all it takes for its rows to appear.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from impls import registry

SPEC, NATIVE, BASELINE = "spec", "native", "baseline"
VARIANTS = (SPEC, NATIVE, BASELINE)


@dataclass(frozen=True)
class Row:
    """One implementation as the benchmark runs it: ``implementation`` names its registry entry."""

    implementation: str
    variant: str = SPEC
    backend: str | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {VARIANTS}")

    @property
    def entry(self) -> registry.Entry:
        table = registry.BASELINES if self.variant == BASELINE else registry.IMPLEMENTATIONS
        if self.implementation not in table:
            raise ValueError(f"no registry entry {self.implementation!r} for a {self.variant} row")
        return table[self.implementation]

    @property
    def group(self) -> str:
        """The worker that runs this row: the entry, with its backend (``keras[jax]``)."""
        return f"{self.implementation}[{self.backend}]" if self.backend else self.implementation

    @property
    def name(self) -> str:
        """The row's name in tables: ``torch``, ``torch·native``, ``keras[jax]·native``, ``sklearn``."""
        return f"{self.group}·native" if self.variant == NATIVE else self.group

    @property
    def slug(self) -> str:
        """The name as it appears in file names (``keras-jax-native``)."""
        return self.name.replace("[", "-").replace("]", "").replace("·", "-")

    @property
    def modes(self) -> tuple[str, ...]:
        return self.entry.modes

    @property
    def env(self) -> dict[str, str]:
        """Variables the worker sets before any import (the backend of a multi-backend library)."""
        entry = self.entry
        return {entry.backend_env: self.backend} if self.backend and entry.backend_env else {}

    def unavailable(self) -> str | None:
        """Why this row cannot run here (``None`` when it can), found without importing the framework."""
        return self.entry.missing(self.backend)

    def to_dict(self) -> dict[str, object]:
        return {"implementation": self.implementation, "variant": self.variant, "backend": self.backend}


def all_rows(implementations: tuple[str, ...] | None = None) -> list[Row]:
    """Every row in report order (registry order, spec before native, baselines last), optionally only
    those of the named registry entries."""
    def wanted(name: str) -> bool:
        return implementations is None or name in implementations

    rows = [Row(name, variant, backend)
            for name, entry in registry.IMPLEMENTATIONS.items() if wanted(name)
            for backend in (entry.backends or (None,))
            for variant in (SPEC, NATIVE)]
    rows += [Row(name, BASELINE) for name in registry.BASELINES if wanted(name)]
    return rows


def load_trainer_source(row: Row) -> object:
    """What the worker trains with: the row's :class:`~impls.base.MLP` class, or its module's ``native_fit``."""
    entry = row.entry
    module = importlib.import_module(entry.module)
    if row.variant == NATIVE:
        native_fit = getattr(module, "native_fit", None)
        if native_fit is None:
            raise AttributeError(f"{entry.module} has no native_fit(spec, config, X, y, validation, mode)")
        return native_fit
    return getattr(module, entry.cls)
