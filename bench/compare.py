"""``python -m bench compare OLD NEW`` and the A/A check (``python -m bench aa``).

What is compared: each cell's per-round step time with the machine taken out (the *relative step
time*).  A busy or throttled machine slows a whole round, or a whole run; comparing absolute times
would call that drift a regression.  So each round's time is divided by the round's *drift factor*
(the median, over the common cells of the same workload table, of their time in that round ÷ their
median over the run's rounds), and the new run's times by the table's *run factor* (the median over
its common cells of new ÷ old median).  Per table, because load does not slow every workload alike:
in an A/A pair whose second run had quieter neighbours, the matmul-bound throughput cells got ~25 %
faster and the overhead-bound small ones did not; one factor for all flagged 7 of 87 unchanged cells,
one per table none.  Medians, not means: a change that slows fewer than half of a table's cells (a
framework's rows, a 2x regression in one cell) leaves the reference where it was, where a mean
would make every other cell look faster.  The price: a change that slows more than half of a
table's cells alike is taken for the machine; the absolute change beside each cell, and the run
factors, show it.

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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import layout, stats
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


def _drift_free(rounds: pd.DataFrame, cells: set[str]) -> pd.DataFrame:
    """``id, round, step_s, relative`` and the table columns: each round's times ÷ the round's drift factor."""
    frame = rounds[rounds["id"].isin(cells)][["id", "round", "step_s", *TABLE]].copy()
    own = frame["step_s"] / frame.groupby("id")["step_s"].transform("median")
    frame["relative"] = frame["step_s"] / own.groupby([frame[c] for c in ["round", *TABLE]]).transform("median")
    return frame


def relative_times(old: pd.DataFrame, new: pd.DataFrame, cells: set[str]
                   ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """The relative step times of both runs over ``cells``, and each table's run factor (new ÷ old, typical cell)."""
    rel_old, rel_new = _drift_free(old, cells), _drift_free(new, cells)
    medians = pd.concat([rel_old.groupby("id")["relative"].median().rename("old"),
                         rel_new.groupby("id")["relative"].median().rename("new"),
                         rel_new.groupby("id")[TABLE].first()], axis=1).dropna(subset=["old", "new"])
    ratio = (medians["new"] / medians["old"]).groupby([medians[c] for c in TABLE]).transform("median")
    rel_new["relative"] /= rel_new["id"].map(ratio)
    factors = {_table_name(*key): float(value) for key, value in
               (medians["new"] / medians["old"]).groupby([medians[c] for c in TABLE]).median().items()}
    return rel_old, rel_new, factors


def _table_name(workload: str, point: object, dtype: str) -> str:
    return f"{workload}{f'={point}' if point != '' else ''}{f' ({dtype})' if dtype != 'float32' else ''}"


@dataclass
class Comparison:
    """The verdict per common cell, and the cells only one run has."""

    changes: pd.DataFrame
    only_old: list[str]
    only_new: list[str]
    run_factors: dict[str, float]
    min_effect: float
    alpha: float

    @property
    def flagged(self) -> int:
        return int(self.changes["verdict"].isin(["slower", "faster"]).sum()) if not self.changes.empty else 0


def compare(old: ResultsDir, new: ResultsDir, min_effect: float = stats.MIN_EFFECT,
            alpha: float = stats.ALPHA) -> Comparison:
    """Compare every cell both result directories have (usable rounds only)."""
    return compare_rounds(tables(old)["rounds"], tables(new)["rounds"], min_effect, alpha)


def compare_rounds(old_rounds: pd.DataFrame, new_rounds: pd.DataFrame, min_effect: float = stats.MIN_EFFECT,
                   alpha: float = stats.ALPHA) -> Comparison:
    """Compare two runs' usable per-round samples (:func:`bench.summary.per_round`), cell by cell."""
    old_ids, new_ids = set(old_rounds["id"]), set(new_rounds["id"])
    common = old_ids & new_ids
    rel_old, rel_new, factors = relative_times(old_rounds, new_rounds, common)
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
    return Comparison(changes, sorted(old_ids - new_ids), sorted(new_ids - old_ids), factors, min_effect, alpha)


def _mostly_disturbed(rounds: pd.DataFrame, cell_id: str) -> bool:
    """Whether most of the rounds a run has for the cell were timed while other processes loaded the machine."""
    return 2 * _disturbed(rounds, cell_id) > len(rounds[rounds["id"] == cell_id])


def _disturbed(rounds: pd.DataFrame, cell_id: str) -> int:
    """How many of the rounds a run has for the cell were timed while other processes loaded the machine."""
    return int(rounds[rounds["id"] == cell_id]["disturbed"].fillna(False).astype(bool).sum())


def markdown(comparison: Comparison) -> str:
    """The changes as a Markdown table, the largest relative slowdown first, and a one-line verdict."""
    shown = comparison.changes.copy()
    shown["verdict"] = shown["verdict"].map(lambda v: f"**{v.upper()}**" if v == "slower" else v)
    text = [shown.to_markdown(index=False, floatfmt=".3g") if not shown.empty else "(no common cells)", ""]
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
                f"{verdicts.get('too few rounds', 0)} with too few rounds to tell.  Run factors (a table's typical "
                "new ÷ old time, taken for the machine): "
                + ", ".join(f"{k} {v:.3f}" for k, v in comparison.run_factors.items()) + ".")
    return "\n".join(text)


def to_json(comparison: Comparison) -> dict:
    return {"min_effect": comparison.min_effect, "alpha": comparison.alpha, "run_factors": comparison.run_factors,
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
