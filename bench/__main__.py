"""Command line: ``python -m bench run | report | compare | aa | micro-report | predict | merge``.

``run [--profile quick|full|sweep] [--threads N|all] [--device cpu|gpu] [--only REGEX] [--force] [--out DIR]
[--executor local|dask [--scheduler ADDRESS]]`` measures the profile's rounds (here, or on a Dask cluster:
:mod:`bench.executor`), resuming where an earlier run stopped, then writes the report; it exits
1 when a task errored, 130 when interrupted.  ``report [--out DIR]`` rewrites the report from the
records.  ``compare OLD NEW`` prints the change of every cell and flags those beyond the noise (exit 1
with ``--fail-on-slowdown`` when one is slower).  ``aa`` runs the quick profile twice on the same code
(``results/aa/a``, ``results/aa/b``) and writes their comparison to ``results/aa/`` (exit 1 when the A/A
targets are missed).  ``micro-report [--out DIR]`` writes the phase table of the pytest-benchmark suite
(:mod:`bench.micro`) from ``DIR/micro/*.json``.  ``predict --layers 784,512,512,10 --batch 128 [--out DIR]``
prints every row's step time predicted by the cost model (:mod:`bench.costmodel`) fitted on ``DIR``'s records.
``merge DIR... --out DIR`` merges result directories (other machines, cluster shards; :mod:`bench.merge`) and
writes the merged report.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import bench
from bench import cells as cells_mod
from bench import env, stats
from bench.layout import ResultsDir


def threads_arg(text: str) -> int:
    """``all`` or a whole number of threads between 1 and the cores this process may use."""
    cores = len(env.available_cores())
    if text == "all":
        return cores
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of threads or 'all', got {text!r}") from None
    if not 1 <= n <= cores:
        raise argparse.ArgumentTypeError(f"threads must be between 1 and {cores} (the cores available here), got {n}")
    return n


def regex_arg(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {text!r} ({exc})") from None
    return text


def results_dir_arg(text: str) -> Path:
    """An existing results directory (for ``report`` and ``compare``)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such results directory: {text}")
    return path


def fraction_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value}")
    return value


