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
