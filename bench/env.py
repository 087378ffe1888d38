"""Threads and environment: set identically for every framework, recorded with every result.

:func:`thread_env` gives the variables a worker needs *before* it imports any framework
(BLAS/OpenMP pools, TensorFlow's pools, XLA's CPU flags, which device is visible);
the pools that only have an API are set after import by :mod:`bench.libraries`.
:func:`collect` describes the machine and the code: versions (of the distributions the
registry's extras install), CPU, cores, date, git commit and a hash of the sources.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "mlp-four-frameworks"
MEASURING_SOURCES = ("impls", "bench")
"""Packages whose code produces the numbers: their hash is part of every record's resume key."""


def available_cores() -> list[int]:
    """CPUs this process may run on (affinity mask), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def thread_env(n: int, device: str = "cpu") -> dict[str, str]:
    """Environment variables that fix every framework's thread pools at ``n`` (set before import).

    XLA (jaxlib 0.10.2): ``--xla_cpu_multi_thread_eigen=false`` is a known flag and keeps its
    Eigen matrix products on one thread.  The often-quoted ``intra_op_parallelism_threads=1``
    is not an XLA flag (``--intra_op_parallelism_threads=1`` aborts with "Unknown flag in
    XLA_FLAGS"; without the dashes the token is silently ignored), so it is not set.  XLA sizes
    its thread pool from the schedulable CPUs, which :func:`pin_cpus` restricts to ``n``.
    ``TORCHINDUCTOR_COMPILE_THREADS``: torch.compile compiles in the worker itself instead of a
    pool of compile processes, whose CPU time would count as another process's load
    (:mod:`bench.disturbance`).  ``device="cpu"`` hides GPUs from every framework.
    """
    env = {
        "OMP_NUM_THREADS": str(n),
        "MKL_NUM_THREADS": str(n),
        "OPENBLAS_NUM_THREADS": str(n),
        "VECLIB_MAXIMUM_THREADS": str(n),
        "NUMEXPR_NUM_THREADS": str(n),
        "TF_NUM_INTRAOP_THREADS": str(n),
        "TF_NUM_INTEROP_THREADS": "1",
        "TORCHINDUCTOR_COMPILE_THREADS": "1",
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
    chosen = available_cores()[:n]
    if hasattr(os, "sched_setaffinity") and chosen:
        os.sched_setaffinity(0, chosen)
    return available_cores()


# ---- what made the numbers ------------------------------------------------------------


def reported_distributions() -> list[str]:
    """The distributions whose versions every run names, read from the package metadata: what the
    registry's extras install, plus NumPy and scikit-learn (the reference's and the baseline's).

    A distribution's companions are named too: a requirement whose name extends its own (``jax`` ->
    ``jaxlib``, the runtime that computes), so the list needs no framework named here.
    """
    from impls import registry

    extras = {entry.extra for entry in registry.IMPLEMENTATIONS.values() if entry.extra}
    names = ["numpy"]
    for name in (_name(r) for r in _requirements(DISTRIBUTION, extras)):
        if name != DISTRIBUTION:
            names += [name, *(c for c in map(_name, _requirements(name)) if c.startswith(name) and c != name)]
    return list(dict.fromkeys([*names, "scikit-learn"]))


def _requirements(distribution: str, extras: set[str] | None = None) -> list[str]:
    """Requirement strings of ``distribution``: those only ``extras`` install, or (``None``) the
    unconditional ones; ``[]`` when it is not installed."""
    from packaging.requirements import Requirement

    try:
        requirements = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []
    out = []
    for text in requirements:
        marker = Requirement(text).marker
        if extras is None:
            wanted = marker is None or marker.evaluate({"extra": ""})
        else:
            wanted = marker is not None and any(marker.evaluate({"extra": extra}) for extra in extras)
        if wanted:
            out.append(text)
    return out


def _name(requirement: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement).name


def versions() -> dict[str, str | None]:
    """Installed versions of :func:`reported_distributions` (``None``: not installed)."""
    out: dict[str, str | None] = {}
    for dist in reported_distributions():
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def sources_hash(extra_modules: list[str] = ()) -> str:
    """SHA-256 (first 16 hex digits) of every ``.py`` file in :data:`MEASURING_SOURCES` and of the
    given modules (plugins), so an uncommitted edit makes every record stale."""
    import importlib.util

    files = sorted(p for package in MEASURING_SOURCES for p in (PROJECT_ROOT / package).rglob("*.py"))
    for name in extra_modules:
        found = importlib.util.find_spec(name)
        if found is not None and found.origin:
            files.append(Path(found.origin))
    digest = hashlib.sha256()
    for path in files:
        label = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
        digest.update(str(label).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cpu_description() -> str:
    """The CPU's brand string (py-cpuinfo), e.g. ``"AMD EPYC 9B14"``."""
    import cpuinfo

    return str(cpuinfo.get_cpu_info().get("brand_raw") or platform.processor() or platform.machine())


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


MACHINE_KEYS = ("cpu_model", "cpu_count", "memory_gib")
"""What makes two records come from the same kind of machine (the hostname does not: a cluster's identical
nodes are one machine for the report)."""


def machine_id(environment: dict) -> str:
    """A short name of the kind of machine an environment (or a fingerprint) describes: a hash of
    :data:`MACHINE_KEYS`, so records from before fingerprints existed get the same name."""
    key = json.dumps([environment.get(k) for k in MACHINE_KEYS])
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def fingerprint(hardware: dict, library_versions: dict) -> dict[str, object]:
    """The machine that measured: :data:`MACHINE_KEYS`, a hash of the hostname (which node, without naming it),
    the library versions, and the :func:`machine_id` of the hardware."""
    import socket

    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]
    return {"id": machine_id(hardware), **hardware, "hostname_sha256": host, "versions": library_versions}


def collect(plugins: list[str] = ()) -> dict[str, object]:
    """The environment of a run: versions, Python, CPU, cores, memory, date (UTC), git commit, sources hash, and
    the machine's :func:`fingerprint`."""
    import psutil

    hardware = {"cpu_model": cpu_description(), "cpu_count": os.cpu_count(),
                "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}
    library_versions = versions()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **hardware,
        "cores_available": len(available_cores()),
        "versions": library_versions,
        "machine": fingerprint(hardware, library_versions),
        "sources_hash": sources_hash(list(plugins)),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "executable": sys.executable,
        **{f"git_{k}": v for k, v in git_state().items()},
    }


RESUME_KEYS = ("versions", "cpu_model", "cpu_count", "sources_hash", "python")
"""What a record's environment must share with this run for the record to count as done."""