def layers_arg(text: str) -> tuple[int, ...]:
    """Comma-separated layer sizes, input to output, e.g. ``784,512,512,10``."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) < 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected at least two comma-separated positive whole numbers (input, "
                                         f"hidden..., output), e.g. 784,512,512,10; got {text!r}")
    return tuple(int(p) for p in parts)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the benchmark (resumes; --force reruns)")
    _run_options(run)
    run.add_argument("--force", action="store_true", help="rerun tasks that already have a result")
    run.add_argument("--out", type=Path, default=None,
                     help="results directory (default: results, or the profile's folder in it: results/sweep)")
    run.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    run.add_argument("--list", action="store_true", help="list the cells and exit")
    run.add_argument("--executor", choices=("local", "dask"), default="local",
                     help="local (default: this machine, rounds interleaved) or dask (a cell and its native twin "
                          "per exclusive Dask worker; see bench/executor.py)")
    run.add_argument("--scheduler", default=None,
                     help="with --executor dask: the scheduler's address, e.g. tcp://host:8786 (default: a local "
                          "cluster of one worker)")
    rep = sub.add_parser("report", help="write README.md, CSV, JSON and plots from the records")
    rep.add_argument("--out", type=results_dir_arg, default=Path("results"))
    cmp_ = sub.add_parser("compare", help="compare two result directories")
    cmp_.add_argument("old", type=results_dir_arg)
    cmp_.add_argument("new", type=results_dir_arg)
    cmp_.add_argument("--min-effect", type=fraction_arg, default=stats.MIN_EFFECT,
                      help=f"smallest relative change that may count ({stats.MIN_EFFECT})")
    cmp_.add_argument("--alpha", type=fraction_arg, default=stats.ALPHA,
                      help=f"significance level of the rank test ({stats.ALPHA})")
    cmp_.add_argument("--fail-on-slowdown", action="store_true", help="exit 1 when a cell is slower")
    micro = sub.add_parser("micro-report", help="write the phase table of the micro suite (results/micro/)")
    micro.add_argument("--out", type=results_dir_arg, default=Path("results"))
    pred = sub.add_parser("predict", help="predict each row's step time for a model size from the cost model")
    pred.add_argument("--layers", type=layers_arg, required=True, help="layer sizes, e.g. 784,512,512,10")
    pred.add_argument("--batch", type=positive_int, required=True, help="batch size")
    pred.add_argument("--out", type=results_dir_arg, default=Path("results"),
                      help="results directory whose records (or sweep/ records) are fitted (default: results)")
    mrg = sub.add_parser("merge", help="merge result directories (grouped by machine) and report them")
    mrg.add_argument("sources", type=results_dir_arg, nargs="+", metavar="DIR")
    mrg.add_argument("--out", type=Path, required=True, help="a new results directory")
    aa = sub.add_parser("aa", help="run a profile twice on the same code and compare the runs")
    _run_options(aa)
    aa.add_argument("--out", type=Path, default=Path("results"), help="writes OUT/aa/ (default: results)")
    return parser


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="quick", choices=sorted(cells_mod.PROFILES),
                        help="how much to measure (default: quick)")
    parser.add_argument("--threads", type=threads_arg, default=1,
                        help="threads per worker: N or 'all' (default: 1, which leaves the other cores to the "
                             "system and the neighbours instead of fighting them)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="cpu (default: GPUs hidden) or gpu (frameworks use a GPU they see)")
    parser.add_argument("--only", type=regex_arg, default=None,
                        help="regular expression on cell ids, e.g. 'digits|throughput'")


def measure(profile_name: str, threads: int, device: str, out: Path, only: str | None = None,
            force: bool = False, report: bool = True, executor: str = "local", scheduler: str | None = None) -> int:
    """Run a profile into ``out`` (on this machine, or with ``executor="dask"`` on the Dask cluster at
    ``scheduler``) and write its report; the exit status (0, 1 on errors, 130 interrupted)."""
    from bench import runner
    from bench.report import write_report

    profile = cells_mod.PROFILES[profile_name]
    cells, unavailable = cells_mod.matrix(profile, only)
    for name, reason in unavailable.items():
        print(f"not run: {name}: {reason}", file=sys.stderr)
    plan = runner.Plan(profile, cells, cells_mod.ceilings(profile, cells), threads, device)
    results = ResultsDir(out)
    environment = env.collect(bench.plugin_names())
    started = datetime.now(UTC)
    info = {"run_id": f"{started:%Y%m%dT%H%M%S}-{os.getpid()}", "profile": profile.name,
            "profile_description": profile.description, "threads": threads, "device": device, "only": only,
            "unavailable": unavailable, "plan": plan.to_dict(), "started_utc": started.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv), "environment": environment, "executor": executor, "interrupted": True}
    results.add_run(info)  # before the first task: an interrupted run still names its plan
    start = time.perf_counter()
    status = 0
    outcome = runner.Outcome()
    try:
        if executor == "dask":
            from bench import executor as dask_executor

            dask_executor.run(plan, results, environment, outcome, force=force, scheduler=scheduler)
        else:
            runner.run(plan, results, environment, outcome, force=force, progress=True)
    except KeyboardInterrupt:
        print("interrupted: finished tasks are saved; run again to resume", file=sys.stderr)
        status = 130
    counts = outcome.counts
    print(f"tasks: {counts['ok']} ok, {counts['error']} errors, {counts['skipped']} already done; disturbed runs "
          f"timed again: {counts['retimed']}, still disturbed: {counts['disturbed']} (retries paused while the "
          f"machine was busy: {counts['retries paused']}); malformed records replaced: {len(outcome.malformed)}",
          file=sys.stderr)
    info.update(wall_s=time.perf_counter() - start, interrupted=status != 0, counts=dict(counts),
                malformed=outcome.malformed)
    results.add_run(info)
    if report and status == 0:
        write_report(results)
        print(f"report: {results.file('README.md')}", file=sys.stderr)
    if status == 0 and counts["error"]:
        print("errors:\n  " + "\n  ".join(outcome.errors), file=sys.stderr)
        status = 1
    return status


def predict(layers: tuple[int, ...], batch: int, out: Path) -> int:
    """Print the cost model's step time of every row for ``layers`` at ``batch`` (exit 1 without a model)."""
    from bench import costmodel
    from bench.workloads import dense_flops

    model = costmodel.load(out)
    if not model.fits:
        print(f"no cost model in {out}: it needs speed-only cells at 3 or more sizes per row; run "
              f"python -m bench run --profile sweep --out {out / costmodel.SWEEP_FOLDER}", file=sys.stderr)
        return 1
    flops = dense_flops(layers, batch)
    table = costmodel.predictions(model.fits, flops, batch)
    shown = table.assign(**{"step ms": [f"{v * 1e3:.3g}" for v in table["step_s"]],
                            "95% interval ms": [f"{lo * 1e3:.3g}–{hi * 1e3:.3g}"
                                                for lo, hi in zip(table["low_s"], table["high_s"])]})
    print(f"layers {list(layers)}, batch {batch}: {flops / 1e9:.4g} GFLOP per training step "
          f"(model fitted on {model.source})\n")
    print(shown[["row", "mode", "step ms", "95% interval ms", "note"]].to_markdown(index=False, disable_numparse=True))
    if table["note"].str.contains("extrapolated").any():
        print("\nextrapolated: the request lies outside the FLOPs some rows were measured at; trust those less",
              file=sys.stderr)
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # workers and temporary directories are cleaned up on the way out


