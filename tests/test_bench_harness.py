"""The benchmark harness, end to end on a fake implementation (no real framework is benchmarked).

This module doubles as the harness's plugin: with ``BENCH_PLUGINS=tests.test_bench_harness``
the runner and every worker import it, and it registers a fake implementation (the NumPy
reference under another name, with a second mode), one that crashes, one that interrupts
the runner once, two tiny workloads and the ``selftest`` profile that runs them.
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

from bench import cells, rows, timing, workloads
from bench.compare import compare, format_changes, judge
from bench.workloads import Data, Workload
from impls.numpy_mlp import NumpyMLP

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = __name__ if __name__ != "__main__" else "tests.test_bench_harness"
MARKER_ENV = "BENCH_FAKE_MARKER"


class FakeMLP(NumpyMLP):
    """The reference under another name, with a second mode that behaves the same."""

    name = "fake"
    modes = ("default", "fast")


class CrashingMLP(NumpyMLP):
    """Fails while being built: its cell must become an error row."""

    name = "fake_crash"

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError("boom")


class InterruptingMLP(NumpyMLP):
    """Sends Ctrl-C to the runner the first time (no marker file yet); trains normally afterwards."""

    name = "fake_interrupt"

    def __init__(self, *args, **kwargs) -> None:
        marker = Path(os.environ[MARKER_ENV])
        if not marker.exists():
            marker.write_text("interrupted once")
            os.kill(os.getppid(), signal.SIGINT)
            time.sleep(30)  # the runner kills this worker when it handles the interrupt
        super().__init__(*args, **kwargs)


def fake_data(params: dict) -> Data:
    """64 samples, 4 features, a linearly separable binary target."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(float)
    return Data(X[:48], y[:48], X[48:], y[48:])


def register() -> None:
    """Register the fake rows, workloads and the ``selftest`` profile."""
    rows.register(rows.Row("fake", f"{PLUGIN}:FakeMLP"))
    rows.register(rows.Row("fake_interrupt", f"{PLUGIN}:InterruptingMLP"))
    rows.register(rows.Row("fake_crash", f"{PLUGIN}:CrashingMLP"))
    workloads.register(Workload("fake", "a tiny binary problem", (4, 3, 1), "binary_crossentropy", fake_data,
                                {"epochs": 4, "batch_size": 16, "learning_rate": 0.1},
                                {"hidden_activation": "relu"}, loss_curves=True))
    workloads.register(workloads.synthetic_workload("fake_speed", "tiny synthetic, speed only", (8, 16, 4), 16))
    cells.register_profile(cells.Profile("selftest", "fake implementation on fake workloads", seeds=(0, 1),
                                         workloads=("fake", "fake_speed"), speed_warmup=1, speed_blocks=3,
                                         rows=("fake", "fake_interrupt", "fake_crash"), timeout_s=60))


register()


# ---- units ---------------------------------------------------------------------------


def test_summarize_median_iqr_and_tukey_outliers() -> None:
    stats = timing.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["median"] == 3.0
    assert (stats["q1"], stats["q3"], stats["iqr"]) == (2.0, 4.0, 2.0)
    assert stats["outliers"] == 1  # 100 > 4 + 1.5 * 2
    assert stats["n"] == 5 and stats["min"] == 1.0 and stats["max"] == 100.0
    with pytest.raises(ValueError):
        timing.summarize([])


def test_flop_count_of_one_step() -> None:
    # forward 2*B*(in*out) per layer; backward: dW for both layers, dX only for the second
    B = 3
    fwd = 2 * B * (4 * 5 + 5 * 2)
    assert workloads.dense_flops((4, 5, 2), B) == fwd + fwd + 2 * B * 5 * 2
    assert workloads.step_matmuls((4, 5, 2), B) == [(3, 4, 5), (4, 3, 5), (3, 5, 2), (5, 3, 2), (3, 2, 5)]


