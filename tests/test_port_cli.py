"""``python -m impls.port`` as a command line: it never destroys a file, refuses in one line with exit status 2, and
writes scripts that run whatever their names.

A property-based test drives ``main(argv)`` in-process with random argument vectors and hostile file names; plain
tests pin each refusal and the ``.keras`` cases (Keras is imported there only); scripts written by the command run
in a process where ``import impls`` fails; three real processes check the entry point.
"""

from __future__ import annotations

import ast
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from impls import port
from impls.exchange import load, save
from impls.registry import create
from impls.spec import MLPSpec
from tests.conftest import import_or_skip

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "python -m impls.port: error: "
SPEC = MLPSpec((3, 5, 2), "tanh", "categorical_crossentropy")
MAE = MLPSpec((3, 4, 1), "relu", "mae")

HOSTILE = ['x"""+__import__("os").system("echo pwned")+"""', "back\\slash\\N{BULLET}\\x41", "{}{0}{__import__}",
           "new\nline\rreturn", "ünïcødé ✓ 中文 😀", "'''quote'", 'ends"', "tab\there", "sep\u2028arator", "-dash"]
"""File-name stems a script, a shell or a one-line message could trip over (no "/" and no NUL: a file name cannot
hold them)."""


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``main(argv)`` in-process: exit status, stdout, stderr."""
    capsys.readouterr()
    try:
        code = port.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code, out, err = _run(argv, capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and err.endswith("\n"), (argv, code, out, err)
    assert err.startswith(PREFIX) and "Traceback" not in err, err
    return err[len(PREFIX):-1]


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Every path under ``folder``: its mode and, for a file, its bytes (for a link, its target)."""
    found: dict[str, tuple[int, bytes | str | None]] = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(base) / name
            mode = path.lstat().st_mode
            content = (os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else None)
            found[str(path.relative_to(folder))] = (mode, content)
    return found


def _world(folder: Path) -> Path:
    """Sources good and bad, files in the way, links to the source."""
    model = create("numpy", SPEC, seed=0)
    save(folder / "model.npz", SPEC, model.get_params())
    save(folder / "mae.npz", MAE, create("numpy", MAE, seed=0).get_params())
    for stem in HOSTILE[:4]:
        shutil.copy(folder / "model.npz", folder / f"{stem}.npz")
    (folder / "garbage.npz").write_bytes(bytes(range(256)) * 4)
    (folder / "empty.npz").write_bytes(b"")
    (folder / "text.keras").write_text("not a Keras model\n")
    (folder / "notes.txt").write_text("notes\n")
    (folder / "folder.npz").mkdir()
    (folder / "existing.py").write_text("print('the user wrote this')\n")
    (folder / "existing.npz").write_bytes(b"the user's own weights")
    os.symlink("model.npz", folder / "link.py")  # a script name that is the source
    os.symlink("model.npz", folder / "alias.npz")  # --out alias.py would write its weights to the source
    os.link(folder / "model.npz", folder / "hard.npz")  # the same, through a hard link
    (folder / "sub").mkdir()
    return folder


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _world(tmp_path_factory.mktemp("port-cli"))


def _copy(template: Path, world: Path) -> Path:
    """A fresh copy of the world, its hard link made again (a copy breaks it)."""
    shutil.copytree(template, world, symlinks=True)
    (world / "hard.npz").unlink()
    os.link(world / "model.npz", world / "hard.npz")
    return world


# ---- the property -----------------------------------------------------------------------------------------------

SOURCES = ["model.npz", "model.npz", "mae.npz", "garbage.npz", "empty.npz", "text.keras", "notes.txt", "folder.npz",
           "missing.npz", "missing.keras", "alias.npz", "hard.npz", "sub", "", *(f"{stem}.npz" for stem in HOSTILE[:4])]
OUTS = ["train.py", "train.py", "sub/train.py", "model.npz", "model.py", "model.keras", "alias.py", "hard.py",
        "link.py", "existing.py", "folder.py", "folder.npz", "nodir/train.py", "notes.txt/train.py", "train", "",
        ".py", "new\nline.py", *(f"{stem}.py" for stem in HOSTILE)]
