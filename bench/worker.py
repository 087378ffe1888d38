"""A persistent worker: ``python -m bench.worker SETUP_JSON``, one per (implementation, backend).

The runner starts it with the thread variables and the backend variable already in its
environment; the worker then dies with its parent (``PR_SET_PDEATHSIG``), pins itself to its
CPUs, imports NumPy, then the implementation's module (timed: the framework's import), then sets
the thread pools that only have an API (:mod:`bench.libraries`) and freezes what the imports built
out of the garbage collector's sight (``gc.freeze``: a TensorFlow worker's full collection took
0.5 s, each time, in every worker alike).  It answers ``ready`` and reads
tasks, one JSON line each, from stdin; each answer is one JSON line on the file descriptor named in
the setup (stdout and stderr are the framework's, kept in a log).  A task that raises becomes an
answer with ``status: "error"``; the worker goes on.

What a cell task measures (documented in the report):

* ``first_step_s`` (the first time this worker runs the cell): a fresh model trained for one epoch
  of exactly one batch: build, data conversion, tracing and compilation included.  The framework
  is already imported, and other cells of the same framework may have warmed shared caches.
* a *block*: one whole training run with the round's seed (speed-only workloads: warm-up plus
  timed epochs), inside a disturbance window (:mod:`bench.disturbance`); a disturbed block is run
  again, up to ``retries`` times, and the last attempt is kept.
* step times: each epoch's wall time from ``History.epoch_time`` (updates only) divided by its
  number of batches, the first epoch (speed-only: the warm-up epochs) discarded; the round's sample
  is their median.
* on workloads with an accuracy target, the spec rows' test accuracy after every epoch of the kept run, with
  the seconds since the run was called (model build, data conversion, any compilation it does, updates and
  these evaluations): ``accuracy_curve``, from which the report reads the time to accuracy.
* metrics on the kept run's model; memory: the peak resident set during the task
  (``/proc/self/clear_refs`` resets the high-water mark when the task starts) and its rise over
  the resident set at the start.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the worker pins its CPUs before NumPy loads
    import numpy as np

    from bench.cells import Cell
    from bench.workloads import Data
    from impls.base import History
    from impls.spec import MLPSpec

Outputs = Callable[["np.ndarray"], "np.ndarray"]
Train = Callable[..., tuple["History", Outputs, list[tuple[float, float]]]]


# ---- process setup --------------------------------------------------------------------


def die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: stdin's end of file still stops the worker
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def start(setup: dict) -> dict:
    """Pin, import, set threads; returns the ``ready`` answer (timings and what was set)."""
    from bench import env

    cpus = env.pin_cpus(int(setup["threads"]))
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # no persistent compilation cache: cold is cold
    started = time.perf_counter()
    import numpy  # noqa: F401  (loaded before the timed framework import, for every row alike)

    numpy_import_s = time.perf_counter() - started

    import bench
    from bench import libraries, rows

    bench.load_plugins()
    entry = rows.Row(**setup["row"]).entry
    started = time.perf_counter()
    importlib.import_module(entry.module)
    import_s = time.perf_counter() - started
    threads_applied = libraries.apply_threads(int(setup["threads"]))
    # what the imports built lives as long as the worker: out of the collector's way, so that a full collection
    # (inside a timed epoch, or before each task) does not scan a framework's ~10^5 objects again and again
    gc.collect()
    gc.freeze()
    return {"ready": True, "pid": os.getpid(), "numpy_import_s": numpy_import_s, "import_s": import_s,
            "libraries": libraries.imported(), "threads_applied": threads_applied,
            "devices": libraries.devices(), "cpu_affinity": cpus,
            "thread_env": {k: os.environ[k] for k in env.thread_env(int(setup["threads"]), setup["device"])
                           if k in os.environ},
            "torchinductor_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}


# ---- memory ------------------------------------------------------------------------------


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the resident set's high-water mark (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def memory_since(rss_start: float | None, reset: bool) -> dict[str, object]:
    """Peak resident set (MiB) since the task started and its rise over the start; where the mark could not
    be reset, the process's peak since it started (``ru_maxrss``), said so."""
    import resource

    peak = _status_mib("VmHWM") if reset else None
    if peak is None:
        return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                "peak_since": "process start", "rss_start_mib": rss_start, "rss_rise_mib": None}
    return {"peak_rss_mib": peak, "peak_since": "task start", "rss_start_mib": rss_start,
            "rss_rise_mib": None if rss_start is None else peak - rss_start}


