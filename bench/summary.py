"""From records to tables (pandas): one sample per cell and round, ratios per round, summaries over rounds.

* ``samples``: one line per cell record (``ok`` or ``error``).  A sample is *usable* when it is ok
  and was not left disturbed after its retries; a cell with too few undisturbed rounds
  (:data:`MIN_CALM_ROUNDS`) keeps all its ok rounds (and says so in its ``disturbed`` count).
* per round: ``x_fastest`` = the cell's step time ÷ the fastest usable cell of the same workload
  (and dtype, sweep point) in the same round; ``overhead`` = a spec row's step time ÷ its native
  row's (same implementation, backend, mode, workload) in the same round; ``pct_of_ceiling`` for
  speed-only workloads = the step's GFLOP/s ÷ the round's ceiling.  Ratios are formed inside a
  round, where both numbers saw the same machine, and only then summarized.
* ``summary``: one line per cell: medians over rounds with 95 % bootstrap intervals.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench import rows as rows_mod
from bench import stats, workloads

CELL_COLUMNS = ["id", "workload", "point", "dtype", "row", "implementation", "backend", "variant", "mode"]
"""What identifies a cell in every table."""


def _point(params: dict) -> object:
    return params.get("value", "") if params else ""


def samples_frame(records: list[dict]) -> pd.DataFrame:
    """One line per cell record: identity, round, status, the round's step time, disturbance, metrics, memory."""
    lines = []
    for r in records:
        if r["kind"] != "cell":
            continue
        task = r["task"]
        line = {"id": task["id"], "workload": task["workload"], "point": _point(task["params"]),
                "dtype": task["dtype"], "row": task.get("row", task["implementation"]),
                "implementation": task["implementation"], "backend": task.get("backend") or "",
                "variant": task["variant"], "mode": task["mode"], "round": r["round"], "status": r["status"],
                "error": (r.get("error") or "").splitlines()[0][:300] if r["status"] != "ok" else "",
                "import_s": (r.get("worker") or {}).get("import_s")}
        if r["status"] == "ok":
            memory = r.get("memory") or {}
            last = (r.get("attempts") or [{}])[-1]
            line.update(step_s=r["step_s"], retimed=r.get("retimed", 0), disturbed=bool(r.get("disturbed")),
                        other_cpus=last.get("other_cpus"), first_step_s=r.get("first_step_s"),
                        first_epoch_s=r.get("first_epoch_s"), epochs_run=r.get("epochs_run"),
                        best_epoch=r.get("best_epoch"), stopped_epoch=r.get("stopped_epoch"),
                        steps_per_epoch=r.get("steps_per_epoch"), samples_per_epoch=r.get("samples_per_epoch"),
                        peak_rss_mib=memory.get("peak_rss_mib"), rss_rise_mib=memory.get("rss_rise_mib"),
                        tta_s=time_to_accuracy(r), **(r.get("metrics") or {}))
        lines.append(line)
    frame = pd.DataFrame(lines, columns=None if lines else [*CELL_COLUMNS, "round", "status"])
    for column in ("step_s", "retimed", "disturbed", "other_cpus"):
        if column not in frame:
            frame[column] = np.nan
    return frame


def accuracy_target(workload: str) -> float | None:
    """The workload's accuracy target (``None``: it has none, or is no longer defined)."""
    found = workloads.WORKLOADS.get(workload)
    return found.accuracy_target if found is not None else None


def time_to_accuracy(record: dict) -> float | None:
    """Seconds from the worker's process start to the end of the first epoch whose test accuracy reaches the
    workload's target: the worker's start-up (interpreter, imports) plus the training run's time to that epoch
    (build, conversion, compilation this run does, updates, evaluations).  ``inf``: not reached; ``None``: not
    measured (no target, no curve: native rows, older records)."""
    target = accuracy_target(record["task"]["workload"])
    curve = record.get("accuracy_curve")
    startup = (record.get("worker") or {}).get("startup_s")
    if target is None or not curve or startup is None:
        return None
    reached = [seconds for seconds, accuracy in curve if accuracy >= target]
    return startup + reached[0] if reached else math.inf


def epochs_frame(records: list[dict]) -> pd.DataFrame:
    """Every timed epoch's step time: ``id, round, epoch, step_time_s`` (epochs after warm-up, from 0)."""
    lines = [{"id": r["task"]["id"], "round": r["round"], "epoch": i, "step_time_s": t}
             for r in records if r["kind"] == "cell" and r["status"] == "ok"
             for i, t in enumerate(r["step_times_s"])]
    return pd.DataFrame(lines, columns=["id", "round", "epoch", "step_time_s"])


def ceiling_frame(records: list[dict]) -> pd.DataFrame:
    """One line per ceiling record: library, round, GFLOP/s of the fastest block, disturbance."""
    lines = [{"library": r["task"]["library"], "round": r["round"], "workload": r["task"]["workload"],
              "status": r["status"], "gflops": r.get("gflops"), "disturbed": bool(r.get("disturbed")),
              "error": (r.get("error") or "")[:300]}
             for r in records if r["kind"] == "ceiling"]
    return pd.DataFrame(lines, columns=["library", "round", "workload", "status", "gflops", "disturbed", "error"])


