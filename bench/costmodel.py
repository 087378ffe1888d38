"""How a row's step time grows: ``step_time ≈ overhead + FLOPs / throughput``, fitted per (row, mode).

The points are every speed-only cell of a row and mode (the ``sweep`` profile's width sweep, ``full``'s
sweeps, the throughput workload): FLOPs per step (:func:`bench.workloads.dense_flops`) against the step
time of each usable round (:func:`bench.summary.per_round`).

The fit: least squares on *relative* residuals of the per-point medians over rounds, i.e. minimize
``sum_i ((t_i - a - b F_i) / t_i)^2`` with ``a, b >= 0`` (``scipy.optimize.nnls``).  Absolute least
squares would let the largest point (seconds) decide everything and fit the overhead (microseconds) to
noise; relative residuals weigh every point alike, as the log-log plot shows them.  The medians over
rounds make one disturbed round harmless.  The interval: a bootstrap over rounds (rounds drawn with
replacement, the same draw for every point, since the points of a round shared the machine), refitted
each time; 95 % percentile intervals of the overhead ``a`` (seconds), the throughput ``1 / b`` (FLOP/s)
and any prediction ``a + b F``.

A prediction outside the measured FLOP range of a row is an extrapolation, and the model knows only
what its points varied (width at batch 256 in the ``sweep`` profile): it is said so, with how far outside
(``extrapolated ×N beyond the sweep``), and it gets no interval, since the bootstrap measures the spread
of the line where it was fitted, not whether it still holds elsewhere.

Crossover of rows ``i`` and ``j``: ``F* = (a_j - a_i) / (b_i - b_j)``, where the row with the smaller
overhead stops being the faster one (only where ``F* > 0``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from bench import cells, stats

RESAMPLES = 1000
"""Bootstrap resamples of the rounds per fit."""

MIN_POINTS = 3
"""A row needs this many distinct FLOP counts to be fitted (two parameters, one degree of freedom left)."""

SWEEP_FOLDER = cells.PROFILES["sweep"].folder
"""Where the ``sweep`` profile's records live inside a results directory."""


@dataclass(frozen=True)
class Fit:
    """A fitted ``t = overhead_s + flops * s_per_flop`` with its bootstrap draws and where it was measured."""

    overhead_s: float
    s_per_flop: float
    draws: np.ndarray
    """Bootstrap draws ``(resamples, 2)``: overhead (s) and seconds per FLOP."""
    flops_range: tuple[float, float]
    batches: tuple[int, ...]
    points: int
    rounds: int

    @property
    def gflops(self) -> float:
        """Sustained GFLOP/s (``inf`` when the fit has no FLOP-dependent term)."""
        return 1e-9 / self.s_per_flop if self.s_per_flop > 0 else float("inf")

    def predict(self, flops: float | np.ndarray) -> np.ndarray:
        return self.overhead_s + self.s_per_flop * np.asarray(flops, dtype=np.float64)

    def interval(self, flops: float) -> tuple[float, float]:
        """95 % bootstrap interval of the predicted step time at ``flops`` (seconds)."""
        values = self.draws[:, 0] + self.draws[:, 1] * flops
        low, high = np.quantile(values, [(1 - stats.CONFIDENCE) / 2, (1 + stats.CONFIDENCE) / 2])
        return float(low), float(high)

    def overhead_interval(self) -> tuple[float, float]:
        return _quantiles(self.draws[:, 0])

    def gflops_interval(self) -> tuple[float, float]:
        """95 % interval of the throughput in GFLOP/s (the slope's interval, inverted)."""
        low, high = _quantiles(self.draws[:, 1])
        return (1e-9 / high if high > 0 else float("inf"), 1e-9 / low if low > 0 else float("inf"))

    def extrapolates(self, flops: float) -> bool:
        return not self.flops_range[0] <= flops <= self.flops_range[1]

    def beyond(self, flops: float) -> float:
        """How far ``flops`` lies outside the measured range, as a factor (1 inside it): ``flops`` ÷ the largest
        measured, or the smallest measured ÷ ``flops``."""
        low, high = self.flops_range
        return flops / high if flops > high else low / flops if flops < low else 1.0


def _quantiles(values: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - stats.CONFIDENCE) / 2, (1 + stats.CONFIDENCE) / 2])
    return float(low), float(high)


def fit_line(flops: np.ndarray, times: np.ndarray) -> tuple[float, float]:
    """``(a, b) >= 0`` minimizing ``sum((times - a - b flops) / times)^2``; ``flops``, ``times`` (n,), seconds."""
    flops, times = np.asarray(flops, dtype=np.float64), np.asarray(times, dtype=np.float64)
    scale = flops.max()  # FLOPs (1e9) and ones side by side: scaled, nnls's tolerance sees both columns
    design = np.column_stack([1.0 / times, flops / scale / times])
    (a, b), _ = nnls(design, np.ones_like(times))
    return float(a), float(b / scale)


