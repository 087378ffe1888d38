"""Sessions: ``tests`` (the test suite), ``lint`` (ruff), ``studies``, ``bench``, ``microbench``.

``nox -s tests -- -k numpy`` passes pytest options.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite with every framework installed; a missing framework is a failure here."""
    session.install("-e", ".[all,bench,test]")  # bench: the harness and the studies are tested too
    session.env["MLP_REQUIRE_ALL"] = "1"
    # one BLAS/OpenMP thread per test process (``-- -n 2`` runs two): on a shared 2-core machine, threads that fight
    # slow everything down far more than they help
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        session.env[variable] = "1"
    session.env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the whole project."""
    session.install(".[lint]")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON)
def studies(session: nox.Session) -> None:
    """The lecture's studies in every framework: writes results/studies/ (``-- --size tiny`` for a smoke run)."""
    session.install("-e", ".[all,bench]")
    session.run("python", "-m", "studies", *session.posargs)


@nox.session(python=PYTHON)
def microbench(session: nox.Session) -> None:
    """Where a step's time goes: pytest-benchmark of forward, gradients and train_step for every registered
    implementation, mode and Keras backend (one pytest process each) into results/micro/, then its phase table.

    Options after ``--`` go to every pytest process, e.g. ``-- --benchmark-max-time=1``, or
    ``-- --benchmark-autosave --benchmark-compare --benchmark-compare-fail=median:10%`` for regressions
    (pytest-benchmark keeps the saved runs in ``.benchmarks/``).
    """
    session.install(".[all,bench]")
    session.run("python", "-m", "bench.micro", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmark every registered implementation, its native idiom and the baselines into results/, quick profile.

    ``-- --profile full``, ``-- --threads all``, ``-- --only digits``, ``-- --force`` pass options to
    ``python -m bench run``; ``-- aa`` (two runs of the same code, compared), ``-- report``,
    ``-- compare OLD NEW``, ``-- predict --layers 784,512,512,10 --batch 128`` and ``-- merge DIR... --out DIR``
    run those commands instead (see bench/README.md).
    """
    session.install(".[all,bench]")
    commands = ("run", "report", "compare", "aa", "micro-report", "predict", "merge")
    args = session.posargs if session.posargs[:1] and session.posargs[0] in commands else ["run", *session.posargs]
    session.run("python", "-m", "bench", *args)