def run_ceiling(ceiling: pd.DataFrame) -> dict[str, object] | None:
    """The run's ceiling: per round the best library, then the median over rounds, its interval and range."""
    ok = ceiling[ceiling["status"] == "ok"]
    if ok.empty:
        return None
    per_round = ok.groupby("round")["gflops"].max()
    summary = stats.summarize(per_round.to_numpy())
    by_library = ok.groupby("library")["gflops"].median().to_dict()
    return {**summary, "per_round": per_round.to_dict(), "by_library": by_library,
            "workload": ok["workload"].iloc[0]}


MIN_CALM_ROUNDS = 4
"""Disturbed rounds are left out only where at least this many undisturbed ones remain (enough for
``compare``'s rank test to reach p < 0.05); otherwise a cell keeps every ok round."""


def mark_usable(samples: pd.DataFrame) -> pd.DataFrame:
    """Add ``usable``: the undisturbed ok rounds of a cell that has :data:`MIN_CALM_ROUNDS` of them, else every ok
    round."""
    out = samples.copy()
    ok = out["status"] == "ok"
    calm = ok & ~out["disturbed"].fillna(False).astype(bool)
    enough_calm = calm.groupby(out["id"]).transform("sum") >= MIN_CALM_ROUNDS
    out["usable"] = calm | (ok & ~enough_calm)
    return out


def per_round(samples: pd.DataFrame, ceiling: pd.DataFrame) -> pd.DataFrame:
    """Usable samples with the per-round ratios ``x_fastest``, ``overhead``, ``gflops`` and ``pct_of_ceiling``."""
    used = mark_usable(samples)
    used = used[used["usable"]].copy()
    if used.empty:
        return used.assign(x_fastest=[], overhead=[], gflops=[], pct_of_ceiling=[])
    table = ["workload", "point", "dtype", "round"]
    used["x_fastest"] = used["step_s"] / used.groupby(table)["step_s"].transform("min")
    pair = ["implementation", "backend", "mode", *table]
    native = used[used["variant"] == rows_mod.NATIVE][[*pair, "step_s"]].rename(columns={"step_s": "native_s"})
    used = used.merge(native, on=pair, how="left")
    used["overhead"] = np.where(used["variant"] == rows_mod.SPEC, used["step_s"] / used["native_s"], np.nan)
    used = used.drop(columns="native_s")
    points = used[["workload", "point"]].drop_duplicates().itertuples(index=False)
    flops = {(w, p): flops_per_step(w, p) for w, p in points}
    used["gflops"] = [flops[(w, p)] / s / 1e9 if flops[(w, p)] else np.nan
                      for w, p, s in used[["workload", "point", "step_s"]].itertuples(index=False)]
    ok = ceiling[ceiling["status"] == "ok"]
    best = ok.groupby("round")["gflops"].max().rename("ceiling_gflops").reset_index()
    used = used.merge(best, on="round", how="left")
    used["pct_of_ceiling"] = 100.0 * used["gflops"] / used["ceiling_gflops"]
    return used


def flops_per_step(workload: str, point: object) -> int | None:
    """FLOPs per step of a speed-only workload (``None`` for the others, or a workload no longer defined)."""
    try:
        found = workloads.get(workload, {"value": point} if point != "" else None)
    except ValueError:
        return None
    return found.flops_per_step() if found.speed_only else None


def summarize_cells(samples: pd.DataFrame, rounds: pd.DataFrame) -> pd.DataFrame:
    """One line per cell: medians over rounds (with intervals) of step time and ratios, metrics' mean ± std."""
    lines = []
    for cell_id, cell in samples.groupby("id", sort=False):
        first = cell.iloc[0]
        line = {c: first[c] for c in CELL_COLUMNS}
        ok = cell[cell["status"] == "ok"]
        used = rounds[rounds["id"] == cell_id]
        line.update(rounds=len(cell), ok=len(ok), errors=int((cell["status"] != "ok").sum()),
                    retimed=int(ok["retimed"].fillna(0).sum()), disturbed=int(ok["disturbed"].fillna(False).sum()),
                    used=len(used), error=next((e for e in cell["error"] if e), ""))
        for name in ("step_s", "x_fastest", "overhead", "gflops", "pct_of_ceiling"):
            values = used[name].dropna().to_numpy() if name in used else []
            if len(values):
                for key, value in stats.summarize(values).items():
                    if key in ("median", "ci_low", "ci_high"):
                        line[f"{name}_{key}"] = value
        if "step_s_median" in line and pd.notna(first.get("steps_per_epoch")):
            line["samples_per_s"] = first["samples_per_epoch"] / (line["step_s_median"] * first["steps_per_epoch"])
        for name in ("import_s", "peak_rss_mib", "rss_rise_mib", "epochs_run", "other_cpus"):
            if name in ok and ok[name].notna().any():
                line[name] = float(ok[name].median())
        tta = used["tta_s"].dropna().to_numpy() if "tta_s" in used else []
        if len(tta):  # the median over seeds, inf (not reached) when most did not reach the target
            line.update(tta_s_median=float(np.median(tta)), tta_reached=int(np.isfinite(tta).sum()), tta_n=len(tta))
        firsts = ok.sort_values("round")["first_step_s"].dropna() if "first_step_s" in ok else []
        line["first_step_s"] = float(firsts.iloc[0]) if len(firsts) else np.nan
        for name in [c for c in ok.columns if c.startswith(("train_", "test_"))]:
            values = used[name].dropna() if name in used else []
            if len(values):
                line[f"{name}_mean"] = float(values.mean())
                line[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        lines.append(line)
    return pd.DataFrame(lines)
