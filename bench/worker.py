"""One cell in one process: ``python -m bench.worker CELL_JSON OUT_JSON``.

Order matters, so it is spelled out in :func:`main`: thread variables and CPU
affinity first (before NumPy or any framework loads its thread pools), then NumPy,
then the implementation's module (timed: the framework's import), then the pools
that only have an API.  The result is written to ``OUT_JSON``; an exception becomes
a record with ``status: "error"``.

What is timed (documented in the report):

* ``import_s``: importing the implementation's module, NumPy already loaded.
* ``build_s``: constructing the first model (weights drawn, framework initialized).
* ``first_step_s``: a fresh model's ``fit`` for one epoch of exactly one batch: the
  time to the first finished step, tracing and compilation included.
* step time: each epoch's wall time from ``History.epoch_time`` (updates only: data
  converted beforehand by ``_prepare_data``, validation excluded) divided by its number
  of batches.  Every fit's first epoch is warm-up and discarded (compilation may happen
  there again for a new model), as are the first ``warmup`` epochs of speed-only
  workloads.  The loss each epoch returns is a Python float, which waits for
  asynchronous work (JAX dispatch, CUDA) inside the timed region.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported for annotations only: the worker must set threads before NumPy loads
    from bench.rows import Row
    from bench.workloads import Data, Workload
    from impls.base import MLP


def write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as JSON atomically (a temporary file, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=True))
    os.replace(tmp, path)


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_class(target: str) -> type:
    """Import ``module:Class``."""
    import importlib

    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


# ---- measurements ------------------------------------------------------------------


def _n_batches(n: int, batch: int | None) -> int:
    return 1 if batch is None else math.ceil(n / batch)


def _metrics(task: str, predict, loss, data: Data) -> dict[str, float]:
    """Final metrics of a trained model: accuracy or RMSE/MAE (target units), and loss."""
    import numpy as np

    out: dict[str, float] = {}
    for split, X, y in (("train", data.X_train, data.y_train), ("test", data.X_test, data.y_test)):
        pred = np.asarray(predict(X))
        y = np.asarray(y)
        if task == "regression":
            err = (pred.reshape(y.shape) - y) * data.y_scale
            out[f"{split}_rmse"] = float(np.sqrt(np.mean(err**2)))
            out[f"{split}_mae"] = float(np.mean(np.abs(err)))
        else:
            out[f"{split}_accuracy"] = float(np.mean(pred.reshape(y.shape) == y))
        out[f"{split}_loss"] = float(loss(X, y))
    return out


def matmul_ceiling(shapes: list[tuple[int, int, int]], frameworks: list[str], repeats: int) -> dict[str, dict]:
    """GFLOP/s of the step's matrix products timed alone, in NumPy and in the row's framework.

    Each block computes every product of one step once; the result is ``flops /
    fastest block time``: a ceiling is the best the machine did, and on a shared machine the
    median block is slowed by the neighbours' load.  Same process, same threads as the
    training it is compared with.
    """
    import numpy as np

    from bench.timing import summarize

    flops = sum(2 * m * k * n for m, k, n in shapes)
    rng = np.random.default_rng(0)
    mats = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32))
            for m, k, n in shapes]
    runners: dict[str, object] = {"numpy": lambda: [a @ b for a, b in mats]}
    if "torch" in frameworks:
        import torch

        tm = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in mats]
        runners["torch"] = lambda: [a @ b for a, b in tm]
    if "jax" in frameworks:
        import jax
        import jax.numpy as jnp

        jm = [(jnp.asarray(a), jnp.asarray(b)) for a, b in mats]
        dot = jax.jit(jnp.matmul)
        runners["jax"] = lambda: [dot(a, b).block_until_ready() for a, b in jm]
    if "tensorflow" in frameworks:
        import tensorflow as tf

        fm = [(tf.constant(a), tf.constant(b)) for a, b in mats]
        runners["tensorflow"] = lambda: [tf.linalg.matmul(a, b).numpy() for a, b in fm]
    out: dict[str, dict] = {}
    for name, run in runners.items():
        run()  # warm-up: first-call allocation and compilation are not the ceiling
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        stats = summarize(times)
        out[name] = {"gflops": flops / stats["min"] / 1e9, "seconds": stats, "raw_s": times}
    return out


def _row_framework(row: Row) -> list[str]:
    """The framework that runs the row's matrix products (Keras: its backend), for the ceiling."""
    framework = row.env.get("KERAS_BACKEND", row.name)
    return [framework] if framework in ("torch", "jax", "tensorflow") else []


