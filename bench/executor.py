"""Cells spread over a cluster with Dask distributed (``python -m bench run --executor dask``).

The unit of work is a cell with its native twin (the pair :meth:`bench.runner.Plan.order` keeps back to
back), over every round still to run; a library's ceiling tasks go with the first unit of the worker group
that times them.  Each unit is one Dask task that asks for the resource ``bench=1``: a Dask worker started
with ``--nthreads 1 --resources bench=1`` runs one unit at a time, alone, and inside it the ordinary runner
(:func:`bench.runner.run`) starts the framework's worker process, measures, and hands the records back.
Each record carries the environment of the machine that measured it (:func:`bench.env.collect`, with its
fingerprint), and the client writes it into the results directory as it arrives.

What changes against the local runner: rounds are not interleaved across units (each unit runs its rounds
back to back on one node), so slow drift of a node shows up between cells rather than being shared by
them; spec/native ratios still compare two runs on the same node, seconds apart.  Ratios across cells
(× fastest, % of ceiling) assume the nodes are of one kind; ``python -m bench merge`` splits records by
machine when they are not.

Without ``--scheduler`` a :class:`distributed.LocalCluster` of one such worker runs on this machine (the
engine's local backend, used by the tests); with ``--scheduler tcp://host:8786`` an existing cluster does.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from bench import runner
from bench.cells import Ceiling, Cell, Profile
from bench.layout import ResultsDir
from bench.rows import BASELINE

RESOURCE = "bench"
"""The Dask worker resource a unit holds (a worker offers 1: one unit at a time)."""


def units(plan: runner.Plan, todo: list[tuple[int, runner.Task]]) -> list[tuple[list[Cell], list[Ceiling], list[int]]]:
    """The units of ``todo`` (``(round, task)`` pairs still to run): ``(cells, ceilings, rounds)`` each, a cell and
    its native twin with the rounds either still needs, each ceiling with the first unit of its group."""
    grouped: dict[object, tuple[list[Cell], set[int]]] = {}
    ceilings: dict[str, tuple[list[Ceiling], set[int]]] = {}
    for round_, task in todo:
        if isinstance(task, Ceiling):
            found = ceilings.setdefault(task.group, ([], set()))
            if task not in found[0]:
                found[0].append(task)
            found[1].add(round_)
            continue
        twin = (task.row.group, task.mode, task.workload, task.dtype, tuple(sorted(task.params.items()))
                ) if task.row.variant != BASELINE else task.id
        cells, rounds = grouped.setdefault(twin, ([], set()))
        if task not in cells:
            cells.append(task)
        rounds.add(round_)
    out = []
    for cells, rounds in grouped.values():
        group_ceilings, ceiling_rounds = ceilings.pop(cells[0].group, ([], set()))
        out.append((cells, group_ceilings, sorted(rounds | ceiling_rounds)))
    for group, (group_ceilings, rounds) in ceilings.items():  # a group none of whose cells is left to run
        cell = next(c for c in plan.cells if c.group == group)
        out.append(([cell], group_ceilings, sorted(rounds)))
    return out


def run_unit(profile: Profile, cells: list[Cell], ceilings: list[Ceiling], rounds: list[int], threads: int,
             device: str) -> list[dict]:
    """On a Dask worker: measure ``cells`` and ``ceilings`` in ``rounds`` with the ordinary runner, in a scratch
    results directory; returns the records (each with this machine's environment)."""
    import bench
    from bench import env

    bench.load_plugins()
    plan = runner.Plan(dataclasses.replace(profile, rounds=tuple(rounds)), cells, ceilings, threads, device)
    environment = env.collect(bench.plugin_names())
    with tempfile.TemporaryDirectory(prefix="bench-unit-") as tmp:
        results = ResultsDir(Path(tmp))
        runner.run(plan, results, environment, runner.Outcome(), force=True, progress=False)
        records, _ = results.records()
    return records


def run(plan: runner.Plan, results: ResultsDir, environment: dict, outcome: runner.Outcome, force: bool = False,
        scheduler: str | None = None, progress: bool = True) -> None:
    """Like :func:`bench.runner.run`, with every unit a task on the Dask cluster at ``scheduler`` (``None``: a local
    cluster of one worker); records are written as they arrive."""
    from distributed import Client, LocalCluster, as_completed

    todo = runner.pending(plan, results, environment, outcome, force)
    runner.prepare_data(plan, results)
    work = units(plan, [(round_, task) for round_, task, _ in todo])
    if not work:
        return
    cluster = None if scheduler else LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                                  resources={RESOURCE: 1}, dashboard_address=None)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(work), unit="unit", dynamic_ncols=True, desc="bench (dask)")
    try:
        with Client(scheduler or cluster) as client:
            futures = {client.submit(run_unit, plan.profile, cells, ceilings, rounds, plan.threads, plan.device,
                                     resources={RESOURCE: 1}, pure=False): (cells, ceilings, rounds)
                       for cells, ceilings, rounds in work}
            for future in as_completed(futures):
                try:
                    records = future.result()
                except Exception as exc:  # the node or its Dask worker failed: every task of the unit says why
                    records = _failed(plan, *futures[future], f"{type(exc).__name__}: {exc}")
                for record in records:
                    results.write_record(record)
                    runner.count(outcome, record)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if cluster is not None:
            cluster.close()


def _failed(plan: runner.Plan, cells: list[Cell], ceilings: list[Ceiling], rounds: list[int], error: str
            ) -> list[dict]:
    records = []
    for round_ in rounds:
        for task in (*cells, *ceilings):
            message = plan.message(task, round_)
            records.append({"kind": message["kind"], "task": message["task"], "round": round_, "seed": round_,
                            "key": "", "settings": message["settings"], "status": "error",
                            "error": f"the Dask task failed: {error}"})
    print(f"a unit failed: {error}", file=sys.stderr)
    return records
