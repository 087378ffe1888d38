"""``python -m bench`` as a command line: every refusal is exit 2 and one line on stderr, never a traceback, and
nothing is written outside the folder a command was told to write.  A property-based test drives ``main(argv)``
in-process with random argument vectors and hostile file names; two real processes check the entry point (a
closed pipe, an error); one run at a time measures into a results folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import import_or_skip

for _module in ("pandas", "scipy", "tabulate", "psutil", "cpuinfo"):  # pip install '.[bench]'
    import_or_skip(_module)

import bench.__main__ as cli  # noqa: E402
from bench.cells import Cell  # noqa: E402
from bench.layout import ResultsDir  # noqa: E402
from bench.rows import NATIVE, Row  # noqa: E402
from bench.workloads import COST_WIDTHS, get  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

HOSTILE = ["it's \"quoted\"", "new\nline", "ünïcødé ✓", "tab\there", "-dash", "sep\u2028arator", "$(echo x)"]
"""File names a shell or a one-line message could trip over (none of them exists)."""


def _write_results(root: Path) -> None:
    """A small results folder: two cells x 5 rounds, a run, a micro/ suite file and a sweep/ for the cost model."""
    results = ResultsDir(root)
    for cell in (Cell(Row("numpy"), "default", "circles"), Cell(Row("numpy", NATIVE), "default", "circles")):
        for round_ in range(5):
            step_s = 1e-3 * (1 + 0.01 * round_)
            results.write_record({"kind": "cell", "task": cell.to_dict(), "round": round_, "seed": round_,
                                  "key": "k", "status": "ok", "step_s": step_s, "step_times_s": [step_s]})
    sweep = ResultsDir(root / "sweep")
    for width in COST_WIDTHS:
        cell = Cell(Row("numpy"), "default", "sweep_width", params={"value": width})
        step_s = 1e-4 + get("sweep_width", {"value": width}).flops_per_step() / 2e10
        for round_ in range(3):
            sweep.write_record({"kind": "cell", "task": cell.to_dict(), "round": round_, "key": "k",
                                "status": "ok", "step_s": step_s, "step_times_s": [step_s]})
    (root / "micro").mkdir()
    (root / "micro" / "numpy.json").write_text(json.dumps({"benchmarks": [
        {"name": f"test_{phase}", "extra_info": {"row": "numpy", "mode": "default", "workload": "digits",
                                                 "phase": phase},
         "stats": {"median": t, "q1": t, "q3": t, "rounds": 5}}
        for phase, t in (("forward", 1e-5), ("gradients", 3e-5), ("train_step", 4e-5))]}))


def _world(tmp: Path) -> Path:
    """The folder every generated command works in: results, an empty folder, files where folders belong."""
    world = tmp / "world"
    world.mkdir()
    _write_results(world / "results")
    (world / "empty").mkdir()
    (world / "afile").write_text("not a folder\n")
    (world / "rawfile" / "raw").mkdir(parents=True)
    (world / "rawfile" / "raw" / "r0").write_text("not a round folder\n")
    (world / "micro-bad" / "micro").mkdir(parents=True)
    (world / "micro-bad" / "micro" / "x.json").write_text('{"benchmarks": [{"stats": null}]}')
    (world / "it's \"quoted\"").mkdir()  # an existing folder with a hostile name
    (world / "out").mkdir()  # where new output folders are made
    return world


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``folder``: its mode and, for a file, its bytes."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(base) / name
            mode = path.lstat().st_mode
            found[str(path)] = (mode, path.read_bytes() if path.is_file() and not path.is_symlink() else None)
    return found


# ---- the generated commands -----------------------------------------------------------------------------------

EXISTING = ["results", "empty", "afile", "rawfile", "micro-bad", "it's \"quoted\"", "results/raw", "results/micro"]
MISSING = ["missing", "afile/below", *HOSTILE]


def _paths(world: Path) -> st.SearchStrategy[str]:
    # the valid results folder drawn as often as all the others, so that valid commands run too
    return st.one_of(st.just("results"), st.sampled_from([*EXISTING, *MISSING])).map(lambda name: str(world / name))


def _outputs(world: Path) -> st.SearchStrategy[str]:
    """An output folder: existing ones, new ones (hostile names too), files."""
    return st.one_of(_paths(world), st.sampled_from(["new", "new2", *HOSTILE]).map(lambda n: str(world / "out" / n)))


JUNK = st.text(max_size=12)
SUBCOMMANDS = ("run", "report", "compare", "aa", "micro-report", "predict", "merge")
NUMBERS = st.sampled_from(["128", "0", "-5", "1e3", "²", "١٢", "9" * 400, "", " 7 "])


def _flag(name: str, value: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.one_of(st.just([]), value.map(lambda v: [name, v]))


def _argv(world: Path) -> st.SearchStrategy[tuple[list[str], str | None]]:
    """``(argv, output folder or None)``: what a command may write is under its output folder only."""
    path, out = _paths(world), _outputs(world)
    report = _flag("--out", path).map(lambda a: (["report", *a], a[1] if a else "results"))
    micro = _flag("--out", path).map(lambda a: (["micro-report", *a], a[1] if a else "results"))
    compare = st.tuples(path, path, _flag("--min-effect", st.sampled_from(["0.1", "2", "x"])),
                        _flag("--alpha", st.sampled_from(["0.05", "0", "nan"])),
                        st.sampled_from([[], ["--fail-on-slowdown"]])).map(
        lambda t: (["compare", t[0], t[1], *t[2], *t[3], *t[4]], None))
    layers = st.one_of(st.sampled_from(["784,128,10", "2,4,1", "784", "784,0,10", f"784,{'9' * 400},10",
                                        "784,١٢,10", "1000000000,1000000000,1000000000"]), JUNK)
    predict = st.tuples(_flag("--layers", layers), _flag("--batch", NUMBERS), _flag("--out", path)).map(
        lambda t: (["predict", *t[0], *t[1], *t[2]], None))
    merge = st.tuples(st.lists(path, min_size=0, max_size=3), _flag("--out", out)).map(
        lambda t: (["merge", *t[0], *t[1]], t[1][1] if t[1] else None))
    run = st.tuples(st.sampled_from([[], ["--list"]]),
                    _flag("--only", st.one_of(st.sampled_from(["^circles__numpy__default", "zzz", "(", "numpy"]),
                                              JUNK)),
                    _flag("--out", out), _flag("--profile", st.sampled_from(["quick", "sweep", "nope"])),
                    _flag("--threads", st.sampled_from(["1", "0", "all", "x"])),
                    _flag("--executor", st.sampled_from(["local", "dask", "ray"])),
                    _flag("--scheduler", st.just("tcp://nowhere:1")),
                    st.sampled_from([[], ["--force"], ["--no-report"], ["--bogus"]])).map(
        lambda t: (["run", *(x for part in t for x in part)], t[2][1] if t[2] else "results"))
    junk = st.lists(st.one_of(JUNK, st.sampled_from(["run", "report", "--out", "--help-me", "aa"])), max_size=4).filter(
        lambda a: not a or a[0] not in SUBCOMMANDS).map(lambda a: (a, None))  # no valid command: nothing written
    return st.one_of(report, micro, compare, predict, merge, run, junk)


def _inside(path: str, folder: str | None) -> bool:
    return folder is not None and (Path(path) == Path(folder) or Path(folder) in Path(path).parents)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _world(tmp_path_factory.mktemp("cli"))


@settings(max_examples=60, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_command_succeeds_or_refuses_in_one_line_and_writes_only_where_told(
        world: Path, data: st.DataObject, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[Path] = []

    def measure(profile_name: str, threads: int, device: str, out: Path, *args: object, **kwargs: object) -> int:
        # a run with valid arguments reaches the measurement: recorded, not measured
        assert ResultsDir(out).layout_problem() is None, out
        measured.append(out)
        return 0

    monkeypatch.setattr(cli, "measure", measure)
    monkeypatch.setattr(cli, "_stop_cleanly", lambda: None)  # the test process keeps its own signal handlers
    argv, output = data.draw(_argv(world), label="argv")
    output = str(world / output) if output is not None and not os.path.isabs(output) else output
    capsys.readouterr()
    before = _snapshot(world)
    with contextlib.chdir(world):  # defaults (results/) resolve inside the world
        try:
            code = cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code
    _, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        assert len(err.splitlines()) == 1 and err.endswith("\n"), (argv, err)
        assert not measured
    after = _snapshot(world)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert all(_inside(p, output) for p in changed), (argv, sorted(changed))
    if measured:
        assert argv[0] == "run" and "--list" not in argv and code == 0


def test_help_still_prints_the_usage_and_exits_0(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", "--help"])
    assert exit_.value.code == 0 and "--fail-on-slowdown" in capsys.readouterr().out


# ---- the refusals, one by one ---------------------------------------------------------------------------------


def _refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (code, err)
    return err


def test_run_only_matching_no_cell_lists_what_it_can_match(capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli, "measure", lambda *a, **k: pytest.fail("measured"))
    for argv in (["run", "--only", "nothing-like-this"], ["run", "--list", "--only", "nothing-like-this"]):
        err = _refused(argv, capsys)
        assert "--only 'nothing-like-this' matches no cell" in err
        assert "workloads: circles, digits" in err and "rows: numpy, numpy-native" in err


def test_run_refuses_a_file_where_a_folder_must_be(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli, "measure", lambda *a, **k: pytest.fail("measured"))
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a results directory" in _refused(
        ["run", "--only", "^circles__numpy__default", "--out", str(tmp_path / "afile")], capsys)
    (tmp_path / "res" / "raw").mkdir(parents=True)
    (tmp_path / "res" / "raw" / "r0").write_text("x")
    assert "raw/r0' is a file where the results directory needs a folder" in _refused(
        ["run", "--only", "^circles__numpy__default", "--out", str(tmp_path / "res")], capsys)
    assert not (tmp_path / "res" / "run.json").exists()


def test_report_and_micro_report_refuse_folders_without_their_results(tmp_path, capsys) -> None:
    assert "holds no benchmark results" in _refused(["report", "--out", str(tmp_path)], capsys)
    assert "no micro/ folder in" in _refused(["micro-report", "--out", str(tmp_path)], capsys)
    (tmp_path / "micro").mkdir()
    assert "no pytest-benchmark results" in _refused(["micro-report", "--out", str(tmp_path)], capsys)
    (tmp_path / "micro" / "x.json").write_text('{"benchmarks": [{"name": "b", "stats": null}]}')
    assert "has no statistics" in _refused(["micro-report", "--out", str(tmp_path)], capsys)
    assert list(tmp_path.rglob("*")) == [tmp_path / "micro", tmp_path / "micro" / "x.json"]


def test_predict_refuses_a_400_digit_width_and_says_how_far_it_extrapolates(tmp_path, capsys) -> None:
    _write_results(tmp_path)
    err = _refused(["predict", "--layers", f"784,{'9' * 400},10", "--batch", "128", "--out", str(tmp_path)], capsys)
    assert "argument --layers" in err and "(407 characters)" in err
    assert "no cost model" in _refused(["predict", "--layers", "784,10", "--batch", "1", "--out",
                                        str(tmp_path / "micro")], capsys)
    assert cli.main(["predict", "--layers", "784,256,256,10", "--batch", "256", "--out", str(tmp_path)]) == 0
    inside = capsys.readouterr().out
    assert "extrapolated" not in inside and "–" in inside  # an interval where the sweep measured
    assert cli.main(["predict", "--layers", "784,100000,100000,10", "--batch", "4096", "--out", str(tmp_path)]) == 0
    far = capsys.readouterr()
    assert "extrapolated ×" in far.out and "beyond the sweep" in far.out
    line = next(ln for ln in far.out.splitlines() if ln.startswith("| numpy"))
    assert "–" not in line.split("|")[4]  # no interval that looks precise, 10^4 times beyond what was measured


def test_a_plugin_that_cannot_be_imported_is_one_line(capsys, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_PLUGINS", "no_such_plugin_module_here")
    err = _refused(["run", "--list"], capsys)
    assert "BENCH_PLUGINS" in err and "no_such_plugin_module_here" in err


def test_hostile_names_stay_on_one_line(capsys) -> None:
    err = _refused(["compare", "/no/such\nfolder", "/tmp"], capsys)
    assert "such\\nfolder" in err


# ---- one run per results folder -------------------------------------------------------------------------------

HOLDER = """
import sys
from bench.layout import ResultsDir

