"""Threads and environment: set identically for every framework, recorded with every result.

:func:`thread_env` gives the variables a worker needs *before* it imports any
framework (BLAS/OpenMP pools, TensorFlow's pools, XLA's CPU flags, which device is
visible); :func:`apply_after_import` sets the pools that only have an API
(``torch.set_num_threads``, ``tf.config.threading``).  :func:`collect` describes the
machine and the code: versions, CPU, cores, date, git commit.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

DISTRIBUTIONS = ("numpy", "torch", "jax", "jaxlib", "keras", "tensorflow-cpu", "tensorflow",
                 "scikit-learn", "matplotlib")
"""Distributions whose versions every record names (read from metadata: nothing is imported)."""

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def available_cores() -> list[int]:
    """CPUs this process may run on (affinity mask), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def resolve_threads(threads: str | int) -> int:
    """``"all"`` -> every core this process may use; otherwise a positive int."""
    if threads == "all":
        return len(available_cores())
    n = int(threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1 or 'all', got {threads!r}")
    return n


def thread_env(n: int, device: str = "cpu") -> dict[str, str]:
    """Environment variables that fix every framework's thread pools at ``n`` (set before import).

    XLA (jaxlib 0.10.2): ``--xla_cpu_multi_thread_eigen=false`` is a known flag and keeps its
    Eigen matrix products on one thread.  The often-quoted ``intra_op_parallelism_threads=1``
    is not an XLA flag (``--intra_op_parallelism_threads=1`` aborts with "Unknown flag in
    XLA_FLAGS"; without the dashes the token is silently ignored), so it is not set.  XLA sizes
    its thread pool from the schedulable CPUs, which :func:`pin_cpus` restricts to ``n``.
    ``device="cpu"`` hides GPUs from every framework, so nothing runs elsewhere by accident.
    """
    env = {
        "OMP_NUM_THREADS": str(n),
        "MKL_NUM_THREADS": str(n),
        "OPENBLAS_NUM_THREADS": str(n),
        "VECLIB_MAXIMUM_THREADS": str(n),
        "NUMEXPR_NUM_THREADS": str(n),
        "TF_NUM_INTRAOP_THREADS": str(n),
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's start-up banner is not a result
    }
    if n == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["JAX_PLATFORMS"] = "cpu"
    return env


def pin_cpus(n: int) -> list[int]:
    """Restrict this process to the first ``n`` allowed CPUs; returns the set in force."""
    cores = available_cores()
    chosen = cores[:n]
    if hasattr(os, "sched_setaffinity") and chosen:
        os.sched_setaffinity(0, chosen)
    return available_cores()


def apply_after_import(n: int) -> dict[str, object]:
    """Set the thread pools that have only an API, for the frameworks this process imported.

    Returns what was set and what each framework reports back.
    """
    applied: dict[str, object] = {}
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)
        # only allowed before the first inter-op parallel work; later calls keep the default
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
        applied["torch"] = {"num_threads": torch.get_num_threads(),
                            "num_interop_threads": torch.get_num_interop_threads()}
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # the runtime is already initialized: the env variables above hold
            pass
        applied["tensorflow"] = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                                 "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    if "jax" in sys.modules:
        applied["jax"] = {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
    return applied


def devices_seen() -> dict[str, object]:
    """Which devices the imported frameworks see (only frameworks already imported are asked)."""
    seen: dict[str, object] = {}
    if "torch" in sys.modules:
        import torch

        seen["torch"] = "cuda" if torch.cuda.is_available() else "cpu"
    if "jax" in sys.modules:
        import jax

        seen["jax"] = jax.default_backend()
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        seen["tensorflow"] = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return seen


def versions() -> dict[str, str | None]:
    """Installed versions of the distributions the benchmark involves (``None``: not installed)."""
    out: dict[str, str | None] = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo (Linux) or the platform module."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state(root: Path = PROJECT_ROOT) -> dict[str, object]:
    """Commit and whether the work tree differs from it (``None`` outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def collect() -> dict[str, object]:
    """The environment of a run: versions, Python, CPU, cores, date (UTC), git commit."""
    mem = None
    try:
        import psutil

        mem = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cores_available": len(available_cores()),
        "memory_gib": mem,
        "versions": versions(),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        **{f"git_{k}": v for k, v in git_state().items()},
    }