def fit(samples: pd.DataFrame, resamples: int = RESAMPLES, seed: int = 0) -> Fit:
    """Fit one row and mode from ``samples`` (columns ``flops``, ``round``, ``step_s``, optionally ``batch``).

    Raises ``ValueError`` with fewer than :data:`MIN_POINTS` distinct FLOP counts.
    """
    table = samples.pivot_table(index="round", columns="flops", values="step_s", aggfunc="median")
    if table.shape[1] < MIN_POINTS:
        raise ValueError(f"{table.shape[1]} distinct FLOP counts; a fit needs {MIN_POINTS}")
    flops = table.columns.to_numpy(dtype=np.float64)
    values = table.to_numpy()  # (rounds, points); NaN where a round has no usable sample of a point
    a, b = fit_line(flops, _medians(values))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        medians = _medians(values[rng.integers(0, len(values), size=len(values))])
        kept = np.isfinite(medians)
        if kept.sum() >= MIN_POINTS:
            draws.append(fit_line(flops[kept], medians[kept]))
    batches = tuple(sorted({int(x) for x in samples["batch"]})) if "batch" in samples else ()
    return Fit(a, b, np.array(draws).reshape(-1, 2), (float(flops.min()), float(flops.max())), batches,
               len(flops), len(values))


def _medians(values: np.ndarray) -> np.ndarray:
    """The median of each column of ``values`` (rounds, points) over its finite entries; NaN where there is none
    (a resample that drew only rounds without that point)."""
    present = np.isfinite(values).any(axis=0)
    out = np.full(values.shape[1], np.nan)
    out[present] = np.nanmedian(values[:, present], axis=0)
    return out


def points(rounds: pd.DataFrame) -> pd.DataFrame:
    """The fit's points from :func:`bench.summary.per_round`'s usable samples: speed-only cells with their FLOPs
    and batch (``row, mode, dtype, workload, point, round, flops, batch, step_s``)."""
    from bench import workloads

    speed = rounds[rounds["gflops"].notna()] if "gflops" in rounds else rounds.iloc[:0]
    if speed.empty:
        return pd.DataFrame(columns=["row", "mode", "dtype", "workload", "point", "round", "flops", "batch",
                                     "step_s"])
    shapes = {}
    for w, p in speed[["workload", "point"]].drop_duplicates().itertuples(index=False):
        found = workloads.get(w, {"value": p} if p != "" else None)
        shapes[(w, p)] = (found.flops_per_step(), found.batch_size)
    keys = list(zip(speed["workload"], speed["point"]))
    return speed.assign(flops=[shapes[k][0] for k in keys], batch=[shapes[k][1] for k in keys])[
        ["row", "mode", "dtype", "workload", "point", "round", "flops", "batch", "step_s"]]


def fit_all(pts: pd.DataFrame) -> dict[tuple[str, str], Fit]:
    """A :class:`Fit` per float32 (row, mode) with enough points."""
    fits = {}
    for (row, mode), group in pts[pts["dtype"] == "float32"].groupby(["row", "mode"], sort=False):
        if group["flops"].nunique() >= MIN_POINTS:
            fits[(row, mode)] = fit(group)
    return fits


def model_table(fits: dict[tuple[str, str], Fit], ceiling_gflops: float | None) -> pd.DataFrame:
    """One line per fit: overhead (µs) and throughput (GFLOP/s) with intervals, % of the run's ceiling."""
    lines = []
    for (row, mode), f in fits.items():
        o_low, o_high = f.overhead_interval()
        g_low, g_high = f.gflops_interval()
        lines.append({"row": row, "mode": mode, "overhead_us": f.overhead_s * 1e6, "overhead_us_low": o_low * 1e6,
                      "overhead_us_high": o_high * 1e6, "gflops": f.gflops, "gflops_low": g_low,
                      "gflops_high": g_high,
                      "pct_of_ceiling": 100 * f.gflops / ceiling_gflops if ceiling_gflops else np.nan,
                      "flops_min": f.flops_range[0], "flops_max": f.flops_range[1], "points": f.points,
                      "rounds": f.rounds, "batches": ",".join(map(str, f.batches))})
    return pd.DataFrame(lines)


def crossover(overhead_i: float, slope_i: float, overhead_j: float, slope_j: float) -> float | None:
    """The FLOPs per step where lines ``i`` and ``j`` meet, or ``None`` when they do not meet at ``F > 0``."""
    if slope_i == slope_j:
        return None
    at = (overhead_j - overhead_i) / (slope_i - slope_j)
    return at if at > 0 else None


