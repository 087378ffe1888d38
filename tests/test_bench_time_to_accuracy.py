"""Time to accuracy: the per-epoch accuracy curve a spec row's run records, the time read from it, and its
column in the report (not reached shown as such)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import import_or_skip

for _module in ("pandas", "scipy", "tabulate", "sklearn"):  # pip install '.[bench]'
    import_or_skip(_module)

import pandas as pd  # noqa: E402

from bench import report, summary, workloads  # noqa: E402
from bench.cells import Cell  # noqa: E402
from bench.rows import NATIVE, Row  # noqa: E402
from bench.worker import metrics, trainer  # noqa: E402
from impls.numpy_mlp import NumpyMLP, native_fit  # noqa: E402


def _record(curve: list[tuple[float, float]] | None, workload: str = "digits", startup_s: float = 2.0) -> dict:
    task = Cell(Row("numpy"), "default", workload).to_dict()
    record = {"kind": "cell", "task": task, "worker": {"startup_s": startup_s}}
    return {**record, "accuracy_curve": curve} if curve is not None else record


def test_the_time_is_the_start_up_plus_the_first_epoch_that_reaches_the_target() -> None:
    target = workloads.WORKLOADS["digits"].accuracy_target
    curve = [(0.5, target - 0.1), (1.0, target), (1.5, target + 0.01)]
    assert summary.time_to_accuracy(_record(curve)) == pytest.approx(3.0)
    assert summary.time_to_accuracy(_record(curve[:1])) == math.inf
    assert summary.time_to_accuracy(_record(None)) is None  # a native row: no curve
    assert summary.time_to_accuracy(_record(curve, workload="diabetes")) is None  # no target


def test_the_report_shows_the_median_over_seeds_and_not_reached() -> None:
    reached = pd.Series({"tta_s_median": 3.25, "tta_reached": 2, "tta_n": 3})
    missed = pd.Series({"tta_s_median": math.inf, "tta_reached": 1, "tta_n": 3})
    assert report._time_to_accuracy(reached) == "3.25 (2/3)"
    assert report._time_to_accuracy(missed) == "not reached (1/3)"
    assert report._time_to_accuracy(pd.Series({"tta_s_median": np.nan})) == "–"


def test_a_spec_run_records_its_accuracy_after_every_epoch_and_a_native_run_none() -> None:
    workload = workloads.WORKLOADS["circles"]
    data, spec, config = workload.load(), workload.spec("float64"), workload.config(0, epochs=5)
    test = (data.X_test, data.y_test)
    _, _, curve = trainer(Cell(Row("numpy"), "default", "circles"), spec, 0, NumpyMLP)(
        config, data.X_train, data.y_train, None, test)
    seconds, accuracy = zip(*curve)
    assert len(curve) == 5 and list(seconds) == sorted(seconds) and all(0 <= a <= 1 for a in accuracy)
    _, _, native_curve = trainer(Cell(Row("numpy", NATIVE), "default", "circles"), spec, 0, native_fit)(
        config, data.X_train, data.y_train, None, test)
    assert native_curve == []


def test_the_curve_is_the_test_splits_accuracy_after_each_epoch_not_the_training_splits() -> None:
    """The worker's spec-row trainer on circles: each curve value is the model's accuracy on the test split after
    that epoch, recomputed here from a subclass that records both splits' accuracies at every epoch end; the
    training split's accuracy differs from it in some epochs (70/30 split: 140 and 60 samples) and at the end,
    where the curve's last value is also the test accuracy the worker's metrics report."""
    workload = workloads.WORKLOADS["circles"]
    data, spec, config = workload.load(), workload.spec("float64"), workload.config(0, epochs=8)
    seen: list[tuple[float, float]] = []  # (train accuracy, test accuracy) at each epoch's end

    class Recording(NumpyMLP):
        def fit(self, X, y, config, validation=None, on_epoch_end=None):
            def record(epoch, history):
                seen.append((self.accuracy(data.X_train, data.y_train), self.accuracy(data.X_test, data.y_test)))
                if on_epoch_end is not None:
                    on_epoch_end(epoch, history)
            return super().fit(X, y, config, validation, record)

    _, outputs, curve = trainer(Cell(Row("numpy"), "default", "circles"), spec, 0, Recording)(
        config, data.X_train, data.y_train, None, (data.X_test, data.y_test))
    train_accuracy, test_accuracy = (list(column) for column in zip(*seen))
    assert [accuracy for _, accuracy in curve] == test_accuracy
    assert train_accuracy != test_accuracy, "the splits must differ for this test to tell them apart"
    final = metrics(spec, outputs, data)
    assert curve[-1][1] == final["test_accuracy"] != final["train_accuracy"]
