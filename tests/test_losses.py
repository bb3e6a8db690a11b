import math

import pytest
import torch

from tli_lightning.losses import info_nce, triplet_hardest_negative


def test_triplet_matches_hand_computation():
    # Rows: source, columns: target; after normalisation S = [[1, 0.6], [0, 0.8]].
    source = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([[3.0, 0.0], [0.6, 0.8]])
    out = triplet_hardest_negative(source, target, margin=0.4)
    assert out.positive.tolist() == pytest.approx([1.0, 0.8])
    assert out.hardest_negative.tolist() == pytest.approx([0.6, 0.0])
    assert out.loss.item() == pytest.approx((max(0, 0.4 + 0.6 - 1.0) + max(0, 0.4 + 0.0 - 0.8)) / 2)
    hard = triplet_hardest_negative(source, target, margin=1.0)
    assert hard.loss.item() == pytest.approx(((1.0 + 0.6 - 1.0) + (1.0 + 0.0 - 0.8)) / 2)


def test_triplet_uses_the_hardest_of_several_negatives():
    source = torch.eye(3)
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) + torch.tensor(
        [[0, 0.5, 0.1], [0, 0, 0], [0, 0, 0]]
    )
    out = triplet_hardest_negative(source, target, margin=0.4)
    sim = torch.nn.functional.normalize(source) @ torch.nn.functional.normalize(target).T
    expected = [max(0.0, 0.4 + max(sim[i, j].item() for j in range(3) if j != i) - sim[i, i].item()) for i in range(3)]
    assert out.loss.item() == pytest.approx(sum(expected) / 3)


def test_infonce_matches_hand_computation():
    source = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = 0.5
    # S = [[1, 0.6], [0, 0.8]]
    row = (
        -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0.6 / t)))
        - math.log(math.exp(0.8 / t) / (math.exp(0 / t) + math.exp(0.8 / t)))
    ) / 2
    col = (
        -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0 / t)))
        - math.log(math.exp(0.8 / t) / (math.exp(0.6 / t) + math.exp(0.8 / t)))
    ) / 2
    assert info_nce(source, target, temperature=t).loss.item() == pytest.approx((row + col) / 2, rel=1e-5)


def test_a_single_pair_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        triplet_hardest_negative(torch.ones(1, 4), torch.ones(1, 4))
