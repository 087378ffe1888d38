"""The implementations, by name, imported only when asked for.

Adding a framework: one file in ``impls/`` with an :class:`~impls.base.MLP`
subclass, and one line in :data:`IMPLEMENTATIONS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from impls.base import MLP
from impls.spec import MLPSpec


@dataclass(frozen=True)
class Entry:
    """Where an implementation lives and the distributions it needs (the pip extra)."""

    module: str
    cls: str
    extra: str | None = None


IMPLEMENTATIONS: dict[str, Entry] = {
    "numpy": Entry("impls.numpy_mlp", "NumpyMLP"),
    "torch": Entry("impls.torch_mlp", "TorchMLP", extra="torch"),
    "keras": Entry("impls.keras_mlp", "KerasMLP", extra="keras"),  # backend: KERAS_BACKEND, default tensorflow
    "jax": Entry("impls.jax_mlp", "JaxMLP", extra="jax"),
}
"""Registered implementations; ``numpy`` is the reference."""

REFERENCE = "numpy"


class ImplementationUnavailable(ImportError):
    """The implementation's framework is not installed (or fails to import)."""


def names() -> list[str]:
    """Every registered implementation, the reference first."""
    return list(IMPLEMENTATIONS)


def load(name: str) -> type[MLP]:
    """Import and return the class of implementation ``name``."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {name!r}; registered: {names()}")
    entry = IMPLEMENTATIONS[name]
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        hint = f" (pip install '.[{entry.extra}]')" if entry.extra else ""
        raise ImplementationUnavailable(f"{name}: {exc}{hint}") from exc
    return getattr(module, entry.cls)


def availability() -> dict[str, str | None]:
    """``{name: None}`` for importable implementations, ``{name: reason}`` for the others."""
    out: dict[str, str | None] = {}
    for name in IMPLEMENTATIONS:
        try:
            load(name)
            out[name] = None
        except ImplementationUnavailable as exc:
            out[name] = str(exc)
    return out


def create(name: str, spec: MLPSpec, seed: int = 0, mode: str = "default") -> MLP:
    """Build implementation ``name`` of ``spec``, initialized from ``seed``, in execution ``mode``."""
    return load(name)(spec, seed, mode)
