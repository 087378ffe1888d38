"""The benchmark harness's test plugin: ``BENCH_PLUGINS=tests.bench_plugin`` (runner and workers import it).

It registers, in the registry as any implementation would be, a fake implementation (the NumPy
reference under another name, with a second mode; its native row is NumPy's ``native_fit``), one
that crashes while being built, one that interrupts the runner once, one whose first measured run
is disturbed by a busy process, and one that hangs; two tiny workloads; and the ``selftest`` and
``selftest-hang`` profiles.  It is not a test module: importing it changes the registry, so only
the benchmark's own processes do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench import cells, workloads
from bench.workloads import Data, Workload
from impls import registry
from impls.numpy_mlp import NumpyMLP
from impls.numpy_mlp import native_fit as native_fit  # the fake rows' native loop is the reference's

MARKERS_ENV = "BENCH_FAKE_MARKERS"
"""A folder where the fakes leave marker files, so that they misbehave once per test."""


def _first_time(name: str) -> bool:
    """True the first time ``name`` is asked for in this test (a marker file is left behind)."""
    marker = Path(os.environ[MARKERS_ENV]) / name
    if marker.exists():
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("done")
    return True


class FakeMLP(NumpyMLP):
    """The reference under another name, with a second mode that behaves the same."""

    name = "fake"


class CrashingMLP(NumpyMLP):
    """Fails while being built: its spec cells become error rows (its native rows still run)."""

    name = "fake_crash"

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError("boom")


class InterruptingMLP(NumpyMLP):
    """Sends Ctrl-C to the runner the first time it is built in round 1 (seed 1); trains normally otherwise."""

    name = "fake_interrupt"

    def __init__(self, spec, seed: int = 0, mode: str = "default") -> None:
        if seed == 1 and _first_time("interrupt"):
            os.kill(os.getppid(), signal.SIGINT)
            time.sleep(30)  # the runner kills this worker when it handles the interrupt
        super().__init__(spec, seed, mode)


class LoadedMLP(NumpyMLP):
    """Its first full training run shares the machine with a busy process for 0.6 s: a disturbed block."""

    name = "fake_loaded"

    def fit(self, X, y, config, validation=None, on_epoch_end=None):
        if len(X) <= (config.batch_size or len(X)) or not _first_time("load"):  # not the one-batch cold start
            return super().fit(X, y, config, validation, on_epoch_end)
        # another process, not a child: a waited-for child's CPU time is the worker's own (os.times), so the
        # busy loop is started by a short-lived intermediate and killed by pid (init reaps it)
        spawn = ("import subprocess, sys; "
                 "print(subprocess.Popen([sys.executable, '-c', 'while True: pass'], start_new_session=True, "
                 "stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")
        busy = int(subprocess.run([sys.executable, "-c", spawn], capture_output=True, text=True, check=True).stdout)
        try:
            time.sleep(0.6)
            return super().fit(X, y, config, validation, on_epoch_end)
        finally:
            os.kill(busy, signal.SIGKILL)


class HangingMLP(NumpyMLP):
    """Never finishes being built: its tasks time out."""

    name = "fake_hang"

    def __init__(self, *args, **kwargs) -> None:
        time.sleep(600)


def fake_data(params: dict) -> Data:
    """64 samples, 4 features, a linearly separable binary target."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    return Data(X[:48], y[:48], X[48:], y[48:])


def register() -> None:
    """Register the fake implementations, workloads and profiles."""
    for name, cls, modes in (("fake", "FakeMLP", ("default", "fast")), ("fake_crash", "CrashingMLP", ("default",)),
                             ("fake_interrupt", "InterruptingMLP", ("default",)),
                             ("fake_loaded", "LoadedMLP", ("default",)), ("fake_hang", "HangingMLP", ("default",))):
        registry.IMPLEMENTATIONS[name] = registry.Entry(__name__, cls, modes=modes, requires=("numpy",))
    workloads.register(Workload("fake", "a tiny binary problem", (4, 3, 1), "binary_crossentropy", fake_data,
                                {"epochs": 4, "batch_size": 16, "learning_rate": 0.1},
                                {"hidden_activation": "relu", "initializer": "he_normal"}, loss_curves=True))
    workloads.register(workloads.synthetic_workload("fake_speed", "tiny synthetic, speed only", (8, 16, 4), 16))
    common = {"workloads": ("fake", "fake_speed"), "speed_warmup": 1, "speed_epochs": 3, "retries": 1,
              "ceiling_workload": "fake_speed", "ceiling_repeats": 3}
    cells.register_profile(cells.Profile(
        "selftest", "fake implementations on fake workloads", rounds=(0, 1, 2),
        implementations=("fake", "fake_crash", "fake_interrupt", "fake_loaded"), timeout_s=60, **common))
    cells.register_profile(cells.Profile(
        "selftest-hang", "an implementation that hangs", rounds=(0,), implementations=("fake_hang",),
        timeout_s=3, **common))


register()
