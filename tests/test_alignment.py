import itertools

import pytest
import torch
import torch.nn.functional as F

from tli_lightning.alignment import alignment_report, cross_cosine_per_pair, mean_cross_cosine, retrieval, words_of


def _report(table: dict[str, list[float]], pairs, bos_offset: float = 10.0) -> dict:
    words = words_of({"s": pairs})
    plain = torch.stack([torch.tensor(table[w], dtype=torch.float64) for w in words]).float()
    return alignment_report([(plain, plain + bos_offset)], words, {"s": pairs})["sets"]["s"]  # one layer


def test_perfectly_aligned_pairs_beat_the_random_baseline():
    pairs = [("a", "A"), ("b", "B"), ("c", "C")]
    table = {"a": [1, 0, 0], "A": [1, 0.1, 0], "b": [0, 1, 0], "B": [0, 1, 0.1], "c": [0, 0, 1], "C": [0.1, 0, 1]}
    entry = _report(table, pairs)
    assert entry["cos"][0] == pytest.approx(0.995, abs=0.01)
    assert entry["cos_random"][0] < 0.2 and entry["gap"][0] > 0.8
    assert entry["p_at_1_s2t"] == [1.0] and entry["p_at_1_t2s"] == [1.0] and entry["mrr_s2t"] == [1.0]
    assert entry["cos_bos"][0] > 0.99  # a shared offset makes everything look aligned
    assert len(entry["per_pair_cos"]) == 3 and len(entry["per_pair_cos"][0]) == 1


def test_the_random_baseline_is_the_exact_mean_over_every_wrong_pairing():
    g = torch.Generator().manual_seed(0)
    source, target = torch.randn(7, 16, generator=g), torch.randn(7, 16, generator=g)
    brute = [
        F.cosine_similarity(source[i], target[j], dim=0) for i, j in itertools.product(range(7), repeat=2) if i != j
    ]
    assert float(mean_cross_cosine(source, target)) == pytest.approx(float(torch.stack(brute).mean()), abs=1e-6)
    per_pair = [
        torch.stack([F.cosine_similarity(source[i], target[j], dim=0) for j in range(7) if j != i]).mean()
        for i in range(7)
    ]
    torch.testing.assert_close(cross_cosine_per_pair(source, target), torch.stack(per_pair), atol=1e-6, rtol=0)


def test_a_pairs_random_baseline_leaves_out_its_other_translations():
    # "moto" means both "fire" and "hot": pairing moto with hot is right, not random.
    pairs = [("moto", "fire"), ("moto", "hot"), ("maji", "water"), ("jua", "sun")]
    g = torch.Generator().manual_seed(1)
    table = {w: torch.randn(8, generator=g).tolist() for w in ("moto", "fire", "hot", "maji", "water", "jua", "sun")}
    entry = _report(table, pairs)
    vec = {w: torch.tensor(v) for w, v in table.items()}

    def cos(a, b):
        return float(F.cosine_similarity(vec[a], vec[b], dim=0))

    expected = [
        (cos("moto", "water") + cos("moto", "sun")) / 2,  # not "hot"
        (cos("moto", "fire") * 0 + cos("moto", "water") + cos("moto", "sun")) / 2,  # not "fire"
        (cos("maji", "fire") + cos("maji", "hot") + cos("maji", "sun")) / 3,
        (cos("jua", "fire") + cos("jua", "hot") + cos("jua", "water")) / 3,
    ]
    assert [row[0] for row in entry["per_pair_random"]] == pytest.approx(expected, abs=1e-5)
    assert entry["cos_random"][0] == pytest.approx(sum(expected) / 4, abs=1e-5)


