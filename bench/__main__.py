"""Command line: ``python -m bench run | report | compare | aa | micro-report | predict | merge``.

``run [--profile quick|full|sweep] [--threads N|all] [--device cpu|gpu] [--only REGEX] [--force] [--out DIR]
[--executor local|dask [--scheduler ADDRESS]]`` measures the profile's rounds (here, or on a Dask cluster:
:mod:`bench.executor`), resuming where an earlier run stopped, then writes the report; it exits
1 when a task errored, 130 when interrupted.  One run at a time measures into a results directory: a second
one is refused while the first holds ``DIR/.lock``.  ``report [--out DIR]`` rewrites the report from the
records.  ``compare OLD NEW`` prints the change of every cell and flags those beyond the noise (exit 1
with ``--fail-on-slowdown`` when one is slower).  ``aa`` runs the quick profile twice on the same code
(``results/aa/a``, ``results/aa/b``) and writes their comparison to ``results/aa/`` (exit 1 when the A/A
targets are missed).  ``micro-report [--out DIR]`` writes the phase table of the pytest-benchmark suite
(:mod:`bench.micro`) from ``DIR/micro/*.json``.  ``predict --layers 784,512,512,10 --batch 128 [--out DIR]``
prints every row's step time predicted by the cost model (:mod:`bench.costmodel`) fitted on ``DIR``'s records.
``merge DIR... --out DIR`` merges result directories (other machines, cluster shards; :mod:`bench.merge`) and
writes the merged report.

Every refused command (bad arguments, a missing or unsuitable folder, nothing to do) exits 2 with one line on
stderr."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import signal
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import bench
from bench import cells as cells_mod
from bench import env, stats
from bench.layout import RAW, RUN_FILE, Locked, ResultsDir


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
        what = "is a file, not a results directory" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"no such results directory: {text!r} {what}")
    return path


def fraction_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value}")
    return value


MAX_SIZE = 10**9
"""The largest layer size or batch ``predict`` accepts: far beyond any measured size (its prediction says how far),
and small enough that the FLOP count stays a finite float."""


def _whole(text: str) -> int | None:
    """``text`` as a whole number from 1 to :data:`MAX_SIZE` (ASCII digits only), else ``None``."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_SIZE)):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_SIZE else None


def layers_arg(text: str) -> tuple[int, ...]:
    """Comma-separated layer sizes, input to output, e.g. ``784,512,512,10``."""
    parts = [_whole(p) for p in text.split(",")]
    if len(parts) < 2 or None in parts:
        raise argparse.ArgumentTypeError(f"expected at least two comma-separated positive whole numbers (input, "
                                         f"hidden..., output) of at most {MAX_SIZE:.0e}, e.g. 784,512,512,10; got "
                                         f"{_clip(text)!r}")
    return tuple(parts)  # type: ignore[arg-type]


def positive_int(text: str) -> int:
    value = _whole(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of at most {MAX_SIZE:.0e}, got "
                                         f"{_clip(text)!r}")
    return value


def _clip(text: str, limit: int = 60) -> str:
    """``text``, shortened for a message (a 400-digit number need not be echoed whole)."""
    return text if len(text) <= limit else f"{text[:limit // 2]}...({len(text)} characters)...{text[-10:]}"


def one_line(text: str) -> str:
    """``text`` with every character that is not printable (newlines, other line separators, control characters)
    escaped, so that a message naming a hostile file name stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class CommandError(Exception):
    """A command refused before (or instead of) doing its work; ``main`` prints the message and exits 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit 2 (no usage dump); ``--help`` still prints
    the usage and exits 0."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(one_line(f"{self.prog}: error: {message} (see {self.prog} --help)"), file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m bench", description=__doc__.splitlines()[0])
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


def run_cells(profile_name: str, only: str | None) -> tuple[list[cells_mod.Cell], dict[str, str]]:
    """The cells a run of the profile measures and the rows that cannot run; raises :class:`CommandError` when
    there is no cell (``--only`` matches none: the message lists the workloads, rows and modes it can match)."""
    profile = cells_mod.PROFILES[profile_name]
    cells, unavailable = cells_mod.matrix(profile, only)
    if cells:
        return cells, unavailable
    every, _ = cells_mod.matrix(profile)
    if only and every:
        raise CommandError(f"--only {only!r} matches no cell of the {profile.name} profile (cell ids look like "
                           f"{every[0].id}); workloads: {_names(c.workload for c in every)}; rows: "
                           f"{_names(c.row.slug for c in every)}; modes: {_names(c.mode for c in every)}")
    missing = "; ".join(f"{name}: {reason}" for name, reason in unavailable.items()) or "it names none"
    raise CommandError(f"the {profile.name} profile has no cell that can run here (rows unavailable: {missing})")


