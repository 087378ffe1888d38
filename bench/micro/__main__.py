"""``python -m bench.micro [--out DIR] [PYTEST OPTIONS...]``: the micro suite, one pytest process per spec row.

For every registered implementation and Keras backend (its ``backend_env`` set for the process), runs
``python -m pytest bench/micro --implementation NAME --benchmark-json DIR/micro/<row>.json`` with a short time
budget per benchmark (:data:`BUDGET`; later options override it, e.g. ``--benchmark-max-time=1``), then writes
the phase table (``python -m bench micro-report``).  Rows whose framework is not installed are named and
skipped.  Exit status: 1 when a row's process failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench import env, micro
from bench.layout import ResultsDir
from bench.rows import SPEC, Row

BUDGET = ("--benchmark-max-time=0.25", "--benchmark-min-rounds=5", "--benchmark-min-time=0.000005")
"""Per benchmark: at least 5 rounds, stopping after a quarter of a second (the throughput step takes ~50 ms)."""


def run_rows(out: Path, pytest_args: list[str]) -> int:
    """Run every row's pytest process into ``out/micro``; the number of rows that failed."""
    from impls import registry

    folder = out / micro.FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name, entry in registry.IMPLEMENTATIONS.items():
        for backend in entry.backends or (None,):
            child_env = {**os.environ, **({entry.backend_env: backend} if backend else {})}
            slug = Row(name, SPEC, backend).slug
            reason = entry.missing(backend)
            if reason is not None:
                print(f"not run: {slug}: {reason}", file=sys.stderr)
                continue
            command = [sys.executable, "-m", "pytest", str(env.PROJECT_ROOT / "bench" / micro.FOLDER), "-q",
                       "-p", "no:cacheprovider", "--implementation", name, f"--benchmark-json={folder / slug}.json",
                       *BUDGET, *pytest_args]
            print(f"micro: {slug}", file=sys.stderr)
            if subprocess.run(command, env=child_env, cwd=env.PROJECT_ROOT).returncode != 0:
                failed += 1
    return failed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.splitlines()[0],
                                     epilog="Every other option goes to each pytest process.")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results directory (default: results)")
    args, pytest_args = parser.parse_known_args(argv)
    out = args.out
    failed = run_rows(out, pytest_args)
    from bench.micro.report import write_report

    write_report(ResultsDir(out))
    print(f"wrote {out / micro.FOLDER / 'README.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
