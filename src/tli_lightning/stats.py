"""Paired statistics for comparing a run's baseline evaluation with its final one.

Pure functions on numpy arrays; scipy is imported inside the functions that need it. Every result is a
plain dict of Python numbers (``None`` where a statistic cannot be computed, with a note saying why),
ready for JSON.

- :func:`paired_stats`: mean gain of ``final - baseline`` over the same items (e.g. one cosine per word
  pair), with a paired t-test, a Wilcoxon signed-rank test and a percentile bootstrap CI of the mean gain;
- :func:`mcnemar_exact`: exact McNemar test of per-example correctness before vs after training;
- :func:`describe` and :func:`welch`: summaries across runs (seeds) and between groups of runs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

# Resamples drawn per block: bounds memory at about BLOCK * n indices, whatever ``resamples`` is.
_BOOTSTRAP_BLOCK = 1000


def bootstrap_ci(
    differences: Sequence[float] | np.ndarray, seed: int = 0, resamples: int = 10_000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``differences``.

    Resamples the items with replacement ``resamples`` times using ``numpy.random.default_rng(seed)``
    and takes the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of the resampled
    means. The same inputs and seed always give the same interval. Returns ``(nan, nan)`` for no items.
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    if d.size == 0:
        return math.nan, math.nan
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"resamples must be >= 1 and 0 < confidence < 1, got {resamples}, {confidence}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, _BOOTSTRAP_BLOCK):
        count = min(_BOOTSTRAP_BLOCK, resamples - start)
        means[start : start + count] = d[rng.integers(0, d.size, size=(count, d.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def paired_stats(
    final: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    seed: int = 0,
    resamples: int = 10_000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired comparison of ``final`` against ``baseline`` (same items, same order).

    Returns ``{"n", "mean_baseline", "mean_final", "mean_gain", "sd_gain", "ci_low", "ci_high",
    "confidence", "t_statistic", "t_pvalue", "wilcoxon_statistic", "wilcoxon_pvalue", "notes"}``:
    ``scipy.stats.ttest_rel(final, baseline)`` and ``scipy.stats.wilcoxon(final, baseline)`` with
    scipy's defaults, and :func:`bootstrap_ci` of the mean gain. A test that cannot be computed
    (fewer than 2 items; every difference zero) gives ``None`` and a line in ``notes``. A constant
    non-zero gain gives an infinite t statistic and p = 0, as scipy does.
    """
    from scipy import stats

    f, b = np.asarray(final, dtype=np.float64).ravel(), np.asarray(baseline, dtype=np.float64).ravel()
    if f.shape != b.shape:
        raise ValueError(f"final and baseline must pair up item by item, got {f.size} and {b.size} values")
    d = f - b
    n = int(d.size)
    out: dict[str, Any] = {
        "n": n,
        "mean_baseline": float(b.mean()) if n else None,
        "mean_final": float(f.mean()) if n else None,
        "mean_gain": float(d.mean()) if n else None,
        "sd_gain": float(d.std(ddof=1)) if n > 1 else None,
        "confidence": confidence,
        "t_statistic": None,
        "t_pvalue": None,
        "wilcoxon_statistic": None,
        "wilcoxon_pvalue": None,
        "notes": [],
    }
    low, high = bootstrap_ci(d, seed=seed, resamples=resamples, confidence=confidence)
    out["ci_low"], out["ci_high"] = (low, high) if n else (None, None)
    all_zero = n > 0 and not np.any(d)
    if n < 2:
        out["notes"].append(f"t-test and Wilcoxon test not computable with {n} item(s)")
        return out
    if all_zero:
        out["notes"].append("t-test and Wilcoxon test not computable: every difference is zero")
        return out
    with warnings.catch_warnings():
        # scipy warns about a zero-variance difference (constant gain); the infinite t it returns is the answer.
        warnings.simplefilter("ignore", RuntimeWarning)
        t = stats.ttest_rel(f, b)
    out["t_statistic"], out["t_pvalue"] = float(t.statistic), float(t.pvalue)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            w = stats.wilcoxon(f, b)
        out["wilcoxon_statistic"], out["wilcoxon_pvalue"] = float(w.statistic), float(w.pvalue)
    except ValueError as error:  # older scipy versions raise where 1.17 warns
        out["notes"].append(f"Wilcoxon test not computable: {error}")
    return out


def mcnemar_exact(
    baseline_correct: Sequence[bool] | np.ndarray, final_correct: Sequence[bool] | np.ndarray
) -> dict[str, Any]:
    """Exact McNemar test: did per-example correctness change between two evaluations of the same examples?

    Only the discordant examples count: ``b`` right before and wrong after, ``c`` wrong before and right
    after. Under no change each discordant example is equally likely to go either way, so the p-value is
    the two-sided exact binomial test of ``c`` successes in ``b + c`` trials with p = 0.5
    (``scipy.stats.binomtest``); 1.0 when there are no discordant examples. Returns ``{"n",
    "baseline_correct", "final_correct", "acc_baseline", "acc_final", "acc_diff", "only_baseline_correct",
    "only_final_correct", "pvalue"}``.
    """
    from scipy import stats

    before = np.asarray(baseline_correct, dtype=bool).ravel()
    after = np.asarray(final_correct, dtype=bool).ravel()
    if before.shape != after.shape:
        raise ValueError(f"baseline and final must cover the same examples, got {before.size} and {after.size}")
    n = int(before.size)
    lost, gained = int(np.sum(before & ~after)), int(np.sum(~before & after))
    discordant = lost + gained
    acc_before = float(before.mean()) if n else None
    acc_after = float(after.mean()) if n else None
    return {
        "n": n,
        "baseline_correct": int(before.sum()),
        "final_correct": int(after.sum()),
        "acc_baseline": acc_before,
        "acc_final": acc_after,
        "acc_diff": acc_after - acc_before if n else None,
        "only_baseline_correct": lost,
        "only_final_correct": gained,
        "pvalue": float(stats.binomtest(gained, discordant, 0.5).pvalue) if discordant else 1.0,
    }


def describe(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation, min, max and count of the finite values (e.g. one per seed).

    ``sd`` is ``None`` for fewer than 2 values; everything but ``n`` is ``None`` for none.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else None,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def welch(first: Sequence[float], second: Sequence[float]) -> dict[str, Any]:
    """Difference of means ``mean(first) - mean(second)`` between two groups of runs, with Welch's t-test
    (``scipy.stats.ttest_ind(equal_var=False)``) when each group has at least 2 values (else ``None``)."""
    from scipy import stats

    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    out: dict[str, Any] = {
        "n_first": int(a.size),
        "n_second": int(b.size),
        "difference": float(a.mean() - b.mean()) if a.size and b.size else None,
        "t_statistic": None,
        "pvalue": None,
    }
    if a.size >= 2 and b.size >= 2 and (np.ptp(a) > 0 or np.ptp(b) > 0):
        result = stats.ttest_ind(a, b, equal_var=False)
        out["t_statistic"], out["pvalue"] = float(result.statistic), float(result.pvalue)
    return out