def _names(values: Iterable[str]) -> str:
    return ", ".join(dict.fromkeys(values))


def check_out(out: Path, rounds: tuple[int, ...] | list[int] = ()) -> None:
    """Raise :class:`CommandError` when ``out`` cannot be a results directory (a file, or a file where one of its
    folders must be)."""
    problem = ResultsDir(out).layout_problem(rounds)
    if problem:
        raise CommandError(f"--out: {problem}")


def measure(profile_name: str, threads: int, device: str, out: Path, only: str | None = None,
            force: bool = False, report: bool = True, executor: str = "local", scheduler: str | None = None) -> int:
    """Run a profile into ``out`` (on this machine, or with ``executor="dask"`` on the Dask cluster at
    ``scheduler``) and write its report; the exit status (0, 1 on errors, 130 interrupted).

    Raises :class:`CommandError` when there is nothing to measure or ``out`` cannot hold results, and
    :class:`bench.layout.Locked` when another run is measuring into ``out`` (its lock is held while this one runs).
    """
    profile = cells_mod.PROFILES[profile_name]
    cells, unavailable = run_cells(profile_name, only)
    check_out(out, profile.rounds)
    results = ResultsDir(out)
    with results.lock(" ".join(sys.argv)):
        return _measure(profile, cells, unavailable, threads, device, results, only, force, report, executor,
                        scheduler)


