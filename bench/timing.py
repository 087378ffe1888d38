"""Statistics of timed blocks: median, interquartile range, Tukey outliers.

A *block* is one timed unit (an epoch of training steps, after warm-up); its time
divided by the steps it holds is one observation of the step time.  Medians and
quartiles, not means, because a shared machine adds occasional long blocks that
say nothing about the framework.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """Median, quartiles, IQR, min/max, mean, count and Tukey outliers (beyond 1.5 IQR) of ``values``."""
    if len(values) == 0:
        raise ValueError("no timed blocks to summarize")
    arr = np.asarray(values, dtype=np.float64)
    q1, median, q3 = (float(q) for q in np.percentile(arr, [25, 50, 75]))
    iqr = q3 - q1
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    return {
        "median": median,
        "q1": q1,
        "q3": q3,
        "iqr": iqr,
        "min": float(arr.min()),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
        "stdev": float(statistics.stdev(arr)) if len(arr) > 1 else 0.0,
        "n": len(arr),
        "outliers": int(np.count_nonzero((arr < low) | (arr > high))),
    }


def mean_std(values: Sequence[float]) -> dict[str, float | int]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    arr = [float(v) for v in values]
    return {"mean": statistics.fmean(arr) if arr else float("nan"),
            "std": statistics.stdev(arr) if len(arr) > 1 else 0.0,
            "n": len(arr)}
