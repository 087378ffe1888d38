"""``python -m bench compare OLD NEW`` and the A/A check (``python -m bench aa``).

What is compared: each cell's per-round step time, with the machine's drift taken out where many cells
can tell it apart from the code (the *relative step time*).  A busy or throttled machine slows a whole
round, or a whole run; comparing absolute times would call that drift a regression.  So, in a workload
table with at least :data:`MIN_DRIFT_CELLS` common cells, each round's time is divided by the round's
*round factor* (the median, over the table's common cells, of their time in that round ÷ their median
over the run's rounds), and the new run's times by the table's *drift factor* (the median over its
common cells of new ÷ old median).  Per table, because load does not slow every workload alike: in an
A/A pair whose second run had quieter neighbours, the matmul-bound throughput cells got ~25 % faster
and the overhead-bound small ones did not; one factor for all flagged 7 of 87 unchanged cells, one per
table none.  Medians, not means: a change that slows fewer than half of a table's cells (a framework's
rows, a 2x regression in one cell) leaves the reference where it was, where a mean would make every
other cell look faster.

The correction is bounded, so that it cannot explain away a change the rounds show:

- with fewer than :data:`MIN_DRIFT_CELLS` common cells in a table there is no correction at all: the
  median of one cell *is* that cell, and of three cells that all slowed is their slowdown;
- the drift factor is capped at ±:data:`MAX_DRIFT` (1/1.3 to 1.3): beyond that the machine itself
  changed between the runs, the report says so, and absolute times are not comparable (ratios are);
- the factor used, and how it was obtained, is printed for every table.

The price: a change that slows more than half of a large table's cells alike, by less than the cap, is
taken for the machine; the absolute change beside each cell, and the drift factors, show it.  Runs
measured on different machines (:func:`bench.env.machine_id` of their records) get a warning: only
ratios compare across machines.

Verdict per cell (:func:`bench.stats.judge`): *slower*/*faster* when the Mann-Whitney U test over the
rounds' relative times gives p < 0.05 **and** the median changed by more than 10 % and by more than
three standard errors (from the rounds' spread), **and** the absolute times, judged the same way, say
the same; else within noise.  The relative times remove drift that the cell shares with its table,
and import the table's noise: a NumPy cell whose times did not move at all (-1.8 %) looked 12 %
slower because the noisy cells around it got faster.  Asking both closes both doors, and a real 2x
slowdown passes both.  Rounds are the samples: 5 vs 5
rounds reach p = 0.008 when every round of one run is above every round of the other, which a real
2x slowdown does; 3 vs 3 never could (p >= 0.1), and such a cell is reported as "too few rounds".

A change beyond the noise in a cell whose rounds were mostly disturbed, in either run, is
"disturbed: cannot tell": under other processes' load (measured per round, :mod:`bench.disturbance`)
a 0.3 ms step took 1 ms in one run and 0.3 ms in the other, a difference of the machine that no
statistic on the times can remove.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench import env, layout, stats
from bench.layout import ResultsDir
from bench.report import tables

DISTURBED = "disturbed: cannot tell"
"""The verdict of a change beyond the noise in a cell whose rounds, in either run, were mostly disturbed
(:mod:`bench.disturbance`): the times measured the other processes as much as the code."""

AA_AGREEMENT = 0.10
"""The A/A check: two runs of the same code should give every cell's × fastest within ±10 % ..."""
AA_SHARE = 0.90
"""... for at least 90 % of the cells, and ``compare`` should flag none."""


TABLE = ["workload", "point", "dtype"]
"""The cells that share a drift factor: those of one workload table."""

MIN_DRIFT_CELLS = 8
"""A table's drift is estimated (and divided out) only from at least this many common cells."""
MAX_DRIFT = 0.30
"""The largest drift factor divided out: new ÷ old between 1 / 1.3 and 1.3."""


@dataclass(frozen=True)
class Drift:
    """One table's machine drift between the runs: ``estimate`` (the median over its ``cells`` common cells of
    new ÷ old, ``None`` with fewer than :data:`MIN_DRIFT_CELLS`) and ``used``, the factor the new run's times
    were divided by (the estimate, capped at ±:data:`MAX_DRIFT`; 1 without an estimate)."""

    cells: int
    estimate: float | None
    used: float

    @property
    def capped(self) -> bool:
        return self.estimate is not None and self.used != self.estimate

    def describe(self) -> str:
        if self.estimate is None:
            return f"×1 (not corrected: {self.cells} cells, fewer than {MIN_DRIFT_CELLS})"
        if self.capped:
            return (f"×{self.used:.3f} (capped: the median over {self.cells} cells is ×{self.estimate:.3f}, "
                    f"beyond ±{MAX_DRIFT:.0%})")
        return f"×{self.used:.3f} (median over {self.cells} cells)"


