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
NOISE_Z = 3.0
"""... and the change must exceed this many standard errors of the log ratio of medians."""
ALPHA = 0.05
"""Two-sided significance level of the Mann-Whitney U test."""


def judge(old: Sequence[float], new: Sequence[float], min_effect: float = MIN_EFFECT,
          alpha: float = ALPHA, noise_z: float = NOISE_Z) -> tuple[str, float, float]:
    """``("slower" | "faster" | "within noise", p_value, ratio of medians new/old)`` of positive samples.

    Slower/faster needs both: the rank test (Mann-Whitney U, two-sided, exact for small samples)
    finds the rounds of the two runs differently distributed at ``alpha``, *and* the medians differ
    by more than the minimum effect: ``min_effect``, and at least ``noise_z`` standard errors of the
    log ratio of medians (``1.25 s sqrt(1/m + 1/n)``, ``s`` the runs' pooled standard deviation of
    log samples).  The rank test alone would flag a consistent 2 % shift, and at ``alpha`` = 0.05 it
    flags one unchanged cell in twenty by chance: with ~100 cells compared at once, every A/A pair
    would show a few.  A chance separation of 5 vs 5 rounds is about as large as the rounds'
    spread, a real 2x slowdown several times larger; the noise term tells them apart, the fixed 10 %
    where the spread is tiny.  With ``m`` and ``n`` rounds the smallest possible p is
    ``2 / C(m + n, n)``: 3 vs 3 rounds can never reach 0.05 (0.1), 4 vs 4 can (0.029).
    """
    from scipy.stats import mannwhitneyu

    old_log, new_log = np.log(np.asarray(old, dtype=np.float64)), np.log(np.asarray(new, dtype=np.float64))
    shift = float(np.median(new_log) - np.median(old_log))
    spread = np.sqrt((np.var(old_log, ddof=1) + np.var(new_log, ddof=1)) / 2) if min(len(old), len(new)) > 1 else 0.0
    noise = noise_z * 1.2533 * spread * np.sqrt(1 / len(old) + 1 / len(new))
    p = float(mannwhitneyu(new_log, old_log, alternative="two-sided").pvalue)
    beyond = p < alpha and abs(shift) > max(np.log1p(min_effect), noise)
    verdict = "within noise" if not beyond else "slower" if shift > 0 else "faster"
    return verdict, p, float(np.exp(shift))


def smallest_p(m: int, n: int) -> float:
    """The smallest two-sided p-value a rank test can reach with ``m`` and ``n`` samples."""
    from math import comb

    return min(1.0, 2.0 / comb(m + n, n))