def _measure(profile: cells_mod.Profile, cells: list[cells_mod.Cell], unavailable: dict[str, str], threads: int,
             device: str, results: ResultsDir, only: str | None, force: bool, report: bool, executor: str,
             scheduler: str | None) -> int:
    from bench import runner
    from bench.report import write_report

    for name, reason in unavailable.items():
        print(f"not run: {name}: {reason}", file=sys.stderr)
    plan = runner.Plan(profile, cells, cells_mod.ceilings(profile, cells), threads, device)
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
    """Print the cost model's step time of every row for ``layers`` at ``batch``; raises :class:`CommandError`
    without a model.  Outside a row's measured FLOPs the interval says how far instead (``extrapolated ×N beyond
    the sweep``): the bootstrap knows the line where it was fitted, not whether it holds there."""
    from bench import costmodel
    from bench.workloads import dense_flops

    model = costmodel.load(out)
    if not model.fits:
        raise CommandError(f"no cost model in {str(out)!r}: it needs speed-only cells at 3 or more sizes per row; run "
                           f"python -m bench run --profile sweep --out {str(out / costmodel.SWEEP_FOLDER)!r}")
    flops = dense_flops(layers, batch)
    table = costmodel.predictions(model.fits, flops, batch)
    shown = table.assign(**{"step ms": [f"{v * 1e3:.3g}" for v in table["step_s"]],
                            "95% interval ms": [f"{lo * 1e3:.3g}–{hi * 1e3:.3g}" if beyond == 1 else
                                                f"extrapolated ×{beyond:.3g} beyond the sweep"
                                                for lo, hi, beyond in zip(table["low_s"], table["high_s"],
                                                                          table["beyond"])]})
    print(f"layers {list(layers)}, batch {batch}: {flops / 1e9:.4g} GFLOP per training step "
          f"(model fitted on {model.source})\n")
    print(shown[["row", "mode", "step ms", "95% interval ms", "note"]].to_markdown(index=False, disable_numparse=True))
    if table["note"].str.contains("extrapolated").any():
        print("extrapolated: the request lies outside the FLOPs some rows were measured at; trust those less",
              file=sys.stderr)
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # workers and temporary directories are cleaned up on the way out


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status.  A refused command prints one line on stderr and returns 2 (argument
    errors exit 2 from the parser, with one line too)."""
    try:
        bench.load_plugins()  # before parsing: plugins register profiles
    except Exception as exc:  # a plugin module that cannot be imported is the user's code: say which, in one line
        print(one_line(f"python -m bench: error: ${bench.PLUGINS_ENV} names a module that cannot be imported: "
                       f"{type(exc).__name__}: {exc}"), file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except BrokenPipeError:
        raise  # the reader of stdout left: handled where the process exits
    except (CommandError, Locked) as exc:
        message = str(exc)
    except OSError as exc:  # a folder that cannot be written or read: the system's reason and the path
        message = f"{exc.strerror or exc}: {exc.filename!r}" if exc.filename else str(exc)
    print(one_line(f"python -m bench {args.command}: error: {message}"), file=sys.stderr)
    return 2


def _stop_cleanly() -> None:
    # a job started in the background inherits SIGINT ignored; Ctrl-C (and SIGTERM) must still stop a run cleanly
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)


def _holds_results(path: Path) -> bool:
    from bench import costmodel, merge

    return any((path / name).exists() for name in (RAW, RUN_FILE, merge.MACHINES, costmodel.SWEEP_FOLDER))


def _command(args: argparse.Namespace) -> int:
    if args.command == "run":
        if args.scheduler and args.executor != "dask":
            raise CommandError("--scheduler needs --executor dask")
        if args.executor == "dask" and importlib.util.find_spec("distributed") is None:
            raise CommandError("--executor dask needs Dask's distributed package: pip install '.[bench]'")
        cells, _ = run_cells(args.profile, args.only)
        if args.list:
            print("\n".join(c.id for c in cells))
            return 0
        out = args.out or Path("results") / cells_mod.PROFILES[args.profile].folder
        check_out(out, cells_mod.PROFILES[args.profile].rounds)
        _stop_cleanly()
        return measure(args.profile, args.threads, args.device, out, args.only, args.force, not args.no_report,
                       args.executor, args.scheduler)
    if args.command == "report":
        from bench.report import write_report

        if not _holds_results(args.out):
            raise CommandError(f"{str(args.out)!r} holds no benchmark results (no {RAW}/ or {RUN_FILE}): run "
                               f"python -m bench run --out {str(args.out)!r} first")
        written = write_report(ResultsDir(args.out))
        print(f"wrote {args.out / 'README.md'} and {len(written['plots'])} plots", file=sys.stderr)
        return 0
    if args.command == "micro-report":
        from bench import micro
        from bench.micro.report import write_report as write_micro_report

        if not (args.out / micro.FOLDER).is_dir():
            raise CommandError(f"no {micro.FOLDER}/ folder in {str(args.out)!r}: nox -s microbench writes its "
                               f"pytest-benchmark results there first")
        try:
            phases = write_micro_report(ResultsDir(args.out))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        print(f"wrote {args.out / 'micro' / 'README.md'} ({len(phases)} lines)", file=sys.stderr)
        return 0
    if args.command == "predict":
        return predict(args.layers, args.batch, args.out)
    if args.command == "merge":
        from bench.merge import merge
        from bench.report import write_report

        check_out(args.out)
        try:
            kept = merge(args.sources, args.out)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        write_report(ResultsDir(args.out))
        print(f"merged {sum(kept.values())} records from {len(kept)} machine(s) into {args.out}", file=sys.stderr)
        return 0
    if args.command == "compare":
        from bench.compare import compare, markdown

        try:
            comparison = compare(ResultsDir(args.old), ResultsDir(args.new), args.min_effect, args.alpha)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if comparison.other_machine:
            print(one_line(f"warning: {comparison.other_machine}"), file=sys.stderr)
        print(markdown(comparison))
        slower = (comparison.changes["verdict"] == "slower").any()
        return 1 if slower and args.fail_on_slowdown else 0
    from bench.compare import write_aa

    root = ResultsDir(args.out)
    runs = [ResultsDir(root.aa / name) for name in ("a", "b")]
    run_cells(args.profile, args.only)
    for run in runs:
        check_out(run.root, cells_mod.PROFILES[args.profile].rounds)
    _stop_cleanly()
    for run in runs:
        print(f"A/A: run {run.root}", file=sys.stderr)
        status = measure(args.profile, args.threads, args.device, run.root, args.only, force=True)
        if status not in (0, 1):
            return status
    try:
        verdict = write_aa(root, *runs)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(f"A/A {'passed' if verdict['passed'] else 'FAILED'}: {verdict}; see {root.aa / 'compare.md'}",
          file=sys.stderr)
    return 0 if verdict["passed"] else 1


def run_main(argv: list[str] | None = None) -> int:
    """:func:`main` for the process's entry point: a reader that closes stdout early (``python -m bench run --list |
    head -1``) ends the command quietly, as Python's documentation on SIGPIPE recommends (exit 1, no traceback)."""
    try:
        status = main(argv)
        sys.stdout.flush()  # here, not at interpreter exit, where a broken pipe could only be reported
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the final flush at exit writes nowhere instead of failing again
        return 1
    return status


if __name__ == "__main__":
    sys.exit(run_main())