def test_quick_profile_matrix_has_unique_ids_and_fast_modes_only_where_asked() -> None:
    matrix, _ = cells.matrix(cells.PROFILES["quick"], threads=2)
    ids = [c.id for c in matrix]
    assert len(ids) == len(set(ids))
    fast = {c.workload for c in matrix if c.mode != "default"}
    assert fast == {"throughput"}
    assert {c.workload for c in matrix} >= {"circles", "digits", "breast_cancer", "diabetes", "throughput"}
    assert all(c.threads == 2 for c in matrix)
    cell = matrix[0]
    assert cells.Cell.from_dict(cell.to_dict()) == cell


def test_rows_know_their_backend_and_modes_without_importing() -> None:
    assert rows.ROWS["keras[jax]"].env == {"KERAS_BACKEND": "jax"}
    assert rows.ROWS["fake"].available_modes() == ("default", "fast")


def _fake_record(cell_id: str, median: float, spread: float) -> dict:
    return {"id": cell_id, "status": "ok",
            "cell": {"workload": "fake", "params": {}, "dtype": "float32", "row": "fake", "mode": cell_id},
            "step_time_s": {"median": median, "q1": median - spread, "q3": median + spread}}


def test_compare_flags_a_2x_slowdown_and_not_5_percent(tmp_path: Path) -> None:
    old, new = tmp_path / "old" / "raw", tmp_path / "new" / "raw"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    for cell_id, factor in (("twice", 2.0), ("same", 1.05), ("faster", 0.4)):
        (old / f"{cell_id}.json").write_text(json.dumps(_fake_record(cell_id, 0.010, 0.0005)))
        (new / f"{cell_id}.json").write_text(json.dumps(_fake_record(cell_id, 0.010 * factor, 0.0005)))
    changes, only_old, only_new = compare(tmp_path / "old", tmp_path / "new")
    verdicts = {c.id: c.verdict for c in changes}
    assert verdicts == {"twice": "slower", "same": "~", "faster": "faster"}
    assert not only_old and not only_new
    assert "**SLOWER**" in format_changes(changes, only_old, only_new)
    # noisy runs: a 30% change inside overlapping IQRs is not flagged
    assert judge({"median": 1.0, "q1": 0.7, "q3": 1.5}, {"median": 1.3, "q1": 1.0, "q3": 1.6}) == "~"


# ---- the whole pipeline ---------------------------------------------------------------


def _bench(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENCH_PLUGINS": PLUGIN, MARKER_ENV: str(out / "interrupt.marker"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "bench", *args, "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "raw").glob("*.json")}


