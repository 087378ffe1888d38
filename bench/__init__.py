"""The benchmark: every registered implementation, its native idiom and the baselines, measured in rounds.

``python -m bench run`` expands a profile (:mod:`bench.cells`) into cells (row x mode x
workload) from the registry (:mod:`bench.rows`: a spec row and a native row per implementation
and backend, plus the baselines).  One persistent worker per (implementation, backend)
(:mod:`bench.worker`) runs its rows' tasks; each round gives every cell one training run with
the round's seed, in a freshly shuffled order, one task at a time (:mod:`bench.runner`), and
times the machine's matmul ceiling once per library.  Every block is checked for disturbance by
other processes (:mod:`bench.disturbance`) and timed again when disturbed.  Records land in the
results directory (:mod:`bench.layout`) per task and round, atomically; a run resumes.  The
report (:mod:`bench.summary`, :mod:`bench.report`) gives medians over rounds with bootstrap
intervals (:mod:`bench.stats`), × fastest and the adapter overhead (spec row ÷ native row)
formed per round, and the disturbance counts.  ``python -m bench compare OLD NEW`` decides
slower/faster with a rank test and a minimum effect (:mod:`bench.compare`); ``python -m bench aa``
checks that two runs of the same code agree.

Other modules: :mod:`bench.env` (threads, versions, sources hash, the machine's fingerprint),
:mod:`bench.libraries` (what only a library's API can set), :mod:`bench.workloads` (data, models, FLOP
counts), :mod:`bench.costmodel` (overhead + FLOPs / throughput per row, ``python -m bench predict``),
:mod:`bench.merge` (results of several machines), :mod:`bench.executor` (cells on a Dask cluster) and
:mod:`bench.micro` (the pytest-benchmark phase suite); ``bench/README.md`` shows how to use them.

Extensions for tests: ``BENCH_PLUGINS`` names modules (comma-separated) imported by the runner
and every worker; they may register implementations (in :mod:`impls.registry`), workloads and
profiles.
"""

from __future__ import annotations

import importlib
import os

PLUGINS_ENV = "BENCH_PLUGINS"


def plugin_names() -> list[str]:
    """The modules named in ``$BENCH_PLUGINS``."""
    return [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]


def load_plugins() -> list[str]:
    """Import the modules named in ``$BENCH_PLUGINS`` (they register implementations, workloads, profiles)."""
    names = plugin_names()
    for name in names:
        importlib.import_module(name)
    return names
