"""Results from several machines: the fingerprint every record carries, ``python -m bench merge`` and the report
grouped by machine (records made by hand: no framework runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import import_or_skip

for _module in ("pandas", "psutil", "scipy", "tabulate", "cpuinfo"):  # pip install '.[bench]'
    import_or_skip(_module)

from bench import env  # noqa: E402
from bench.__main__ import main as bench_main  # noqa: E402
from bench.cells import Cell  # noqa: E402
from bench.layout import ResultsDir, read_json  # noqa: E402
from bench.merge import MACHINES, merge  # noqa: E402
from bench.rows import NATIVE, Row  # noqa: E402


def _environment(cpu: str, host: str) -> dict:
    hardware = {"cpu_model": cpu, "cpu_count": 2, "memory_gib": 8.0}
    return {**hardware, "machine": {**env.fingerprint(hardware, {}), "hostname_sha256": host}}


def _results(root: Path, environment: dict, rounds: range, step_s: float, started: str = "2026-01-01") -> Path:
    """A results directory of a numpy spec and native cell on circles, one record per round, and its run."""
    results = ResultsDir(root)
    cells = [Cell(Row("numpy"), "default", "circles"), Cell(Row("numpy", NATIVE), "default", "circles")]
    for round_ in rounds:
        for cell in cells:
            results.write_record({"kind": "cell", "task": cell.to_dict(), "round": round_, "seed": round_, "key": "k",
                                  "status": "ok", "step_s": step_s, "step_times_s": [step_s, step_s],
                                  "settings": {}, "environment": environment, "started_utc": started})
    results.add_run({"run_id": f"run-{root.name}", "profile": "quick", "threads": 1, "device": "cpu",
                     "plan": {"rounds": list(rounds), "tasks": [c.id for c in cells]}, "environment": environment})
    return root


def test_every_run_names_its_machine_without_its_hostname() -> None:
    environment = env.collect()
    machine = environment["machine"]
    assert machine["id"] == env.machine_id(environment)
    assert {"cpu_model", "cpu_count", "memory_gib", "hostname_sha256", "versions"} <= set(machine)
    assert machine["versions"] == environment["versions"]
    import socket

    assert socket.gethostname() not in str(machine)


def test_one_kind_of_machine_merges_into_one_results_directory(tmp_path: Path) -> None:
    a = _results(tmp_path / "a", _environment("EPYC", "node1"), range(0, 3), 1e-3)
    b = _results(tmp_path / "b", _environment("EPYC", "node2"), range(2, 5), 2e-3, started="2026-02-01")
    out = tmp_path / "merged"
    assert bench_main(["merge", str(a), str(b), "--out", str(out)]) == 0
    merged = ResultsDir(out)
    records, malformed = merged.records()
    assert not malformed and len(records) == 10  # rounds 0-4, two cells; round 2 from both: the later one kept
    assert {r["step_s"] for r in records if r["round"] == 2} == {2e-3}
    assert merged.runs()[-1]["plan"]["rounds"] == [0, 1, 2, 3, 4]
    assert "## circles" in merged.file("README.md").read_text()


def test_several_machines_get_a_report_each_and_an_overview(tmp_path: Path) -> None:
    epyc, xeon = _environment("EPYC", "node1"), _environment("Xeon", "node9")
    a = _results(tmp_path / "a", epyc, range(3), 1e-3)
    b = _results(tmp_path / "b", xeon, range(3), 4e-3)
    out = tmp_path / "merged"
    kept = merge([a, b], out)
    assert kept == {env.machine_id(epyc): 6, env.machine_id(xeon): 6}
    assert bench_main(["report", "--out", str(out)]) == 0
    for machine in kept:
        assert "## circles" in (out / MACHINES / machine / "README.md").read_text()
    overview = (out / "README.md").read_text()
    assert "## Machines" in overview and "EPYC" in overview and "Xeon" in overview
    assert f"{env.machine_id(xeon)} step ms" in overview
    assert read_json(out / MACHINES / env.machine_id(xeon) / "run.json")["runs"][-1]["environment"] == xeon


def test_merge_refuses_a_directory_that_holds_results(tmp_path: Path) -> None:
    a = _results(tmp_path / "a", _environment("EPYC", "node1"), range(2), 1e-3)
    with pytest.raises(ValueError, match="already holds results"):
        merge([a], a)