# ---- a cell ------------------------------------------------------------------------------


def trainer(cell: Cell, spec: MLPSpec, seed: int, source: object) -> Train:
    """``train(config, X, y, validation, test=None) -> (history, outputs, curve)`` for the cell's row: the
    :class:`MLP` class through ``fit``, or ``native_fit``; ``outputs(X)`` gives probabilities or values
    ``(n, k)``.  With ``test=(X, y)``, ``curve`` lists ``(seconds since train was called, test accuracy)`` after
    every epoch (the spec rows' ``on_epoch_end``; ``native_fit`` has no hook, its curve stays empty)."""
    from bench.rows import NATIVE

    if cell.row.variant == NATIVE:
        def train_native(config, X, y, validation, test=None):
            run = source(spec, config, X, y, validation=validation, mode=cell.mode)
            return run.history, run.predict, []
        return train_native

    def train_model(config, X, y, validation, test=None):
        started = time.perf_counter()
        model = source(spec, seed, cell.mode)
        curve: list[tuple[float, float]] = []

        def evaluate(epoch: int, history: History) -> None:
            curve.append((time.perf_counter() - started, model.accuracy(*test)))

        history = model.fit(X, y, config, validation=validation, on_epoch_end=evaluate if test else None)
        return history, model.forward, curve
    return train_model


CLIP = 1e-7
"""Probabilities are clipped to ``[CLIP, 1 - CLIP]`` before the log-loss, so every row is scored alike."""


