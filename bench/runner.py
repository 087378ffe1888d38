"""Works through the matrix: one worker process per cell, one record per cell, written at once.

Resume: a cell whose record says ``ok`` for the same measurement, made by the same
commit with the same framework versions on the same CPU, is skipped unless ``force``;
error records are retried, and records of another commit or machine (the committed
results, in a fresh clone) are measured again.  A worker that crashes, is killed or runs past
its timeout leaves an error record with the tail of its output, and the run goes on.
Ctrl-C stops the run; every finished cell is already on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import env
from bench.cells import Cell
from bench.worker import write_json
from bench.workloads import CACHE_ENV

RAW = "raw"


def record_path(out: Path, cell: Cell) -> Path:
    return out / RAW / f"{cell.id}.json"


def load_record(path: Path) -> dict | None:
    """A record, or ``None`` when missing or unreadable (a half-written file cannot exist: writes are atomic)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


RESUME_KEYS = ("git_commit", "versions", "cpu_model", "cpu_count")
"""What a record's environment must share with this run for the record to count as done."""


def is_done(out: Path, cell: Cell, environment: dict) -> bool:
    """Whether an ``ok`` record of the same measurement exists, made by this code on this machine."""
    record = load_record(record_path(out, cell))
    if not (record and record.get("status") == "ok" and cell.same_work(record.get("cell", {}))):
        return False
    made = record.get("environment", {})
    return all(made.get(key) == environment.get(key) for key in RESUME_KEYS)


CACHE = ".cache"
"""Data sets as loaded once (``results/.cache``), so workers need not import scikit-learn to get them."""


def _child_env(out: Path) -> dict[str, str]:
    """The worker's environment: ours, with the project importable wherever the run was started."""
    child = dict(os.environ)
    child.setdefault(CACHE_ENV, str(out / CACHE))
    root = str(env.PROJECT_ROOT)
    child["PYTHONPATH"] = os.pathsep.join(p for p in (root, child.get("PYTHONPATH", "")) if p)
    return child


def _tail(text: str | bytes | None, limit: int = 3000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text[-limit:]


def run_cell(cell: Cell, out: Path, environment: dict) -> dict:
    """Run one cell in a fresh worker process and write its record; returns the record."""
    tmp = out / RAW / f".{cell.id}.result.json"
    tmp.unlink(missing_ok=True)
    started = datetime.now(UTC)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "bench.worker", json.dumps(cell.to_dict()), str(tmp)]
    # an empty torch.compile cache per cell: cold start is measured cold; removed however the worker ends
    with tempfile.TemporaryDirectory(prefix="bench-compile-cache-") as compile_cache:
        child_env = {**_child_env(out), "TORCHINDUCTOR_CACHE_DIR": compile_cache}
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=cell.timeout_s, env=child_env)
            output = _tail(done.stderr) + _tail(done.stdout, 1000)
            rc: int | None = done.returncode
            timed_out = False
        except subprocess.TimeoutExpired as exc:
            output = _tail(exc.stderr) + _tail(exc.stdout, 1000)
            rc, timed_out = None, True
    wall = time.perf_counter() - start
    result = load_record(tmp)
    tmp.unlink(missing_ok=True)
    if result is None:
        reason = (f"timed out after {cell.timeout_s} s" if timed_out
                  else f"worker exited with code {rc} without a result")
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        result = {"status": "error", "error": f"{reason}: {lines[-1] if lines else 'no output'}",
                  "traceback": output}
    record = {"generated_by": "python -m bench run (bench.worker)", "id": cell.id, "cell": cell.to_dict(),
              **result, "wall_s": wall,
              "started_utc": started.strftime("%Y-%m-%d %H:%M:%S"), "environment": environment}
    if result.get("status") != "ok":
        record["worker_output"] = output
    write_json(record_path(out, cell), record)
    return record


def run(cells: list[Cell], out: Path, force: bool = False, progress: bool = True,
        on_record: Callable[[dict], None] | None = None) -> dict[str, int]:
    """Run every cell not already done; returns counts of ``ok``, ``error`` and ``skipped`` cells."""
    out.mkdir(parents=True, exist_ok=True)
    environment = env.collect()
    todo = [c for c in cells if force or not is_done(out, c, environment)]
    counts = {"ok": 0, "error": 0, "skipped": len(cells) - len(todo)}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cells), initial=counts["skipped"], unit="cell", dynamic_ncols=True,
                   desc="bench")
    try:
        for cell in todo:
            if bar is not None:
                bar.set_postfix_str(cell.id)
            record = run_cell(cell, out, environment)
            counts["ok" if record["status"] == "ok" else "error"] += 1
            if bar is not None:
                if record["status"] != "ok":
                    bar.write(f"error in {cell.id}: {record.get('error')}")
                bar.update(1)
            if on_record is not None:
                on_record(record)
    finally:
        if bar is not None:
            bar.close()
    return counts