def crossovers(fits: dict[tuple[str, str], Fit]) -> pd.DataFrame:
    """Every pair of fits whose lines cross at ``F > 0``: below ``flops``, ``faster_below`` is faster; above,
    ``faster_above``; ``measured`` says whether ``flops`` lies inside both rows' measured ranges."""
    lines = []
    for (ki, fi), (kj, fj) in itertools.combinations(fits.items(), 2):
        at = crossover(fi.overhead_s, fi.s_per_flop, fj.overhead_s, fj.s_per_flop)
        if at is None:
            continue
        below, above = (ki, kj) if fi.overhead_s < fj.overhead_s else (kj, ki)
        lines.append({"faster_below": " ".join(below), "faster_above": " ".join(above), "flops": at,
                      "measured": not (fi.extrapolates(at) or fj.extrapolates(at))})
    return pd.DataFrame(lines, columns=["faster_below", "faster_above", "flops", "measured"])


def fastest(fits: dict[tuple[str, str], Fit], low: float, high: float, steps: int = 400) -> pd.DataFrame:
    """Which fit predicts the shortest step along ``[low, high]`` FLOPs (log grid): one line per stretch
    (``from_flops``, ``to_flops``, ``row``, ``mode``), the fastest row for each model size."""
    grid = np.geomspace(low, high, steps)
    keys = list(fits)
    best = np.argmin(np.array([fits[k].predict(grid) for k in keys]), axis=0)
    lines = []
    for index, run in itertools.groupby(range(steps), key=lambda i: best[i]):
        run = list(run)
        lines.append({"from_flops": grid[run[0]], "to_flops": grid[run[-1]], "row": keys[index][0],
                      "mode": keys[index][1]})
    return pd.DataFrame(lines, columns=["from_flops", "to_flops", "row", "mode"])


def predictions(fits: dict[tuple[str, str], Fit], flops: float, batch: int | None = None) -> pd.DataFrame:
    """Each fit's predicted step time at ``flops`` (seconds, with its interval), fastest first; ``note`` says
    where the request lies outside what the row measured (FLOPs, batch), and ``beyond`` how far outside the
    measured FLOPs it lies (a factor, 1 inside).  Outside, the interval covers the bootstrap's spread of the
    fitted line only, not whether the line still holds there: it is no interval at all (``NaN``)."""
    lines = []
    for (row, mode), f in fits.items():
        low, high = f.interval(flops) if not f.extrapolates(flops) else (np.nan, np.nan)
        notes = []
        if f.extrapolates(flops):
            notes.append(f"extrapolated ×{f.beyond(flops):.3g} beyond the sweep: measured "
                         f"{f.flops_range[0]:.3g}–{f.flops_range[1]:.3g} FLOP")
        if batch is not None and f.batches and batch not in f.batches:
            notes.append(f"batch {batch} not measured ({', '.join(map(str, f.batches))})")
        lines.append({"row": row, "mode": mode, "step_s": float(f.predict(flops)), "low_s": low, "high_s": high,
                      "beyond": f.beyond(flops), "note": "; ".join(notes)})
    return pd.DataFrame(lines).sort_values("step_s", ignore_index=True)


# ---- from a results directory to the report ------------------------------------------------


@dataclass(frozen=True)
class Model:
    """The fits of one results directory (``source``), with the run's matmul ceiling (GFLOP/s, or ``None``)."""

    fits: dict[tuple[str, str], Fit]
    ceiling_gflops: float | None
    source: Path
    points: pd.DataFrame
    nested: bool = False
    """Fitted on the ``sweep/`` subdirectory of the directory asked for."""


def from_records(root: Path) -> Model:
    """Fit every row and mode of the records in ``root`` (the plan its runs name, usable rounds)."""
    from bench import layout, summary
    from bench.layout import ResultsDir

    results = ResultsDir(root)
    records, _ = results.records()
    records = layout.select_plan(records, results.runs())
    samples, ceiling = summary.samples_frame(records), summary.ceiling_frame(records)
    rounds = summary.per_round(samples, ceiling) if not samples.empty else samples
    pts = points(rounds)
    info = summary.run_ceiling(ceiling)
    return Model(fit_all(pts), info["median"] if info else None, Path(root), pts)


def load(root: Path) -> Model:
    """The cost model for the results directory ``root``: fitted from its own records when they sweep enough
    sizes (``full``), else from its ``sweep/`` subdirectory (``python -m bench run --profile sweep`` writes
    ``results/sweep``); its ``fits`` are empty when neither has enough points."""
    own = from_records(root)
    nested = Path(root) / SWEEP_FOLDER
    if own.fits or not nested.is_dir():
        return own
    return replace(from_records(nested), nested=True)


def _flops_text(flops: float) -> str:
    return f"{flops / 1e9:.3g} GFLOP" if flops >= 1e8 else f"{flops / 1e6:.3g} MFLOP"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}" if seconds >= 1e-4 else f"{seconds * 1e6:.3g}"


