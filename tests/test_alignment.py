import pytest
import torch

from tli_lightning.alignment import alignment_report, derangement, words_of


def _vectors(words, table):
    plain = torch.stack([torch.tensor(table[w], dtype=torch.float32) for w in words])[None]  # one layer
    return {"plain": plain, "with_bos": plain + 10.0}  # BOS-like common offset


def test_perfectly_aligned_pairs_beat_the_shuffled_baseline():
    pairs = [("a", "A"), ("b", "B"), ("c", "C")]
    table = {"a": [1, 0, 0], "A": [1, 0.1, 0], "b": [0, 1, 0], "B": [0, 1, 0.1], "c": [0, 0, 1], "C": [0.1, 0, 1]}
    words = words_of({"s": pairs})
    entry = alignment_report(_vectors(words, table), words, {"s": pairs}, seed=0)["sets"]["s"]
    assert entry["cos"][0] == pytest.approx(0.995, abs=0.01)
    assert entry["cos_random"][0] < 0.2 and entry["gap"][0] > 0.8
    assert entry["p_at_1_s2t"] == [1.0] and entry["p_at_1_t2s"] == [1.0] and entry["mrr_s2t"] == [1.0]
    assert entry["cos_bos"][0] > 0.99  # a shared offset makes everything look aligned
    assert len(entry["per_pair_cos"]) == 3 and len(entry["per_pair_cos"][0]) == 1


def test_a_global_shift_raises_cos_but_not_the_gap_or_centered_cos():
    pairs = [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")]
    g = torch.Generator().manual_seed(0)
    table = {w: torch.randn(16, generator=g).tolist() for w in "abcdABCD"}
    shifted = {w: (torch.tensor(v) + 8.0).tolist() for w, v in table.items()}
    words = words_of({"s": pairs})
    before = alignment_report(_vectors(words, table), words, {"s": pairs})["sets"]["s"]
    after = alignment_report(_vectors(words, shifted), words, {"s": pairs})["sets"]["s"]
    assert after["cos"][0] > before["cos"][0] + 0.5
    assert abs(after["gap"][0]) < 0.05
    assert after["cos_centered"][0] == pytest.approx(before["cos_centered"][0], abs=0.15)


def test_retrieval_accepts_any_listed_translation():
    pairs = [("moto", "fire"), ("moto", "hot"), ("maji", "water")]
    table = {"moto": [1, 0], "fire": [0.9, 0.1], "hot": [0.8, 0.3], "maji": [0, 1], "water": [0.1, 1]}
    words = words_of({"s": pairs})
    entry = alignment_report(_vectors(words, table), words, {"s": pairs})["sets"]["s"]
    assert entry["p_at_1_s2t"] == [1.0]  # "moto" -> "fire" is right; "hot" would be too
    assert entry["p_at_1_t2s"] == [1.0]


def test_derangement_has_no_fixed_point_and_is_seeded():
    for n in (2, 3, 10, 100):
        order = derangement(n, seed=1)
        assert sorted(order) == list(range(n)) and all(i != j for i, j in enumerate(order))
    assert derangement(50, 1) == derangement(50, 1) != derangement(50, 2)