with ResultsDir(sys.argv[1]).lock("python -m bench run --out elsewhere"):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_run_on_the_same_folder_is_refused_and_a_dead_holder_blocks_nothing(tmp_path, capsys,
                                                                                    monkeypatch) -> None:
    out = tmp_path / "results"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                  p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)})
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(cli, "_measure", lambda *a, **k: pytest.fail("measured while another run held the lock"))
        monkeypatch.setattr(cli, "_stop_cleanly", lambda: None)
        err = _refused(["run", "--only", "^circles__numpy__default", "--out", str(out)], capsys)
        assert "is in use by another run" in err and f"pid {holder.pid} on " in err
        assert "python -m bench run --out elsewhere" in err and "UTC" in err
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the kernel releases it
        holder.wait()
    assert "elsewhere" in (out / ".lock").read_text()  # the dead holder's name is still in the file
    ran = []

    def measure_now(*args: object, **kwargs: object) -> int:
        ran.append(json.loads((out / ".lock").read_text()))
        return 0

    monkeypatch.setattr(cli, "_measure", measure_now)
    assert cli.main(["run", "--only", "^circles__numpy__default", "--out", str(out)]) == 0
    assert ran and ran[0]["pid"] == os.getpid()
    assert not (out / ".lock").exists()  # released and removed: a finished run leaves no lock file


# ---- the entry point, as a process ------------------------------------------------------------------------------


def _bench_process(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("BENCH_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120)


def test_a_reader_that_closes_the_pipe_gets_no_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # python -m bench run --list | head -1, with head long gone
    try:
        done = _bench_process("run", "--list", stdout=write_end)
    finally:
        os.close(write_end)
    assert done.stderr == "" and done.returncode == 1


def test_an_error_is_one_line_and_exit_2_in_a_real_process() -> None:
    done = _bench_process("run", "--list", "--only", "no cell has this")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("python -m bench run: error: --only")