def main(argv: list[str] | None = None) -> int:
    bench.load_plugins()  # before parsing: plugins register profiles
    args = _parser().parse_args(argv)
    # a job started in the background inherits SIGINT ignored; Ctrl-C (and SIGTERM) must still stop a run cleanly
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if args.command == "run":
        if args.list:
            cells, _ = cells_mod.matrix(cells_mod.PROFILES[args.profile], args.only)
            print("\n".join(c.id for c in cells))
            return 0
        if args.scheduler and args.executor != "dask":
            print("--scheduler needs --executor dask", file=sys.stderr)
            return 2
        out = args.out or Path("results") / cells_mod.PROFILES[args.profile].folder
        return measure(args.profile, args.threads, args.device, out, args.only, args.force, not args.no_report,
                       args.executor, args.scheduler)
    if args.command == "report":
        from bench.report import write_report

        written = write_report(ResultsDir(args.out))
        print(f"wrote {args.out / 'README.md'} and {len(written['plots'])} plots", file=sys.stderr)
        return 0
    if args.command == "micro-report":
        from bench.micro.report import write_report as write_micro_report

        phases = write_micro_report(ResultsDir(args.out))
        print(f"wrote {args.out / 'micro' / 'README.md'} ({len(phases)} lines)", file=sys.stderr)
        return 0
    if args.command == "predict":
        return predict(args.layers, args.batch, args.out)
    if args.command == "merge":
        from bench.merge import merge
        from bench.report import write_report

        try:
            kept = merge(args.sources, args.out)
        except ValueError as exc:
            print(f"merge: {exc}", file=sys.stderr)
            return 2
        write_report(ResultsDir(args.out))
        print(f"merged {sum(kept.values())} records from {len(kept)} machine(s) into {args.out}", file=sys.stderr)
        return 0
    if args.command == "compare":
        from bench.compare import compare, markdown

        comparison = compare(ResultsDir(args.old), ResultsDir(args.new), args.min_effect, args.alpha)
        print(markdown(comparison))
        slower = (comparison.changes["verdict"] == "slower").any()
        return 1 if slower and args.fail_on_slowdown else 0
    from bench.compare import write_aa

    root = ResultsDir(args.out)
    runs = [ResultsDir(root.aa / name) for name in ("a", "b")]
    for run in runs:
        print(f"A/A: run {run.root}", file=sys.stderr)
        status = measure(args.profile, args.threads, args.device, run.root, args.only, force=True)
        if status not in (0, 1):
            return status
    verdict = write_aa(root, *runs)
    print(f"A/A {'passed' if verdict['passed'] else 'FAILED'}: {verdict}; see {root.aa / 'compare.md'}",
          file=sys.stderr)
    return 0 if verdict["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
