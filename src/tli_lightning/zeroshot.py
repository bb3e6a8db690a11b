"""Zero-shot XNLI scoring, exactly as lm-evaluation-harness's ``xnli_<lang>`` task.

Each candidate's score is the summed log-probability of the tokens of ``" " + candidate``
(encoded without special tokens) given the BOS token alone (EOS when there is no BOS); the
prediction is the argmax over the three candidates.

Faster than the harness through batching (length-sorted batches, little padding), running the
LM head only where a score is read, and running each premise once for its three candidates
(the candidates continue from its cached keys and values).

Example, with a causal LM of a supported family (:mod:`tli_lightning.backbones`)::

    from tli_lightning.zeroshot import classification_scores, score_xnli
    loglik = score_xnli(model, tokenizer, examples, language="sw")   # [n, 3]
    scores = classification_scores(loglik.argmax(1).tolist(), [e.label for e in examples])  # acc, macro_f1, ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tli_lightning.backbones import decoder_of, output_logits, sliding_window, takes_position_ids, vocabulary_size
from tli_lightning.xnli import XNLIExample, candidate_templates, candidates

if TYPE_CHECKING:  # only for the hints: transformers is heavy to import
    from transformers import PreTrainedTokenizerBase


def context_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def context_length(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> int:
    """lm-eval's ``max_length``: the config's n_positions, max_position_embeddings or n_ctx, else the tokenizer's
    model_max_length when set, else 2048 (so 2048 for ALiBi models, whose positions have no limit)."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, name, None)
        if value:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if limit and limit < 1e30 else 2048


