"""The benchmark's data cache (:meth:`bench.workloads.Workload.load`): keyed by what made the data, checked
against the digest of its arrays when read."""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import import_or_skip

import_or_skip("sklearn")  # pip install '.[bench]': the real loaders split with scikit-learn

from bench import workloads  # noqa: E402

LOADER = '''
import numpy as np

from bench.workloads import Data


def probe_data(params):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N_SAMPLES, 2))
    y = (X[:, 0] > 0).astype(int)
    return Data(X[:-10], y[:-10], X[-10:], y[-10:])


N_SAMPLES = {n}
'''


def _probe_workload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int) -> workloads.Workload:
    """A workload whose loader lives in a module of its own, written with ``N_SAMPLES = n`` (and re-imported)."""
    folder = tmp_path / "loader"
    folder.mkdir(exist_ok=True)
    (folder / "bench_cache_probe.py").write_text(LOADER.format(n=n))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # the edit is re-read, not a stale .pyc
    module = importlib.reload(sys.modules["bench_cache_probe"]) if "bench_cache_probe" in sys.modules \
        else importlib.import_module("bench_cache_probe")
    return replace(workloads.WORKLOADS["circles"], loader=module.probe_data)


def test_an_edited_loader_gets_a_new_cache_not_the_old_data(tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    before = _probe_workload(tmp_path, monkeypatch, 200)
    assert len(before.load(cache).X_train) == 190
    old_name = before.cache_name
    after = _probe_workload(tmp_path, monkeypatch, 400)  # the same loader, its n_samples edited
    assert after.cache_name != old_name and after.cache_name.startswith("probe_data-")
    assert len(after.load(cache).X_train) == 390
    assert len(list(cache.glob("*.npz"))) == 2


def test_the_cache_key_follows_the_parameters_the_loader_and_the_library_versions(monkeypatch) -> None:
    throughput = workloads.WORKLOADS["throughput"]
    name = throughput.cache_name
    assert throughput.cache_name == name  # stable
    assert replace(throughput, params={**throughput.params, "n": 4096}).cache_name != name

    def synthetic_data(params):  # the same name as the real loader, another body
        return workloads.synthetic_data(params)

    assert replace(throughput, loader=synthetic_data).cache_name != name
    monkeypatch.setattr(workloads, "data_library_versions", lambda: {"numpy": "0.0", "scikit-learn": "0.0"})
    assert throughput.cache_name != name


def test_a_cache_whose_arrays_were_replaced_is_detected_and_rebuilt(tmp_path, capsys) -> None:
    workload = workloads.WORKLOADS["circles"]
    fresh = workload.load(tmp_path)
    path = tmp_path / workload.cache_name
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["X_train"] = arrays["X_train"] + 1.0  # replaced; the stored digest kept
    np.savez(path, **arrays)
    capsys.readouterr()
    again = workload.load(tmp_path)
    np.testing.assert_array_equal(again.X_train, fresh.X_train)
    err = capsys.readouterr().err
    assert "do not match their digest" in err and len(err.splitlines()) == 1
    with np.load(path) as z:  # rewritten with the loader's data
        np.testing.assert_array_equal(z["X_train"], fresh.X_train)
    calls = []
    counted = replace(workload, loader=lambda params: calls.append(params) or workload.loader(params))
    counted_path = tmp_path / counted.cache_name
    counted.load(tmp_path)
    counted.load(tmp_path)
    assert len(calls) == 1 and counted_path.exists()  # an intact cache is used as it is


def test_a_cache_without_a_digest_is_rebuilt(tmp_path, capsys) -> None:
    workload = workloads.WORKLOADS["diabetes"]
    fresh = workload.load(tmp_path)
    path = tmp_path / workload.cache_name
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != workloads.DIGEST}
    arrays["y_scale"] = np.asarray(1.0)
    np.savez(path, **arrays)
    assert workload.load(tmp_path).y_scale == fresh.y_scale != 1.0
    assert "cannot be read" in capsys.readouterr().err
