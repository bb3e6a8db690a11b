"""Contrastive losses on a batch of aligned (source, target) vectors.

Row ``i`` of ``source`` translates row ``i`` of ``target``; every other row of the batch is a
negative. Both losses L2-normalize first, so similarities are cosines.

Example::

    from tli_lightning.losses import triplet_hardest_negative
    out = triplet_hardest_negative(sw_vectors, en_vectors, margin=0.4)
    out.loss.backward()
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class ContrastiveOutput(NamedTuple):
    loss: Tensor
    positive: Tensor  # [B] cosine of each translation pair
    hardest_negative: Tensor  # [B] highest cosine of each source row to a wrong target


def cosine_matrix(source: Tensor, target: Tensor) -> Tensor:
    return F.normalize(source.float(), dim=-1) @ F.normalize(target.float(), dim=-1).T


def _split(sim: Tensor) -> tuple[Tensor, Tensor]:
    if sim.shape[0] < 2:
        raise ValueError("a contrastive batch needs at least 2 pairs (in-batch negatives)")
    off_diagonal = sim.masked_fill(torch.eye(len(sim), dtype=torch.bool, device=sim.device), float("-inf"))
    return sim.diagonal(), off_diagonal.max(dim=1).values


def triplet_hardest_negative(source: Tensor, target: Tensor, margin: float = 0.4) -> ContrastiveOutput:
    """The TLI paper's loss: ``mean_i relu(margin + max_{j != i} S_ij - S_ii)``."""
    positive, hardest = _split(cosine_matrix(source, target))
    return ContrastiveOutput(F.relu(margin + hardest - positive).mean(), positive, hardest)


def info_nce(source: Tensor, target: Tensor, temperature: float = 0.05) -> ContrastiveOutput:
    """Symmetric InfoNCE: cross-entropy over targets for each source, and over sources for each target."""
    sim = cosine_matrix(source, target)
    labels = torch.arange(len(sim), device=sim.device)
    logits = sim / temperature
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    positive, hardest = _split(sim)
    return ContrastiveOutput(loss, positive, hardest)
