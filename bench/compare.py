"""``python -m bench compare OLD NEW``: the change per cell between two result sets.

A cell is flagged *slower* only when the change is beyond the noise: the new
median exceeds the old one by more than ``threshold`` (10 %) *and* the two runs'
interquartile ranges do not overlap (new Q1 above old Q3).  *faster* is the mirror
image.  Everything else is reported as within noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.report import load_records


@dataclass(frozen=True)
class Change:
    """One cell in both result sets."""

    id: str
    old_median: float
    new_median: float
    ratio: float
    verdict: str  # "slower", "faster" or "~"


def judge(old: dict, new: dict, threshold: float = 0.10) -> str:
    """``slower`` / ``faster`` when beyond both the relative threshold and the IQRs, else ``~``."""
    if new["median"] > old["median"] * (1 + threshold) and new["q1"] > old["q3"]:
        return "slower"
    if new["median"] < old["median"] / (1 + threshold) and new["q3"] < old["q1"]:
        return "faster"
    return "~"


def _by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in load_records(path) if r.get("status") == "ok"}


def compare(old_dir: Path, new_dir: Path, threshold: float = 0.10) -> tuple[list[Change], list[str], list[str]]:
    """Changes of the cells present (and ok) in both; plus ids only in OLD and only in NEW."""
    old, new = _by_id(Path(old_dir)), _by_id(Path(new_dir))
    changes = []
    for cell_id in old.keys() & new.keys():
        o, n = old[cell_id]["step_time_s"], new[cell_id]["step_time_s"]
        changes.append(Change(cell_id, o["median"], n["median"], n["median"] / o["median"], judge(o, n, threshold)))
    changes.sort(key=lambda c: -c.ratio)
    return changes, sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys())


def format_changes(changes: list[Change], only_old: list[str], only_new: list[str]) -> str:
    """A Markdown table of the changes, slowest first, with flags."""
    lines = ["| cell | old ms | new ms | change | verdict |", "|---|---|---|---|---|"]
    for c in changes:
        flag = {"slower": "**SLOWER**", "faster": "faster", "~": "within noise"}[c.verdict]
        lines.append(f"| {c.id} | {c.old_median * 1e3:.4g} | {c.new_median * 1e3:.4g} | "
                     f"{(c.ratio - 1) * 100:+.1f}% | {flag} |")
    if only_old:
        lines.append(f"\nonly in OLD: {', '.join(only_old)}")
    if only_new:
        lines.append(f"\nonly in NEW: {', '.join(only_new)}")
    n_slow = sum(c.verdict == "slower" for c in changes)
    lines.append(f"\n{len(changes)} cells compared, {n_slow} slower beyond the noise.")
    return "\n".join(lines)
