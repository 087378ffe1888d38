"""Runs the rounds: persistent workers, one task at a time, every round in a freshly shuffled order.

Each (implementation, backend) gets one long-lived worker (:mod:`bench.worker`) that its spec and
native rows share, started the first time it is needed: a framework is imported once per run, not
once per cell.  A round gives every cell and every ceiling task one turn, in an order shuffled
with the round's seed (a spec cell and its native twin back to back), and only one worker computes
at any moment, so slow drift of the machine hits every row alike.  Each task's record is written
atomically the moment it finishes.  A disturbed training run is timed again up to the profile's
retries, except while the machine is busy rather than briefly disturbed (:class:`BusyMachine`).

Resume: a task whose record in this round is ``ok`` and carries the same key (the task, its seed,
the profile's measuring settings, threads, device, the framework versions, the CPU and the hash of
the sources in ``impls/`` and ``bench/``) is not run again unless ``force``; errors, stale and
malformed records are.  A worker that crashes, dies or runs past the timeout leaves an error
record with the tail of its output and is started afresh for its next task.  Workers die with the
runner (their own process group, killed on the way out, and ``PR_SET_PDEATHSIG``), and the
temporary directory (compile caches, worker logs) is removed however the run ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import env, workloads
from bench.cells import Ceiling, Cell, Profile
from bench.layout import ResultsDir
from bench.rows import BASELINE, Row

Task = Cell | Ceiling

START_TIMEOUT_S = 300
"""How long a worker may take to import its framework (TensorFlow: ~6 s on an idle machine)."""


class WorkerFailed(RuntimeError):
    """A worker died, timed out or could not start; the message ends with the last line of its output."""


class WorkerProcess:
    """One persistent worker: a process in its own session, tasks on stdin, answers on a pipe."""

    def __init__(self, group: str, row: Row, threads: int, device: str, cache: Path, tmp: Path) -> None:
        self.group, self.row, self.threads, self.device, self.cache = group, row, threads, device, cache
        slug = row.slug.removesuffix("-native")
        self.log_path = tmp / f"{slug}.log"
        self.compile_cache = tmp / f"{slug}-torchinductor"
        self.process: subprocess.Popen | None = None
        self.ready: dict = {}
        self._answers = -1
        self._buffer = b""

    def start(self) -> dict:
        """Start the process and wait for its ``ready`` answer (raises :class:`WorkerFailed`)."""
        self.compile_cache.mkdir(parents=True, exist_ok=True)  # empty: cold start is measured cold
        read_end, write_end = os.pipe()
        child_env = {**os.environ, **env.thread_env(self.threads, self.device), **self.row.env,
                     "TORCHINDUCTOR_CACHE_DIR": str(self.compile_cache),
                     "PYTHONPATH": os.pathsep.join(p for p in (str(env.PROJECT_ROOT), os.environ.get("PYTHONPATH"))
                                                   if p)}
        setup = {"row": self.row.to_dict(), "threads": self.threads, "device": self.device,
                 "cache": str(self.cache), "answer_fd": write_end, "parent": os.getpid()}
        spawned = time.perf_counter()  # the start-up: interpreter, NumPy and the framework's import
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "bench.worker", json.dumps(setup)],
                                            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                            pass_fds=(write_end,), env=child_env, cwd=env.PROJECT_ROOT,
                                            start_new_session=True)
        os.close(write_end)
        self._answers, self._buffer = read_end, b""
        ready = self._read(START_TIMEOUT_S)
        if not ready.get("ready"):
            self.stop()
            raise WorkerFailed(f"worker did not start: {ready.get('error')}")
        self.ready = {**ready, "startup_s": time.perf_counter() - spawned}
        return ready

    def ask(self, message: dict, timeout_s: float) -> dict:
        """Send one task and wait for its answer (raises :class:`WorkerFailed` and stops the worker)."""
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self.stop()
            raise WorkerFailed(f"worker is gone ({exc}): {self.last_output_line()}") from exc
        return self._read(timeout_s)

    def _read(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready = select.select([self._answers], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self.stop()
                raise WorkerFailed(f"timed out after {timeout_s:.0f} s: {self.last_output_line()}")
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                code = self.process.wait()
                self.stop()
                raise WorkerFailed(f"worker exited with code {code}: {self.last_output_line()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def stop(self, politely: bool = False) -> None:
        """End the worker and everything it started (its process group); idempotent.  ``politely``: ask it
        to exit first (it is between tasks), else kill it at once (it may be in the middle of one)."""
        if self.process is not None:
            if politely and self.process.poll() is None:
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    self.process.stdin.write(b'{"kind": "exit"}\n')
                    self.process.stdin.flush()
                    self.process.wait(timeout=5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # and compile helpers it may have left behind
            self.process.wait()
            self.process.stdin.close()
            self.process = None
        if self._answers >= 0:
            os.close(self._answers)
            self._answers = -1

    def output_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def last_output_line(self) -> str:
        lines = [ln for ln in self.output_tail().splitlines() if ln.strip()]
        return lines[-1] if lines else "no output"


class Workers:
    """The run's workers by group, started on first use, stopped together (also on Ctrl-C)."""

    def __init__(self, threads: int, device: str, cache: Path, tmp: Path) -> None:
        self.threads, self.device, self.cache, self.tmp = threads, device, cache, tmp
        self.running: dict[str, WorkerProcess] = {}
        self.failed: dict[str, str] = {}

    def get(self, task: Task, row: Row) -> WorkerProcess:
        """The running worker of the task's group, started if needed (raises :class:`WorkerFailed`)."""
        group = task.group
        if group in self.failed:
            raise WorkerFailed(self.failed[group])
        if group not in self.running:
            worker = WorkerProcess(group, row, self.threads, self.device, self.cache, self.tmp)
            try:
                worker.start()
            except WorkerFailed as exc:
                self.failed[group] = str(exc)
                raise
            self.running[group] = worker
        return self.running[group]

    def drop(self, group: str, politely: bool = False) -> None:
        worker = self.running.pop(group, None)
        if worker is not None:
            worker.stop(politely)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        for group in list(self.running):
            self.drop(group, politely=exc_type is None)