def run_mlp(cls: type[MLP], cell: dict, workload: Workload, data: Data) -> dict:
    """Cold start, accuracy over seeds, and step times of an :class:`~impls.base.MLP` row."""
    from dataclasses import replace

    from impls.base import History

    spec = workload.spec(cell["dtype"])
    seeds = cell["seeds"]
    out: dict = {}

    start = time.perf_counter()
    model = cls(spec, seeds[0], cell["mode"])
    out["build_s"] = time.perf_counter() - start
    batch = workload.batch_size
    one = replace(workload.config(seeds[0], epochs=1), early_stopping=None)
    start = time.perf_counter()
    model.fit(data.X_train[:batch], data.y_train[:batch], one)
    out["first_step_s"] = time.perf_counter() - start

    n_train = data.X_train.shape[0]
    steps = _n_batches(n_train, batch)
    blocks: list[float] = []
    first_epochs: list[float] = []
    runs: list[dict] = []
    for seed in seeds:
        model = cls(spec, seed, cell["mode"])
        if workload.speed_only:
            history: History = model.fit(data.X_train, data.y_train,
                                         workload.config(seed, epochs=cell["warmup"] + cell["blocks"]))
            skip = cell["warmup"]
        else:
            config = workload.config(seed)
            validation = (data.X_val, data.y_val) if config.early_stopping is not None else None
            history = model.fit(data.X_train, data.y_train, config, validation=validation)
            skip = 1
        if len(history.epoch_time) != history.epochs_run:
            raise RuntimeError(f"History.epoch_time has {len(history.epoch_time)} entries for "
                               f"{history.epochs_run} epochs")
        first_epochs.append(history.epoch_time[0])
        blocks.extend(t / steps for t in history.epoch_time[skip:])
        run = {"seed": seed, "epochs_run": history.epochs_run, "best_epoch": history.best_epoch,
               "stopped_epoch": history.stopped_epoch, "loss_curve": [float(v) for v in history.loss],
               "val_loss_curve": [float(v) for v in history.val_loss]}
        if not workload.speed_only:
            run.update(_metrics(spec.task, model.predict, model.loss, data))
        runs.append(run)
    out.update(first_epoch_s=first_epochs, step_blocks_s=blocks, runs=runs, steps_per_epoch=steps,
               samples_per_epoch=n_train)
    return out


def run_sklearn(cell: dict, workload: Workload, data: Data) -> dict:
    """The same measurements for the scikit-learn baseline (epoch = one ``partial_fit``)."""
    from dataclasses import replace

    from bench import baseline

    seeds = cell["seeds"]
    out: dict = {"build_s": 0.0}
    batch = workload.batch_size
    one_batch = replace(data, X_train=data.X_train[:batch], y_train=data.y_train[:batch])
    one_epoch = replace(workload, train={**workload.train, "epochs": 1, "early_stopping": None})
    start = time.perf_counter()
    baseline.train(one_epoch, one_batch, seeds[0])
    out["first_step_s"] = time.perf_counter() - start

    n_train = data.X_train.shape[0]
    steps = _n_batches(n_train, batch)
    blocks, first_epochs, runs = [], [], []
    for seed in seeds:
        wl = workload
        skip = 1
        if workload.speed_only:
            wl = replace(workload, train={**workload.train, "epochs": cell["warmup"] + cell["blocks"]})
            skip = cell["warmup"]
        result = baseline.train(wl, data, seed)
        est = result["estimator"]
        first_epochs.append(result["epoch_time"][0])
        blocks.extend(t / steps for t in result["epoch_time"][skip:])
        run = {"seed": seed, "epochs_run": len(result["epoch_time"]), "best_epoch": result["best_epoch"],
               "stopped_epoch": result["stopped_epoch"], "loss_curve": result["loss"], "val_loss_curve": []}
        if not workload.speed_only:
            task = workload.task

            def loss(X, y, est=est, task=task):
                from sklearn.metrics import log_loss, mean_squared_error

                if task == "regression":
                    return mean_squared_error(y, est.predict(X))
                return log_loss(y, est.predict_proba(X), labels=est.classes_)

            run.update(_metrics(task, est.predict, loss, data))
        runs.append(run)
    out.update(first_epoch_s=first_epochs, step_blocks_s=blocks, runs=runs, steps_per_epoch=steps,
               samples_per_epoch=n_train)
    return out


