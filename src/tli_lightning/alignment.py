"""Cross-lingual alignment of translation pairs at every layer, with honest baselines.

For each layer and pair set: mean translation-pair cosine (``cos``), the same with BOS averaged
in (``cos_bos``, the artefact), mean-centered cosine, shuffled-pair cosine (``cos_random``) and
the ``gap`` between them, and retrieval of the right translation among the set's candidates
(``p_at_1_s2t``/``t2s``, ``mrr_s2t``/``t2s``).

Example, with any causal LM::

    from tli_lightning.alignment import embed_all_layers, alignment_report
    vectors = embed_all_layers(model, tokenizer, words)   # {"cos": [N+1, W, H], "cos_bos": ...}
    report = alignment_report(vectors, words, {"trained": pairs}, seed=0)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tli_lightning.lexicon import Pair
from tli_lightning.representations import all_hidden_states, masked_mean, tokenize_words

METRICS = ("cos", "cos_bos", "cos_centered", "cos_random", "gap", "p_at_1_s2t", "p_at_1_t2s", "mrr_s2t", "mrr_t2s")


@torch.no_grad()
def embed_all_layers(
    model: torch.nn.Module,
    tokenizer,
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


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point (each word meets a wrong partner)."""
    rng = random.Random(seed)
    order = list(range(n))
    while n > 1:
        rng.shuffle(order)
        if all(i != j for i, j in enumerate(order)):
            return order
    return order


def _retrieval(queries: Tensor, candidates: Tensor, gold: list[set[int]]) -> tuple[Tensor, Tensor]:
    """P@1 and MRR per layer: ``queries`` [L, Q, H] against ``candidates`` [L, C, H]."""
    sims = F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).transpose(1, 2)  # [L, Q, C]
    order = sims.argsort(dim=-1, descending=True)
    is_gold = torch.zeros(sims.shape[1:], dtype=torch.bool)
    for q, answers in enumerate(gold):
        is_gold[q, list(answers)] = True
    hits = is_gold[torch.arange(len(gold))[None, :, None], order]  # [L, Q, C] in rank order
    first = hits.float().argmax(dim=-1)  # rank (0-based) of the best-ranked right answer
    return hits[..., 0].float().mean(dim=1), (1.0 / (first + 1).float()).mean(dim=1)


def _retrieval_both_ways(src: Tensor, tgt: Tensor, pairs: Sequence[Pair]) -> dict[str, Tensor]:
    # Queries and candidates are the set's distinct words; a word with several translations
    # counts as right when any of them comes first.
    sources = sorted({s for s, _ in pairs})
    targets = sorted({t for _, t in pairs})
    s_index = {w: i for i, w in enumerate(sources)}
    t_index = {w: i for i, w in enumerate(targets)}
    first_s = {s: i for i, (s, _) in reversed(list(enumerate(pairs)))}
    first_t = {t: i for i, (_, t) in reversed(list(enumerate(pairs)))}
    s_vecs = src[:, [first_s[w] for w in sources]]
    t_vecs = tgt[:, [first_t[w] for w in targets]]
    gold_s2t = [set() for _ in sources]
    gold_t2s = [set() for _ in targets]
    for s, t in pairs:
        gold_s2t[s_index[s]].add(t_index[t])
        gold_t2s[t_index[t]].add(s_index[s])
    p_s2t, mrr_s2t = _retrieval(s_vecs, t_vecs, gold_s2t)
    p_t2s, mrr_t2s = _retrieval(t_vecs, s_vecs, gold_t2s)
    return {"p_at_1_s2t": p_s2t, "p_at_1_t2s": p_t2s, "mrr_s2t": mrr_s2t, "mrr_t2s": mrr_t2s}


def set_metrics(vectors: Mapping[str, Tensor], index: Mapping[str, int], pairs: Sequence[Pair], seed: int) -> dict[str, Tensor]:
    """Every metric of :data:`METRICS` per layer (``[N+1]`` tensors), plus ``per_pair`` cosines ``[N+1, P]``."""
    s_ids = [index[s] for s, _ in pairs]
    t_ids = [index[t] for _, t in pairs]
    src, tgt = vectors["plain"][:, s_ids], vectors["plain"][:, t_ids]
    per_pair = _pair_cos(src, tgt)
    shuffled = _pair_cos(src, tgt[:, derangement(len(pairs), seed)])
    centered = _pair_cos(src - src.mean(dim=1, keepdim=True), tgt - tgt.mean(dim=1, keepdim=True))
    bos = _pair_cos(vectors["with_bos"][:, s_ids], vectors["with_bos"][:, t_ids])
    out = {
        "cos": per_pair.mean(dim=1),
        "cos_bos": bos.mean(dim=1),
        "cos_centered": centered.mean(dim=1),
        "cos_random": shuffled.mean(dim=1),
    }
    out["gap"] = out["cos"] - out["cos_random"]
    out.update(_retrieval_both_ways(src, tgt, pairs))
    out["per_pair"] = per_pair
    return out


def alignment_report(
    vectors: Mapping[str, Tensor], words: Sequence[str], pair_sets: Mapping[str, Sequence[Pair]], seed: int = 0
) -> dict:
    """A JSON-ready report: ``{"layers": [...], "sets": {name: {metric: [per layer], "pairs", "per_pair_cos"}}}``."""
    index = {w: i for i, w in enumerate(words)}
    report: dict = {"layers": list(range(vectors["plain"].shape[0])), "sets": {}}
    for name, pairs in pair_sets.items():
        metrics = set_metrics(vectors, index, pairs, seed)
        per_pair = metrics.pop("per_pair")
        entry = {k: [round(float(x), 6) for x in v] for k, v in metrics.items()}
        entry["pairs"] = [list(p) for p in pairs]
        # [pair][layer], the input for paired statistics between evaluations.
        entry["per_pair_cos"] = [[round(float(x), 6) for x in row] for row in per_pair.T]
        report["sets"][name] = entry
    return report


def words_of(pair_sets: Mapping[str, Sequence[Pair]]) -> list[str]:
    """Every distinct word of the sets, in a stable order."""
    return sorted({w for pairs in pair_sets.values() for pair in pairs for w in pair})
