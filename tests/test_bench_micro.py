"""The micro suite (:mod:`bench.micro`): its parametrization from the registry, the phase arithmetic, and the
suite itself on NumPy (collected and run once, end to end through the report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import import_or_skip

for _module in ("pandas", "tabulate", "pytest_benchmark"):  # pip install '.[bench]'
    import_or_skip(_module)

import pandas as pd  # noqa: E402

from bench import micro  # noqa: E402
from bench.layout import ResultsDir  # noqa: E402
from bench.micro.report import write_report  # noqa: E402
from impls import registry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _benchmarks(times: dict[tuple[str, str, str, str], float]) -> pd.DataFrame:
    lines = [{"row": r, "mode": m, "workload": w, "phase": p, "median_s": t, "q1_s": t, "q3_s": t, "rounds": 5,
              "file": "x.json"} for (r, m, w, p), t in times.items()]
    return pd.DataFrame(lines)


def test_phase_arithmetic_subtracts_the_nested_phases() -> None:
    cell = ("torch", "default", "digits")
    bench = _benchmarks({(*cell, "forward"): 1.0, (*cell, "gradients"): 3.0, (*cell, "train_step"): 3.5})
    main = pd.DataFrame([{"row": "torch", "mode": "default", "workload": "digits", "step_s_median": 4.25}])
    line = micro.phase_table(bench, main).iloc[0]
    assert (line["forward_s"], line["backward_s"], line["update_s"], line["train_step_s"]) == (1.0, 2.0, 0.5, 3.5)
    assert (line["step_s"], line["rest_s"]) == (4.25, 0.75)
    assert line["nested"]


def test_phases_that_do_not_contain_one_another_are_flagged() -> None:
    cell = ("keras[jax]", "jit", "digits")
    bench = _benchmarks({(*cell, "forward"): 1.0, (*cell, "gradients"): 30.0, (*cell, "train_step"): 2.0})
    line = micro.phase_table(bench, None).iloc[0]
    assert line["update_s"] == -28.0 and not line["nested"]


def test_phase_arithmetic_leaves_missing_parts_empty() -> None:
    bench = _benchmarks({("jax", "scan", "circles", "forward"): 1.0, ("jax", "scan", "circles", "train_step"): 2.0})
    line = micro.phase_table(bench, None).iloc[0]
    assert line["forward_s"] == 1.0 and line["train_step_s"] == 2.0
    assert pd.isna(line["backward_s"]) and pd.isna(line["update_s"]) and pd.isna(line["rest_s"])


def test_cases_follow_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = [name for name, entry in registry.IMPLEMENTATIONS.items()
                 if entry.missing(entry.backends[0] if entry.backends else None) is None]
    found = micro.cases()
    assert sorted({row.implementation for row, _ in found}) == sorted(installed)
    for name in installed:
        assert [mode for row, mode in found if row.implementation == name] == list(registry.modes(name))
    keras = registry.IMPLEMENTATIONS["keras"]
    monkeypatch.setenv(keras.backend_env, "jax")
    assert [row.name for row in micro.spec_rows("keras")] == ["keras[jax]"]
    monkeypatch.setenv(keras.backend_env, "nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        micro.spec_rows("keras")


def test_numpy_suite_runs_and_reports(tmp_path: Path) -> None:
    folder = tmp_path / micro.FOLDER
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-m", "pytest", "bench/micro", "-q", "-p", "no:cacheprovider",
                           "--implementation", "numpy", f"--benchmark-json={folder / 'numpy.json'}",
                           "--benchmark-max-time=0.001", "--benchmark-min-rounds=1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{len(micro.WORKLOADS) * len(micro.PHASES)} passed" in done.stdout
    infos = [b["extra_info"] for b in json.loads((folder / "numpy.json").read_text())["benchmarks"]]
    assert {(i["row"], i["mode"]) for i in infos} == {("numpy", "default")}
    phases = write_report(ResultsDir(tmp_path))
    assert list(phases["workload"]) == list(micro.WORKLOADS)
    assert (phases["forward_s"] > 0).all()
    assert "## throughput" in (folder / "README.md").read_text()
