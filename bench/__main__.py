"""Command line: ``python -m bench run | report | compare``.

``run [--profile quick|full] [--threads N|all] [--device cpu|gpu] [--only REGEX] [--force] [--out DIR]``
works through the profile's cells, resuming where an earlier run stopped, then writes the report.
``report [--out DIR]`` rewrites the report from the records.  ``compare OLD NEW`` prints the change of
every cell's step time and flags slowdowns beyond the noise (exit code 1 with ``--fail-on-slowdown``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import bench
from bench import cells as cells_mod
from bench import env


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the benchmark (resumes; --force reruns)")
    run.add_argument("--profile", default="quick", help="quick (default) or full")
    run.add_argument("--threads", default="all", help="threads per worker: N or 'all' (default: all cores)")
    run.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                     help="cpu (default: GPUs hidden) or gpu (frameworks use a GPU they see)")
    run.add_argument("--only", default=None, help="regular expression on cell ids, e.g. 'digits|throughput'")
    run.add_argument("--force", action="store_true", help="rerun cells that already have a result")
    run.add_argument("--out", type=Path, default=Path("results"), help="results directory (default: results)")
    run.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    run.add_argument("--list", action="store_true", help="list the cells and exit")
    rep = sub.add_parser("report", help="write README.md, CSV, JSON and plots from the records")
    rep.add_argument("--out", type=Path, default=Path("results"))
    cmp_ = sub.add_parser("compare", help="compare two result directories")
    cmp_.add_argument("old", type=Path)
    cmp_.add_argument("new", type=Path)
    cmp_.add_argument("--threshold", type=float, default=0.10, help="relative change that may count (0.10)")
    cmp_.add_argument("--fail-on-slowdown", action="store_true")
    return parser


def _run(args: argparse.Namespace) -> int:
    from bench import runner
    from bench.report import RUN_FILE, load_runs, write_report
    from bench.worker import write_json

    if args.profile not in cells_mod.PROFILES:
        print(f"unknown profile {args.profile!r}; expected one of {sorted(cells_mod.PROFILES)}", file=sys.stderr)
        return 2
    profile = cells_mod.PROFILES[args.profile]
    threads = env.resolve_threads(args.threads)
    cells, unavailable = cells_mod.matrix(profile, threads, args.device, args.only)
    if args.list:
        print("\n".join(c.id for c in cells))
        return 0
    for name, reason in unavailable.items():
        print(f"not run: {name}: {reason}", file=sys.stderr)
    started = datetime.now(UTC)
    start = time.perf_counter()
    info = {"profile": profile.name, "profile_description": profile.description, "threads": threads,
            "device": args.device, "only": args.only, "unavailable": unavailable, "cells": len(cells),
            "started_utc": started.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    # a job started in the background inherits SIGINT ignored; Ctrl-C must still stop the run cleanly
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        counts = runner.run(cells, args.out, force=args.force, progress=True)
        print(f"cells: {counts['ok']} ok, {counts['error']} errors, {counts['skipped']} already done",
              file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: finished cells are saved; run again to resume", file=sys.stderr)
        status = 130
    info["wall_s"] = time.perf_counter() - start
    info["interrupted"] = status != 0
    write_json(args.out / RUN_FILE, {"runs": [*load_runs(args.out), info]})
    if not args.no_report and status == 0:
        write_report(args.out)
        print(f"report: {args.out / 'README.md'}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    bench.load_plugins()
    if args.command == "run":
        return _run(args)
    if args.command == "report":
        from bench.report import write_report

        written = write_report(args.out)
        print(f"wrote {args.out / 'README.md'} and {len(written['plots'])} plots", file=sys.stderr)
        return 0
    from bench.compare import compare, format_changes

    changes, only_old, only_new = compare(args.old, args.new, args.threshold)
    print(format_changes(changes, only_old, only_new))
    slower = any(c.verdict == "slower" for c in changes)
    return 1 if slower and args.fail_on_slowdown else 0


if __name__ == "__main__":
    sys.exit(main())
