"""Profiles and the matrix of cells they expand to.

A cell is one row (implementation) x mode x workload [x dtype, x sweep point]; each
runs in its own worker process and leaves one record.  Its id names the record file,
and its parameters decide whether an earlier record still stands for it (resume).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from bench import rows as rows_mod
from bench import workloads as workloads_mod


@dataclass(frozen=True)
class Profile:
    """How much to measure.

    ``fast_modes_on``: workloads that also get the non-default modes (``None``: all).
    ``speed_warmup`` / ``speed_blocks``: discarded and timed epochs of speed-only workloads.
    ``dtypes``: float64 rows join in ``full``.  ``sweeps``: run the scaling sweeps.
    """

    name: str
    description: str
    seeds: tuple[int, ...]
    workloads: tuple[str, ...]
    dtypes: tuple[str, ...] = ("float32",)
    fast_modes_on: tuple[str, ...] | None = None
    speed_warmup: int = 2
    speed_blocks: int = 5
    sweeps: bool = False
    rows: tuple[str, ...] | None = None
    timeout_s: int = 600


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick", "every implementation on every workload in its default mode, fast modes (compiled) on "
        "throughput only (each compiled fit pays its compilation again: the fast modes on digits alone took "
        "6 of 21 minutes in a measured run); 3 seeds; float32",
        seeds=(0, 1, 2), workloads=("circles", "digits", "breast_cancer", "diabetes", "throughput"),
        fast_modes_on=("throughput",), speed_warmup=2, speed_blocks=5, timeout_s=300),
    "full": Profile(
        "full", "every implementation and mode on every workload, 5 seeds, float32 and float64 rows, "
        "scaling sweeps of width, batch and depth",
        seeds=(0, 1, 2, 3, 4), workloads=("circles", "digits", "breast_cancer", "diabetes", "throughput"),
        dtypes=("float32", "float64"), speed_warmup=3, speed_blocks=15, sweeps=True, timeout_s=1200),
}


def register_profile(profile: Profile) -> None:
    """Add a profile (used by plugins, e.g. the harness tests)."""
    PROFILES[profile.name] = profile


@dataclass(frozen=True)
class Cell:
    """One unit of work for a worker process (JSON-serializable)."""

    row: str
    mode: str
    workload: str
    dtype: str = "float32"
    params: dict[str, int] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    warmup: int = 2
    blocks: int = 5
    threads: int = 1
    device: str = "cpu"
    timeout_s: int = 600
    profile: str = "quick"

    @property
    def id(self) -> str:
        point = "".join(f"-{k}{v}" for k, v in sorted(self.params.items()) if k != "value")
        if "value" in self.params:
            point += f"-{self.params['value']}"
        row = self.row.replace("[", "-").replace("]", "")  # keras[jax] -> keras-jax
        raw = f"{self.workload}{point}__{row}__{self.mode}__{self.dtype}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        d["id"] = self.id
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Cell:
        d = {k: v for k, v in d.items() if k != "id"}
        d["seeds"] = tuple(d.get("seeds", (0,)))
        return cls(**d)

    def same_work(self, other: dict) -> bool:
        """Whether a record's cell describes the same measurement (profile name and timeout aside)."""
        mine = {k: v for k, v in self.to_dict().items() if k not in ("profile", "timeout_s")}
        theirs = {k: v for k, v in other.items() if k not in ("profile", "timeout_s")}
        return mine == theirs


def matrix(profile: Profile, threads: int, device: str = "cpu",
           only: str | None = None) -> tuple[list[Cell], dict[str, str]]:
    """The cells of ``profile`` (filtered by the regex ``only`` on cell ids) and the rows that cannot run.

    Returns ``(cells, unavailable)`` where ``unavailable`` maps row name to reason.
    """
    rows = [rows_mod.ROWS[n] for n in (profile.rows or rows_mod.DEFAULT_ROWS)]
    unavailable: dict[str, str] = {}
    runnable = []
    for row in rows:
        reason = row.unavailable()
        if reason is None:
            runnable.append(row)
        else:
            unavailable[row.name] = reason

    def cell(row: rows_mod.Row, mode: str, workload: str, dtype: str, params: dict[str, int] | None = None) -> Cell:
        speed_only = workloads_mod.get(workload, params).speed_only
        return Cell(row=row.name, mode=mode, workload=workload, dtype=dtype, params=dict(params or {}),
                    seeds=profile.seeds[:1] if speed_only else profile.seeds,
                    warmup=profile.speed_warmup, blocks=profile.speed_blocks, threads=threads,
                    device=device, timeout_s=profile.timeout_s, profile=profile.name)

    cells: list[Cell] = []
    for name in profile.workloads:
        speed_only = workloads_mod.get(name).speed_only
        for dtype in (("float32",) if speed_only else profile.dtypes):
            for row in runnable:
                for mode in row.available_modes():
                    fast_here = profile.fast_modes_on is None or name in profile.fast_modes_on
                    if mode == "default" or fast_here:
                        cells.append(cell(row, mode, name, dtype))
    if profile.sweeps:
        for kind, values in workloads_mod.SWEEPS.items():
            for row in runnable:
                for mode in row.available_modes():
                    for value in values:
                        cells.append(cell(row, mode, f"sweep_{kind}", "float32", {"value": value}))
    if only:
        pattern = re.compile(only)
        cells = [c for c in cells if pattern.search(c.id)]
    return cells, unavailable
