"""The results directory: where everything lives, written atomically, read defensively.

::

    results/
      run.json               every run into this directory: settings, plan (rounds x tasks), wall time
      raw/r<round>/<id>.json one record per task and round, written atomically the moment it finishes
      .cache/                data sets as loaded once (``.npz``), so workers need not import scikit-learn; named by
                             the loader's code, parameters and library versions, checked against a digest
      README.md, results.csv, samples.csv, epochs.csv, ceiling.csv, results.json, plots/   the report
      costmodel.csv, crossovers.csv   the fitted cost model (:mod:`bench.costmodel`), where sizes were swept
      sweep/                 ``python -m bench run --profile sweep``: the cost model's records
      micro/                 ``nox -s microbench``: pytest-benchmark JSON per row, phases.csv, README.md
      aa/                    ``python -m bench aa``: runs ``a/`` and ``b/`` of the same code, compare.md/json
      .lock                  while a run measures into the directory: held (``flock``), says who and since when

A record that cannot be read or lacks what its status promises is *malformed*: it is reported,
never trusted, and its task runs again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

RAW = "raw"
RUN_FILE = "run.json"
CACHE = ".cache"
LOCK = ".lock"
PLOTS = "plots"
AA = "aa"
README = "README.md"
SUMMARY_CSV = "results.csv"
SAMPLES_CSV = "samples.csv"
EPOCHS_CSV = "epochs.csv"
CEILING_CSV = "ceiling.csv"
RESULTS_JSON = "results.json"
COSTMODEL_CSV = "costmodel.csv"
CROSSOVERS_CSV = "crossovers.csv"
COMPARE_MD = "compare.md"
COMPARE_JSON = "compare.json"


def write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as JSON atomically (a temporary file in the same folder, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=True))
    os.replace(tmp, path)


def read_json(path: Path) -> object | None:
    """The JSON in ``path``, or ``None`` when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def round_name(round_: int) -> str:
    return f"r{round_}"


@dataclass(frozen=True)
class Malformed:
    """A record file that was not used, and why."""

    path: Path
    reason: str


CELL_KEYS = ("id", "implementation", "variant", "mode", "workload", "dtype", "params")
"""Fields every record's ``task`` must hold (a ceiling task has ``id`` and ``library`` instead)."""


