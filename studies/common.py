"""What the studies share: data, the implementations to run, tables and how they are written."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from impls import registry
from impls.spec import Params

Row = dict[str, object]


@dataclass
class Table:
    """A titled table: ``rows`` are dicts sharing the keys in ``columns``."""

    name: str
    title: str
    columns: list[str]
    rows: list[Row]
    note: str = ""

    def markdown(self) -> str:
        """GitHub-flavoured Markdown: floats to 4 significant digits, small ones in scientific notation."""
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(format_cell(row.get(c, "")) for c in self.columns) + " |")
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


@dataclass
class StudyResult:
    """One study's output: tables, plots written under the output folder, and the findings in prose."""

    name: str
    title: str
    intro: str
    tables: list[Table] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    implementations: list[str] = field(default_factory=list)


def format_cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if v == 0:
            return "0"
        if abs(v) < 1e-3 or abs(v) >= 1e5:
            return f"{v:.2e}"
        return f"{v:.4g}"
    return str(value)


def available_impls(requested: Sequence[str] | None = None) -> list[str]:
    """The requested implementations (default: all registered) that import here, the reference first.

    A requested implementation that is unavailable is an error, not a silent omission.
    """
    availability = registry.availability()
    if requested is None:
        missing = {n: r for n, r in availability.items() if r is not None}
        if missing:
            print("studies: skipping unavailable implementations: " + "; ".join(missing.values()))
        names = [n for n, r in availability.items() if r is None]
    else:
        for name in requested:
            if name not in availability:
                raise ValueError(f"unknown implementation {name!r}; registered: {registry.names()}")
            if availability[name] is not None:
                raise RuntimeError(f"implementation {name!r} is unavailable: {availability[name]}")
        names = list(requested)
    if registry.REFERENCE not in names:
        names.insert(0, registry.REFERENCE)
    return names


def digits_split(train_fraction: float, validation_fraction: float = 0.0, seed: int = 0):
    """scikit-learn's 8x8 digits, standardized on the training part; stratified splits.

    Returns ``(X_train, y_train), (X_val, y_val) or None, (X_test, y_test)``; features ``(n, 64)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_rest, y_train, y_rest = train_test_split(
        X, y, train_size=train_fraction, stratify=y, random_state=seed)
    validation = None
    if validation_fraction:
        size = validation_fraction / (1 - train_fraction)
        X_val, X_rest, y_val, y_rest = train_test_split(
            X_rest, y_rest, train_size=size, stratify=y_rest, random_state=seed)
    mean, std = X_train.mean(axis=0), X_train.std(axis=0) + 1e-8  # constant border pixels: std 0
    if validation_fraction:
        validation = ((X_val - mean) / std, y_val)
    return ((X_train - mean) / std, y_train), validation, ((X_rest - mean) / std, y_rest)


def relative_spread(values: dict[str, float], reference: str = registry.REFERENCE) -> float:
    """Largest ``|v - v_ref| / |v_ref|`` over implementations (0 when they agree exactly)."""
    ref = float(values[reference])
    scale = abs(ref) if ref != 0 else 1.0
    return max(abs(float(v) - ref) / scale for v in values.values())


def weight_norm(params: Params) -> float:
    """Frobenius norm of all weight matrices together (biases excluded)."""
    return float(np.sqrt(sum(float(np.sum(np.asarray(W, dtype=np.float64) ** 2)) for W, _ in params)))


def write(result: StudyResult, out: Path) -> None:
    """Each table as CSV, the whole study as JSON (plots are written by the study itself)."""
    out.mkdir(parents=True, exist_ok=True)
    for table in result.tables:
        with open(out / f"{result.name}_{table.name}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=table.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(table.rows)
    payload = {
        "name": result.name, "title": result.title, "implementations": result.implementations,
        "findings": result.findings, "plots": result.plots,
        "tables": [{"name": t.name, "title": t.title, "columns": t.columns, "rows": t.rows}
                   for t in result.tables],
    }
    (out / f"{result.name}.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")


def savefig(fig, out: Path, filename: str, result: StudyResult) -> None:
    """Save a matplotlib figure under ``out/plots`` and list it in the result."""
    (out / "plots").mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "plots" / filename, dpi=110, bbox_inches="tight")
    result.plots.append(f"plots/{filename}")
    import matplotlib.pyplot as plt

    plt.close(fig)