def _drift_table(frame: pd.DataFrame) -> pd.Series:
    """Per line of ``frame``: whether its table has enough common cells for a drift estimate."""
    return frame.groupby(TABLE)["id"].transform("nunique") >= MIN_DRIFT_CELLS


def _drift_free(rounds: pd.DataFrame, cells: set[str]) -> pd.DataFrame:
    """``id, round, step_s, relative`` and the table columns: each round's times ÷ the round's factor (tables with
    enough cells; elsewhere ``relative`` is the time itself)."""
    frame = rounds[rounds["id"].isin(cells)][["id", "round", "step_s", *TABLE]].copy()
    own = frame["step_s"] / frame.groupby("id")["step_s"].transform("median")
    factor = own.groupby([frame[c] for c in ["round", *TABLE]]).transform("median")
    frame["relative"] = frame["step_s"] / factor.where(_drift_table(frame), 1.0)
    return frame


def relative_times(old: pd.DataFrame, new: pd.DataFrame, cells: set[str]
                   ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Drift]]:
    """The relative step times of both runs over ``cells``, and each table's :class:`Drift` (new ÷ old, typical
    cell), already divided out of the new run's relative times."""
    rel_old, rel_new = _drift_free(old, cells), _drift_free(new, cells)
    medians = pd.concat([rel_old.groupby("id")["relative"].median().rename("old"),
                         rel_new.groupby("id")["relative"].median().rename("new"),
                         rel_new.groupby("id")[TABLE].first()], axis=1).dropna(subset=["old", "new"])
    drifts: dict[tuple, Drift] = {}
    for key, group in medians.groupby(TABLE):
        if len(group) >= MIN_DRIFT_CELLS:
            estimate = float((group["new"] / group["old"]).median())
            drifts[key] = Drift(len(group), estimate, float(np.clip(estimate, 1 / (1 + MAX_DRIFT), 1 + MAX_DRIFT)))
        else:
            drifts[key] = Drift(len(group), None, 1.0)
    used = {key: d.used for key, d in drifts.items()}
    rel_new["relative"] /= [used.get(tuple(k), 1.0) for k in rel_new[TABLE].itertuples(index=False)]
    return rel_old, rel_new, {_table_name(*key): d for key, d in drifts.items()}


def _table_name(workload: str, point: object, dtype: str) -> str:
    return f"{workload}{f'={point}' if point != '' else ''}{f' ({dtype})' if dtype != 'float32' else ''}"


@dataclass
class Comparison:
    """The verdict per common cell, the cells only one run has, the drift divided out, and the machines."""

    changes: pd.DataFrame
    only_old: list[str]
    only_new: list[str]
    drift: dict[str, Drift]
    min_effect: float
    alpha: float
    machines: tuple[list[str], list[str]] = field(default_factory=lambda: ([], []))
    """The :func:`bench.env.machine_id` of the records of OLD and of NEW."""

    @property
    def flagged(self) -> int:
        return int(self.changes["verdict"].isin(["slower", "faster"]).sum()) if not self.changes.empty else 0

    @property
    def run_factors(self) -> dict[str, float]:
        """The drift factor divided out of each table's new times."""
        return {table: d.used for table, d in self.drift.items()}

    @property
    def other_machine(self) -> str | None:
        """A warning when the runs were measured on different kinds of machine, else ``None``."""
        old, new = self.machines
        if not old or not new or set(old) == set(new):
            return None
        return (f"OLD was measured on machine {', '.join(old)} and NEW on {', '.join(new)} (CPU model, cores or "
                "memory differ): their step times are not comparable, only ratios (× fastest, adapter overhead) are")


def compare(old: ResultsDir, new: ResultsDir, min_effect: float = stats.MIN_EFFECT,
            alpha: float = stats.ALPHA) -> Comparison:
    """Compare every cell both result directories have (usable rounds only); ``ValueError`` when one holds no
    records."""
    before, after = tables(old), tables(new)
    for name, results, found in (("OLD", old, before), ("NEW", new, after)):
        if not found["records"]:
            raise ValueError(f"{name} {str(results.root)!r} holds no benchmark records ({layout.RAW}/r*/*.json)")
    comparison = compare_rounds(before["rounds"], after["rounds"], min_effect, alpha)
    comparison.machines = (_machines(before["records"]), _machines(after["records"]))
    return comparison


