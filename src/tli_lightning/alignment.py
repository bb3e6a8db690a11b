"""Cross-lingual alignment of translation pairs at every layer, with honest baselines.

The **primary endpoint** is bilingual lexicon induction, the standard of Conneau et al. 2018 ("Word
translation without parallel data"): for each source word of a set, is its translation the nearest
of one **shared candidate pool** (every distinct target word of every set, so trained and control
numbers, and every run on the same data, rank against the same candidates) under CSLS,

    CSLS(x, y) = 2 cos(x, y) - r_T(x) - r_S(y)

(``r``: mean cosine to the ``k`` = 10 nearest neighbours in the other language), on **mean-centered**
vectors (each language's mean over the pool's words subtracted)? ``csls_p_at_1`` and ``csls_mrr``
are invariant to adding one common vector to every word vector (centering removes it exactly) and
to rescaling them (cosines ignore scale): a global shift of the space (anisotropy) cannot move
them. Pairs whose two sides are the same string (``kenya``/``kenya``) are left out of the
endpoint, as their vectors are identical at every layer, and counted (``identical_excluded``).
Per query (a distinct source word) the rank of its best translation is kept, with the cluster
of the query (queries sharing a word through the pairs are one cluster), for paired tests and a
cluster bootstrap between evaluations.

Descriptive, secondary numbers for each layer and pair set:

- ``cos``: mean cosine of the translation pairs (the quantity the TLI paper reports);
- ``cos_random``: for each pair, the mean cosine of its source to every other pair's target that is
  not one of its translations (its own random baseline, ``per_pair_random`` in the JSON), averaged
  over pairs: the exact expectation of pairing words at random; ``gap`` = ``cos`` - ``cos_random``.
  The gap is invariant to a constant added to the cosine *values*, **not** to a shift of the
  *vectors*: adding one common vector to every word pushes every cosine towards 1 and the gap
  towards 0 while no translation relation changes;
- ``cos_centered``: pair cosine after subtracting each language's mean vector;
- ``cos_bos``: pair cosine with BOS averaged into the word vector (the TLI paper's pilot artefact);
- ``p_at_1_s2t``/``t2s`` and ``mrr_s2t``/``t2s``: plain-cosine retrieval among the set's own distinct
  words (a pool that differs by set: compare sets with the CSLS endpoint instead). A word with
  several translations counts as right for any of them; ranks are counted (candidates scoring
  strictly higher than the best right one), not sorted.

Example, with any causal LM::

    from tli_lightning.alignment import embed_all_layers, alignment_report, words_of
    words = words_of({"control": pairs})
    vectors = embed_all_layers(model, tokenizer, words)          # {"plain": [N+1, W, H], "with_bos": ...}
    report = alignment_report(zip(vectors["plain"], vectors["with_bos"]), words, {"control": pairs})
    report["sets"]["control"]["csls_p_at_1"]                     # per layer; chance: ["chance_p_at_1"]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from tli_lightning.lexicon import Pair, word_components
from tli_lightning.representations import all_hidden_states, masked_mean, tokenize_words

if TYPE_CHECKING:  # only for the hints: transformers is heavy to import
    from transformers import PreTrainedTokenizerBase

METRICS = (
    "csls_p_at_1",
    "csls_mrr",
    "cos",
    "cos_bos",
    "cos_centered",
    "cos_random",
    "gap",
    "p_at_1_s2t",
    "p_at_1_t2s",
    "mrr_s2t",
    "mrr_t2s",
)
PRIMARY = "csls_p_at_1"  # the primary alignment endpoint (module docstring)
CSLS_K = 10
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


def csls_ranks(queries: Tensor, candidates: Tensor, sources: Tensor, gold: Tensor, k: int = CSLS_K) -> Tensor:
    """Per-query rank of the best right candidate under CSLS (Conneau et al. 2018).

    ``queries`` [Q, H] (a subset of ``sources``), ``candidates`` [C, H], ``sources`` [S, H]: every
    source-language word, for the hubness term ``r_S(y)`` of each candidate; ``gold`` [Q, C] bool.
    Center the vectors first (:func:`center`) for the shift-invariant endpoint. Rank = 1 + the number
    of wrong candidates scoring strictly higher than the best right one.
    """
    queries, candidates = F.normalize(queries.double(), dim=-1), F.normalize(candidates.double(), dim=-1)
    sources = F.normalize(sources.double(), dim=-1)
    k_t, k_s = min(k, len(candidates)), min(k, len(sources))
    # r_S(y): how close each candidate is to its k nearest source words (the hubs score high everywhere).
    r_source = torch.cat(
        [
            (candidates[i : i + _QUERY_CHUNK] @ sources.T).topk(k_s, dim=1).values.mean(1)
            for i in range(0, len(candidates), _QUERY_CHUNK)
        ]
    )
    ranks = []
    for start in range(0, len(queries), _QUERY_CHUNK):
        cos = queries[start : start + _QUERY_CHUNK] @ candidates.T
        r_target = cos.topk(k_t, dim=1).values.mean(1, keepdim=True)
        csls = 2 * cos - r_target - r_source
        right = gold[start : start + _QUERY_CHUNK].to(csls.device)
        best_right = csls.masked_fill(~right, float("-inf")).max(dim=1, keepdim=True).values
        ranks.append(((csls > best_right) & ~right).sum(dim=1) + 1)
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def center(vectors: Tensor) -> Tensor:
    """Subtract the mean vector: removes any vector added to every row, exactly."""
    return vectors - vectors.mean(0, keepdim=True)


@functools.cache
def chance_reciprocal_rank(right: int, candidates: int) -> float:
    """Expected 1/rank of the first of ``right`` right candidates among ``candidates`` in random order."""
    total = math.comb(candidates, right)
    return sum(math.comb(candidates - r, right - 1) / total / r for r in range(1, candidates - right + 2))


def _clusters(pairs: Sequence[Pair], sources: Sequence[str]) -> list[int]:
    """Cluster id per source word: sources linked through shared words of the pairs (either side) share one."""
    of_source = {s: c for (s, _), c in zip(pairs, word_components(pairs))}
    return [of_source[w] for w in sources]


class _Pool:
    """The candidates every set ranks against: all distinct target words of all sets (and all source words,
    for CSLS's hubness term), so retrieval numbers are comparable across sets and runs."""

    def __init__(self, pair_sets: Mapping[str, Sequence[Pair]], index: Mapping[str, int]) -> None:
        self.targets = sorted({t for pairs in pair_sets.values() for _, t in pairs})
        self.sources = sorted({s for pairs in pair_sets.values() for s, _ in pairs})
        self.target_rows = [index[w] for w in self.targets]
        self.source_rows = [index[w] for w in self.sources]
        self.target_pos = {w: i for i, w in enumerate(self.targets)}
        self.source_pos = {w: i for i, w in enumerate(self.sources)}
        self.names = list(pair_sets)

    def describe(self) -> dict:
        return {
            "candidates": len(self.targets),
            "sources": len(self.sources),
            "k": CSLS_K,
            "words": f"every distinct target word of the sets {', '.join(self.names)}",
            "centered": True,
        }


class _SetIndex:
    """Which rows of the word table a pair set uses, and its retrieval answer key."""

    def __init__(self, pairs: Sequence[Pair], index: Mapping[str, int], pool: _Pool | None = None) -> None:
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
        if pool is not None:
            # The endpoint's queries: identical strings on both sides say nothing about alignment.
            kept = [(s, t) for s, t in pairs if s != t]
            self.identical_excluded = len(pairs) - len(kept)
            self.queries = sorted({s for s, _ in kept})
            self.query_rows = [pool.source_pos[w] for w in self.queries]
            self.query_gold = torch.zeros(len(self.queries), len(pool.targets), dtype=torch.bool)
            q_pos = {w: i for i, w in enumerate(self.queries)}
            for s, t in kept:
                self.query_gold[q_pos[s], pool.target_pos[t]] = True
            self.query_clusters = _clusters(kept, self.queries)
            rights = self.query_gold.sum(1).tolist()
            candidates = len(pool.targets)
            self.chance_p_at_1 = sum(r / candidates for r in rights) / len(rights) if rights else None
            self.chance_mrr = (
                sum(chance_reciprocal_rank(r, candidates) for r in rights) / len(rights) if rights else None
            )


def layer_metrics(plain: Tensor, with_bos: Tensor, pairs: _SetIndex) -> tuple[dict[str, float], Tensor, Tensor]:
    """The descriptive metrics of :data:`METRICS` for one layer (``plain``/``with_bos``: [W, H]), then per
    pair [P]: the translation cosine, and the mean cosine to the other pairs' targets (its random baseline).
    The CSLS endpoint needs the shared pool: :func:`alignment_report` adds it."""
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
    so only one layer needs to be in memory. Returns ``{"layers": [...], "pool": {...}, "sets": {name:
    {metric: [per layer], "pairs": [...], "per_pair_cos": [pair][layer], "per_pair_random": [pair][layer],
    "queries": [...], "query_clusters": [...], "per_query_rank": [query][layer], "chance_p_at_1", ...}}}``.
    The CSLS candidate pool is every distinct target word of all the sets given.
    """
    index = {w: i for i, w in enumerate(words)}
    pool = _Pool(pair_sets, index)
    sets = {name: _SetIndex(pairs, index, pool) for name, pairs in pair_sets.items()}
    metrics: dict[str, dict[str, list[float]]] = {name: {m: [] for m in METRICS} for name in sets}
    per_pair: dict[str, list[Tensor]] = {name: [] for name in sets}
    per_pair_random: dict[str, list[Tensor]] = {name: [] for name in sets}
    per_query: dict[str, list[Tensor]] = {name: [] for name in sets}
    count = 0
    for plain, with_bos in layers:
        sources, targets = center(plain[pool.source_rows].double()), center(plain[pool.target_rows].double())
        for name, pairs in sets.items():
            values, cosines, random = layer_metrics(plain, with_bos, pairs)
            ranks = csls_ranks(sources[pairs.query_rows], targets, sources, pairs.query_gold)
            values["csls_p_at_1"] = float((ranks == 1).double().mean()) if len(ranks) else math.nan
            values["csls_mrr"] = float((1.0 / ranks.double()).mean()) if len(ranks) else math.nan
            for metric in METRICS:
                metrics[name][metric].append(round(values[metric], 6))
            per_pair[name].append(cosines.cpu())
            per_pair_random[name].append(random.cpu())
            per_query[name].append(ranks.cpu())
        count += 1
    report: dict = {"layers": list(range(count)), "pool": pool.describe(), "sets": {}}
    for name, pairs in pair_sets.items():
        entry: dict = dict(metrics[name])
        index_ = sets[name]
        entry["candidates"] = len(index_.distinct_targets)  # the set's own pool, for p_at_1_s2t's chance
        entry["pool_candidates"] = len(pool.targets)
        entry["chance_p_at_1"] = index_.chance_p_at_1
        entry["chance_mrr"] = index_.chance_mrr
        entry["identical_excluded"] = index_.identical_excluded
        entry["pairs"] = [list(p) for p in pairs]
        # [pair][layer], the input for paired statistics between evaluations; a pair's margin over
        # chance is per_pair_cos - per_pair_random.
        entry["per_pair_cos"] = [[round(float(x), 6) for x in row] for row in torch.stack(per_pair[name], dim=1)]
        entry["per_pair_random"] = [
            [round(float(x), 6) for x in row] for row in torch.stack(per_pair_random[name], dim=1)
        ]
        # The endpoint per query: hits are rank 1, reciprocal ranks 1/rank; clusters for the bootstrap.
        entry["queries"] = index_.queries
        entry["query_clusters"] = index_.query_clusters
        entry["query_rights"] = index_.query_gold.sum(1).tolist()
        entry["per_query_rank"] = torch.stack(per_query[name], dim=1).tolist() if index_.queries else []
        report["sets"][name] = entry
    return report


def words_of(pair_sets: Mapping[str, Sequence[Pair]]) -> list[str]:
    """Every distinct word of the sets, in a stable order."""
    return sorted({w for pairs in pair_sets.values() for pair in pairs for w in pair})