NUMBERS = st.sampled_from(["-1", "0", "1", "2", "1e400", "nan", "inf", "-inf", "1e-3", "0.5", "9" * 30, "9" * 5000,
                           "x", "", " 3 ", "١"])
FRAMEWORKS = st.sampled_from(["torch", "flax", "bogus", ""])  # keras is left to the plain tests: its import is slow


def _flag(name: str, value: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.one_of(st.just([]), value.map(lambda v: [name, v]), st.just([name]))  # absent, given, value missing


def _argv(world: Path) -> st.SearchStrategy[list[str]]:
    """Argument vectors in any order: well-formed ones (which mostly succeed) as often as anything else."""
    def where(name: str) -> str:
        return str(world / name) if name else name

    text = st.text(max_size=8).filter(lambda t: "/" not in t)  # a name, not a path
    name = st.one_of(st.sampled_from(SOURCES), text.map(lambda t: t + ".npz"))
    out = st.one_of(st.sampled_from(OUTS), text.map(lambda t: t + ".py"))
    anything = st.tuples(
        st.one_of(name.map(lambda n: [where(n)]), st.just([])),
        _flag("--to", FRAMEWORKS), _flag("--out", out.map(where)),
        *(_flag(flag, NUMBERS) for flag in ("--epochs", "--batch-size", "--learning-rate", "--momentum", "--lr-decay",
                                           "--steps-per-epoch")),
        st.sampled_from([[], [], ["--force"], ["--bogus"], ["-h"], ["extra"], ["--to"]]))

    def given_or_not(flag: str, values: list[str]) -> st.SearchStrategy[list[str]]:
        return st.one_of(st.just([]), st.sampled_from(values).map(lambda v: [flag, v]))

    good_sources = ["model.npz", "mae.npz", *(f"{stem}.npz" for stem in HOSTILE[:4])]
    good_outs = ["train.py", "sub/train.py", "existing.py", "alias.py", "hard.py", "link.py",
                 *(f"{stem}.py" for stem in HOSTILE)]
    well_formed = st.tuples(
        st.sampled_from(good_sources).map(lambda n: [where(n)]), st.sampled_from(["torch", "flax"]).map(
            lambda f: ["--to", f]), st.one_of(st.sampled_from(good_outs), text.map(lambda t: t + ".py")).map(
            lambda o: ["--out", where(o)]),
        given_or_not("--epochs", ["1", "3", "9" * 30]), given_or_not("--batch-size", ["1", "16", "9" * 30]),
        given_or_not("--learning-rate", ["1e-3", "0.5", "1e300"]), given_or_not("--momentum", ["0", "0.9"]),
        given_or_not("--lr-decay", ["0.5", "1"]), st.sampled_from([[], ["--force"]]))
    groups = st.one_of(well_formed, anything)
    return groups.flatmap(lambda parts: st.permutations(parts)).map(lambda parts: [a for part in parts for a in part])


@settings(max_examples=60, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_command_succeeds_or_refuses_in_one_line_and_changes_only_its_outputs(
        template: Path, data: st.DataObject, capsys: pytest.CaptureFixture) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        world = _copy(template, Path(scratch) / "world")
        argv = data.draw(_argv(world), label="argv")
        before = _snapshot(world)
        code, out, err = _run(argv, capsys)
        after = _snapshot(world)
        changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
        assert code in (0, 2), (argv, code, err)
        assert "Traceback" not in err, (argv, err)
        event(f"exit {code}")
        if code == 2:
            assert len(err.splitlines()) == 1 and err.endswith("\n") and err.startswith(PREFIX), (argv, err)
            assert out == "" and not changed, (argv, sorted(changed))
            return
        assert err == "", (argv, err)
        if "-h" in argv:
            assert out.startswith("usage: python -m impls.port") and not changed
            return
        script = Path(argv[argv.index("--out") + 1])
        weights = script.with_suffix(".npz")
        assert changed <= {str(script.relative_to(world)), str(weights.relative_to(world))}, (argv, changed)
        assert script.suffix == ".py" and script.is_file() and weights.is_file()
        if "--force" not in argv:  # both new (a replaced file may come back byte for byte)
            assert {str(script.relative_to(world)), str(weights.relative_to(world))} == changed
        ast.parse(script.read_text(encoding="utf-8"))
        assert load(weights)[0] in (SPEC, MAE)  # the sources that load
        assert (world / "model.npz").read_bytes() == (template / "model.npz").read_bytes()
        assert out.startswith("wrote ") and all(len(line) and "\r" not in line for line in out.splitlines())


# ---- the refusals, one by one -----------------------------------------------------------------------------------


def test_the_source_is_never_an_output(template: Path, tmp_path: Path, capsys) -> None:
    world = _copy(template, tmp_path / "world")
    before = _snapshot(world)
    src = str(world / "model.npz")
    cases = {  # --out: what the refusal says
        "model.npz": "the script's name must end in .py",  # the weights and the script would be one file
        "model.keras": "the script's name must end in .py",
        "model.py": f"would write its weights to {world / 'model.npz'}, which is the source",
        "link.py": f"would write the script to {world / 'link.py'}, which is the source",
        "alias.py": f"would write its weights to {world / 'alias.npz'}, which is the source",
        "folder.py": "which is a folder",
        "existing.py": f"{world / 'existing.py'} and {world / 'existing.npz'} already exist: pass --force",
        "nodir/train.py": f"the folder {world / 'nodir'} does not exist",
        "notes.txt/train.py": f"{world / 'notes.txt'} is not a folder",
    }
    for out, says in cases.items():
        assert says in _refused([src, "--to", "torch", "--out", str(world / out)], capsys), out
        if out != "existing.py":  # --force replaces an existing output, never the source
            assert says in _refused([src, "--to", "torch", "--out", str(world / out), "--force"], capsys), out
    os.link(world / "model.npz", world / "twin.npz")
    assert "which is the source" in _refused([str(world / "twin.npz"), "--to", "torch", "--out",
                                              str(world / "hard.py"), "--force"], capsys)  # hard.npz: the same inode
    assert "which is the source" in _refused([str(world / "model.npz"), "--to", "torch", "--out",
                                              str(world / "hard.py"), "--force"], capsys)
    (world / "twin.npz").unlink()
    assert _snapshot(world) == before


def test_existing_outputs_are_replaced_only_with_force_keeping_their_mode(template: Path, tmp_path: Path,
                                                                          capsys) -> None:
    world = _copy(template, tmp_path / "world")
    src, out = str(world / "model.npz"), str(world / "existing.py")
    os.chmod(out, 0o640)
    code, stdout, err = _run([src, "--to", "flax", "--out", out, "--force"], capsys)
    assert code == 0 and err == "" and stdout.startswith(f"wrote {out} and {world / 'existing.npz'}")
    assert (world / "existing.py").stat().st_mode & 0o777 == 0o640
    assert "optax" in (world / "existing.py").read_text() and load(world / "existing.npz")[0] == SPEC
    assert not [p for p in world.iterdir() if p.name.endswith(".tmp")]
    (world / "fresh.npz").write_bytes(b"the user's")  # only the weights are in the way: still refused
    assert "fresh.npz already exists: pass --force" in _refused([src, "--to", "flax", "--out",
                                                                 str(world / "fresh.py")], capsys)
    assert not (world / "fresh.py").exists() and (world / "fresh.npz").read_bytes() == b"the user's"


def test_a_failed_write_leaves_nothing_behind_and_names_the_target(template: Path, tmp_path: Path, capsys,
                                                                   monkeypatch) -> None:
    world = _copy(template, tmp_path / "world")
    before = _snapshot(world)
    src, out = str(world / "model.npz"), str(world / "train.py")

    def full_disk(path, spec, params):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("impls.exchange.save", full_disk)
    assert _refused([src, "--to", "torch", "--out", out], capsys) == \
        f"cannot write {world / 'train.npz'}: No space left on device"
    assert _snapshot(world) == before
    monkeypatch.undo()
    real_link = os.link

    def no_room_for_the_script(source, target, *args, **kwargs):
        if str(target).endswith(".py"):
            raise OSError(errno.EDQUOT, "Disk quota exceeded", str(source))
        return real_link(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "link", no_room_for_the_script)
    assert _refused([src, "--to", "torch", "--out", out], capsys) == f"cannot write {out}: Disk quota exceeded"
    assert _snapshot(world) == before  # the weights, placed first, are removed again; no temporary file is left


def test_bad_numbers_and_flags_are_refused_by_name(template: Path, tmp_path: Path, capsys) -> None:
    world = _copy(template, tmp_path / "world")
    src, out = str(world / "model.npz"), str(world / "train.py")
    cases = [(["--epochs", "0"], "epochs must be an int >= 1, got 0"),
             (["--epochs", "1e400"], "argument --epochs: invalid int value: '1e400'"),
             (["--epochs", "9" * 5000], "argument --epochs: invalid int value"),
             (["--learning-rate", "nan"], "learning_rate must be in (0, inf), got nan"),
             (["--learning-rate", "1e400"], "learning_rate must be in (0, inf), got inf"),
             (["--learning-rate", "-1"], "learning_rate must be in (0, inf), got -1.0"),
             (["--momentum", "1"], "momentum must be in [0, 1), got 1.0"),
             (["--lr-decay", "2"], "lr_decay must be in (0, 1], got 2.0"),
             (["--batch-size", "-1"], "batch_size must be an int >= 1, got -1"),
             (["--steps-per-epoch", "3"], "--steps-per-epoch reads a Keras schedule: a .npz source has none"),
             (["--bogus"], "unrecognized arguments: --bogus"),
             (["--out"], "argument --out: expected one argument")]
    for extra, says in cases:
        assert says in _refused([src, "--to", "torch", "--out", out, *extra], capsys), extra
    assert "argument --to: invalid choice: 'numpy'" in _refused([src, "--to", "numpy", "--out", out], capsys)
    assert "the following arguments are required: --to" in _refused([src, "--out", out], capsys)
    assert "no such file" in _refused([str(world / "missing.npz"), "--to", "torch", "--out", out], capsys)
    assert "is a folder, not a .keras or .npz file" in _refused([str(world / "folder.npz"), "--to", "torch", "--out",
                                                                  out], capsys)
    assert "expected a .keras or .npz file" in _refused([str(world / "notes.txt"), "--to", "torch", "--out", out],
                                                        capsys)
    assert "not a readable .npz archive" in _refused([str(world / "garbage.npz"), "--to", "torch", "--out", out],
                                                     capsys)
    assert "Optax has no mean absolute error" in _refused([str(world / "mae.npz"), "--to", "flax", "--out", out],
                                                          capsys)
    assert "the source's name contains a NUL" in _refused(["mo\0del.npz", "--to", "torch", "--out", out], capsys)
    hostile = _refused([str(world / "new\nline.npz"), "--to", "torch", "--out", out], capsys)
    assert "new\\nline.npz: no such file" in hostile  # escaped: the message stays one line
    assert not (world / "train.py").exists() and not (world / "train.npz").exists()


def test_help_prints_the_usage_and_exits_0(capsys) -> None:
    code, out, err = _run(["--help"], capsys)
    assert code == 0 and err == "" and "--force" in out and "--out" in out


# ---- .keras sources (Keras imported here only) ------------------------------------------------------------------


def test_keras_files_that_keras_cannot_read_are_one_line_errors(tmp_path: Path, capsys) -> None:
    keras = import_or_skip("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="binary_crossentropy")
    model.save(tmp_path / "model.keras")
    good = (tmp_path / "model.keras").read_bytes()
    (tmp_path / "text.keras").write_text("not a model\n")
    (tmp_path / "cut.keras").write_bytes(good[: len(good) // 2])
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:  # a zip archive, but not Keras's
        archive.writestr("config.json", "{not json")
    out = str(tmp_path / "train.py")
    before = _snapshot(tmp_path)
    assert "text.keras is not a Keras model file" in _refused([str(tmp_path / "text.keras"), "--to", "torch",
                                                                "--out", out], capsys)
    assert "cut.keras is not a Keras model file" in _refused([str(tmp_path / "cut.keras"), "--to", "torch", "--out",
                                                               out], capsys)
    assert "other.keras: Keras cannot read it (" in _refused([str(tmp_path / "other.keras"), "--to", "torch",
                                                              "--out", out], capsys)
    assert "--learning-rate sets the training of a .npz source" in _refused(
        [str(tmp_path / "model.keras"), "--to", "torch", "--out", out, "--learning-rate", "0.3"], capsys)
    assert "--out" in _refused([str(tmp_path / "model.keras"), "--to", "torch", "--out", str(tmp_path / "model.keras")],
                               capsys)
    assert _snapshot(tmp_path) == before
    code, stdout, err = _run([str(tmp_path / "model.keras"), "--to", "torch", "--out", out], capsys)
    assert code == 0 and err == "" and stdout.startswith(f"wrote {out}")  # Keras's warnings, if any: notes on stdout
    assert (tmp_path / "model.keras").read_bytes() == good


# ---- scripts the command writes run, whatever their names: one per framework ----------------------------------------

BLOCK_IMPLS = ("import runpy, sys; sys.modules['impls'] = None; "
               "runpy.run_path(sys.argv[1], run_name='__main__')")
"""Runs the script named by the first argument with this project unimportable."""


def _run_script(script: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_IMPLS, script.name], cwd=script.parent, capture_output=True,
                          text=True, env={"PATH": "", "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"},
                          timeout=300)


@pytest.mark.parametrize("framework", ["torch", "keras", "flax"])
def test_a_script_with_a_hostile_name_runs_and_finds_its_weights(framework: str, tmp_path: Path, capsys) -> None:
    import_or_skip(framework)
    index = ["torch", "keras", "flax"].index(framework)
    stem, source = HOSTILE[index], tmp_path / f"{HOSTILE[index + 3]}.npz"  # hostile script and source names
    save(source, SPEC, create("numpy", SPEC, seed=0).get_params())
    script = tmp_path / f"{stem}.py"
    code, _, err = _run([str(source), "--to", framework, "--out", str(script), "--epochs", "2", "--momentum", "0.9"],
                        capsys)
    assert code == 0 and err == ""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    weights = next(node.value.right.value for node in tree.body if isinstance(node, ast.Assign)
                   and getattr(node.targets[0], "id", "") == "WEIGHTS")
    assert weights == f"{stem}.npz"
    np.savez(tmp_path / "data.npz", X=np.random.default_rng(0).normal(size=(20, 3)), y=np.arange(20) % 2)
    done = _run_script(script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pwned" not in done.stdout
    trained = np.load(tmp_path / f"{stem}.trained.npz")
    assert sorted(trained.files) == ["W0", "W1", "b0", "b1"] and not np.allclose(trained["W0"],
                                                                                 load(source)[1][0][0])


# ---- the real entry point ---------------------------------------------------------------------------------------


def _process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "impls.port", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_the_entry_point_exits_0_or_2_with_one_line(tmp_path: Path) -> None:
    save(tmp_path / "model.npz", SPEC, create("numpy", SPEC, seed=0).get_params())
    done = _process("model.npz", "--to", "torch", "--out", "train.py", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "" and done.stdout.startswith("wrote train.py and train.npz")
    again = _process("model.npz", "--to", "torch", "--out", "train.py", cwd=tmp_path)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == f"{PREFIX}train.py and train.npz already exist: pass --force to replace\n"
    usage = _process("--help", cwd=tmp_path)
    assert usage.returncode == 0 and "usage: python -m impls.port" in usage.stdout
