"""Statistics over rounds: medians with bootstrap confidence intervals, and the compare test.

A *round* runs every cell once, so a cell has one sample per round (the median step time of that
round's training run).  Rounds, not epochs, are the independent unit: the epochs of one run share
its machine state, and treating them as independent samples would make every small drift
"significant".  Everything is summarized as the median over rounds with a 95 % percentile
bootstrap interval, and ratios (× fastest, adapter overhead) are formed per round before that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 4000


def bootstrap_ci(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values`` (resampled with replacement, seeded).

    With few rounds the interval is coarse (its ends are order statistics of the rounds), and a
    single round has no interval: ``(value, value)``.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values to summarize")
    rng = np.random.default_rng(seed)
    medians = np.median(data[rng.integers(0, data.size, size=(resamples, data.size))], axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(medians, [tail, 1.0 - tail])
    return float(low), float(high)


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """Median over rounds, its bootstrap interval, min, max and the number of rounds."""
    data = np.asarray(values, dtype=np.float64)
    low, high = bootstrap_ci(data)
    return {"median": float(np.median(data)), "ci_low": low, "ci_high": high,
            "min": float(data.min()), "max": float(data.max()), "n": int(data.size)}


MIN_EFFECT = 0.10
"""The smallest relative change ``compare`` calls slower/faster (smaller ones are within noise)."""
ALPHA = 0.05
"""Two-sided significance level of the Mann-Whitney U test."""


def judge(old: Sequence[float], new: Sequence[float], min_effect: float = MIN_EFFECT,
          alpha: float = ALPHA) -> tuple[str, float, float]:
    """``("slower" | "faster" | "within noise", p_value, ratio of medians new/old)``.

    Slower/faster needs both: the rank test (Mann-Whitney U, two-sided, exact for small samples)
    finds the rounds of the two runs differently distributed at ``alpha``, *and* the medians differ
    by more than ``min_effect``.  The rank test alone would flag a consistent 2 % shift; the effect
    alone would flag a noisy cell.  With ``m`` and ``n`` rounds the smallest possible p is
    ``2 / C(m + n, n)``: 3 vs 3 rounds can never reach 0.05 (0.1), 4 vs 4 can (0.029).
    """
    from scipy.stats import mannwhitneyu

    old_a, new_a = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
    ratio = float(np.median(new_a) / np.median(old_a))
    p = float(mannwhitneyu(new_a, old_a, alternative="two-sided").pvalue)
    if p < alpha and ratio > 1.0 + min_effect:
        return "slower", p, ratio
    if p < alpha and ratio < 1.0 / (1.0 + min_effect):
        return "faster", p, ratio
    return "within noise", p, ratio


def smallest_p(m: int, n: int) -> float:
    """The smallest two-sided p-value a rank test can reach with ``m`` and ``n`` samples."""
    from math import comb

    return min(1.0, 2.0 / comb(m + n, n))
