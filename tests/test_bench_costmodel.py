"""The cost model (:mod:`bench.costmodel`) on synthetic step times: it recovers a known overhead and
throughput, its intervals cover them, predictions flag extrapolation, and crossovers are where the lines meet."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import import_or_skip

for _module in ("pandas", "scipy"):  # pip install '.[bench]'
    import_or_skip(_module)

import pandas as pd  # noqa: E402

from bench import costmodel  # noqa: E402

FLOPS = np.array([2e6, 3e7, 4e8, 1.5e9, 5e9])


def _samples(overhead_s: float, gflops: float, rounds: int = 5, noise: float = 0.03, seed: int = 0,
             row: str = "r", mode: str = "default") -> pd.DataFrame:
    """Step times ``overhead + F / throughput`` with multiplicative noise, one per point and round."""
    rng = np.random.default_rng(seed)
    lines = [{"row": row, "mode": mode, "dtype": "float32", "round": r, "flops": f, "batch": 256,
              "step_s": (overhead_s + f / (gflops * 1e9)) * np.exp(rng.normal(0, noise))}
             for r in range(rounds) for f in FLOPS]
    return pd.DataFrame(lines)


def test_fit_recovers_a_known_overhead_and_throughput() -> None:
    fit = costmodel.fit(_samples(overhead_s=200e-6, gflops=40.0))
    assert fit.overhead_s == pytest.approx(200e-6, rel=0.1)
    assert fit.gflops == pytest.approx(40.0, rel=0.05)
    low, high = fit.overhead_interval()
    assert low <= 200e-6 <= high
    g_low, g_high = fit.gflops_interval()
    assert g_low <= 40.0 <= g_high
    assert (fit.points, fit.rounds, fit.batches) == (5, 5, (256,))


def test_fit_is_exact_without_noise_and_ignores_one_wild_round() -> None:
    samples = _samples(overhead_s=50e-6, gflops=100.0, noise=0.0)
    samples.loc[samples["round"] == 0, "step_s"] *= 20  # one round on a busy machine: the medians ignore it
    fit = costmodel.fit(samples)
    assert fit.overhead_s == pytest.approx(50e-6, rel=1e-6)
    assert fit.gflops == pytest.approx(100.0, rel=1e-6)


@pytest.mark.filterwarnings("error")
def test_a_point_missing_from_most_rounds_is_fitted_where_it_was_measured() -> None:
    samples = _samples(1e-4, 10.0, rounds=3, noise=0.0)
    samples = samples[~((samples["round"] > 0) & (samples["flops"] == FLOPS.max()))]  # only round 0 has it
    fit = costmodel.fit(samples)
    assert fit.gflops == pytest.approx(10.0) and len(fit.draws) > 0.9 * costmodel.RESAMPLES


def test_fit_needs_three_points() -> None:
    samples = _samples(1e-4, 10.0)
    with pytest.raises(ValueError, match="a fit needs 3"):
        costmodel.fit(samples[samples["flops"] < 1e8])


def test_predictions_flag_extrapolation_and_unmeasured_batches() -> None:
    fits = {("r", "default"): costmodel.fit(_samples(1e-4, 10.0, noise=0.0))}
    inside = costmodel.predictions(fits, 1e9, batch=256).iloc[0]
    assert inside["step_s"] == pytest.approx(1e-4 + 0.1) and inside["note"] == ""
    assert inside["low_s"] <= inside["step_s"] <= inside["high_s"]
    outside = costmodel.predictions(fits, 1e11, batch=128).iloc[0]
    assert "extrapolated ×20 beyond the sweep" in outside["note"] and "batch 128 not measured" in outside["note"]
    assert outside["beyond"] == pytest.approx(20.0) and inside["beyond"] == 1.0
    assert np.isnan(outside["low_s"]) and np.isnan(outside["high_s"])  # no interval that looks precise out there
    assert costmodel.predictions(fits, 1e5).iloc[0]["beyond"] == pytest.approx(20.0)  # below the sweep, too


def test_crossover_arithmetic() -> None:
    # 10 µs + F / 10 GFLOP/s meets 1 ms + F / 100 GFLOP/s where 990e-6 = F (1e-10 - 1e-11)
    assert costmodel.crossover(10e-6, 1e-10, 1e-3, 1e-11) == pytest.approx(990e-6 / 9e-11)
    assert costmodel.crossover(10e-6, 1e-11, 1e-3, 1e-10) is None  # the cheaper one is also the faster
    assert costmodel.crossover(1e-3, 1e-10, 1e-3, 1e-10) is None


def test_crossovers_and_the_fastest_row_per_size() -> None:
    light = _samples(10e-6, 10.0, noise=0.0, row="light")
    heavy = _samples(1e-3, 100.0, noise=0.0, row="heavy")
    fits = costmodel.fit_all(pd.concat([light, heavy]))
    table = costmodel.crossovers(fits)
    assert len(table) == 1
    line = table.iloc[0]
    assert (line["faster_below"], line["faster_above"]) == ("light default", "heavy default")
    assert line["flops"] == pytest.approx(990e-6 / 9e-11) and line["measured"]
    stretches = costmodel.fastest(fits, 1e6, 1e10)
    assert list(stretches["row"]) == ["light", "heavy"]
    assert stretches["to_flops"].iloc[0] <= line["flops"] <= stretches["from_flops"].iloc[1]


@pytest.mark.parametrize("layers", ["784", "784,abc,10", "784,0,10", "784,-5,10", ""])
def test_predict_rejects_bad_layer_strings(layers: str, capsys: pytest.CaptureFixture, tmp_path) -> None:
    from bench.__main__ import main

    with pytest.raises(SystemExit):
        main(["predict", "--layers", layers, "--batch", "128", "--out", str(tmp_path)])
    assert "comma-separated positive whole numbers" in capsys.readouterr().err


def test_predict_without_a_model_says_how_to_get_one(capsys: pytest.CaptureFixture, tmp_path) -> None:
    from bench.__main__ import main

    assert main(["predict", "--layers", "784,512,10", "--batch", "128", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--profile sweep" in err and len(err.splitlines()) == 1


def test_the_sweep_profile_sweeps_width_for_spec_rows_in_every_mode() -> None:
    from bench import cells, workloads
    from bench.rows import SPEC

    found, _ = cells.matrix(cells.PROFILES["sweep"])
    assert {c.workload for c in found} == {"sweep_width"}
    assert sorted({c.params["value"] for c in found}) == list(workloads.COST_WIDTHS)
    assert {c.row.variant for c in found} == {SPEC}
    assert {(c.row.name, c.mode) for c in found} == {(r.name, m) for r in {c.row for c in found} for m in r.modes}


def test_the_report_opens_with_the_fitted_answer_and_draws_the_roofline(tmp_path) -> None:
    from bench.cells import Cell
    from bench.layout import ResultsDir
    from bench.report import write_report
    from bench.rows import Row
    from bench.workloads import COST_WIDTHS, get

    results = ResultsDir(tmp_path / costmodel.SWEEP_FOLDER)
    for row, overhead_s, gflops in (("numpy", 1e-4, 20.0), ("torch", 2e-3, 80.0)):
        for width in COST_WIDTHS:
            cell = Cell(Row(row), "default", "sweep_width", params={"value": width})
            step_s = overhead_s + get("sweep_width", {"value": width}).flops_per_step() / (gflops * 1e9)
            for round_ in range(3):
                results.write_record({"kind": "cell", "task": cell.to_dict(), "round": round_, "key": "k",
                                      "status": "ok", "step_s": step_s, "step_times_s": [step_s]})
    ResultsDir(tmp_path).raw.mkdir()
    write_report(ResultsDir(tmp_path))  # the main directory: its cost model comes from sweep/
    text = ResultsDir(tmp_path).file("README.md").read_text()
    assert text.index("**Which framework for which size**") < text.index("## How it is measured")
    assert "**numpy** (default)" in text and "**torch** (default)" in text and "## Cost model" in text
    assert (tmp_path / "plots" / "roofline.png").exists()
    table = pd.read_csv(tmp_path / "costmodel.csv")
    assert table.set_index("row")["gflops"].to_dict() == pytest.approx({"numpy": 20.0, "torch": 80.0})