def record_problem(record: object) -> str | None:
    """Why ``record`` cannot be used (``None`` when it can): the shape a task's record must have."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    task = record.get("task")
    if not isinstance(task, dict):
        return "no task description"
    kind = record.get("kind")
    needed = CELL_KEYS if kind == "cell" else ("id", "library") if kind == "ceiling" else None
    if needed is None:
        return f"unknown kind {kind!r}"
    if missing := [k for k in needed if k not in task]:
        return f"task lacks {', '.join(missing)}"
    if not isinstance(record.get("round"), int) or not isinstance(record.get("key"), str):
        return "no round or key"
    status = record.get("status")
    if status == "error":
        return None if isinstance(record.get("error"), str) else "error record without its error"
    if status != "ok":
        return f"unknown status {status!r}"
    value = record.get("step_s" if kind == "cell" else "gflops")
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        return f"ok record without a positive {'step_s' if kind == 'cell' else 'gflops'}"
    if kind == "cell" and not (isinstance(record.get("step_times_s"), list) and record["step_times_s"]):
        return "ok record without its step times"
    return None


class ResultsDir:
    """One results directory (``results/`` by default) and the names of everything in it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def raw(self) -> Path:
        return self.root / RAW

    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    @property
    def cache(self) -> Path:
        return self.root / CACHE

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK

    @property
    def plots(self) -> Path:
        return self.root / PLOTS

    @property
    def aa(self) -> Path:
        return self.root / AA

    def file(self, name: str) -> Path:
        """A report file at the top of the directory (``README.md``, ``results.csv``, ...)."""
        return self.root / name

    def record_path(self, round_: int, task_id: str) -> Path:
        return self.raw / round_name(round_) / f"{task_id}.json"

    def write_record(self, record: dict) -> None:
        write_json(self.record_path(record["round"], record["task"]["id"]), record)

    def load_record(self, round_: int, task_id: str) -> tuple[dict | None, Malformed | None]:
        """The record of one task in one round: ``(record, None)``, ``(None, None)`` when there is none,
        or ``(None, Malformed)``."""
        path = self.record_path(round_, task_id)
        if not path.exists():
            return None, None
        return _checked(path)

    def records(self) -> tuple[list[dict], list[Malformed]]:
        """Every usable record under ``raw/`` and every malformed one (with the reason)."""
        good, bad = [], []
        bad += [Malformed(p, "outside any round folder (a record of an older layout?)")
                for p in sorted(self.raw.glob("*.json"))]
        for path in sorted(self.raw.glob("r*/*.json")):
            record, problem = _checked(path)
            if record is not None:
                good.append(record)
            elif problem is not None:
                bad.append(problem)
        return good, bad

    def runs(self) -> list[dict]:
        """The settings of every run into this directory, oldest first."""
        data = read_json(self.run_file)
        runs = data.get("runs") if isinstance(data, dict) else None
        return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []

    def layout_problem(self, rounds: list[int] | tuple[int, ...] = ()) -> str | None:
        """Why a run could not write here (``None`` when it can): a file where the directory, or a folder it
        creates (``raw/``, ``raw/r<round>/`` for ``rounds``, ``.cache/``), must be, or a folder where a file must be."""
        for parent in reversed(self.root.parents):
            if parent.exists() and not parent.is_dir():
                return f"{str(parent)!r} is a file, so {str(self.root)!r} cannot be a results directory"
        if self.root.exists() and not self.root.is_dir():
            return f"{str(self.root)!r} is a file, not a results directory"
        for folder in (self.raw, *(self.raw / round_name(r) for r in rounds), self.cache):
            if folder.exists() and not folder.is_dir():
                return f"{str(folder)!r} is a file where the results directory needs a folder"
        for file in (self.run_file, self.lock_file):
            if file.is_dir():
                return f"{str(file)!r} is a folder where the results directory needs a file"
        return None

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the directory's lock file (``fcntl.flock``, not waiting) while measuring into it, with who holds it
        (pid, host, start time, ``command``) written inside; raises :class:`Locked` naming the holder when another
        process has it.  The kernel releases the lock when its process dies: a file left by a dead run blocks
        nothing.  The file is removed on release (while still locked, and a lock taken on a file that was removed
        meanwhile is taken again on the new one), so a finished run leaves none behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise Locked(self.root, _holder(self.lock_file)) from None
            held = os.fstat(fd)
            try:
                now = os.stat(self.lock_file)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                break
            os.close(fd)  # the holder before us removed this file as we opened it: lock the one there now
        try:
            holder = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"), "command": command}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            yield
        finally:
            with contextlib.suppress(OSError):
                self.lock_file.unlink()
            os.close(fd)

    def add_run(self, run: dict) -> None:
        """Append (or, for the same ``run_id``, replace) a run in ``run.json``."""
        runs = [r for r in self.runs() if r.get("run_id") != run["run_id"]]
        write_json(self.run_file, {"runs": [*runs, run]})


class Locked(RuntimeError):
    """Another process is measuring into the results directory; the message says who."""

    def __init__(self, root: Path, holder: dict | None) -> None:
        if holder:
            who = (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started_utc')} UTC: "
                   f"{holder.get('command')}")
        else:
            who = "a process that has not written its name yet"
        super().__init__(f"{str(root)!r} is in use by another run ({who}); wait for it to finish or use another "
                         "--out")
        self.holder = holder


def _holder(path: Path) -> dict | None:
    found = read_json(path)
    return found if isinstance(found, dict) else None


def _checked(path: Path) -> tuple[dict | None, Malformed | None]:
    record = read_json(path)
    if record is None:
        return None, Malformed(path, "unreadable or not JSON")
    problem = record_problem(record)
    if problem is not None:
        return None, Malformed(path, problem)
    expected = path.stem
    if record["task"]["id"] != expected or record["round"] != _round_of(path):
        return None, Malformed(path, "record does not match its file name")
    return record, None


def _round_of(path: Path) -> int | None:
    name = path.parent.name
    return int(name[1:]) if name.startswith("r") and name[1:].isdigit() else None


def select_plan(records: list[dict], runs: list[dict]) -> list[dict]:
    """The records planned by the last run without ``--only`` and by the filtered runs after it (all the
    records when no run left a plan): a ``quick`` run after a ``full`` one reports ``quick``'s rounds, and
    ``run --only digits`` re-measures digits without hiding the rest."""
    start = max((i for i, r in enumerate(runs) if not r.get("only")), default=0)
    plans = [r["plan"] for r in runs[start:] if isinstance(r.get("plan"), dict)]
    if not plans:
        return records
    planned = {(round_, task) for plan in plans for round_ in plan.get("rounds", []) for task in plan.get("tasks", [])}
    return [r for r in records if (r["round"], r["task"]["id"]) in planned]