def metrics(spec: MLPSpec, outputs: Outputs, data: Data) -> dict[str, float]:
    """Accuracy (classification) or RMSE/MAE in the target's units (regression), and the data loss (no
    penalty), on the training and test sets, all from the outputs: the same code for every row."""
    import numpy as np

    out: dict[str, float] = {}
    for split, X, y in (("train", data.X_train, data.y_train), ("test", data.X_test, data.y_test)):
        predicted = np.asarray(outputs(X), dtype=np.float64)
        y = np.asarray(y)
        if spec.task == "regression":
            error = predicted.reshape(y.shape) - y
            out[f"{split}_rmse"] = float(np.sqrt(np.mean(error**2)) * data.y_scale)
            out[f"{split}_mae"] = float(np.mean(np.abs(error)) * data.y_scale)
            out[f"{split}_loss"] = float(np.mean(error**2))
            continue
        if spec.task == "multiclass":
            labels = y.astype(np.int64)
            out[f"{split}_accuracy"] = float(np.mean(predicted.argmax(axis=1) == labels))
            p = np.clip(predicted[np.arange(len(labels)), labels], CLIP, 1.0)
            out[f"{split}_loss"] = float(-np.mean(np.log(p)))
        else:
            p = np.clip(predicted.reshape(y.shape), CLIP, 1.0 - CLIP)
            out[f"{split}_accuracy"] = float(np.mean((p >= 0.5) == (y == 1)))
            out[f"{split}_loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return out


class Worker:
    """The state a worker keeps between tasks: what it imported, loaded and already ran once."""

    def __init__(self, cache: Path | None) -> None:
        self.cache = cache
        self.sources: dict[tuple[str, str, str | None], object] = {}
        self.data: dict[tuple[str, tuple, str], Data] = {}
        self.started: set[str] = set()

    def source(self, cell: Cell) -> object:
        from bench import rows

        key = (cell.row.implementation, cell.row.variant, cell.row.backend)
        if key not in self.sources:
            self.sources[key] = rows.load_trainer_source(cell.row)
        return self.sources[key]

    def load(self, cell: Cell) -> Data:
        from bench import workloads

        key = (cell.workload, tuple(sorted(cell.params.items())), cell.dtype)
        if key not in self.data:
            self.data[key] = workloads.get(cell.workload, cell.params).load(self.cache).cast(cell.dtype)
        return self.data[key]

    def cell(self, task: dict) -> dict:
        """Train the cell with the round's seed; see the module docstring for what is measured."""
        import numpy as np

        from bench import workloads
        from bench.cells import Cell
        from bench.disturbance import Measure

        cell = Cell.from_dict(task["task"])
        seed, settings = int(task["seed"]), task["settings"]
        workload = workloads.get(cell.workload, cell.params)
        data = self.load(cell)
        spec = workload.spec(cell.dtype)
        if workload.speed_only:
            warmup, epochs = settings["speed_warmup"], settings["speed_warmup"] + settings["speed_epochs"]
        else:
            warmup, epochs = 1, min(int(workload.train["epochs"]), settings["max_epochs"] or math.inf)
        config = workload.config(seed, int(epochs))
        validation = (data.X_val, data.y_val) if config.early_stopping is not None else None
        train = trainer(cell, spec, seed, self.source(cell))
        test = (data.X_test, data.y_test) if workload.accuracy_target is not None else None
        result: dict = {}
        if cell.id not in self.started:
            batch = workload.batch_size
            one = replace(workload.config(seed, epochs=1), early_stopping=None)
            started = time.perf_counter()
            train(one, data.X_train[:batch], data.y_train[:batch], None)
            result["first_step_s"] = time.perf_counter() - started
            self.started.add(cell.id)

        gc.collect()  # the last task's garbage is not collected inside this one's timed block
        rss_start = _status_mib("VmRSS")
        reset = reset_peak_rss()
        attempts = []
        for _ in range(1 + int(settings["retries"])):
            with Measure() as measure:
                history, outputs, curve = train(config, data.X_train, data.y_train, validation, test)
            attempts.append(measure.window.to_dict())
            if not measure.window.disturbed:
                break
        result["memory"] = memory_since(rss_start, reset)

        if len(history.epoch_time) != history.epochs_run:
            raise RuntimeError(f"history has {len(history.epoch_time)} epoch times for {history.epochs_run} epochs")
        steps = math.ceil(len(data.X_train) / workload.batch_size)
        step_times = [t / steps for t in history.epoch_time[warmup:]]
        if not step_times:
            raise RuntimeError(f"the run stopped after {history.epochs_run} epoch(s): none left after warm-up")
        result.update(
            step_s=float(np.median(step_times)), step_times_s=step_times, first_epoch_s=history.epoch_time[0],
            steps_per_epoch=steps, samples_per_epoch=len(data.X_train), epochs_run=history.epochs_run,
            best_epoch=history.best_epoch, stopped_epoch=history.stopped_epoch,
            loss_curve=[float(v) for v in history.loss], val_loss_curve=[float(v) for v in history.val_loss],
            attempts=attempts, retimed=len(attempts) - 1, disturbed=attempts[-1]["disturbed"])
        if curve:
            result["accuracy_curve"] = curve
        if not workload.speed_only:
            result["metrics"] = metrics(spec, outputs, data)
        return result

    def ceiling(self, task: dict) -> dict:
        """GFLOP/s of the ceiling workload's step products in one library: the fastest of ``repeats`` blocks."""
        import numpy as np

        from bench import libraries, workloads
        from bench.disturbance import Measure

        spec = task["task"]
        workload = workloads.get(spec["workload"])
        shapes = workloads.step_matmuls(workload.layer_sizes, workload.batch_size)
        flops = sum(2 * m * k * n for m, k, n in shapes)
        importlib.import_module(spec["library"])
        rng = np.random.default_rng(0)
        pairs = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32))
                 for m, k, n in shapes]
        run = libraries.LIBRARIES[spec["library"]].products(pairs)
        run()  # first-call allocation and compilation are not the ceiling
        times = []
        with Measure() as measure:
            for _ in range(int(spec["repeats"])):
                started = time.perf_counter()
                run()
                times.append(time.perf_counter() - started)
        return {"gflops": flops / min(times) / 1e9, "flops": flops, "block_times_s": times,
                "attempts": [measure.window.to_dict()], "disturbed": measure.window.disturbed}


def main(argv: list[str]) -> int:
    """Set up, answer ``ready``, then answer every task until ``exit`` or the end of stdin."""
    setup = json.loads(argv[1])
    die_with_parent(int(setup["parent"]))
    answers = os.fdopen(int(setup["answer_fd"]), "w", buffering=1)

    def answer(obj: dict) -> None:
        answers.write(json.dumps(obj, allow_nan=True) + "\n")
        answers.flush()

    try:
        answer(start(setup))
    except Exception as exc:  # the runner records why this worker's tasks cannot run
        answer({"ready": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]})
        return 1
    worker = Worker(Path(setup["cache"]) if setup.get("cache") else None)
    kinds = {"cell": worker.cell, "ceiling": worker.ceiling}
    for line in sys.stdin:
        task = json.loads(line)
        if task["kind"] == "exit":
            break
        try:
            result = {"status": "ok", **kinds[task["kind"]](task)}
        except Exception as exc:  # the record says what failed; the worker takes the next task
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-4000:]}
        answer(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