def summarize_runs(result: dict, workload: Workload) -> None:
    """Add the summaries the report shows: step-time statistics, samples/s, metrics mean ± std."""
    from bench.timing import mean_std, summarize

    steps, n = result["steps_per_epoch"], result["samples_per_epoch"]
    stats = summarize(result["step_blocks_s"])
    result["step_time_s"] = stats
    result["samples_per_s"] = n / (stats["median"] * steps)
    first = result["first_epoch_s"]
    result["first_epoch_s_mean"] = sum(first) / len(first)
    if workload.speed_only:
        flops = workload.flops_per_step()
        result["flops_per_step"] = flops
        result["gflops"] = flops / stats["median"] / 1e9
    else:
        keys = [k for k in result["runs"][0] if k.startswith(("train_", "test_"))] + ["epochs_run"]
        result["metrics"] = {k: mean_std([r[k] for r in result["runs"]]) for k in keys}


def run_cell(cell: dict) -> dict:
    """Everything after the environment is set: import, build, train, measure."""
    started = time.perf_counter()
    start = time.perf_counter()
    import numpy  # noqa: F401  (loaded before the timed framework import, for every row alike)

    numpy_import_s = time.perf_counter() - start

    import bench
    from bench import env
    from bench import rows as rows_mod
    from bench import workloads as workloads_mod

    bench.load_plugins()
    row = rows_mod.ROWS[cell["row"]]
    os.environ.update(row.env)  # e.g. KERAS_BACKEND, before keras is imported
    result: dict = {"numpy_import_s": numpy_import_s}
    start = time.perf_counter()
    cls = None if row.is_baseline else load_class(row.target)
    if row.is_baseline:
        import sklearn.neural_network  # noqa: F401
    result["import_s"] = time.perf_counter() - start
    result["threads_applied"] = env.apply_after_import(cell["threads"])
    result["devices_seen"] = env.devices_seen()
    if cls is not None and cell["mode"] not in cls.modes():
        raise ValueError(f"{row.name} has no mode {cell['mode']!r}; its modes are {list(cls.modes())}")

    workload = workloads_mod.get(cell["workload"], cell.get("params"))
    data = workload.load().cast(cell["dtype"])
    result.update(run_sklearn(cell, workload, data) if cls is None else run_mlp(cls, cell, workload, data))
    summarize_runs(result, workload)
    if workload.speed_only:
        shapes = workloads_mod.step_matmuls(workload.layer_sizes, workload.batch_size)
        ceiling = matmul_ceiling(shapes, _row_framework(row), repeats=max(15, cell["blocks"]))
        result["matmul_ceiling"] = ceiling
        result["ceiling_gflops"] = max(c["gflops"] for c in ceiling.values())
        result["pct_of_ceiling"] = 100.0 * result["gflops"] / result["ceiling_gflops"]
    result["framework_versions"] = {name: getattr(sys.modules[name], "__version__", None)
                                    for name in ("numpy", "torch", "jax", "tensorflow", "keras", "sklearn")
                                    if name in sys.modules}
    if "keras" in sys.modules:
        result["keras_backend"] = sys.modules["keras"].backend.backend()
    result["worker_wall_s"] = time.perf_counter() - started
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def main(argv: list[str]) -> int:
    """Set threads and affinity, then run the cell; write the result (or the error) to ``argv[2]``."""
    cell = json.loads(argv[1])
    out_path = Path(argv[2])
    from bench import env

    n = int(cell["threads"])
    thread_vars = env.thread_env(n, cell.get("device", "cpu"))
    os.environ.update(thread_vars)
    cpus = env.pin_cpus(n)
    # Cold start means cold: the runner gives each worker an empty torch.compile (Inductor) cache
    # directory, so no kernels compiled by an earlier cell or run are reused; JAX's persistent cache stays off.
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    record: dict = {"thread_env": thread_vars, "cpu_affinity": cpus, "pid": os.getpid(),
                    "torchinductor_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}
    try:
        record.update(run_cell(cell))
        record["status"] = "ok"
    except Exception as exc:  # the record says what failed; the runner goes on with the next cell
        record["status"] = "error"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()[-4000:]
        record["peak_rss_mib"] = peak_rss_mib()
    write_json(out_path, record)
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