def _right_padded(sequences: Sequence[Sequence[int]], pad: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Token ids and attention mask ``[len(sequences), longest]``, padded on the right."""
    ids = torch.full((len(sequences), max(len(s) for s in sequences)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, tokens in enumerate(sequences):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids.to(device), mask.to(device)


# LM-head outputs computed at once: 2**26 logits, about 500 positions of a 128k vocabulary; with their bf16
# original, float32 copy and log-softmax 0.62 GiB. Unchunked, the largest batch of 32 Swahili XNLI examples at
# 8B scale needs 4.9 GiB for them (benchmarks/RESULTS.md, section 3).
LOGITS_PER_CHUNK = 2**26


def _token_logprobs(model: torch.nn.Module, hidden: Tensor, targets: Tensor) -> Tensor:
    """log P(target | hidden state) for matching rows of ``hidden`` [N, H] and ``targets`` [N], float64."""
    rows = max(1, LOGITS_PER_CHUNK // vocabulary_size(model))
    chosen = []
    for start in range(0, len(hidden), rows):  # the same arithmetic per row; only kernels may round differently
        logprobs = torch.log_softmax(output_logits(model, hidden[start : start + rows]).float(), dim=-1)
        chosen.append(logprobs.gather(1, targets[start : start + rows, None]).squeeze(1))
    # float64 from here: a float32 running sum near -600 moves in steps of 6e-5, enough to
    # flip near-tied candidates.
    return torch.cat(chosen).double() if chosen else hidden.new_zeros(0, dtype=torch.float64)


def _summed_per_row(model: torch.nn.Module, hidden: Tensor, targets: Tensor, scored: Tensor) -> Tensor:
    """Per row, the summed log-probabilities of ``targets`` at the ``scored`` positions ([B, T] each)."""
    total = torch.zeros(len(hidden), dtype=torch.float64, device=hidden.device)
    return total.index_add_(0, scored.nonzero()[:, 0], _token_logprobs(model, hidden[scored], targets[scored]))


@torch.no_grad()
def score_sequences(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    continuations: Sequence[str],
    *,
    batch_size: int = 32,
    progress: Callable | None = None,
) -> Tensor:
    """Summed log-probability of each ``continuation`` given the BOS token, ``[len(continuations)]`` float64."""
    device = next(model.parameters()).device
    start = context_token_id(tokenizer)
    token_lists = tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
    max_len = context_length(model, tokenizer)
    # lm-eval keeps the last max_length + 1 tokens of context + continuation.
    sequences = [([start] + ids)[-(max_len + 1) :] for ids in token_lists]
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    scores = torch.empty(len(sequences), dtype=torch.float64)
    decoder = decoder_of(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in progress(batches) if progress else batches:
        ids, mask = _right_padded([sequences[i] for i in batch], pad, device)
        hidden = decoder(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=False).last_hidden_state
        # Position t predicts token t + 1; padding is not scored.
        scores[torch.tensor(batch)] = _summed_per_row(model, hidden, ids[:, 1:], mask[:, 1:].bool()).cpu()
    return scores


def shared_prefix_plan(
    grouped: Sequence[Sequence[Sequence[int]]], batch_size: int, window: int = 8
) -> tuple[list[int], list[int]]:
    """Per group of token sequences, the length of the prefix run once; and the order groups are batched in.

    The prefix is the longest common one that leaves every member at least one token of its own to
    score. Both passes pad to their batch's longest: groups are sorted by prefix length, then each run
    of ``window`` batches is re-sorted by the members' own parts, which run ``k`` times per group and
    dominate. On XNLI sw with Llama-3's tokenizer this pads 12% instead of 47% (benchmarks/eval_cost_8b.py).
    """

    def shared_length(members: Sequence[Sequence[int]]) -> int:
        length = min(len(m) for m in members) - 1
        for i in range(1, length):
            if any(m[i] != members[0][i] for m in members):
                return i
        return length

    lengths = [shared_length(members) for members in grouped]
    by_prefix = sorted(range(len(grouped)), key=lambda g: (-lengths[g], -max(len(s) for s in grouped[g])))
    span = batch_size * window
    order = []
    for start in range(0, len(by_prefix), span):
        order += sorted(by_prefix[start : start + span], key=lambda g: -max(len(s) for s in grouped[g]) + lengths[g])
    return lengths, order


@torch.no_grad()
def score_with_shared_prefix(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    groups: Sequence[Sequence[str]],
    *,
    batch_size: int = 32,
    progress: Callable | None = None,
) -> Tensor:
    """Like :func:`score_sequences` for groups of continuations that share a beginning, ``[n_groups, k]``.

    XNLI's three candidates share the premise: its tokens go through the model once per group,
    and only each candidate's remaining tokens run on top of the cached keys and values.
    """
    device = next(model.parameters()).device
    start = context_token_id(tokenizer)
    k = len(groups[0])
    flat = tokenizer([c for group in groups for c in group], add_special_tokens=False)["input_ids"]
    sequences = [[start] + ids for ids in flat]
    max_len = context_length(model, tokenizer)
    longest, window = max(len(s) for s in sequences), sliding_window(model)
    # lm-eval truncates from the left: no shared prefix left. And a sliding-window cache drops the oldest
    # slots of a right-padded row, padding included: past the window, the candidates would see other keys.
    if longest > max_len + 1 or (window is not None and longest > window):
        texts = [c for group in groups for c in group]
        return score_sequences(model, tokenizer, texts, batch_size=batch_size * k, progress=progress).view(
            len(groups), k
        )
    decoder = decoder_of(model)
    # Where positions come from the attention mask (ALiBi), the concatenated mask gives them.
    positions_given = takes_position_ids(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    grouped = [sequences[g * k : (g + 1) * k] for g in range(len(groups))]
    prefix_lengths, order = shared_prefix_plan(grouped, batch_size)
    scores = torch.zeros(len(groups), k, dtype=torch.float64)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in progress(batches) if progress else batches:
        members = [grouped[g] for g in batch]
        shared = [prefix_lengths[g] for g in batch]
        # 1. The shared prefixes, once per group, keeping their keys and values.
        ids, mask = _right_padded([m[0][:p] for m, p in zip(members, shared)], pad, device)
        out = decoder(input_ids=ids, attention_mask=mask, use_cache=True)
        hidden, cache = out.last_hidden_state, out.cache
        lengths = torch.tensor(shared, device=device)
        inside = (
            torch.arange(ids.shape[1], device=device)[None, :] < lengths[:, None] - 1
        )  # position t predicts token t + 1
        within = _summed_per_row(model, hidden, ids.roll(-1, dims=1), inside)  # the wrapped column is never inside
        last = hidden[torch.arange(len(batch), device=device), lengths - 1]  # predicts each candidate's first own token
        first = torch.tensor([[m[j][p] for j in range(k)] for m, p in zip(members, shared)], device=device)
        firsts = _token_logprobs(model, last.repeat_interleave(k, dim=0), first.flatten()).view(len(batch), k)
        # 2. Each candidate's own tokens on top of its group's cache.
        rests = [m[j][p:] for m, p in zip(members, shared) for j in range(k)]
        totals = within[:, None] + firsts
        if max(len(r) for r in rests) > 1:
            rest_ids, rest_mask = _right_padded(rests, pad, device)
            cache.batch_repeat_interleave(k)
            positions = lengths.repeat_interleave(k)[:, None] + torch.arange(rest_ids.shape[1] - 1, device=device)
            attention = torch.cat([mask.repeat_interleave(k, dim=0), rest_mask[:, :-1]], dim=1)
            rest_hidden = decoder(
                input_ids=rest_ids[:, :-1],
                attention_mask=attention,
                **({"position_ids": positions} if positions_given else {}),
                cache=cache,
                use_cache=True,
            ).last_hidden_state
            totals = totals + _summed_per_row(model, rest_hidden, rest_ids[:, 1:], rest_mask[:, 1:].bool()).view(
                len(batch), k
            )
        scores[torch.tensor(batch)] = totals.cpu()
    return scores


def score_xnli(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[XNLIExample],
    language: str = "en",
    *,
    templates: tuple[str, str, str] | None = None,
    batch_size: int = 32,
    progress: Callable | None = None,
) -> Tensor:
    """Log-likelihood of the three candidates of each example, ``[len(examples), 3]``.

    ``templates`` overrides lm-eval's verbalizers with three ``str.format`` strings using
    ``{premise}`` and ``{hypothesis}``.
    """
    templates = templates or candidate_templates(language)
    groups = [[" " + c for c in candidates(e, templates)] for e in examples]
    return score_with_shared_prefix(model, tokenizer, groups, batch_size=batch_size, progress=progress)


def classification_scores(
    predictions: Sequence[int], labels: Sequence[int], num_classes: int = 3
) -> dict[str, float | int]:
    """lm-eval's ``acc`` as the exact fraction ``correct / n``, and macro F1 over the classes.

    Plain counting rather than torchmetrics: its float32 accuracy prints 0.35 as 0.3499999940395355,
    and importing it costs the ``zeroshot`` command over a second. Macro F1 averages the classes that
    occur among labels or predictions, as torchmetrics' ``multiclass_f1_score(average="macro")`` does
    (the tests check the two agree).
    """
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"need as many predictions as labels (at least one), got {len(predictions)} and {len(labels)}")
    correct = sum(int(p == t) for p, t in zip(predictions, labels))
    f1s = []
    for c in range(num_classes):
        tp = sum(1 for p, t in zip(predictions, labels) if p == c and t == c)
        fp = sum(1 for p, t in zip(predictions, labels) if p == c and t != c)
        fn = sum(1 for p, t in zip(predictions, labels) if p != c and t == c)
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"acc": correct / len(labels), "correct": correct, "n": len(labels), "macro_f1": sum(f1s) / len(f1s)}