def test_a_shift_per_language_moves_cos_but_not_the_centered_cos():
    # Mean-centering removes any per-language offset exactly, so cos_centered is invariant to it
    # while the raw cosine and the random baseline move together.
    pairs = [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")]
    g = torch.Generator().manual_seed(0)
    table = {w: torch.randn(16, generator=g).tolist() for w in "abcdABCD"}
    shift_source, shift_target = torch.randn(16, generator=g) * 8, torch.randn(16, generator=g) * 8
    shifted = {
        w: (torch.tensor(v) + (shift_source if w.islower() else shift_target)).tolist() for w, v in table.items()
    }
    before, after = _report(table, pairs), _report(shifted, pairs)
    assert abs(after["cos"][0] - before["cos"][0]) > 0.2
    assert after["cos_centered"][0] == pytest.approx(before["cos_centered"][0], abs=1e-5)


def test_retrieval_accepts_any_listed_translation_and_counts_ranks():
    pairs = [("moto", "hot"), ("moto", "fire"), ("maji", "water")]
    # The gold translation listed second ("fire") is the nearest: a hit for "moto".
    table = {"moto": [1, 0], "hot": [0.2, 1], "fire": [0.9, 0.1], "maji": [0, 1], "water": [0.1, 1]}
    entry = _report(table, pairs)
    assert entry["p_at_1_s2t"] == [1.0]
    assert entry["p_at_1_t2s"] == [pytest.approx(2 / 3, abs=1e-6)]  # "hot" is nearer "maji" than "moto"
    # Ranks by counting: 2 queries, right answers at ranks 1 and 3.
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    gold = torch.tensor([[True, False, False, False], [False, False, False, True]])
    p_at_1, mrr = retrieval(queries, candidates, gold)
    assert float(p_at_1) == 0.5 and float(mrr) == pytest.approx((1 + 1 / 3) / 2)


# ---- the primary endpoint: CSLS retrieval on centered vectors over one shared pool -------------------------------


def _two_sets(seed: int = 0, hidden: int = 24, noise: float = 0.8):
    """Trained and control pairs whose sources are their targets plus noise, an identical-string pair, and one
    source with two translations."""
    g = torch.Generator().manual_seed(seed)
    trained = [(f"s{i}", f"t{i}") for i in range(12)] + [("s0", "t0b")]
    control = [(f"c{i}", f"u{i}") for i in range(8)] + [("kenya", "kenya")]
    sets = {"trained": trained, "control": control}
    words = words_of(sets)
    targets = {w: torch.randn(hidden, generator=g) for w in words if w[0] in "tuk"}
    vectors = []
    for w in words:
        if w in targets:
            vectors.append(targets[w])
        else:
            partner = {"s": "t", "c": "u"}[w[0]] + w[1:]
            vectors.append(targets[partner] + noise * torch.randn(hidden, generator=g))
    return words, torch.stack(vectors).float(), sets


def _csls_by_hand(vectors: dict[str, list[float]], sources: list[str], targets: list[str], query: str, k: int):
    """CSLS scores of one query against every target, from the definition, in plain Python on numpy."""
    import numpy as np

    src_mean = np.mean([vectors[w] for w in sources], axis=0)
    tgt_mean = np.mean([vectors[w] for w in targets], axis=0)
    s = {w: np.asarray(vectors[w]) - src_mean for w in sources}
    t = {w: np.asarray(vectors[w]) - tgt_mean for w in targets}

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    def r(x, pool):
        return float(np.mean(sorted((cos(x, y) for y in pool), reverse=True)[:k]))

    r_t = r(s[query], t.values())
    return {y: 2 * cos(s[query], t[y]) - r_t - r(t[y], s.values()) for y in targets}


def test_csls_ranks_match_the_definition_computed_by_hand():
    words, table, sets = _two_sets()
    report = alignment_report([(table, table)], words, sets)
    vectors = {w: table[i].double().tolist() for i, w in enumerate(words)}
    sources = sorted({s for pairs in sets.values() for s, _ in pairs})
    targets = sorted({t for pairs in sets.values() for _, t in pairs})
    assert report["pool"]["candidates"] == len(targets) == 22
    for name, pairs in sets.items():
        entry = report["sets"][name]
        for query, [rank] in zip(entry["queries"], entry["per_query_rank"]):
            scores = _csls_by_hand(vectors, sources, targets, query, k=10)
            right = {t for s, t in pairs if s == query}
            best = max(scores[t] for t in right)
            assert rank == 1 + sum(v > best for y, v in scores.items() if y not in right), (name, query)
        ranks = [r[0] for r in entry["per_query_rank"]]
        assert entry["csls_p_at_1"][0] == pytest.approx(sum(r == 1 for r in ranks) / len(ranks), abs=1e-6)
        assert entry["csls_mrr"][0] == pytest.approx(sum(1 / r for r in ranks) / len(ranks), abs=1e-6)
    control = report["sets"]["control"]
    assert control["identical_excluded"] == 1 and "kenya" not in control["queries"]
    assert control["chance_p_at_1"] == pytest.approx(1 / 22)
    # s0 has two translations: one query, two right answers.
    trained = report["sets"]["trained"]
    assert trained["query_rights"][trained["queries"].index("s0")] == 2


def test_the_primary_endpoint_ignores_a_shift_and_a_rescaling_of_the_space_and_the_gap_does_not():
    words, table, sets = _two_sets(noise=1.5)
    shift = 6.0 * torch.randn(table.shape[1], generator=torch.Generator().manual_seed(3))
    before = alignment_report([(table, table)], words, sets)["sets"]
    shifted = alignment_report([(table + shift, table + shift)], words, sets)["sets"]
    scaled = alignment_report([(table * 37.0, table * 37.0)], words, sets)["sets"]
    for name in sets:
        for other in (shifted, scaled):
            for metric in ("csls_p_at_1", "csls_mrr"):
                assert other[name][metric][0] == pytest.approx(before[name][metric][0], abs=1e-6)
            assert other[name]["per_query_rank"] == before[name]["per_query_rank"]
        # The descriptive gap is not shift-invariant: the shift pushes every cosine towards 1.
        assert before[name]["gap"][0] > 0.1
        assert abs(shifted[name]["gap"][0]) < 0.3 * before[name]["gap"][0]
    assert before["trained"]["csls_p_at_1"][0] > 5 * before["trained"]["chance_p_at_1"]


def test_chance_mrr_is_the_mean_reciprocal_rank_over_every_order():
    from tli_lightning.alignment import chance_reciprocal_rank

    for right, candidates in ((1, 5), (2, 5), (3, 6), (1, 1)):
        orders = list(itertools.permutations([True] * right + [False] * (candidates - right)))
        brute = sum(1 / (order.index(True) + 1) for order in orders) / len(orders)
        assert chance_reciprocal_rank(right, candidates) == pytest.approx(brute)
    assert chance_reciprocal_rank(1, 100) == pytest.approx(sum(1 / r for r in range(1, 101)) / 100)


def test_queries_that_share_a_word_through_the_pairs_form_one_cluster():
    from tli_lightning.alignment import _clusters

    pairs = [("a", "x"), ("b", "x"), ("c", "y"), ("c", "z"), ("d", "w"), ("e", "z")]
    ids = _clusters(pairs, ["a", "b", "c", "d", "e"])
    assert ids[0] == ids[1] and ids[2] == ids[4] and len({ids[0], ids[2], ids[3]}) == 3