def _machines(records: list[dict]) -> list[str]:
    return sorted({env.machine_id(r.get("environment") or {}) for r in records if r.get("environment")})


def compare_rounds(old_rounds: pd.DataFrame, new_rounds: pd.DataFrame, min_effect: float = stats.MIN_EFFECT,
                   alpha: float = stats.ALPHA) -> Comparison:
    """Compare two runs' usable per-round samples (:func:`bench.summary.per_round`), cell by cell."""
    old_ids, new_ids = set(old_rounds["id"]), set(new_rounds["id"])
    common = old_ids & new_ids
    rel_old, rel_new, drift = relative_times(old_rounds, new_rounds, common)
    lines = []
    for cell_id in sorted(common):
        before = rel_old[rel_old["id"] == cell_id]["relative"].to_numpy()
        after = rel_new[rel_new["id"] == cell_id]["relative"].to_numpy()
        old_times = old_rounds[old_rounds["id"] == cell_id]["step_s"].to_numpy()
        new_times = new_rounds[new_rounds["id"] == cell_id]["step_s"].to_numpy()
        old_s, new_s = float(np.median(old_times)), float(np.median(new_times))
        line = {"cell": cell_id, "old ms": old_s * 1e3, "new ms": new_s * 1e3,
                "absolute change %": (new_s / old_s - 1) * 100,
                "rounds": f"{len(before)}/{len(after)}"}
        if len(before) and len(after) and stats.smallest_p(len(before), len(after)) < alpha:
            verdict, p, ratio = stats.judge(before, after, min_effect, alpha)
            if verdict != stats.judge(old_times, new_times, min_effect, alpha)[0]:
                verdict = "within noise"  # the absolute times disagree: the reference moved, not the cell
            if verdict != "within noise" and (_mostly_disturbed(old_rounds, cell_id)
                                              or _mostly_disturbed(new_rounds, cell_id)):
                verdict = DISTURBED
            line.update({"relative change %": (ratio - 1) * 100, "p": p, "verdict": verdict})
        else:
            line.update({"relative change %": np.nan, "p": np.nan, "verdict": "too few rounds"})
        line["disturbed rounds"] = f"{_disturbed(old_rounds, cell_id)}/{_disturbed(new_rounds, cell_id)}"
        lines.append(line)
    changes = pd.DataFrame(lines, columns=["cell", "old ms", "new ms", "absolute change %", "relative change %", "p",
                                           "rounds", "disturbed rounds", "verdict"])
    changes = changes.sort_values("relative change %", ascending=False, na_position="last")
    return Comparison(changes, sorted(old_ids - new_ids), sorted(new_ids - old_ids), drift, min_effect, alpha)


def _mostly_disturbed(rounds: pd.DataFrame, cell_id: str) -> bool:
    """Whether most of the rounds a run has for the cell were timed while other processes loaded the machine."""
    return 2 * _disturbed(rounds, cell_id) > len(rounds[rounds["id"] == cell_id])


def _disturbed(rounds: pd.DataFrame, cell_id: str) -> int:
    """How many of the rounds a run has for the cell were timed while other processes loaded the machine."""
    return int(rounds[rounds["id"] == cell_id]["disturbed"].fillna(False).astype(bool).sum())