@dataclass
class Plan:
    """What one run measures: the profile's cells and ceiling tasks in each of its rounds."""

    profile: Profile
    cells: list[Cell]
    ceilings: list[Ceiling]
    threads: int
    device: str = "cpu"

    @property
    def tasks(self) -> list[Task]:
        return [*self.cells, *self.ceilings]

    def order(self, round_: int) -> list[Task]:
        """Every task of a round, shuffled with the round's seed (the same order on every run).

        A spec cell and its native twin (same implementation, backend, mode, workload, dtype) are
        shuffled as one unit, in a random order within it: they run back to back, so the adapter
        overhead of the round compares two runs seconds apart, not minutes.
        """
        rng = random.Random(f"bench round {round_}")
        units: dict[object, list[Task]] = {}
        for task in self.tasks:
            twin = (task.row.group, task.mode, task.workload, task.dtype, tuple(sorted(task.params.items()))
                    ) if isinstance(task, Cell) and task.row.variant != BASELINE else task.id
            units.setdefault(twin, []).append(task)
        shuffled = list(units.values())
        rng.shuffle(shuffled)
        for unit in shuffled:
            rng.shuffle(unit)
        return [task for unit in shuffled for task in unit]

    def message(self, task: Task, round_: int) -> dict:
        """What the worker is sent: the task, the round's seed, the profile's measuring settings."""
        kind = "cell" if isinstance(task, Cell) else "ceiling"
        return {"kind": kind, "task": task.to_dict(), "seed": round_,
                "settings": self.profile.settings() if kind == "cell" else {}}

    def key(self, task: Task, round_: int, environment: dict) -> str:
        """The resume key of a task's record: everything that, changed, makes the record stale."""
        made_by = {k: environment.get(k) for k in env.RESUME_KEYS}
        content = {**self.message(task, round_), "threads": self.threads, "device": self.device,
                   "environment": made_by}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]

    def row_of(self, task: Task) -> Row:
        """The row whose worker runs ``task`` (a ceiling: any row of its group)."""
        if isinstance(task, Cell):
            return task.row
        return next(c.row for c in self.cells if c.group == task.group)

    def to_dict(self) -> dict:
        return {"rounds": list(self.profile.rounds), "tasks": [t.id for t in self.tasks]}


class BusyMachine:
    """Whether the machine is busy rather than briefly disturbed: at least half of the last
    :data:`WINDOW` training runs were disturbed at their first attempt.  Then timing again cannot
    find a quiet moment and would only double the run's time, so retries pause until it calms down."""

    WINDOW = 10

    def __init__(self) -> None:
        self.recent: deque[bool] = deque(maxlen=self.WINDOW)

    def add(self, record: dict) -> None:
        if record["kind"] == "cell" and record["status"] == "ok" and record.get("attempts"):
            self.recent.append(bool(record["attempts"][0]["disturbed"]))

    @property
    def busy(self) -> bool:
        return len(self.recent) == self.WINDOW and 2 * sum(self.recent) >= self.WINDOW


