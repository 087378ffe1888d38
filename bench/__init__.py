"""The benchmark: speed, accuracy and memory of every implementation, one process per cell.

``python -m bench run`` works through the matrix of cells (implementation x mode x
workload), each in its own worker process (:mod:`bench.worker`), writes one record
per cell to ``results/raw/`` as soon as it finishes, and renders the report
(:mod:`bench.report`).  ``python -m bench compare OLD NEW`` compares two result sets.

Modules: :mod:`bench.env` (threads and environment), :mod:`bench.rows` (what runs),
:mod:`bench.workloads` (data, models, FLOP counts), :mod:`bench.cells` (profiles and
the matrix), :mod:`bench.timing` (statistics), :mod:`bench.baseline` (scikit-learn),
:mod:`bench.worker`, :mod:`bench.runner`, :mod:`bench.report`, :mod:`bench.compare`.

Extensions for tests: ``BENCH_PLUGINS`` names modules (comma-separated) imported by
the runner and every worker; they may register rows, workloads and profiles.
"""

from __future__ import annotations

import importlib
import os

PLUGINS_ENV = "BENCH_PLUGINS"


def load_plugins() -> list[str]:
    """Import the modules named in ``$BENCH_PLUGINS`` (they register rows, workloads, profiles)."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for name in names:
        importlib.import_module(name)
    return names
