"""Profiles, and the cells and tasks they expand to.

A *cell* is one row (:mod:`bench.rows`) x mode x workload [x dtype, x sweep point].  A *round*
runs every cell once, with the round's seed, plus one matmul-ceiling *task* per library the
workers have; its id names the record file, and its :meth:`Cell.to_dict` (with the profile's
measuring settings and the environment) makes the record's resume key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from bench import libraries
from bench import rows as rows_mod
from bench import workloads as workloads_mod


@dataclass(frozen=True)
class Profile:
    """How much to measure.

    ``rounds``: the rounds, each with its seed (a round trains every cell once with that seed).
    ``max_epochs``: caps each training run's epochs (``None``: the workload's own budget); the
    accuracy columns then describe the shorter training, alike for every row.
    ``fast_modes_on``: workloads that also get the non-default (compiled) modes (``None``: all).
    ``speed_warmup`` / ``speed_epochs``: discarded and timed epochs of speed-only workloads.
    ``retries``: how often a disturbed block is timed again (:mod:`bench.disturbance`).
    ``ceiling_workload``: the workload whose step's matrix products give the run's matmul ceiling.
    ``sweeps``: the scaling sweeps to run, each swept parameter with its values (:func:`bench.workloads.get`'s
    ``sweep_<kind>``), in every mode of every row.
    ``implementations``: registry names to run (``None``: every implementation and baseline).
    ``variants``: the kinds of rows to run (:data:`bench.rows.VARIANTS`; ``None``: all).
    ``folder``: where ``python -m bench run`` writes by default, inside ``results/`` (a profile measuring something
    else than the main tables keeps its own folder, so that the main report still shows the last main run).
    ``timeout_s``: the longest one task may take before its worker is killed.
    """

    name: str
    description: str
    rounds: tuple[int, ...]
    workloads: tuple[str, ...]
    dtypes: tuple[str, ...] = ("float32",)
    max_epochs: int | None = None
    fast_modes_on: tuple[str, ...] | None = None
    speed_warmup: int = 2
    speed_epochs: int = 5
    retries: int = 1
    ceiling_workload: str | None = "throughput"
    ceiling_repeats: int = 15
    sweeps: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    implementations: tuple[str, ...] | None = None
    variants: tuple[str, ...] | None = None
    folder: str = ""
    timeout_s: int = 600

    def settings(self) -> dict[str, int]:
        """What the worker needs to measure a cell the way this profile does (part of the resume key)."""
        return {"max_epochs": self.max_epochs, "speed_warmup": self.speed_warmup, "speed_epochs": self.speed_epochs,
                "retries": self.retries}


WORKLOAD_NAMES = ("circles", "digits", "breast_cancer", "diabetes", "throughput")

# The quick profile's budget (10 minutes on 2 cores), from a trial with every framework: the first round pays
# the imports (~30 s) and every cell's cold start (compilation: torch.compile 10-35 s, Keras[torch] jit 35-65 s
# per cell on a loaded machine), so fast modes on a second workload cost ~3 minutes; a later round costs about
# a third of the first, and most of it is not the timed epochs but each training run's first epoch (JAX-based
# rows compile again for every new model) and the metrics.  The epoch cap saves little; rounds are what the
# noise needs: 5 rounds let compare reach p = 0.008 where 3 never reach 0.05.
# The cost model's width sweep does not fit in that budget: alone, 65 cells (13 spec rows and modes x 5 widths) x
# 3 rounds took 799 s on the 2-core machine shared with another benchmark (the first round 6.8 min, every width
# a new model to compile; later rounds ~3.2 min; width 2048 costs ~0.15 s a step), so it has its own profile.

PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick", "every row on every workload in its default mode, fast (compiled) modes on throughput; "
        "5 rounds (seeds 0-4), each training run at most 10 epochs; float32",
        rounds=(0, 1, 2, 3, 4), workloads=WORKLOAD_NAMES, max_epochs=10, fast_modes_on=("throughput",),
        speed_warmup=1, speed_epochs=4, retries=1, timeout_s=300),
    "full": Profile(
        "full", "every row and mode on every workload, 10 rounds (seeds 0-9), each workload's whole training, "
        "float32 and float64 rows, scaling sweeps of width, batch and depth",
        rounds=tuple(range(10)), workloads=WORKLOAD_NAMES, dtypes=("float32", "float64"),
        speed_warmup=3, speed_epochs=10, retries=2, sweeps=workloads_mod.SWEEPS, timeout_s=1200),
    "sweep": Profile(
        "sweep", "the cost model's width sweep: hidden width 32-2048 (five points, batch 256, MNIST-shaped) for every "
        "spec row in every mode; 3 rounds (seeds 0-2)",
        rounds=(0, 1, 2), workloads=(), sweeps={"width": workloads_mod.COST_WIDTHS},
        variants=(rows_mod.SPEC,), folder="sweep", speed_warmup=1, speed_epochs=3, retries=1, timeout_s=600),
}


def register_profile(profile: Profile) -> None:
    """Add a profile (used by plugins, e.g. the harness tests)."""
    PROFILES[profile.name] = profile


@dataclass(frozen=True)
class Cell:
    """One row x mode x workload [x dtype, x sweep point] (JSON-serializable)."""

    row: rows_mod.Row
    mode: str
    workload: str
    dtype: str = "float32"
    params: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        point = "".join(f"-{k}{v}" for k, v in sorted(self.params.items()) if k != "value")
        if "value" in self.params:
            point += f"-{self.params['value']}"
        raw = f"{self.workload}{point}__{self.row.slug}__{self.mode}__{self.dtype}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-")

    @property
    def group(self) -> str:
        return self.row.group

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, **self.row.to_dict(), "row": self.row.name, "mode": self.mode,
                "workload": self.workload, "dtype": self.dtype, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict) -> Cell:
        row = rows_mod.Row(d["implementation"], d["variant"], d.get("backend"))
        return cls(row, d["mode"], d["workload"], d["dtype"], dict(d.get("params") or {}))


@dataclass(frozen=True)
class Ceiling:
    """The matmul-ceiling task of one library: ``workload``'s step products, run in ``group``'s worker."""

    library: str
    group: str
    workload: str
    repeats: int

    @property
    def id(self) -> str:
        return f"ceiling__{self.library}"

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, **asdict(self)}


def matrix(profile: Profile, only: str | None = None) -> tuple[list[Cell], dict[str, str]]:
    """The cells of ``profile`` (filtered by the regex ``only`` on cell ids) and the rows that cannot run.

    Returns ``(cells, unavailable)`` where ``unavailable`` maps row name to reason.
    """
    unavailable: dict[str, str] = {}
    runnable = []
    for row in rows_mod.all_rows(profile.implementations):
        if profile.variants is not None and row.variant not in profile.variants:
            continue
        reason = row.unavailable()
        if reason is None:
            runnable.append(row)
        else:
            unavailable[row.name] = reason

    cells: list[Cell] = []
    for name in profile.workloads:
        speed_only = workloads_mod.get(name).speed_only
        fast_here = profile.fast_modes_on is None or name in profile.fast_modes_on
        for dtype in (("float32",) if speed_only else profile.dtypes):
            cells += [Cell(row, mode, name, dtype) for row in runnable for mode in row.modes
                      if mode == "default" or fast_here]
    for kind, values in profile.sweeps.items():
        cells += [Cell(row, mode, f"sweep_{kind}", "float32", {"value": value})
                  for row in runnable for mode in row.modes for value in values]
    if only:
        pattern = re.compile(only)
        cells = [c for c in cells if pattern.search(c.id)]
    return cells, unavailable


def ceilings(profile: Profile, cells: list[Cell]) -> list[Ceiling]:
    """One ceiling task per library the run's workers import, each in the first worker (in row order) that
    has it; none when the profile has no ceiling workload or the run has no speed-only cell.

    A worker's libraries are read from the registry (NumPy, the entry's required modules and its
    backend), so the plan is known before any worker starts.
    """
    if profile.ceiling_workload is None or not any(workloads_mod.get(c.workload, c.params).speed_only
                                                    for c in cells):
        return []
    owner: dict[str, str] = {}
    for cell in cells:
        entry = cell.row.entry
        for library in ("numpy", *entry.requires, *((cell.row.backend,) if cell.row.backend else ())):
            if library in libraries.LIBRARIES:
                owner.setdefault(library, cell.group)
    return [Ceiling(library, owner[library], profile.ceiling_workload, profile.ceiling_repeats)
            for library in libraries.LIBRARIES if library in owner]
