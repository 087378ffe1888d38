"""``python -m bench run --executor dask``: the units a plan is cut into, and a run on Dask's local cluster
(the same API a real cluster answers) with the harness's fake implementations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import import_or_skip

for _module in ("pandas", "psutil", "scipy", "tabulate", "tqdm", "cpuinfo", "sklearn", "distributed"):
    import_or_skip(_module)  # pip install '.[bench]'

from bench import cells, executor  # noqa: E402
from bench.cells import Ceiling  # noqa: E402
from bench.rows import NATIVE, SPEC  # noqa: E402
from bench.runner import Plan  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_units_keep_twins_together_and_give_each_ceiling_to_its_group() -> None:
    profile = cells.PROFILES["quick"]
    found, _ = cells.matrix(profile, only="throughput")
    plan = Plan(profile, found, cells.ceilings(profile, found), threads=1)
    todo = [(round_, task) for round_ in (0, 1) for task in plan.tasks]
    work = executor.units(plan, todo)
    placed = [task for unit_cells, unit_ceilings, _ in work for task in (*unit_cells, *unit_ceilings)]
    assert sorted(t.id for t in placed) == sorted(t.id for t in plan.tasks)  # every task once
    for unit_cells, unit_ceilings, rounds in work:
        assert rounds == [0, 1]
        assert len({(c.row.group, c.mode) for c in unit_cells}) == 1
        if len(unit_cells) == 2:
            assert {c.row.variant for c in unit_cells} == {SPEC, NATIVE}
        assert all(isinstance(c, Ceiling) and c.group == unit_cells[0].group for c in unit_ceilings)


def test_a_run_on_a_local_dask_cluster_measures_every_task(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "BENCH_PLUGINS": "tests.bench_plugin", "BENCH_FAKE_MARKERS": str(tmp_path / "markers"),
           "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    command = [sys.executable, "-m", "bench", "run", "--profile", "selftest", "--only", "__fake(-native)?__",
               "--out", str(out)]
    done = subprocess.run([*command, "--executor", "dask"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (out / "raw").glob("r*/*.json")]
    listed = subprocess.run([*command, "--list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    cell_ids = set(listed.stdout.split())
    assert {(r["round"], r["task"]["id"]) for r in records if r["kind"] == "cell"} == {
        (round_, cell_id) for round_ in (0, 1, 2) for cell_id in cell_ids}
    assert {r["task"]["id"] for r in records if r["kind"] == "ceiling"} == {"ceiling__numpy"}
    assert all(r["status"] == "ok" and r["environment"]["machine"]["id"] for r in records)
    assert "## fake" in (out / "README.md").read_text()
    again = subprocess.run([*command, "--executor", "dask"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and "27 already done" in again.stderr  # resumes like the local runner


def test_a_scheduler_needs_the_dask_executor(tmp_path: Path) -> None:
    from bench.__main__ import main

    assert main(["run", "--profile", "quick", "--scheduler", "tcp://nowhere:8786", "--out", str(tmp_path)]) == 2
