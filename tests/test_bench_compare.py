"""``python -m bench compare``: a real slowdown is caught however many cells slowed, the machine's drift is divided
out only where many cells estimate it and never by more than the cap, and runs from different machines are
flagged.  The results folders are synthetic, written with the harness's own record writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import import_or_skip

for _module in ("pandas", "scipy", "tabulate"):  # pip install '.[bench]'
    import_or_skip(_module)

from bench import compare as compare_mod  # noqa: E402
from bench import env  # noqa: E402
from bench.__main__ import main as bench_main  # noqa: E402
from bench.cells import Cell  # noqa: E402
from bench.compare import MAX_DRIFT, MIN_DRIFT_CELLS, compare, markdown  # noqa: E402
from bench.layout import ResultsDir  # noqa: E402
from bench.rows import Row  # noqa: E402

ROUNDS = 5


def _cell(i: int) -> Cell:
    """The ``i``-th cell of one table (digits, float32): one row, modes told apart by name."""
    return Cell(Row("numpy"), f"m{i:02d}", "digits")


def _run(root: Path, cells: int, *, seed: int, machine: float = 1.0, slower: dict[int, float] | None = None,
         cpu: str = "EPYC") -> ResultsDir:
    """A results folder of ``cells`` cells x :data:`ROUNDS` rounds: cell ``i`` takes ``(i + 1)`` ms times the
    machine's factor, times ``slower[i]``, with 5 % lognormal noise per round."""
    rng = np.random.default_rng(seed)
    results = ResultsDir(root)
    environment = {"cpu_model": cpu, "cpu_count": 2, "memory_gib": 8.0}
    for i in range(cells):
        cell = _cell(i)
        for round_ in range(ROUNDS):
            step_s = 1e-3 * (i + 1) * machine * (slower or {}).get(i, 1.0) * float(rng.lognormal(0, 0.05))
            results.write_record({"kind": "cell", "task": cell.to_dict(), "round": round_, "seed": round_,
                                  "key": "k", "status": "ok", "step_s": step_s, "step_times_s": [step_s, step_s],
                                  "disturbed": False, "environment": environment})
    return results


def _verdicts(comparison: compare_mod.Comparison) -> dict[str, str]:
    return dict(zip(comparison.changes["cell"], comparison.changes["verdict"]))


def test_one_cell_three_times_slower_is_flagged_and_fails_the_check(tmp_path, capsys) -> None:
    old, new = _run(tmp_path / "old", 1, seed=0), _run(tmp_path / "new", 1, seed=1, slower={0: 3.0})
    comparison = compare(old, new)
    assert _verdicts(comparison) == {_cell(0).id: "slower"}
    assert comparison.drift["digits"].estimate is None and comparison.drift["digits"].used == 1.0
    assert bench_main(["compare", str(old.root), str(new.root), "--fail-on-slowdown"]) == 1
    out = capsys.readouterr().out
    assert "**SLOWER**" in out and f"not corrected: 1 cells, fewer than {MIN_DRIFT_CELLS}" in out
    assert bench_main(["compare", str(old.root), str(new.root)]) == 0  # flagged, but not asked to fail


def test_three_cells_that_all_slowed_are_all_flagged(tmp_path) -> None:
    old = _run(tmp_path / "old", 3, seed=0)
    new = _run(tmp_path / "new", 3, seed=1, slower={0: 3.0, 1: 3.0, 2: 3.0})
    assert set(_verdicts(compare(old, new)).values()) == {"slower"}


def test_among_thirty_cells_on_a_slower_machine_only_the_slowed_one_is_flagged(tmp_path, capsys) -> None:
    old = _run(tmp_path / "old", 30, seed=0)
    new = _run(tmp_path / "new", 30, seed=1, machine=1.2, slower={7: 3.0})  # the whole machine 20 % slower
    comparison = compare(old, new)
    verdicts = _verdicts(comparison)
    assert verdicts.pop(_cell(7).id) == "slower" and set(verdicts.values()) == {"within noise"}
    drift = comparison.drift["digits"]
    assert drift.cells == 30 and drift.used == drift.estimate == pytest.approx(1.2, rel=0.05) and not drift.capped
    assert "digits ×1.2" in markdown(comparison) and "median over 30 cells" in markdown(comparison)
    assert bench_main(["compare", str(old.root), str(new.root), "--fail-on-slowdown"]) == 1
    assert "1 slower, 0 faster" in capsys.readouterr().out


@pytest.mark.parametrize("machine", [1.0, 1.25])
def test_two_runs_of_the_same_code_flag_nothing(tmp_path, machine) -> None:
    old, new = _run(tmp_path / "old", 12, seed=0), _run(tmp_path / "new", 12, seed=1, machine=machine)
    comparison = compare(old, new)
    assert comparison.flagged == 0, comparison.changes
    assert comparison.drift["digits"].used == pytest.approx(machine, rel=0.05)


def test_drift_beyond_the_cap_is_not_divided_out_and_the_report_says_so(tmp_path) -> None:
    old, new = _run(tmp_path / "old", 12, seed=0), _run(tmp_path / "new", 12, seed=1, machine=2.0)
    comparison = compare(old, new)
    drift = comparison.drift["digits"]
    assert drift.capped and drift.used == pytest.approx(1 + MAX_DRIFT) and drift.estimate == pytest.approx(2.0,
                                                                                                          rel=0.05)
    text = markdown(comparison)
    assert "**The machine drifted**" in text and "absolute times are off" in text and "capped" in text
    assert set(_verdicts(comparison).values()) == {"slower"}  # a 2x change is not explained away by the machine


def test_runs_from_different_machines_are_flagged(tmp_path, capsys) -> None:
    old, new = _run(tmp_path / "old", 3, seed=0), _run(tmp_path / "new", 3, seed=1, cpu="Xeon")
    comparison = compare(old, new)
    assert comparison.other_machine is not None and "only ratios" in comparison.other_machine
    assert "**Different machines**" in markdown(comparison)
    ids = [env.machine_id({"cpu_model": cpu, "cpu_count": 2, "memory_gib": 8.0}) for cpu in ("EPYC", "Xeon")]
    assert comparison.machines == ([ids[0]], [ids[1]])
    assert bench_main(["compare", str(old.root), str(new.root)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "not comparable" in err and len(err.splitlines()) == 1
    assert compare(old, _run(tmp_path / "same", 3, seed=2)).other_machine is None


def test_compare_refuses_a_folder_without_records(tmp_path, capsys) -> None:
    old = _run(tmp_path / "old", 1, seed=0)
    (tmp_path / "empty").mkdir()
    assert bench_main(["compare", str(old.root), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "NEW" in err and "holds no benchmark records" in err and len(err.splitlines()) == 1
