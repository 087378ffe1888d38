"""The implementations, by name, imported only when asked for.

Adding a framework is one file in ``impls/`` (the skeleton described in :mod:`impls.base`)
and one line in :data:`IMPLEMENTATIONS`.  Everything else reads this table: the tests
parametrize over it, the benchmark makes its rows from it (one per Keras backend, a native
row beside each), the studies run every entry, and the README lists it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from impls.base import MLP
from impls.spec import MLPSpec


@dataclass(frozen=True)
class Entry:
    """Where an implementation lives, how it runs and what it needs.

    ``modes``: execution modes, ``"default"`` first (the framework used the way its
    documentation teaches); the others are its fast (compiled) modes.
    ``extra``: the pip extra that installs the framework (``pip install '.[extra]'``).
    ``requires``: top-level modules it imports, checked without importing them.
    ``backends``: for a multi-backend library (Keras), the backends it runs on, each
    selected by the environment variable ``backend_env`` before the first import; the first
    is the one a plain process gets.
    """

    module: str
    cls: str
    modes: tuple[str, ...] = ("default",)
    extra: str | None = None
    requires: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    backend_env: str | None = None

    def __post_init__(self) -> None:
        if not self.modes or self.modes[0] != "default":
            raise ValueError(f"{self.module}: modes must start with 'default', got {self.modes}")
        if bool(self.backends) != bool(self.backend_env):
            raise ValueError(f"{self.module}: backends and backend_env go together")

    @property
    def fast_modes(self) -> tuple[str, ...]:
        """The non-default (compiled) modes."""
        return self.modes[1:]

    def missing(self, backend: str | None = None) -> str | None:
        """Which required module (or backend) is not installed, found without importing; ``None`` if none."""
        for module in (*self.requires, *((backend,) if backend else ())):
            try:
                found = importlib.util.find_spec(module)
            except (ImportError, ValueError):
                found = None
            if found is None:
                hint = f" (pip install '.[{self.extra}]')" if self.extra else ""
                return f"{module} is not installed{hint}"
        return None


IMPLEMENTATIONS: dict[str, Entry] = {
    "numpy": Entry("impls.numpy_mlp", "NumpyMLP", requires=("numpy",)),
    "torch": Entry("impls.torch_mlp", "TorchMLP", modes=("default", "compile"), extra="torch", requires=("torch",)),
    "keras": Entry("impls.keras_mlp", "KerasMLP", modes=("default", "jit"), extra="keras", requires=("keras",),
                   backends=("tensorflow", "jax", "torch"), backend_env="KERAS_BACKEND"),
    "jax": Entry("impls.jax_mlp", "JaxMLP", modes=("default", "scan"), extra="jax", requires=("jax",)),
    "flax": Entry("impls.flax_mlp", "FlaxMLP", modes=("default", "scan"), extra="flax", requires=("flax", "optax")),
}
"""Registered implementations; ``numpy`` is the reference."""

REFERENCE = "numpy"

BASELINES: dict[str, Entry] = {
    "sklearn": Entry("impls.sklearn_baseline", "SklearnMLP", extra="bench", requires=("sklearn",)),
}
"""Baselines the benchmark runs beside the implementations: adapters that train the same model with another
library's own estimator.  Not in :data:`IMPLEMENTATIONS`: they cannot pass the equivalence suite (their own
initialization, no dropout, no gradient API)."""


class ImplementationUnavailable(ImportError):
    """The implementation's framework is not installed (or fails to import)."""


def names() -> list[str]:
    """Every registered implementation, the reference first."""
    return list(IMPLEMENTATIONS)


def entry(name: str) -> Entry:
    """The registry entry of ``name`` (a clear error for an unknown name)."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {name!r}; registered: {names()}")
    return IMPLEMENTATIONS[name]


def modes(name: str) -> tuple[str, ...]:
    """The execution modes of implementation ``name``, ``"default"`` first."""
    return entry(name).modes


def load_module(name: str):
    """Import and return the module of implementation ``name``."""
    found = entry(name)
    try:
        return importlib.import_module(found.module)
    except Exception as exc:  # any import-time failure makes the implementation unavailable, with its reason
        hint = f" (pip install '.[{found.extra}]')" if found.extra else ""
        raise ImplementationUnavailable(f"{name}: {type(exc).__name__}: {exc}{hint}") from exc


def load(name: str) -> type[MLP]:
    """Import and return the class of implementation ``name``."""
    return getattr(load_module(name), entry(name).cls)


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


def markdown_table() -> str:
    """The README's list of implementations and baselines (``python -m impls`` prints it)."""
    def line(name: str, found: Entry, role: str) -> str:
        backends = ", ".join(found.backends) or "—"
        extra = f"`.[{found.extra}]`" if found.extra else "—"
        modes = ", ".join(f"`{mode}`" for mode in found.modes)
        path = found.module.replace(".", "/") + ".py"
        return f"| `{name}` | [`{path}`]({path}) `{found.cls}` | {role} | {modes} | {backends} | {extra} |"

    rows = [line(name, found, "reference" if name == REFERENCE else "implementation")
            for name, found in IMPLEMENTATIONS.items()]
    rows += [line(name, found, "baseline (bench only)") for name, found in BASELINES.items()]
    header = ["| name | file, class | role | modes | backends | pip extra |", "|---|---|---|---|---|---|"]
    return "\n".join([*header, *rows])


def create(name: str, spec: MLPSpec, seed: int = 0, mode: str = "default") -> MLP:
    """Build implementation ``name`` of ``spec``, initialized from ``seed``, in execution ``mode``."""
    return load(name)(spec, seed, mode)