def summary_lines(model: Model) -> list[str]:
    """The short answer a README opens with: which row is fastest for which FLOPs per step (measured range)."""
    if not model.fits:
        return []
    low = min(f.flops_range[0] for f in model.fits.values())
    high = max(f.flops_range[1] for f in model.fits.values())
    lines = ["**Which framework for which size** (fitted cost model, float32, one thread; "
             f"FLOPs per training step = 6 × batch × weights, roughly; measured {_flops_text(low)}–"
             f"{_flops_text(high)}):", ""]
    for s in fastest(model.fits, low, high).itertuples(index=False):
        lines.append(f"- {_flops_text(s.from_flops)} – {_flops_text(s.to_flops)}: **{s.row}** ({s.mode})")
    return [*lines, "", "Details, crossovers and `python -m bench predict`: see *Cost model* below.", ""]


def section_lines(model: Model, plot: str | None) -> list[str]:
    """The report's *Cost model* section: the fitted table, the crossovers inside the measured range, the plot."""
    if not model.fits:
        return []
    table = model_table(model.fits, model.ceiling_gflops)
    shown = pd.DataFrame({
        "row": table["row"], "mode": table["mode"],
        "overhead µs [95% CI]": [f"{_us(a * 1e-6)} [{_us(lo * 1e-6)}–{_us(hi * 1e-6)}]" for a, lo, hi in
                                 zip(table["overhead_us"], table["overhead_us_low"], table["overhead_us_high"])],
        "GFLOP/s [95% CI]": [f"{g:.3g} [{lo:.3g}–{hi:.3g}]" for g, lo, hi in
                             zip(table["gflops"], table["gflops_low"], table["gflops_high"])],
        "% of ceiling": [("–" if pd.isna(p) else f"{p:.0f}") for p in table["pct_of_ceiling"]],
        "points × rounds": [f"{p} × {r}" for p, r in zip(table["points"], table["rounds"])]})
    where = f" (records: `{SWEEP_FOLDER}/`)" if model.nested else ""
    ceiling = f"{model.ceiling_gflops:.3g} GFLOP/s" if model.ceiling_gflops else "not measured"
    lines = ["## Cost model", "",
             f"`step time ≈ overhead + FLOPs / throughput`, fitted per row and mode on every speed-only cell{where} "
             "(least squares on relative residuals of the medians over rounds; 95 % bootstrap intervals over "
             f"rounds; see `bench/costmodel.py`).  The run's matmul ceiling: {ceiling}.", "",
             shown.to_markdown(index=False, disable_numparse=True), ""]
    crossing = crossovers(model.fits)
    crossing = crossing[crossing["measured"]]
    if not crossing.empty:
        crossing = crossing.sort_values("flops")
        lines += ["Crossovers inside the measured range (below the size, the first row is faster; above it, the "
                  "second):", "",
                  pd.DataFrame({"faster below": crossing["faster_below"], "faster above": crossing["faster_above"],
                                "FLOPs per step": [_flops_text(f) for f in crossing["flops"]]}).to_markdown(
                      index=False, disable_numparse=True), ""]
    if plot:
        lines += [f"![roofline](plots/{plot})", ""]
    return lines


def plot_roofline(model: Model, plots: Path) -> str | None:
    """Log-log step time against FLOPs per step: every row's medians, its fitted curve, and the ceiling's line
    (the step time at the run's matmul ceiling).  Returns the file name, or ``None`` without fits."""
    if not model.fits:
        return None
    from bench.plots import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = plt.cm.tab20(np.linspace(0, 1, max(len(model.fits), 2)))
    low = min(f.flops_range[0] for f in model.fits.values()) / 2
    high = max(f.flops_range[1] for f in model.fits.values()) * 2
    grid = np.geomspace(low, high, 100)
    for color, ((row, mode), f) in zip(colors, model.fits.items()):
        mine = model.points[(model.points["row"] == row) & (model.points["mode"] == mode)]
        medians = mine.groupby("flops")["step_s"].median()
        ax.scatter(medians.index, medians.to_numpy() * 1e3, color=color, s=14)
        ax.plot(grid, f.predict(grid) * 1e3, color=color, lw=1, label=f"{row} {mode}")
    if model.ceiling_gflops:
        ax.plot(grid, grid / (model.ceiling_gflops * 1e9) * 1e3, color="black", ls="--", lw=1.2,
                label=f"ceiling {model.ceiling_gflops:.3g} GFLOP/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOPs per training step")
    ax.set_ylabel("ms per step (points: medians over rounds; lines: fitted)")
    ax.set_title("cost model: overhead + FLOPs / throughput (float32)")
    ax.legend(fontsize=6, ncol=2)
    plots.mkdir(parents=True, exist_ok=True)
    return save(fig, plots / "roofline.png")
