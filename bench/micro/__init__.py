"""Where a step's time goes: a pytest-benchmark suite and its phase table.

``nox -s microbench`` runs ``python -m pytest bench/micro`` once per spec row (one process per
implementation and Keras backend, the backend chosen by the registry's ``backend_env``), each
writing pytest-benchmark's JSON to ``results/micro/<row>.json``; ``python -m bench micro-report``
turns those files into ``results/micro/README.md``.  By hand, for one row::

    KERAS_BACKEND=jax python -m pytest bench/micro --implementation keras \\
        --benchmark-json results/micro/keras-jax.json

Each benchmark times one of the spec interface's per-batch methods on one batch of a workload
(float32, one thread), the way ``MLP.fit`` calls them (validated arrays in, no input checks):

* ``forward``: ``_forward(X)``, inference outputs ``(batch, n_outputs)`` as NumPy;
* ``gradients``: ``_gradients(X, Y, masks)``, forward and backward, the gradients as NumPy;
* ``train_step``: ``_train_step(X, Y, lr, optimizer)``, forward, backward and the optimizer's update.

The phase table subtracts them: forward; backward = gradients − forward; update = train_step −
gradients; and rest = the main table's step time (``fit``'s epoch time per batch) − train_step: the
training loop around the step (batch slicing, per-epoch work spread over the batches, a fast mode's
whole-epoch path that a single step does not take).  A difference of two medians can be slightly
negative when a phase costs less than the noise; it is shown as measured.  The subtraction assumes the
phases nest (a train step runs the gradient code, which runs the forward code); where a row's methods take
different paths it does not (Keras: ``_train_step`` is Keras's compiled train function, ``_gradients`` a
separate gradient computation), and ``nested`` says so: each phase at least :data:`NESTING_TOLERANCE` of
the one it should contain.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from bench import rows as rows_mod

WORKLOADS = ("circles", "digits", "throughput")
"""The three sizes timed: tiny, small and MNIST-shaped."""

PHASES = ("forward", "gradients", "train_step")
"""The timed methods, each containing the one before it."""

NESTING_TOLERANCE = 0.9
"""A phase counts as containing the previous one when it takes at least this fraction of its time (noise)."""

FOLDER = "micro"
"""The suite's folder inside a results directory."""


def spec_rows(implementation: str | None = None) -> list[rows_mod.Row]:
    """The spec rows this process can time: every registered implementation (or the one named), each with
    the backend its ``backend_env`` selects in this process (the entry's first backend when unset)."""
    from impls import registry

    names = [implementation] if implementation else list(registry.IMPLEMENTATIONS)
    out = []
    for name in names:
        entry = registry.entry(name)
        backend = os.environ.get(entry.backend_env, entry.backends[0]) if entry.backend_env else None
        if backend is not None and backend not in entry.backends:
            raise ValueError(f"{entry.backend_env}={backend!r} is not one of {name}'s backends {entry.backends}")
        out.append(rows_mod.Row(name, rows_mod.SPEC, backend))
    return out


def cases(implementation: str | None = None) -> list[tuple[rows_mod.Row, str]]:
    """``(row, mode)`` for every spec row of :func:`spec_rows` that is installed, in every registered mode."""
    return [(row, mode) for row in spec_rows(implementation) if row.unavailable() is None for mode in row.modes]


def load_benchmarks(folder: Path) -> pd.DataFrame:
    """One line per benchmark in every pytest-benchmark JSON file in ``folder``: its ``extra_info`` (row, mode,
    workload, phase, batch) and the median, first quartile and third quartile of its time in seconds."""
    lines = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a pytest-benchmark JSON file ({exc})") from None
        benchmarks = data.get("benchmarks", []) if isinstance(data, dict) else None
        if not isinstance(benchmarks, list) or not all(isinstance(b, dict) for b in benchmarks):
            raise ValueError(f"{path}: not a pytest-benchmark JSON file (no list of benchmarks)")
        for bench in benchmarks:
            info, stats = bench.get("extra_info", {}), bench.get("stats")
            if not isinstance(info, dict):
                continue
            if not (isinstance(stats, dict) and all(isinstance(stats.get(k), (int, float))
                                                    for k in ("median", "q1", "q3", "rounds"))):
                raise ValueError(f"{path}: benchmark {bench.get('name')!r} has no statistics")
            if {"row", "mode", "workload", "phase"} <= set(info):
                lines.append({**{k: info[k] for k in ("row", "mode", "workload", "phase")},
                              "median_s": stats["median"], "q1_s": stats["q1"], "q3_s": stats["q3"],
                              "rounds": stats["rounds"], "file": path.name})
    return pd.DataFrame(lines, columns=["row", "mode", "workload", "phase", "median_s", "q1_s", "q3_s", "rounds",
                                        "file"])


def phase_table(benchmarks: pd.DataFrame, main: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (row, mode, workload): the phase times in seconds (``forward_s``, ``backward_s``, ``update_s``,
    ``train_step_s``) and, where ``main`` (the main table: ``row, mode, workload, step_s_median``) has the cell,
    ``step_s`` and ``rest_s`` = step − train_step; ``nested``: whether the phases contain one another (see the
    module docstring).  Missing phases leave their differences empty."""
    wide = benchmarks.pivot_table(index=["row", "mode", "workload"], columns="phase", values="median_s",
                                  aggfunc="median").reindex(columns=list(PHASES)).reset_index()
    wide.columns.name = None
    out = wide[["row", "mode", "workload"]].assign(
        forward_s=wide["forward"], backward_s=wide["gradients"] - wide["forward"],
        update_s=wide["train_step"] - wide["gradients"], train_step_s=wide["train_step"],
        nested=(wide["gradients"] >= NESTING_TOLERANCE * wide["forward"])
        & (wide["train_step"] >= NESTING_TOLERANCE * wide["gradients"]))
    if main is not None and not main.empty:
        steps = main[["row", "mode", "workload", "step_s_median"]].rename(columns={"step_s_median": "step_s"})
        out = out.merge(steps, on=["row", "mode", "workload"], how="left")
    else:
        out["step_s"] = float("nan")
    out["rest_s"] = out["step_s"] - out["train_step_s"]
    return out


def main_table(summary_csv: Path) -> pd.DataFrame | None:
    """The main report's float32 spec cells (``row, mode, workload, step_s_median``), or ``None`` when the results
    directory has no summary written by this harness."""
    try:
        cells = pd.read_csv(summary_csv, comment="#")
    except (OSError, ValueError):
        return None
    needed = {"row", "mode", "workload", "dtype", "variant", "point", "step_s_median"}
    if not needed <= set(cells.columns):
        return None
    plain = cells["point"].isna() & (cells["dtype"] == "float32") & (cells["variant"] == rows_mod.SPEC)
    return cells.loc[plain, ["row", "mode", "workload", "step_s_median"]]
