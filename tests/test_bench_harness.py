"""The benchmark harness, end to end on fake implementations (no real framework is benchmarked).

The fakes live in :mod:`tests.bench_plugin`, which registers them in the registry; only the
benchmark's own processes import it (``BENCH_PLUGINS``), so this test session's registry stays as
it is.  In-process tests that need an extra entry add it with ``monkeypatch``.  No test asserts a
speed: the harness's timings are checked for shape and consistency only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import import_or_skip

for _module in ("pandas", "psutil", "scipy", "tabulate", "tqdm", "cpuinfo", "sklearn"):  # pip install '.[bench]'
    import_or_skip(_module)

import pandas as pd  # noqa: E402
import psutil  # noqa: E402

from bench import cells, disturbance, stats, summary, workloads  # noqa: E402
from bench.__main__ import main as bench_main  # noqa: E402
from bench.compare import MIN_DRIFT_CELLS, aa_check, compare, markdown, relative_times, write_aa  # noqa: E402
from bench.layout import ResultsDir  # noqa: E402
from bench.rows import NATIVE, SPEC, Row, all_rows  # noqa: E402
from bench.runner import Plan  # noqa: E402
from impls import registry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "tests.bench_plugin"


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "BENCH_PLUGINS": PLUGIN, "BENCH_FAKE_MARKERS": str(tmp_path / "markers"),
            "OMP_NUM_THREADS": "1", "TMPDIR": str(_tmp(tmp_path)),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def _tmp(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir(exist_ok=True)
    return folder


def _bench(tmp_path: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def _records(out: Path) -> dict[tuple[int, str], dict]:
    return {(int(p.parent.name[1:]), p.stem): json.loads(p.read_text()) for p in (out / "raw").glob("r*/*.json")}


# ---- rows and cells come from the registry ----------------------------------------------------


def test_every_registered_entry_gets_a_spec_and_a_native_row_per_backend(monkeypatch) -> None:
    monkeypatch.setitem(registry.IMPLEMENTATIONS, "fakemulti", registry.Entry(
        "impls.numpy_mlp", "NumpyMLP", modes=("default", "fast"), requires=("numpy",), backends=("json", "csv"),
        backend_env="FAKE_BACKEND"))
    rows = {r.name: r for r in all_rows()}
    for name in ("fakemulti[json]", "fakemulti[json]·native", "fakemulti[csv]", "fakemulti[csv]·native", "sklearn"):
        assert name in rows, sorted(rows)
    assert rows["fakemulti[json]·native"].env == {"FAKE_BACKEND": "json"}
    assert rows["fakemulti[json]·native"].group == "fakemulti[json]" == rows["fakemulti[json]"].group
    assert rows["sklearn"].variant == "baseline" and "sklearn·native" not in rows
    for name in registry.IMPLEMENTATIONS:  # every implementation has both variants
        assert {r.variant for r in rows.values() if r.implementation == name} == {SPEC, NATIVE}

    profile = cells.Profile("t", "", rounds=(0,), workloads=("digits", "throughput"), fast_modes_on=("throughput",),
                            implementations=("fakemulti",))
    matrix, unavailable = cells.matrix(profile)
    ids = [c.id for c in matrix]
    assert len(ids) == len(set(ids)) == 2 * 2 * (1 + 2)  # 2 backends x (spec, native) x (digits default + 2 modes)
    assert "throughput__fakemulti-json-native__fast__float32" in ids and not unavailable
    assert all(cells.Cell.from_dict(c.to_dict()) == c for c in matrix)
    ceilings = cells.ceilings(profile, matrix)
    assert [(c.library, c.group) for c in ceilings] == [("numpy", "fakemulti[json]")]


def test_a_row_whose_module_is_missing_is_listed_as_not_run(monkeypatch) -> None:
    monkeypatch.setitem(registry.IMPLEMENTATIONS, "ghost", registry.Entry(
        "impls.ghost_mlp", "GhostMLP", extra="ghost", requires=("ghost_framework_not_installed",)))
    _, unavailable = cells.matrix(cells.Profile("t", "", rounds=(0,), workloads=("digits",),
                                                implementations=("ghost",)))
    assert set(unavailable) == {"ghost", "ghost·native"}
    assert "pip install '.[ghost]'" in unavailable["ghost"]


def test_the_quick_profile_has_every_workload_and_fast_modes_where_it_says() -> None:
    profile = cells.PROFILES["quick"]
    matrix, _ = cells.matrix(profile)
    assert {c.workload for c in matrix} == set(cells.WORKLOAD_NAMES)
    assert {c.workload for c in matrix if c.mode != "default"} <= set(profile.fast_modes_on)
    assert len(profile.rounds) >= 4 and stats.smallest_p(len(profile.rounds), len(profile.rounds)) < stats.ALPHA


def test_rounds_are_shuffled_with_their_seed() -> None:
    profile = cells.Profile("t", "", rounds=(0, 1), workloads=("digits", "circles"))
    matrix, _ = cells.matrix(profile)
    plan = Plan(profile, matrix, [], threads=1)
    first, again, second = plan.order(0), plan.order(0), plan.order(1)
    assert [t.id for t in first] == [t.id for t in again]
    assert [t.id for t in first] != [t.id for t in second] and sorted(t.id for t in first) == sorted(
        t.id for t in second)
    for order in (first, second):  # spec and native twins run back to back, in either order
        ids = [t.id for t in order]
        for i, task in enumerate(order):
            if task.row.variant == SPEC:
                twin = task.id.replace(f"__{task.row.slug}__", f"__{task.row.slug}-native__")
                assert twin in ids[max(i - 1, 0):i + 2]
    native_first = set()
    for order in (first, second):
        position = {t.id: i for i, t in enumerate(order)}
        native_first |= {position[t.id] < position[t.id.replace("-native", "")]
                         for t in order if t.row.variant == NATIVE}
    assert native_first == {True, False}


def test_the_resume_key_changes_with_the_sources_and_the_settings(tmp_path, monkeypatch) -> None:
    profile = cells.Profile("t", "", rounds=(0,), workloads=("digits",))
    cell = cells.Cell(Row("numpy"), "default", "digits")
    plan = Plan(profile, [cell], [], threads=1)
    environment = {"versions": {"numpy": "2.4.6"}, "cpu_model": "cpu", "cpu_count": 2, "sources_hash": "a",
                   "python": "3.11", "date_utc": "today"}
    key = plan.key(cell, 0, environment)
    assert key == plan.key(cell, 0, {**environment, "date_utc": "tomorrow"})
    for change in ({"sources_hash": "b"}, {"versions": {"numpy": "2.4.5"}}, {"cpu_count": 16}):
        assert plan.key(cell, 0, {**environment, **change}) != key
    assert plan.key(cell, 1, environment) != key
    assert Plan(profile, [cell], [], threads=2).key(cell, 0, environment) != key
    # the hash covers plugin modules too: an edit makes every record stale
    module = tmp_path / "bench_hash_probe.py"
    module.write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from bench import env

    before = env.sources_hash(["bench_hash_probe"])
    module.write_text("x = 2\n")
    assert env.sources_hash(["bench_hash_probe"]) != before


# ---- statistics, disturbance, data cache ----------------------------------------------------------


def test_bootstrap_interval_brackets_the_median_and_collapses_for_equal_rounds() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(0, 0.1, size=9)
    low, high = stats.bootstrap_ci(values)
    assert low <= np.median(values) <= high and low < high
    assert stats.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert stats.summarize([1.0])["n"] == 1
    with pytest.raises(ValueError):
        stats.bootstrap_ci([])


def test_rank_test_needs_enough_rounds_and_an_effect() -> None:
    assert stats.smallest_p(3, 3) == pytest.approx(0.1) and stats.smallest_p(5, 5) < 0.01
    rng = np.random.default_rng(0)
    old = rng.lognormal(0, 0.05, size=5)
    assert stats.judge(old, 2 * rng.lognormal(0, 0.05, size=5))[0] == "slower"
    assert stats.judge(old, 0.5 * rng.lognormal(0, 0.05, size=5))[0] == "faster"
    assert stats.judge(old, 1.05 * old)[0] == "within noise"  # consistent, but below the minimum effect
    assert stats.judge(old[:3], 2 * old[:3])[0] == "within noise"  # 3 vs 3: p >= 0.1
    # noisy rounds that happen to overlap in one place only: p = 0.016 and +29 %, but hardly more than their spread
    noisy = np.array([1.0, 1.1, 1.2, 1.3, 1.4])
    verdict, p, ratio = stats.judge(noisy, noisy + 0.35)
    assert verdict == "within noise" and p < 0.02 and ratio > 1.25
    assert stats.judge(noisy, 2 * noisy)[0] == "slower"


def test_a_busy_process_disturbs_a_block_and_short_blocks_need_more_evidence() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.1)
        with disturbance.Measure() as measure:
            time.sleep(0.6)
    finally:
        busy.kill()
        busy.wait()
    window = measure.window
    assert window.wall_s >= 0.6 and window.other_cpus > disturbance.THRESHOLD_CPUS and window.disturbed
    # 20 ms of other CPU time in a 10 ms block is within the tick counts' uncertainty
    short = disturbance.Window(wall_s=0.01, other_cpu_s=0.02)
    assert short.threshold_cpus > 2 and not short.disturbed
    assert disturbance.Window(wall_s=2.0, other_cpu_s=0.2).threshold_cpus == disturbance.THRESHOLD_CPUS
    assert not disturbance.Window(1.0, None).disturbed  # not measurable (no /proc/stat): not disturbed


def test_a_corrupted_data_cache_is_rebuilt(tmp_path) -> None:
    workload = workloads.WORKLOADS["circles"]
    fresh = workload.load(tmp_path)
    path = tmp_path / workload.cache_name
    assert path.exists()
    path.write_bytes(b"not a zip file")
    again = workload.load(tmp_path)
    np.testing.assert_array_equal(again.X_train, fresh.X_train)
    with np.load(path) as z:  # rewritten whole
        assert "X_train" in z.files


# ---- per-round ratios and the report's numbers ---------------------------------------------------


def _record(cell: cells.Cell, round_: int, step_s: float, *, disturbed: bool = False, status: str = "ok") -> dict:
    record = {"kind": "cell", "task": cell.to_dict(), "round": round_, "seed": round_, "key": "k", "status": status}
    if status == "ok":
        record.update(step_s=step_s, step_times_s=[step_s, step_s], retimed=int(disturbed), disturbed=disturbed,
                      attempts=[{"disturbed": disturbed, "other_cpus": 0.0}], epochs_run=3, steps_per_epoch=2,
                      samples_per_epoch=32, metrics={"test_accuracy": 0.9}, memory={"peak_rss_mib": 100.0})
    else:
        record["error"] = "RuntimeError: boom"
    return record


def _write_run(out: Path, step_times: dict[str, list[float]], workload: str = "digits",
               disturbed: tuple[str, ...] = ()) -> ResultsDir:
    """A results directory with one record per (cell, round): ``step_times`` maps a row name to per-round times;
    the rows named in ``disturbed`` were disturbed in every round."""
    results = ResultsDir(out)
    by_name = {r.name: r for r in all_rows()}
    for name, times in step_times.items():
        cell = cells.Cell(by_name[name], "default", workload)
        for round_, t in enumerate(times):
            results.write_record(_record(cell, round_, t, disturbed=name in disturbed))
    return results


def test_ratios_are_formed_per_round_so_drift_cancels(tmp_path) -> None:
    drift = np.array([1.0, 1.6, 0.7, 1.3, 1.1])  # the machine's speed changes from round to round
    results = _write_run(tmp_path, {"numpy": list(2e-3 * drift), "numpy·native": list(1e-3 * drift),
                                    "sklearn": list(4e-3 * drift)})
    cell = cells.Cell(Row("numpy"), "default", "digits")
    results.write_record(_record(cell, 5, 9.0, disturbed=True))  # left out: the cell has 5 calm rounds
    t = summary.per_round(summary.samples_frame(results.records()[0]), summary.ceiling_frame([]))
    assert len(t) == 15
    spec = t[t["row"] == "numpy"]
    assert np.allclose(spec["x_fastest"], 2.0) and np.allclose(spec["overhead"], 2.0)
    assert t[t["row"] == "sklearn"]["overhead"].isna().all()  # a baseline has no native row
    cells_frame = summary.summarize_cells(summary.samples_frame(results.records()[0]), t)
    line = cells_frame.set_index("row").loc["numpy"]
    assert line["x_fastest_ci_low"] == pytest.approx(2.0) and line["x_fastest_ci_high"] == pytest.approx(2.0)
    assert line["overhead_median"] == pytest.approx(2.0)
    # the step time itself carries the drift in its interval
    assert line["step_s_ci_low"] < line["step_s_median"] < line["step_s_ci_high"]
    assert (line["rounds"], line["used"], line["disturbed"]) == (6, 5, 1)


def test_compare_flags_a_2x_slowdown_and_nothing_in_an_aa_pair(tmp_path) -> None:
    rng = np.random.default_rng(3)
    names = [r.name for r in all_rows()]
    assert len(names) >= MIN_DRIFT_CELLS  # enough cells in the table for the machine's drift to be estimated
    base = {n: (1 + i) * 5e-4 for i, n in enumerate(names)}

    def run(out: str, slow: str | None = None, drift: float = 1.0, disturbed: tuple[str, ...] = ()) -> ResultsDir:
        times = {n: list(base[n] * drift * (2.0 if n == slow else 1.0) * rng.lognormal(0, 0.05, size=5))
                 for n in names}
        return _write_run(tmp_path / out, times, disturbed=disturbed)

    a, b = run("a"), run("b", drift=1.25)  # the same code on a machine that became 25 % slower overall
    same = compare(a, b)
    assert same.flagged == 0, same.changes
    assert (same.changes["absolute change %"] > 15).all()  # shown, but not called a regression
    slower = compare(a, run("c", slow="numpy·native"))
    verdicts = dict(zip(slower.changes["cell"], slower.changes["verdict"]))
    assert verdicts.pop("digits__numpy-native__default__float32") == "slower"
    assert set(verdicts.values()) == {"within noise"} and len(verdicts) == len(names) - 1
    assert "**SLOWER**" in markdown(slower)
    # the same slowdown measured while other processes loaded the machine is not called a regression
    loaded = compare(a, run("loaded", slow="numpy·native", disturbed=("numpy·native",)))
    assert dict(zip(loaded.changes["cell"], loaded.changes["verdict"]))[
        "digits__numpy-native__default__float32"] == "disturbed: cannot tell" and loaded.flagged == 0
    few = compare(_write_run(tmp_path / "d", {n: [base[n]] * 3 for n in names}),
                  _write_run(tmp_path / "e", {n: [2 * base[n]] * 3 for n in names}))
    assert set(few.changes["verdict"]) == {"too few rounds"}

    _, verdict = aa_check(a, b, same)
    assert verdict["passed"] and verdict["cells"] == len(names)
    assert write_aa(ResultsDir(tmp_path), a, b)["passed"]
    assert (tmp_path / "aa" / "compare.md").read_text().startswith("# A/A check")
    assert json.loads((tmp_path / "aa" / "compare.json").read_text())["verdict"]["flagged"] == 0


def test_relative_times_take_out_round_drift_and_run_drift_but_not_a_minority_change() -> None:
    def frame(times: dict[str, list[float]]) -> pd.DataFrame:
        return pd.DataFrame([{"id": c, "round": r, "step_s": t, "workload": "digits", "point": "", "dtype": "float32"}
                             for c, ts in times.items() for r, t in enumerate(ts)])

    names = "abcdefgh"  # MIN_DRIFT_CELLS cells: enough for the drift to be estimated
    assert len(names) == MIN_DRIFT_CELLS
    scale = {c: 2.0 ** i for i, c in enumerate(names)}
    old = frame({c: [s, 2 * s, s] for c, s in scale.items()})  # round 1: machine 2x slower
    new = frame({c: [1.2 * s * (2 if c == "h" else 1)] * 3 for c, s in scale.items()})  # 1.2x machine; h slowed 2x
    rel_old, rel_new, drift = relative_times(old, new, set(names))
    assert drift["digits"].used == drift["digits"].estimate == pytest.approx(1.2) and drift["digits"].cells == 8
    by_cell = rel_old.set_index(["id", "round"])["relative"].unstack()
    assert np.allclose(by_cell.to_numpy(), np.array([[scale[c]] * 3 for c in by_cell.index]))
    medians = rel_new.groupby("id")["relative"].median()
    assert np.allclose(medians.to_numpy(), [scale[c] * (2 if c == "h" else 1) for c in medians.index])
    # fewer cells: no estimate, nothing divided out, the times themselves are compared
    rel_old, rel_new, drift = relative_times(old, new, set(names[:3]))
    assert drift["digits"].estimate is None and drift["digits"].used == 1.0
    assert np.allclose(rel_new["relative"], rel_new["step_s"]) and np.allclose(rel_old["relative"], rel_old["step_s"])


# ---- robustness of the command line and of the records -------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--only", "("], "not a regular expression"),
    (["run", "--threads", "abc"], "expected a number of threads or 'all'"),
    (["run", "--threads", "0"], "threads must be between 1 and"),
    (["run", "--threads", "99"], "threads must be between 1 and"),
    (["run", "--profile", "nope"], "invalid choice"),
    (["compare", "/no/such/dir", "/no/such/dir"], "no such results directory"),
    (["report", "--out", "/no/such/dir"], "no such results directory"),
])
def test_bad_arguments_are_refused_with_a_clear_message(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench_main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("content", "reason"), [
    ("[1, 2, 3]", "not a JSON object"),
    ('{"cell": null}', "no task description"),
    ("{not json", "unreadable or not JSON"),
])
def test_malformed_records_are_reported_not_used(tmp_path, content, reason) -> None:
    results = _write_run(tmp_path, {"numpy": [1e-3, 1e-3]})
    cell = cells.Cell(Row("sklearn", "baseline"), "default", "digits")
    path = results.record_path(0, cell.id)
    path.write_text(content)
    incomplete = _record(cell, 1, 1e-3)
    del incomplete["step_times_s"]  # an "ok" record without its step times
    results.write_record(incomplete)
    (results.raw / "circles__numpy__default__float32.json").write_text("{}")  # the layout before rounds
    good, bad = results.records()
    assert len(good) == 2
    reasons = (reason, "ok record without its step times", "outside any round folder")
    assert len(bad) == 3 and {next(r for r in reasons if m.reason.startswith(r)) for m in bad} == set(reasons)
    assert results.load_record(0, cell.id)[1].reason.startswith(reason)


# ---- the whole pipeline ------------------------------------------------------------------------


def test_pipeline_rounds_resume_errors_disturbance_report(tmp_path) -> None:
    out = tmp_path / "results"
    run = ["run", "--profile", "selftest", "--out", str(out)]

    # 1. interrupted (a fake sends Ctrl-C in round 1): finished tasks are on disk, workers are gone
    first = _bench(tmp_path, *run)
    assert first.returncode == 130, first.stderr
    assert "interrupted" in first.stderr
    done = _records(out)
    assert 21 <= len(done) < 3 * 21
    assert json.loads((out / "run.json").read_text())["runs"][-1]["interrupted"] is True
    assert not list(_tmp(tmp_path).iterdir()), "the temporary directory was not removed"
    assert not [r for r in done.values() if psutil.pid_exists(r["worker"]["pid"])]

    # 2. malformed records in the way of the resume are measured again; finished ones are kept
    (out / "raw" / "r2").mkdir(parents=True, exist_ok=True)
    (out / "raw" / "r2" / "fake__fake__default__float32.json").write_text('{"task": null}')
    second = _bench(tmp_path, *run)
    assert second.returncode == 1, second.stderr  # the crashing fake's cells errored
    assert "malformed record, measured again" in second.stderr
    records = _records(out)
    tasks = {k[1] for k in records}
    assert len(records) == 3 * len(tasks) and len(tasks) == 21  # 3 rounds x (20 cells + the numpy ceiling)
    for key, record in done.items():  # finished tasks are kept, errors are retried
        assert (records[key]["started_utc"] == record["started_utc"]) == (record["status"] == "ok")

    # rows from the registry: spec and native rows of every fake, in both modes of the fake
    assert {"fake__fake__fast__float32", "fake__fake-native__fast__float32", "fake__sklearn__default__float32"
            } - tasks == {"fake__sklearn__default__float32"}  # the selftest profile names its implementations
    errors = {k: r for k, r in records.items() if r["status"] == "error"}
    assert {k[1] for k in errors} == {"fake__fake_crash__default__float32", "fake_speed__fake_crash__default__float32"}
    assert all("RuntimeError: boom" in r["error"] for r in errors.values())
    assert records[(0, "fake__fake_crash-native__default__float32")]["status"] == "ok"

    # one worker per implementation, shared by its spec and native rows, for the whole run
    pids = {r["worker"]["pid"] for k, r in records.items()
            if k not in done and r["task"].get("implementation") == "fake"}
    assert len(pids) == 1
    # rounds: every task ran once per round, with the round's seed, and in a shuffled order
    assert {r["seed"] for r in records.values()} == {0, 1, 2}
    order = {round_: [k[1] for k, r in sorted(records.items(), key=lambda kv: kv[1]["started_utc"])
                      if k[0] == round_ and k not in done] for round_ in (1, 2)}
    assert order[1] != order[2]

    # what a cell record holds
    rec = records[(1, "fake__fake__default__float32")]
    assert len(rec["step_times_s"]) == 4 - 1 and rec["step_s"] == pytest.approx(np.median(rec["step_times_s"]))
    assert rec["steps_per_epoch"] == 3 and rec["epochs_run"] == 4 and 0 <= rec["metrics"]["test_accuracy"] <= 1
    assert rec["memory"]["peak_since"] == "task start" and rec["memory"]["peak_rss_mib"] > 10
    assert rec["worker"]["thread_env"]["OMP_NUM_THREADS"] == "1" and len(rec["worker"]["cpu_affinity"]) == 1
    assert "first_step_s" in records[(min(r for r, i in records if i == rec["task"]["id"] and (r, i) not in done),
                                      rec["task"]["id"])] or any(i == rec["task"]["id"] for _, i in done)
    speed = records[(0, "fake_speed__fake__default__float32")]
    assert len(speed["step_times_s"]) == 3  # 1 warm-up + 3 timed epochs
    ceiling = records[(0, "ceiling__numpy")]
    assert ceiling["gflops"] > 0 and len(ceiling["block_times_s"]) == 3

    # disturbance: the loaded fake's first run shared the machine with a busy process and was timed again
    loaded = [r for r in records.values() if r["task"].get("implementation") == "fake_loaded" and r.get("retimed")]
    assert len(loaded) == 1 and loaded[0]["attempts"][0]["disturbed"]
    assert loaded[0]["attempts"][0]["other_cpus"] > disturbance.THRESHOLD_CPUS

    # 3. resume: nothing left to do; --force reruns
    third = _bench(tmp_path, *run, "--only", "^fake__fake__default")
    assert f"{3} already done" in third.stderr and third.returncode == 0
    fourth = _bench(tmp_path, *run, "--only", "^fake__fake__default", "--force", "--no-report")
    assert "3 ok" in fourth.stderr

    # 4. the report: tables with native rows and the adapter overhead, errors, disturbance, ceiling
    report = _bench(tmp_path, "report", "--out", str(out))
    assert report.returncode == 0, report.stderr
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Benchmark results") and "do not edit" in readme
    assert "| fake·native" in readme and "adapter overhead" in readme and "Matmul ceiling" in readme
    assert "**error**: RuntimeError: boom" in readme and "retimed" in readme
    for name in ("results.csv", "samples.csv", "epochs.csv", "ceiling.csv", "results.json",
                 "plots/step_time_fake.png", "plots/loss_curves_fake.png"):
        assert (out / name).stat().st_size > 0, name
    frame = pd.read_csv(out / "results.csv", comment="#")
    spec = frame[(frame["row"] == "fake") & (frame["mode"] == "default") & (frame["workload"] == "fake")].iloc[0]
    assert 0 < spec["overhead_ci_low"] <= spec["overhead_median"] <= spec["overhead_ci_high"]
    assert spec["rounds"] == 3
    samples = pd.read_csv(out / "samples.csv", comment="#")
    assert samples["x_fastest"].min() == pytest.approx(1.0)
    speed_rows = frame[frame["workload"] == "fake_speed"]
    assert (speed_rows["pct_of_ceiling_median"].dropna() > 0).all()

    # 5. compare of a result set with itself flags nothing; the report refuses a malformed record, not the run
    same = _bench(tmp_path, "compare", str(out), str(out))
    assert same.returncode == 0 and "0 slower, 0 faster" in same.stdout, same.stdout
    (out / "raw" / "r0" / "fake__fake__default__float32.json").write_text("[1, 2, 3]")
    again = _bench(tmp_path, "report", "--out", str(out))
    assert again.returncode == 0 and "Malformed records" in (out / "README.md").read_text()


def test_a_hanging_task_times_out_and_workers_die_with_the_runner(tmp_path) -> None:
    out = tmp_path / "results"
    timed_out = _bench(tmp_path, "run", "--profile", "selftest-hang", "--out", str(out), "--only", "^fake__")
    assert timed_out.returncode == 1
    record = _records(out)[(0, "fake__fake_hang__default__float32")]
    assert record["status"] == "error" and "timed out after 3 s" in record["error"]
    assert _records(out)[(0, "fake__fake_hang-native__default__float32")]["status"] == "ok"

    for how in (signal.SIGTERM, signal.SIGKILL):
        runner = subprocess.Popen([sys.executable, "-m", "bench", "run", "--profile", "selftest-hang", "--force",
                                   "--out", str(out), "--only", "^fake__fake_hang__"], cwd=ROOT, env=_env(tmp_path),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        parent = psutil.Process(runner.pid)

        def bench_workers(parent: psutil.Process = parent) -> list[psutil.Process]:
            # only the workers: the runner also starts short-lived helpers (git, cpuinfo) that exit by themselves
            found = []
            for child in parent.children(recursive=True):
                try:
                    if "bench.worker" in child.cmdline():
                        found.append(child)
                except psutil.NoSuchProcess:
                    pass
            return found

        deadline = time.monotonic() + 60
        while not bench_workers() and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = bench_workers()
        assert workers, "no worker started"
        time.sleep(0.5)
        runner.send_signal(how)
        runner.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers outlived the runner ({how.name})"
        if how == signal.SIGTERM:  # a runner that can clean up removes its temporary directory
            assert not list(_tmp(tmp_path).iterdir())


def test_the_report_lists_spec_rows_above_their_overhead_target_and_the_aa_verdict(tmp_path) -> None:
    from bench import report

    cells = pd.DataFrame([
        {"workload": "digits", "row": "torch", "mode": "default", "overhead_median": 1.30,
         "overhead_ci_low": 1.2, "overhead_ci_high": 1.4},
        {"workload": "digits", "row": "jax", "mode": "scan", "overhead_median": 1.05,
         "overhead_ci_low": 1.0, "overhead_ci_high": 1.1},
        {"workload": "digits", "row": "torch", "mode": "compile", "overhead_median": 1.15,
         "overhead_ci_low": 1.1, "overhead_ci_high": 1.2},
        {"workload": "digits", "row": "torch·native", "mode": "default", "overhead_median": np.nan,
         "overhead_ci_low": np.nan, "overhead_ci_high": np.nan}])
    text = "\n".join(report._overhead_lines(cells))
    above = text.split("Above the target:")[1].split("<details>")[0]
    assert "1 of 3 spec cells are within" in text
    assert "1.3 [1.2–1.4]" in above and "1.15 [1.1–1.2]" in above and "jax" not in above
    results = ResultsDir(tmp_path)
    assert report._aa_lines(results) == []  # no A/A run yet
    results.aa.mkdir(parents=True)
    (results.aa / "compare.json").write_text(json.dumps({"verdict": {
        "cells": 80, "within_share": 0.95, "within_target": 0.9, "agreement": 0.1, "flagged": 0, "passed": True}}))
    assert "**passed**" in "\n".join(report._aa_lines(results)) and "95% of 80 cells" in "\n".join(
        report._aa_lines(results))