def test_pipeline_timing_records_resume_errors_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = ["run", "--profile", "selftest", "--threads", "1"]

    # 1. interrupted at the third cell: the two finished cells are on disk, nothing else
    first = _bench(out, *run)
    assert first.returncode == 130, first.stderr
    assert "interrupted" in first.stderr
    done = _records(out)
    assert sorted(done) == ["fake__fake__default__float32", "fake__fake__fast__float32"]

    # 2. resume: finished cells are skipped, the rest runs, the crashing cells become error rows
    second = _bench(out, *run)
    assert second.returncode == 0, second.stderr
    records = _records(out)
    assert len(records) == 8
    for cell_id, record in done.items():
        assert records[cell_id]["started_utc"] == record["started_utc"]
        assert records[cell_id]["pid"] == record["pid"]
    errors = {k: r for k, r in records.items() if r["status"] == "error"}
    assert sorted(errors) == ["fake__fake_crash__default__float32", "fake_speed__fake_crash__default__float32"]
    assert all("RuntimeError: boom" in r["error"] for r in errors.values())
    assert "2 already done" in second.stderr
    runs = json.loads((out / "run.json").read_text())["runs"]
    assert [r["interrupted"] for r in runs] == [True, False] and runs[0]["threads"] == 1

    # timing statistics and what the record holds
    rec = records["fake__fake__default__float32"]
    steps = rec["step_time_s"]
    assert steps["n"] == 2 * (4 - 1)  # 2 seeds x (4 epochs - the warm-up epoch)
    assert len(rec["step_blocks_s"]) == steps["n"]
    assert steps["q1"] <= steps["median"] <= steps["q3"] and steps["min"] > 0
    assert rec["steps_per_epoch"] == 3 and rec["samples_per_s"] > 0
    assert rec["first_step_s"] > 0 and rec["import_s"] >= 0 and rec["peak_rss_mib"] > 10
    assert rec["metrics"]["test_accuracy"]["n"] == 2 and rec["metrics"]["epochs_run"]["mean"] == 4
    assert rec["thread_env"]["OMP_NUM_THREADS"] == "1" and len(rec["cpu_affinity"]) == 1
    # every cell starts with an empty torch.compile cache, removed afterwards
    caches = {r["torchinductor_cache_dir"] for r in records.values()}
    assert len(caches) == len(records) and not any(Path(c).exists() for c in caches)
    assert rec["environment"]["versions"]["numpy"] == np.__version__
    speed = records["fake_speed__fake__default__float32"]
    assert speed["step_time_s"]["n"] == 3 and speed["gflops"] > 0
    assert speed["flops_per_step"] == workloads.dense_flops((8, 16, 4), 16)
    assert speed["matmul_ceiling"]["numpy"]["gflops"] > 0 and speed["pct_of_ceiling"] > 0

    # 3. --force reruns a finished cell; error cells are retried without it
    forced_id = "fake_speed__fake__default__float32"
    third = _bench(out, *run, "--force", "--only", f"^{forced_id}$")
    assert third.returncode == 0, third.stderr
    assert _records(out)[forced_id]["pid"] != records[forced_id]["pid"]
    fourth = _bench(out, *run, "--only", "fake_crash", "--no-report")
    assert "0 already done" in fourth.stderr and "2 errors" in fourth.stderr

    # 4. the report: README tables, CSV and JSON with the raw numbers, plots
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Benchmark results")
    assert "Generated by `nox -s bench`" in readme and "do not edit" in readme
    assert "| fake | fast |" in readme and "**error**: RuntimeError: boom" in readme
    assert "GFLOP/s" in readme and "% of ceiling" in readme
    for name in ("results.csv", "timings.csv", "seeds.csv", "results.json",
                 "plots/step_time_fake.png", "plots/step_time_fake_speed.png", "plots/loss_curves_fake.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "plots/step_time_fake.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("# Generated by") and len(csv_lines) == 2 + 8
    timings = (out / "timings.csv").read_text().splitlines()
    assert len(timings) == 2 + sum(len(r.get("step_blocks_s", [])) for r in _records(out).values())
    full = json.loads((out / "results.json").read_text())
    assert "Generated by" in full["generated_by"] and len(full["records"]) == 8

    # 5. compare of a result set with itself flags nothing
    same = subprocess.run([sys.executable, "-m", "bench", "compare", str(out), str(out)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "BENCH_PLUGINS": PLUGIN}, timeout=60)
    assert same.returncode == 0 and "0 slower" in same.stdout


def test_records_of_another_commit_or_machine_are_measured_again(tmp_path):
    """Resume reuses a finished record only if this code made it here: committed results are rerun."""
    from bench import runner

    cell = cells.Cell("numpy", "default", "circles")
    environment = {"git_commit": "abc", "versions": {"numpy": "2.4.6"}, "cpu_model": "cpu", "cpu_count": 2}
    record = {"status": "ok", "cell": cell.to_dict(), "environment": environment}
    runner.record_path(tmp_path, cell).parent.mkdir(parents=True)
    runner.record_path(tmp_path, cell).write_text(json.dumps(record))
    assert runner.is_done(tmp_path, cell, environment)
    for key, other in (("git_commit", "def"), ("versions", {"numpy": "2.4.5"}), ("cpu_count", 16)):
        assert not runner.is_done(tmp_path, cell, {**environment, key: other})
    record["status"] = "error"
    runner.record_path(tmp_path, cell).write_text(json.dumps(record))
    assert not runner.is_done(tmp_path, cell, environment)
