"""Zero-shot multiple-choice scoring, exactly as lm-evaluation-harness 0.4 scores a ``multiple_choice`` task.

A request is a ``(context, continuation)`` pair; its score is the summed log-probability of the
continuation's tokens given the context's, both tokenized as lm-eval's Hugging Face model does
(:func:`lm_eval_pairs`: an empty context is the BOS token, EOS when there is none). The prediction is the
argmax over an example's choices. :mod:`tli_lightning.tasks` builds the requests of XNLI, XCOPA and
XStoryCloze; :func:`score_xnli` keeps XNLI's own entry point (empty context, three candidates).

Faster than the harness through batching (length-sorted batches, little padding), running the LM head
only where a score is read (the continuation's tokens), and running each example's shared beginning (its
context, and for XNLI the premise too) once for all its choices: they continue from its cached keys and
values.

Example, with a causal LM of a supported family (:mod:`tli_lightning.backbones`)::

    from tli_lightning.zeroshot import classification_scores, score_contexts, score_xnli
    loglik = score_xnli(model, tokenizer, examples, language="sw")   # [n, 3]
    scores = classification_scores(loglik.argmax(1).tolist(), [e.label for e in examples])  # acc, macro_f1, ...
    score_contexts(model, tokenizer, [("Mvua ilinyesha kwa hiyo", [" barabara ililowa.", " jua liliwaka."])])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tli_lightning.backbones import decoder_of, output_logits, sliding_window, takes_position_ids, vocabulary_size
from tli_lightning.errors import TLIError
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


def lm_eval_pairs(
    tokenizer: PreTrainedTokenizerBase, requests: Sequence[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """``(context tokens, continuation tokens)`` per ``(context, continuation)``, as lm-eval 0.4's causal HFLM.

    Its ``loglikelihood`` and ``_encode_pair``, step for step: an empty context is the prefix token (BOS,
    else EOS; the continuation's own first token instead when it already is that token) and the continuation
    is encoded without special tokens. Otherwise the context's trailing spaces move to the continuation, and
    the continuation's tokens are those of ``encode(context + continuation)`` past ``len(encode(context))``,
    both encoded with the tokenizer's own special tokens (BOS for Llama, Gemma, Mistral; none for GPT-2,
    Qwen, BLOOM), or none when the text already starts with the prefix token's text. The context's tokens
    are ``encode(context)`` even where a token straddles the boundary in the whole text: lm-eval feeds
    exactly ``context tokens + continuation tokens``.
    """
    prefix = context_token_id(tokenizer)
    prefix_text = tokenizer.decode(prefix)
    texts: dict[bool, list[str]] = {True: [], False: []}  # add_special_tokens -> texts to encode that way

    def ask(text: str, special: bool = True) -> tuple[bool, int]:
        special = special and not text.startswith(prefix_text)
        texts[special].append(text)
        return special, len(texts[special]) - 1

    plans = []
    for context, continuation in requests:
        if context == "":
            plans.append((None, ask(continuation, special=False)))
            continue
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        plans.append((ask(context), ask(context + continuation)))
    encoded = {
        special: tokenizer(batch, add_special_tokens=special)["input_ids"] if batch else []
        for special, batch in texts.items()
    }
    pairs = []
    for (context, continuation), (context_at, whole_at) in zip(requests, plans):
        if context_at is None:
            tokens = encoded[whole_at[0]][whole_at[1]]
            pair = ([prefix], tokens) if not tokens or tokens[0] != prefix else (tokens[:1], tokens[1:])
        else:
            context_ids = encoded[context_at[0]][context_at[1]]
            pair = (context_ids, encoded[whole_at[0]][whole_at[1]][len(context_ids) :])
        if not pair[1]:
            raise TLIError(f"nothing to score: continuation {continuation!r} after context {context!r} has no tokens")
        pairs.append(pair)
    return pairs


@torch.no_grad()
def score_token_sequences(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sequences: Sequence[Sequence[int]],
    scored: Sequence[int],
    *,
    batch_size: int = 32,
    progress: Callable | None = None,
) -> Tensor:
    """Summed log-probability of the last ``scored[i]`` tokens of each token sequence, ``[len(sequences)]`` float64.

    As lm-eval's ``_loglikelihood_tokens``: a sequence longer than the context window keeps its last
    ``max_length + 1`` tokens.
    """
    device = next(model.parameters()).device
    max_len = context_length(model, tokenizer)
    sequences = [list(s)[-(max_len + 1) :] for s in sequences]
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    scores = torch.empty(len(sequences), dtype=torch.float64)
    decoder = decoder_of(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in progress(batches) if progress else batches:
        ids, mask = _right_padded([sequences[i] for i in batch], pad, device)
        hidden = decoder(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=False).last_hidden_state
        # Position t predicts token t + 1: scored when that token is one of the sequence's last `scored`.
        targets = torch.arange(1, ids.shape[1], device=device)[None, :]
        ends = torch.tensor([len(sequences[i]) for i in batch], device=device)[:, None]
        counts = torch.tensor([scored[i] for i in batch], device=device)[:, None]
        wanted = (targets < ends) & (targets >= ends - counts)
        scores[torch.tensor(batch)] = _summed_per_row(model, hidden, ids[:, 1:], wanted).cpu()
    return scores


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
    pairs = lm_eval_pairs(tokenizer, [("", c) for c in continuations])
    return score_token_sequences(
        model,
        tokenizer,
        [c + t for c, t in pairs],
        [len(t) for _, t in pairs],
        batch_size=batch_size,
        progress=progress,
    )


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
def score_pairs_shared(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    grouped_pairs: Sequence[Sequence[tuple[Sequence[int], Sequence[int]]]],
    *,
    batch_size: int = 32,
    progress: Callable | None = None,
) -> Tensor:
    """Per group of ``(context tokens, continuation tokens)`` pairs (as :func:`lm_eval_pairs` gives them), the
    summed log-probability of each continuation given its context, ``[n_groups, k]`` float64.

    The members of a group share their beginning (their context, and for XNLI the premise too): its tokens go
    through the model once per group, and only each member's remaining tokens run on top of the cached keys
    and values. Only continuation tokens are scored, so the LM head runs only from the end of the context on.
    """
    device = next(model.parameters()).device
    k = len(grouped_pairs[0])
    if any(len(g) != k for g in grouped_pairs):
        raise ValueError(
            f"every group needs the same number of members ({k}), got {sorted({len(g) for g in grouped_pairs})}"
        )
    grouped = [[list(c) + list(t) for c, t in group] for group in grouped_pairs]
    firsts_scored = [
        {len(s) - len(t) for s, (_, t) in zip(members, group)} for members, group in zip(grouped, grouped_pairs)
    ]
    max_len = context_length(model, tokenizer)
    longest, window = max(len(s) for g in grouped for s in g), sliding_window(model)
    prefix_lengths, order = shared_prefix_plan(grouped, batch_size)
    # lm-eval truncates from the left: no shared prefix left. A sliding-window cache drops the oldest slots of a
    # right-padded row, padding included: past the window, the members would see other keys. And members whose
    # contexts differ in length (never from lm_eval_pairs, which encodes one context per group) share no plan.
    if (
        longest > max_len + 1
        or (window is not None and longest > window)
        or any(len(s) != 1 for s in firsts_scored)
        or any(p < min(s) for p, s in zip(prefix_lengths, firsts_scored))
    ):
        flat = [s for g in grouped for s in g]
        counts = [len(t) for g in grouped_pairs for _, t in g]
        return score_token_sequences(model, tokenizer, flat, counts, batch_size=batch_size * k, progress=progress).view(
            len(grouped), k
        )
    context_ends = [min(s) for s in firsts_scored]  # index of each group's first scored token
    decoder = decoder_of(model)
    # Where positions come from the attention mask (ALiBi), the concatenated mask gives them.
    positions_given = takes_position_ids(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = torch.zeros(len(grouped), k, dtype=torch.float64)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in progress(batches) if progress else batches:
        members = [grouped[g] for g in batch]
        shared = [prefix_lengths[g] for g in batch]
        # 1. The shared prefixes, once per group, keeping their keys and values.
        ids, mask = _right_padded([m[0][:p] for m, p in zip(members, shared)], pad, device)
        out = decoder(input_ids=ids, attention_mask=mask, use_cache=True)
        hidden, cache = out.last_hidden_state, out.cache
        lengths = torch.tensor(shared, device=device)
        starts = torch.tensor([context_ends[g] for g in batch], device=device)
        # Position t predicts token t + 1, scored from the first continuation token on, up to the prefix's end.
        t = torch.arange(ids.shape[1], device=device)[None, :]
        inside = (t < lengths[:, None] - 1) & (t >= starts[:, None] - 1)
        within = _summed_per_row(model, hidden, ids.roll(-1, dims=1), inside)  # the wrapped column is never inside
        last = hidden[torch.arange(len(batch), device=device), lengths - 1]  # predicts each member's first own token
        first = torch.tensor([[m[j][p] for j in range(k)] for m, p in zip(members, shared)], device=device)
        firsts = _token_logprobs(model, last.repeat_interleave(k, dim=0), first.flatten()).view(len(batch), k)
        # 2. Each member's own tokens on top of its group's cache.
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
    k = len(groups[0])
    pairs = lm_eval_pairs(tokenizer, [("", c) for group in groups for c in group])
    grouped = [pairs[g * k : (g + 1) * k] for g in range(len(groups))]
    return score_pairs_shared(model, tokenizer, grouped, batch_size=batch_size, progress=progress)


def score_contexts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[tuple[str, Sequence[str]]],
    *,
    batch_size: int = 32,
    progress: Callable | None = None,
) -> Tensor:
    """Per ``(context, continuations)``, lm-eval's log-likelihood of each continuation given the context
    (``""``: given the BOS token), ``[len(requests), k]`` float64; the context runs once per request."""
    k = len(requests[0][1])
    if any(len(c) != k for _, c in requests):
        raise ValueError(f"every request needs {k} continuations, got {sorted({len(c) for _, c in requests})}")
    pairs = lm_eval_pairs(tokenizer, [(context, c) for context, conts in requests for c in conts])
    grouped = [pairs[g * k : (g + 1) * k] for g in range(len(requests))]
    return score_pairs_shared(model, tokenizer, grouped, batch_size=batch_size, progress=progress)


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
    predictions: Sequence[int], labels: Sequence[int], num_classes: int | None = None
) -> dict[str, float | int]:
    """lm-eval's ``acc`` as the exact fraction ``correct / n``, and macro F1 over the classes.

    Plain counting rather than torchmetrics: its float32 accuracy prints 0.35 as 0.3499999940395355,
    and importing it costs the ``zeroshot`` command over a second. Macro F1 averages the classes that
    occur among labels or predictions, as torchmetrics' ``multiclass_f1_score(average="macro")`` does
    (the tests check the two agree). ``num_classes`` (default: every class seen) only bounds the classes
    looked at; a class absent from both adds nothing, so 2 (XCOPA, XStoryCloze) and 3 give the same numbers.
    """
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"need as many predictions as labels (at least one), got {len(predictions)} and {len(labels)}")
    if num_classes is None:
        num_classes = 1 + max(max(predictions), max(labels))
    correct = sum(int(p == t) for p, t in zip(predictions, labels))
    f1s = []
    for c in range(num_classes):
        tp = sum(1 for p, t in zip(predictions, labels) if p == c and t == c)
        fp = sum(1 for p, t in zip(predictions, labels) if p == c and t != c)
        fn = sum(1 for p, t in zip(predictions, labels) if p != c and t == c)
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"acc": correct / len(labels), "correct": correct, "n": len(labels), "macro_f1": sum(f1s) / len(f1s)}