@dataclass
class Outcome:
    """What a run did: counts of tasks by what happened, and the malformed records it replaced."""

    counts: Counter = field(default_factory=Counter)
    malformed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def prepare_data(plan: Plan, results: ResultsDir) -> None:
    """Load every workload's data into the cache once (here: workers need not import scikit-learn)."""
    seen = set()
    for task in plan.tasks:
        name, params = (task.workload, task.params) if isinstance(task, Cell) else (task.workload, {})
        workload = workloads.get(name, params)
        if workload.cache_name not in seen:
            seen.add(workload.cache_name)
            workload.load(results.cache)


def pending(plan: Plan, results: ResultsDir, environment: dict, outcome: Outcome, force: bool = False
            ) -> list[tuple[int, Task, str]]:
    """``(round, task, key)`` of every task not done yet (all with ``force``), in run order; ``outcome`` counts
    the skipped ones and names the malformed records found."""
    todo: list[tuple[int, Task, str]] = []
    for round_ in plan.profile.rounds:
        for task in plan.order(round_):
            key = plan.key(task, round_, environment)
            record, malformed = results.load_record(round_, task.id)
            if malformed is not None:
                outcome.malformed.append(f"{malformed.path}: {malformed.reason}")
            if not force and record is not None and record["status"] == "ok" and record["key"] == key:
                outcome.counts["skipped"] += 1
            else:
                todo.append((round_, task, key))
    for line in outcome.malformed:
        print(f"malformed record, measured again: {line}", file=sys.stderr)
    return todo


def run(plan: Plan, results: ResultsDir, environment: dict, outcome: Outcome, force: bool = False,
        progress: bool = True) -> None:
    """Run every round's tasks that are not done, writing one record per task; ``outcome`` counts what
    happened (also when an interrupt ends the run)."""
    todo = pending(plan, results, environment, outcome, force)
    prepare_data(plan, results)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="task", dynamic_ncols=True, desc="bench")
    busy = BusyMachine()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp, \
                Workers(plan.threads, plan.device, results.cache, Path(tmp)) as workers:
            for round_, task, key in todo:
                if bar is not None:
                    bar.set_description(f"round {round_}")
                    bar.set_postfix_str(task.id)
                message = plan.message(task, round_)
                if message["kind"] == "cell" and busy.busy and message["settings"]["retries"]:
                    message["settings"]["retries"] = 0
                    outcome.counts["retries paused"] += 1
                record = run_task(plan, task, message, key, workers, environment)
                results.write_record(record)
                count(outcome, record)
                busy.add(record)
                if bar is not None:
                    if record["status"] != "ok":
                        bar.write(f"error in round {round_}, {task.id}: {record['error']}")
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def count(outcome: Outcome, record: dict) -> None:
    """Count a finished task's record in ``outcome``."""
    if record["status"] != "ok":
        outcome.counts["error"] += 1
        outcome.errors.append(f"round {record['round']}, {record['task']['id']}: {record['error']}")
        return
    outcome.counts["ok"] += 1
    outcome.counts["retimed"] += record.get("retimed", 0)
    outcome.counts["disturbed"] += bool(record.get("disturbed"))


def run_task(plan: Plan, task: Task, message: dict, key: str, workers: Workers, environment: dict) -> dict:
    """One task in its group's worker; the record (``ok`` or ``error``), not yet written."""
    started = datetime.now(UTC)
    start = time.perf_counter()
    record: dict = {"kind": message["kind"], "task": message["task"], "round": message["seed"],
                    "seed": message["seed"], "key": key, "settings": message["settings"], "threads": plan.threads,
                    "device": plan.device}
    try:
        worker = workers.get(task, plan.row_of(task))
        record["worker"] = {k: worker.ready.get(k) for k in ("pid", "import_s", "numpy_import_s", "libraries",
                                                              "threads_applied", "devices", "cpu_affinity",
                                                              "thread_env", "torchinductor_cache_dir", "startup_s")}
        record.update(worker.ask(message, plan.profile.timeout_s))
    except WorkerFailed as exc:
        worker = workers.running.get(task.group)
        record.update(status="error", error=str(exc),
                      worker_output=worker.output_tail() if worker is not None else "")
        workers.drop(task.group)
    record.update(wall_s=time.perf_counter() - start, started_utc=started.strftime("%Y-%m-%d %H:%M:%S.%f"),
                  environment=environment)
    return record
