"""Cross-lingual alignment of translation pairs at every layer, with honest baselines.

For each layer and pair set:

- ``cos``: mean cosine of the translation pairs;
- ``cos_random``: for each pair, the mean cosine of its source to every other pair's target that is
  not one of its translations (its own random baseline, ``per_pair_random`` in the JSON), averaged
  over pairs: the exact expectation of pairing words at random; ``gap`` = ``cos`` - ``cos_random``.
  A global shift of all vectors (anisotropy) raises ``cos`` and ``cos_random`` alike, not ``gap``;
- ``cos_centered``: pair cosine after subtracting each language's mean vector;
- ``cos_bos``: pair cosine with BOS averaged into the word vector (the TLI paper's pilot artefact);
- ``p_at_1_s2t``/``t2s`` and ``mrr_s2t``/``t2s``: retrieval of the right translation among the set's
  distinct words. A word with several translations counts as right for any of them; ranks are
  counted (candidates scoring strictly higher than the best right one), not sorted.

Example, with any causal LM::

    from tli_lightning.alignment import embed_all_layers, alignment_report, words_of
    words = words_of({"control": pairs})
    vectors = embed_all_layers(model, tokenizer, words)          # {"plain": [N+1, W, H], "with_bos": ...}
    report = alignment_report(zip(vectors["plain"], vectors["with_bos"]), words, {"control": pairs})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from tli_lightning.lexicon import Pair
from tli_lightning.representations import all_hidden_states, masked_mean, tokenize_words

if TYPE_CHECKING:  # only for the hints: transformers is heavy to import
    from transformers import PreTrainedTokenizerBase

METRICS = ("cos", "cos_bos", "cos_centered", "cos_random", "gap", "p_at_1_s2t", "p_at_1_t2s", "mrr_s2t", "mrr_t2s")
# Queries scored at once in retrieval: bounds the [queries, candidates] similarity block.
_QUERY_CHUNK = 1024


@torch.no_grad()
def embed_all_layers(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    words: Sequence[str],
    *,
    template: str = "{word}",
    batch_size: int = 256,
    progress: Callable | None = None,
) -> dict[str, Tensor]:
    """Mean-pooled vectors of every word at every layer, two ways, from one forward per batch.

    Returns ``{"plain": [N+1, W, H], "with_bos": [N+1, W, H]}`` (float32, on CPU): special
    tokens excluded, and included (the BOS-inclusive mean of the TLI paper's pilot).
    """
    device = next(model.parameters()).device
    plain, with_bos = [], []
    starts = range(0, len(words), batch_size)
    for start in progress(starts) if progress else starts:
        batch = tokenize_words(tokenizer, words[start : start + batch_size], template).to(device)
        hidden = torch.stack(all_hidden_states(model, batch.input_ids, batch.attention_mask))
        plain.append(masked_mean(hidden, batch.pooling_mask(False)).cpu())
        with_bos.append(masked_mean(hidden, batch.pooling_mask(True)).cpu())
    return {"plain": torch.cat(plain, dim=1), "with_bos": torch.cat(with_bos, dim=1)}


def _pair_cos(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a, b, dim=-1)


def cross_cosine_per_pair(source: Tensor, target: Tensor, also_right: Tensor | None = None) -> Tensor:
    """For each pair i (rows), the mean of ``cos(source_i, target_j)`` over the other pairs' targets j: its
    own random baseline, exactly, in O(P * H).

    With unit vectors the sum over j is ``s_i . (sum_j t_j)``; take away ``s_i . t_i`` and the rows
    ``also_right`` lists as ``[i, j]`` (``j``'s target is a translation of ``i``'s source too, e.g. a word
    with several translations): a right answer is not a random pairing.
    """
    s, t = F.normalize(source.double(), dim=-1), F.normalize(target.double(), dim=-1)
    total = s @ t.sum(0) - (s * t).sum(-1)
    count = torch.full_like(total, s.shape[0] - 1)
    if also_right is not None and len(also_right):
        i, j = also_right[:, 0].to(s.device), also_right[:, 1].to(s.device)
        total = total.index_add(0, i, -(s[i] * t[j]).sum(-1))
        count = count - torch.bincount(i, minlength=len(count)).double()
    return (total / count.clamp(min=1)).float()


def mean_cross_cosine(source: Tensor, target: Tensor) -> Tensor:
    """Mean of ``cos(source_i, target_j)`` over all ``i != j``: the exact expectation of a random pairing."""
    return cross_cosine_per_pair(source, target).double().mean().float()


def retrieval(queries: Tensor, candidates: Tensor, gold: Tensor) -> tuple[Tensor, Tensor]:
    """Per-query rank of the best right candidate: P@1 and MRR over the queries.

    ``queries`` [Q, H], ``candidates`` [C, H], ``gold`` [Q, C] bool (at least one True per row).
    Rank = 1 + the number of wrong candidates scoring strictly higher than the best right one.
    """
    queries, candidates = F.normalize(queries.float(), dim=-1), F.normalize(candidates.float(), dim=-1)
    ranks = []
    for start in range(0, len(queries), _QUERY_CHUNK):
        sims = queries[start : start + _QUERY_CHUNK] @ candidates.T
        right = gold[start : start + _QUERY_CHUNK].to(sims.device)
        best_right = sims.masked_fill(~right, float("-inf")).max(dim=1, keepdim=True).values
        ranks.append(((sims > best_right) & ~right).sum(dim=1) + 1)
    rank = torch.cat(ranks).double()
    return (rank == 1).double().mean().float(), (1.0 / rank).mean().float()


class _SetIndex:
    """Which rows of the word table a pair set uses, and its retrieval answer key."""

    def __init__(self, pairs: Sequence[Pair], index: Mapping[str, int]) -> None:
        self.source_rows = [index[s] for s, _ in pairs]
        self.target_rows = [index[t] for _, t in pairs]
        sources, targets = sorted({s for s, _ in pairs}), sorted({t for _, t in pairs})
        self.distinct_sources = [index[w] for w in sources]
        self.distinct_targets = [index[w] for w in targets]
        s_pos, t_pos = {w: i for i, w in enumerate(sources)}, {w: i for i, w in enumerate(targets)}
        self.gold = torch.zeros(len(sources), len(targets), dtype=torch.bool)
        for s, t in pairs:
            self.gold[s_pos[s], t_pos[t]] = True
        # Rows whose target is also a translation of another row's source: kept out of its random baseline.
        rows_of_target: dict[str, list[int]] = {}
        for row, (_, t) in enumerate(pairs):
            rows_of_target.setdefault(t, []).append(row)
        translations: dict[str, set[str]] = {}
        for s, t in pairs:
            translations.setdefault(s, set()).add(t)
        right = [[i, j] for i, (s, _) in enumerate(pairs) for t in translations[s] for j in rows_of_target[t] if j != i]
        self.also_right = torch.tensor(right, dtype=torch.long).reshape(-1, 2)


def layer_metrics(plain: Tensor, with_bos: Tensor, pairs: _SetIndex) -> tuple[dict[str, float], Tensor, Tensor]:
    """Every metric of :data:`METRICS` for one layer (``plain``/``with_bos``: [W, H]), then per pair [P]:
    the translation cosine, and the mean cosine to the other pairs' targets (its random baseline)."""
    src, tgt = plain[pairs.source_rows], plain[pairs.target_rows]
    per_pair = _pair_cos(src, tgt)
    per_pair_random = cross_cosine_per_pair(src, tgt, pairs.also_right)
    out = {
        "cos": per_pair.mean(),
        "cos_bos": _pair_cos(with_bos[pairs.source_rows], with_bos[pairs.target_rows]).mean(),
        "cos_centered": _pair_cos(src - src.mean(0), tgt - tgt.mean(0)).mean(),
        "cos_random": per_pair_random.double().mean().float(),
    }
    out["gap"] = out["cos"] - out["cos_random"]
    s_vecs, t_vecs = plain[pairs.distinct_sources], plain[pairs.distinct_targets]
    out["p_at_1_s2t"], out["mrr_s2t"] = retrieval(s_vecs, t_vecs, pairs.gold)
    out["p_at_1_t2s"], out["mrr_t2s"] = retrieval(t_vecs, s_vecs, pairs.gold.T)
    return {k: float(v) for k, v in out.items()}, per_pair, per_pair_random


def alignment_report(
    layers: Iterable[tuple[Tensor, Tensor]], words: Sequence[str], pair_sets: Mapping[str, Sequence[Pair]]
) -> dict:
    """A JSON-ready report from word vectors given one layer at a time.

    ``layers`` yields ``(plain, with_bos)`` vectors ``[W, H]`` per layer (rows follow ``words``),
    so only one layer needs to be in memory. Returns ``{"layers": [...], "sets": {name: {metric:
    [per layer], "pairs": [...], "per_pair_cos": [pair][layer], "per_pair_random": [pair][layer]}}}``.
    """
    index = {w: i for i, w in enumerate(words)}
    sets = {name: _SetIndex(pairs, index) for name, pairs in pair_sets.items()}
    metrics: dict[str, dict[str, list[float]]] = {name: {m: [] for m in METRICS} for name in sets}
    per_pair: dict[str, list[Tensor]] = {name: [] for name in sets}
    per_pair_random: dict[str, list[Tensor]] = {name: [] for name in sets}
    count = 0
    for plain, with_bos in layers:
        for name, pairs in sets.items():
            values, cosines, random = layer_metrics(plain, with_bos, pairs)
            for metric, value in values.items():
                metrics[name][metric].append(round(value, 6))
            per_pair[name].append(cosines.cpu())
            per_pair_random[name].append(random.cpu())
        count += 1
    report: dict = {"layers": list(range(count)), "sets": {}}
    for name, pairs in pair_sets.items():
        entry: dict = dict(metrics[name])
        entry["candidates"] = len(sets[name].distinct_targets)  # retrieval's chance level is 1 / candidates
        entry["pairs"] = [list(p) for p in pairs]
        # [pair][layer], the input for paired statistics between evaluations; a pair's margin over
        # chance is per_pair_cos - per_pair_random.
        entry["per_pair_cos"] = [[round(float(x), 6) for x in row] for row in torch.stack(per_pair[name], dim=1)]
        entry["per_pair_random"] = [
            [round(float(x), 6) for x in row] for row in torch.stack(per_pair_random[name], dim=1)
        ]
        report["sets"][name] = entry
    return report


def words_of(pair_sets: Mapping[str, Sequence[Pair]]) -> list[str]:
    """Every distinct word of the sets, in a stable order."""
    return sorted({w for pairs in pair_sets.values() for pair in pairs for w in pair})
