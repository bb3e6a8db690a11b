"""The paired statistics of ``compare``, each against scipy/numpy on inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp

from tli_lightning.stats import bootstrap_ci, describe, mcnemar_exact, paired_stats


def _shifted(n: int = 60, shift: float = 0.1, noise: float = 0.02, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    baseline = rng.uniform(0.2, 0.5, n)
    return baseline + shift + rng.normal(0, noise, n), baseline


def test_paired_stats_on_a_shift_match_scipy_and_cover_the_shift():
    final, baseline = _shifted()
    out = paired_stats(final, baseline, seed=0)
    d = final - baseline
    assert out["n"] == 60
    assert out["mean_gain"] == pytest.approx(d.mean(), abs=1e-15)
    assert out["mean_gain"] == pytest.approx(0.1, abs=0.01)
    assert out["mean_baseline"] == pytest.approx(baseline.mean()) and out["mean_final"] == pytest.approx(final.mean())
    assert out["sd_gain"] == pytest.approx(d.std(ddof=1))
    assert out["ci_low"] < out["mean_gain"] < out["ci_high"]
    assert out["ci_low"] < 0.1 < out["ci_high"]
    t, w = sp.ttest_rel(final, baseline), sp.wilcoxon(final, baseline)
    assert (out["t_statistic"], out["t_pvalue"]) == (pytest.approx(t.statistic), pytest.approx(t.pvalue))
    assert (out["wilcoxon_statistic"], out["wilcoxon_pvalue"]) == (pytest.approx(w.statistic), pytest.approx(w.pvalue))
    assert out["t_pvalue"] < 1e-10 and out["notes"] == []


def test_a_constant_shift_gives_that_gain_and_a_degenerate_interval_around_it():
    baseline = np.linspace(0.0, 1.0, 20)
    out = paired_stats(baseline + 0.25, baseline, seed=0)
    assert out["mean_gain"] == pytest.approx(0.25, abs=1e-12)
    assert out["ci_low"] == pytest.approx(0.25, abs=1e-12) and out["ci_high"] == pytest.approx(0.25, abs=1e-12)
    assert out["t_pvalue"] == pytest.approx(0.0, abs=1e-12)  # scipy: infinite t for zero-variance differences
    assert out["wilcoxon_pvalue"] == pytest.approx(sp.wilcoxon(baseline + 0.25, baseline).pvalue)


def test_no_change_is_reported_as_not_computable_not_a_crash():
    values = np.linspace(0.1, 0.9, 12)
    out = paired_stats(values, values.copy(), seed=0)
    assert out["mean_gain"] == 0.0 and out["ci_low"] == 0.0 and out["ci_high"] == 0.0
    assert out["wilcoxon_statistic"] is None and out["wilcoxon_pvalue"] is None
    assert out["t_statistic"] is None and out["t_pvalue"] is None
    assert any("not computable" in note for note in out["notes"])


def test_too_few_items_and_mismatched_inputs():
    one = paired_stats([0.5], [0.25])
    assert one["mean_gain"] == 0.25 and one["t_pvalue"] is None and one["wilcoxon_pvalue"] is None and one["notes"]
    empty = paired_stats([], [])
    assert empty["n"] == 0 and empty["mean_gain"] is None and empty["ci_low"] is None
    with pytest.raises(ValueError, match="pair up"):
        paired_stats([1.0, 2.0], [1.0])


def test_bootstrap_is_reproducible_for_a_seed_and_equals_scipys_percentile_bootstrap():
    final, baseline = _shifted(n=40, noise=0.05)
    d = final - baseline
    first, again, other = bootstrap_ci(d, seed=0), bootstrap_ci(d, seed=0), bootstrap_ci(d, seed=1)
    assert first == again
    assert first != other and other[0] == pytest.approx(first[0], abs=0.01)
    reference = sp.bootstrap((d,), np.mean, n_resamples=10_000, method="percentile", rng=np.random.default_rng(0))
    assert first == (
        pytest.approx(reference.confidence_interval.low, rel=1e-12),
        pytest.approx(reference.confidence_interval.high, rel=1e-12),
    )
    # Memory is bounded by drawing resamples in blocks; a count that is not a multiple of the block still works.
    assert bootstrap_ci(d, seed=0, resamples=1234) == bootstrap_ci(d, seed=0, resamples=1234)
    assert paired_stats(final, baseline, seed=5)["ci_low"] == bootstrap_ci(d, seed=5)[0]


def test_mcnemar_on_a_constructed_table_is_the_exact_binomial_test_of_the_discordant_pairs():
    # 5 right both times, 2 right only before, 8 right only after, 5 wrong both times.
    before = [True] * 5 + [True] * 2 + [False] * 8 + [False] * 5
    after = [True] * 5 + [False] * 2 + [True] * 8 + [False] * 5
    out = mcnemar_exact(before, after)
    assert out["n"] == 20 and out["only_baseline_correct"] == 2 and out["only_final_correct"] == 8
    assert out["baseline_correct"] == 7 and out["final_correct"] == 13
    assert out["acc_baseline"] == pytest.approx(0.35) and out["acc_final"] == pytest.approx(0.65)
    assert out["acc_diff"] == pytest.approx(0.3)
    assert out["pvalue"] == pytest.approx(sp.binomtest(8, 10, 0.5).pvalue)
    assert out["pvalue"] == pytest.approx(2 * sum(sp.binom.pmf(k, 10, 0.5) for k in (0, 1, 2)))


def test_mcnemar_without_discordant_examples_has_p_one():
    out = mcnemar_exact(np.array([1, 0, 1, 1], dtype=bool), np.array([1, 0, 1, 1], dtype=bool))
    assert out["pvalue"] == 1.0 and out["acc_diff"] == 0.0
    with pytest.raises(ValueError, match="same examples"):
        mcnemar_exact([True], [True, False])


def test_describe():
    d = describe([0.1, 0.3, None, float("nan")])
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.2) and d["sd"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert (d["min"], d["max"]) == (0.1, 0.3)
    assert describe([0.5])["sd"] is None and describe([])["mean"] is None


# ---- clusters, two-stage bootstrap, Holm, detectable effects -------------------------------------------------


def test_a_cluster_bootstrap_of_singletons_is_the_plain_bootstrap():
    from tli_lightning.stats import cluster_bootstrap_ci

    d = np.random.default_rng(1).normal(0.1, 1, 40)
    low, high = cluster_bootstrap_ci(d, np.arange(40), seed=5, resamples=2000)
    expected = bootstrap_ci(d, seed=5, resamples=2000)
    assert low == pytest.approx(expected[0], abs=1e-12) and high == pytest.approx(expected[1], abs=1e-12)


def test_a_cluster_bootstrap_resamples_whole_clusters_as_a_loop_does():
    from tli_lightning.stats import cluster_bootstrap_ci

    values = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 2.0, 0.5])
    clusters = np.array([7, 7, 7, 3, 3, 9, 4])  # ids need not be 0..K-1
    low, high = cluster_bootstrap_ci(values, clusters, seed=2, resamples=3000)
    # The same draws, by a loop over resamples: clusters are numbered in sorted id order.
    members = {c: values[clusters == c] for c in sorted(set(clusters))}
    order = list(members)
    rng, means = np.random.default_rng(2), []
    for start in range(0, 3000, 1000):
        for pick in rng.integers(0, len(order), size=(min(1000, 3000 - start), len(order))):
            chosen = np.concatenate([members[order[i]] for i in pick])
            means.append(chosen.mean())
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    # Three identical items counted as one cluster: a wider interval than treating them as independent.
    plain = bootstrap_ci(values, seed=2, resamples=3000)
    assert high - low > plain[1] - plain[0]


def test_the_two_stage_bootstrap_counts_seed_noise_and_example_noise():
    from tli_lightning.stats import hierarchical_bootstrap

    rng = np.random.default_rng(0)
    examples = rng.normal(0.0, 1.0, 200)  # what every run shares: the benchmark's own sampling noise
    # Arm A is 0.3 above arm B; seeds move each run by N(0, 0.2).
    arm_a = [examples + 0.3 + rng.normal(0, 0.2) for _ in range(5)]
    arm_b = [examples + rng.normal(0, 0.2) for _ in range(5)]
    both = hierarchical_bootstrap([arm_a, arm_b], [1, -1], seed=1, resamples=4000)
    assert both["paired"] and not both["degenerate"]
    assert both["estimate"] == pytest.approx(np.mean(arm_a) - np.mean(arm_b))
    assert both["ci_low"] < both["estimate"] < both["ci_high"]
    # Paired: the shared examples cancel, the seed spread remains (an SE of about 0.2 * sqrt(2/5) = 0.13).
    assert 0.07 < both["se"] < 0.2
    # One run per arm: no seed noise to count, and the shared example noise cancels: far narrower.
    single = hierarchical_bootstrap([arm_a[:1], arm_b[:1]], [1, -1], seed=1, resamples=4000)
    assert single["degenerate"]  # the per-example differences are one constant: nothing varies
    # Unpaired items (each run its own examples): the example noise no longer cancels.
    own = [[rng.normal(0.3, 1, 200) for _ in range(5)], [rng.normal(0, 1, 200) for _ in range(5)]]
    unpaired = hierarchical_bootstrap(own, [1, -1], paired=False, seed=1, resamples=4000)
    assert not unpaired["paired"]
    # Seeds identical here: the true SE is the example noise of 5 + 5 runs of 200, sqrt(2 / 1000) = 0.045. Run
    # means differ by their own examples too, so resampling runs counts that noise again: conservative, at most
    # sqrt(2) wider (sqrt(4 / 1000) = 0.063), never narrower.
    assert np.sqrt(2 / 1000) * 0.9 < unpaired["se"] < np.sqrt(4 / 1000) * 1.15


def test_the_two_stage_bootstrap_of_one_run_per_arm_is_the_paired_bootstrap_of_the_differences():
    from tli_lightning.stats import hierarchical_bootstrap

    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 2, 300).astype(float), rng.integers(0, 2, 300).astype(float)
    result = hierarchical_bootstrap([[a], [b]], [1, -1], seed=3, resamples=5000)
    expected = bootstrap_ci(a - b, seed=9, resamples=5000)
    assert result["ci_low"] == pytest.approx(expected[0], abs=0.012)
    assert result["ci_high"] == pytest.approx(expected[1], abs=0.012)


def test_holm_on_a_family_computed_by_hand():
    from tli_lightning.stats import holm

    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.9]) == [1.0, None, 1.0]  # 2 x 0.5, then never below the previous
    assert holm([]) == []


def test_the_detectable_change_gives_80_percent_power_to_the_exact_mcnemar_test():
    from tli_lightning.stats import mcnemar_mde

    d = mcnemar_mde(500, 0.1)
    assert 0.035 < d < 0.045  # DESIGN.md: about 0.04-0.06 at 500 examples
    assert 0.015 < mcnemar_mde(2490, 0.1) < 0.02 < mcnemar_mde(2490, 0.2) < 0.03
    assert mcnemar_mde(60, 0.3) > 0.15 and mcnemar_mde(60, 0.1) is None  # 60 examples: almost nothing detectable
    # Simulated: 500 examples, 10% discordant, gained - lost = d * 500 on average.
    rng = np.random.default_rng(0)
    gained_rate, lost_rate = (0.1 + d) / 2, (0.1 - d) / 2
    hits = 0
    for _ in range(1500):
        counts = rng.multinomial(500, [gained_rate, lost_rate, 1 - gained_rate - lost_rate])
        hits += sp.binomtest(int(counts[0]), int(counts[0] + counts[1])).pvalue < 0.05
    assert 0.7 < hits / 1500 < 0.87  # the exact test is a little conservative


def test_a_single_cluster_has_no_interval():
    from tli_lightning.stats import cluster_bootstrap_ci

    low, high = cluster_bootstrap_ci([1.0, 2.0, 3.0], [5, 5, 5])
    assert np.isnan(low) and np.isnan(high)
    with pytest.raises(ValueError, match="resamples"):
        cluster_bootstrap_ci([1.0, 2.0], [0, 1], resamples=0)
