"""Paired statistics for comparing a run's baseline evaluation with its final one.

Pure functions on numpy arrays; scipy is imported inside the functions that need it. Every result is a
plain dict of Python numbers (``None`` where a statistic cannot be computed, with a note saying why),
ready for JSON.

- :func:`paired_stats`: mean gain of ``final - baseline`` over the same items (e.g. one cosine per word
  pair), with a paired t-test, a Wilcoxon signed-rank test and a percentile bootstrap CI of the mean gain;
- :func:`mcnemar_exact`: exact McNemar test of per-example correctness before vs after training;
- :func:`cluster_bootstrap_ci`: the bootstrap CI of a mean over items that are not independent (word pairs
  sharing a word), resampling whole clusters;
- :func:`hierarchical_bootstrap`: a difference between arms (or one arm's effect) with both sources of noise,
  the runs (seeds) and the items (examples, query clusters), resampled in two stages;
- :func:`holm`: Holm's step-down adjustment of a family of p-values;
- :func:`mcnemar_mde`: the smallest change in accuracy a within-run McNemar test detects;
- :func:`describe`: a summary across runs (seeds).
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


def _cluster_sums(values: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of ``values`` along the last axis, and the cluster sizes."""
    _, inverse = np.unique(clusters, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    sizes = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.add.reduceat(values[..., order], starts, axis=-1), sizes


def cluster_bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[int] | np.ndarray,
    seed: int = 0,
    resamples: int = 10_000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` when items come in clusters (``clusters[i]`` is item
    i's cluster id): whole clusters are resampled with replacement and each resample's mean is the sum over
    its items divided by their number. With one item per cluster it is :func:`bootstrap_ci`'s plain
    bootstrap (the same resampled means for the same seed). ``(nan, nan)`` for fewer than 2 clusters: one
    cluster resampled is always itself, which says nothing about the noise."""
    v = np.asarray(values, dtype=np.float64).ravel()
    c = np.asarray(clusters).ravel()
    if v.shape != c.shape:
        raise ValueError(f"values and clusters must have one entry per item, got {v.size} and {c.size}")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"resamples must be >= 1 and 0 < confidence < 1, got {resamples}, {confidence}")
    if len(np.unique(c)) < 2:
        return math.nan, math.nan
    sums, sizes = _cluster_sums(v, c)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, _BOOTSTRAP_BLOCK):
        count = min(_BOOTSTRAP_BLOCK, resamples - start)
        pick = rng.integers(0, sizes.size, size=(count, sizes.size))
        means[start : start + count] = sums[pick].sum(axis=1) / sizes[pick].sum(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def hierarchical_bootstrap(
    arms: Sequence[Sequence[Sequence[float] | np.ndarray]],
    signs: Sequence[float],
    clusters: Sequence[Sequence[Sequence[int] | np.ndarray]] | None = None,
    *,
    paired: bool = True,
    seed: int = 0,
    resamples: int = 10_000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Two-stage bootstrap of ``sum_a signs[a] * mean over arm a's runs of (mean over the run's items)``.

    ``arms[a][r]``: the per-item values of run ``r`` of arm ``a`` (e.g. per XNLI example, correct after minus
    correct before; or per retrieval query, hit after minus hit before). ``signs``: ``[1, -1]`` for the
    difference between two arms, ``[1]`` for one arm's effect. ``clusters[a][r]``: cluster id per item
    (items of one cluster are resampled together); default: every item its own cluster.

    Each resample draws the runs of every arm with replacement (the seed noise), then the items (the
    sampling noise of the benchmark). ``paired``: every run holds the same items in the same order (e.g. the
    same XNLI rows): one item resample serves every run of every arm, as the runs are paired. With
    ``paired=False`` (runs measured different items, e.g. seeds that also vary the XNLI sample) each run's
    items are resampled on their own; the run means then also differ by their items, which the run
    resample counts once more: conservative, up to sqrt(2) wider than the true interval, never narrower.

    Returns ``{"estimate", "ci_low", "ci_high", "se", "confidence", "resamples", "paired", "runs", "items",
    "degenerate"}``; ``degenerate`` is True when every resample gives the same value (no spread to
    estimate an interval from), and the interval is then ``None``.
    """
    if len(arms) != len(signs) or not arms or any(len(runs) == 0 for runs in arms):
        raise ValueError("need one sign per arm and at least one run in every arm")
    data = [[np.asarray(run, dtype=np.float64).ravel() for run in runs] for runs in arms]
    if clusters is None:
        ids = [[np.arange(run.size) for run in runs] for runs in data]
    else:
        ids = [[np.asarray(c).ravel() for c in runs] for runs in clusters]
    for runs, cs in zip(data, ids):
        for run, c in zip(runs, cs):
            if run.shape != c.shape or run.size == 0:
                raise ValueError(f"every run needs items, with one cluster id each (got {run.size} and {c.size})")
    first_ids = ids[0][0]
    if paired and not all(c.shape == first_ids.shape and np.array_equal(c, first_ids) for cs in ids for c in cs):
        raise ValueError("paired runs must hold the same items with the same clusters; pass paired=False")
    estimate = float(sum(sign * np.mean([run.mean() for run in runs]) for sign, runs in zip(signs, data)))
    rng = np.random.default_rng(seed)
    values = np.empty(resamples, dtype=np.float64)
    if paired:
        summed = [_cluster_sums(np.stack(runs), first_ids) for runs in data]  # per arm: [runs, clusters], sizes
        sizes = summed[0][1]
    else:
        summed_runs = [[_cluster_sums(run, c) for run, c in zip(runs, cs)] for runs, cs in zip(data, ids)]
    widest = max(len(runs) for runs in data) * max(len(np.unique(c)) for cs in ids for c in cs)
    block = max(1, min(_BOOTSTRAP_BLOCK, 4_000_000 // widest))  # bounds the [block, runs, clusters] draws
    for start in range(0, resamples, block):
        count = min(block, resamples - start)
        if paired:
            # A resample picks runs per arm, then clusters, the same clusters for every run.
            total = np.zeros((count, sizes.size))
            for sign, (sums, _) in zip(signs, summed):
                pick_runs = rng.integers(0, len(sums), size=(count, len(sums)))
                total += sign * sums[pick_runs].mean(axis=1)
            pick = rng.integers(0, sizes.size, size=(count, sizes.size))
            values[start : start + count] = np.take_along_axis(total, pick, axis=1).sum(axis=1) / sizes[pick].sum(1)
        else:
            # Every slot of the run resample gets its own draw of its run's clusters.
            drawn = np.zeros(count)
            for sign, runs in zip(signs, summed_runs):
                slots = len(runs)
                pick_runs = rng.integers(0, slots, size=(count, slots))
                means = np.empty((count, slots))
                for r, (sums, sizes_r) in enumerate(runs):
                    where = pick_runs == r
                    k = int(where.sum())
                    if k:
                        pick = rng.integers(0, sizes_r.size, size=(k, sizes_r.size))
                        means[where] = sums[pick].sum(axis=1) / sizes_r[pick].sum(axis=1)
                drawn += sign * means.mean(axis=1)
            values[start : start + count] = drawn
    alpha = (1 - confidence) / 2
    # Rounding leaves a constant a few ulps apart: that is still no spread.
    degenerate = bool(np.ptp(values) <= 1e-12 * (1 + np.abs(values).max()))
    low, high = (None, None) if degenerate else np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return {
        "estimate": estimate,
        "ci_low": None if low is None else float(low),
        "ci_high": None if high is None else float(high),
        "se": float(values.std(ddof=1)) if resamples > 1 else None,
        "confidence": confidence,
        "resamples": resamples,
        "paired": paired,
        "runs": [len(runs) for runs in data],
        "items": [sorted({run.size for run in runs}) for runs in data],
        "degenerate": degenerate,
    }


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order; ``None`` stays
    ``None`` and does not count towards the family."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def mcnemar_mde(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest accuracy change ``d`` (final - baseline) that a two-sided McNemar test at ``alpha`` detects
    with probability ``power`` on ``n`` paired examples, when a share ``discordance`` of them changes answer.

    Solves Connor's (1987) sample-size formula ``n = (z_a sqrt(psi) + z_b sqrt(psi - d^2))^2 / d^2`` for ``d``
    (about ``(z_a + z_b) sqrt(psi / n)`` when d is small). ``None`` when no change up to ``psi`` can be detected.
    """
    from scipy.stats import norm

    if n < 1 or not 0 < discordance <= 1:
        return None
    z_a, z_b = norm.ppf(1 - alpha / 2), norm.ppf(power)

    def needed(d: float) -> float:
        return (z_a * math.sqrt(discordance) + z_b * math.sqrt(max(discordance - d * d, 0.0))) ** 2 / (d * d)

    low, high = 1e-9, discordance  # a change cannot exceed the share of examples that change
    if needed(high) > n:
        return None
    for _ in range(200):  # needed(d) falls as d grows: bisect to the d where it equals n
        mid = (low + high) / 2
        low, high = (mid, high) if needed(mid) > n else (low, mid)
    return high


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