def markdown(comparison: Comparison) -> str:
    """The changes as a Markdown table, the largest relative slowdown first, a one-line verdict, and the drift
    factors divided out (with how they were obtained); warnings first."""
    shown = comparison.changes.copy()
    shown["verdict"] = shown["verdict"].map(lambda v: f"**{v.upper()}**" if v == "slower" else v)
    text = []
    if comparison.other_machine:
        text += [f"**Different machines**: {comparison.other_machine}.", ""]
    capped = {k: d for k, d in comparison.drift.items() if d.capped}
    if capped:
        text += ["**The machine drifted** between the runs beyond the ±" f"{MAX_DRIFT:.0%} the comparison divides out ("
                 + ", ".join(f"{k}: new ÷ old ×{d.estimate:.3f}" for k, d in capped.items())
                 + "): absolute times are off, and cells flagged there may be the machine; compare ratios "
                 "(× fastest, adapter overhead) instead.", ""]
    text += [shown.to_markdown(index=False, floatfmt=".3g") if not shown.empty else "(no common cells)", ""]
    if comparison.only_old:
        text += [f"only in OLD: {', '.join(comparison.only_old)}", ""]
    if comparison.only_new:
        text += [f"only in NEW: {', '.join(comparison.only_new)}", ""]
    verdicts = comparison.changes["verdict"].value_counts().to_dict() if not shown.empty else {}
    text.append(f"{len(shown)} cells compared: {verdicts.get('slower', 0)} slower, {verdicts.get('faster', 0)} faster "
                f"beyond the noise (Mann-Whitney two-sided p < {comparison.alpha} and a change above "
                f"{comparison.min_effect:.0%} and {stats.NOISE_Z:g} standard errors, in the rounds' relative step "
                "times and in the absolute ones), "
                f"{verdicts.get(DISTURBED, 0)} changed while other processes loaded the machine (cannot tell), "
                f"{verdicts.get('too few rounds', 0)} with too few rounds to tell.")
    text += ["", f"Machine drift divided out of the new run (per table: the median over its common cells of new ÷ old, "
             f"only with {MIN_DRIFT_CELLS} or more cells, capped at ±{MAX_DRIFT:.0%}): "
             + ("; ".join(f"{k} {d.describe()}" for k, d in comparison.drift.items()) or "none (no common cells)")
             + "."]
    return "\n".join(text)


def to_json(comparison: Comparison) -> dict:
    return {"min_effect": comparison.min_effect, "alpha": comparison.alpha, "run_factors": comparison.run_factors,
            "drift": {k: {"cells": d.cells, "estimate": d.estimate, "used": d.used, "capped": d.capped}
                      for k, d in comparison.drift.items()},
            "machines": {"old": comparison.machines[0], "new": comparison.machines[1]},
            "flagged": comparison.flagged,
            "changes": comparison.changes.replace({np.nan: None}).to_dict(orient="records"),
            "only_old": comparison.only_old, "only_new": comparison.only_new}


def aa_check(a: ResultsDir, b: ResultsDir, comparison: Comparison) -> tuple[pd.DataFrame, dict]:
    """× fastest of every common cell in both runs, and whether the A/A targets hold."""
    cells_a, cells_b = tables(a)["cells"], tables(b)["cells"]
    columns = ["id", "x_fastest_median"]
    both = cells_a[columns].merge(cells_b[columns], on="id", suffixes=(" A", " B")).dropna()
    both["B/A"] = both["x_fastest_median B"] / both["x_fastest_median A"]
    both["within"] = (both["B/A"] - 1).abs() <= AA_AGREEMENT
    share = float(both["within"].mean()) if len(both) else float("nan")
    verdict = {"cells": len(both), "within_share": share, "within_target": AA_SHARE, "agreement": AA_AGREEMENT,
               "flagged": comparison.flagged,
               "passed": bool(len(both) and share >= AA_SHARE and comparison.flagged == 0)}
    return both.rename(columns={"id": "cell", "x_fastest_median A": "× fastest A",
                                "x_fastest_median B": "× fastest B"}), verdict


def write_aa(root: ResultsDir, a: ResultsDir, b: ResultsDir) -> dict:
    """Compare run ``a`` with run ``b`` and write ``aa/compare.md`` and ``aa/compare.json``; returns the verdict."""
    comparison = compare(a, b)
    agreement, verdict = aa_check(a, b, comparison)
    status = "passed" if verdict["passed"] else "FAILED"
    text = ["# A/A check: two runs of the same code", "",
            f"**{status}**: × fastest within ±{AA_AGREEMENT:.0%} for {int(agreement['within'].sum())} of "
            f"{verdict['cells']} cells ({verdict['within_share']:.0%}; target ≥ {AA_SHARE:.0%}); compare flagged "
            f"{verdict['flagged']} cells (target 0).", "",
            f"Runs: `{_relative(a, root)}` (A) and `{_relative(b, root)}` (B).", "",
            "## compare A B", "", markdown(comparison), "", "## × fastest, run by run", "",
            agreement.to_markdown(index=False, floatfmt=".3g") if not agreement.empty else "(no common cells)", ""]
    aa_dir = root.aa
    aa_dir.mkdir(parents=True, exist_ok=True)
    (aa_dir / layout.COMPARE_MD).write_text("\n".join(text))
    layout.write_json(aa_dir / layout.COMPARE_JSON, {"verdict": verdict, "compare": to_json(comparison),
                                                     "x_fastest": agreement.to_dict(orient="records")})
    return verdict


def _relative(results: ResultsDir, root: ResultsDir) -> Path:
    try:
        return results.root.relative_to(root.root)
    except ValueError:
        return results.root
