"""Zero-shot XNLI scoring, exactly as lm-evaluation-harness's ``xnli_<lang>`` task.

Each candidate's score is the summed log-probability of the tokens of ``" " + candidate``
(encoded without special tokens) given the BOS token alone (EOS when there is no BOS); the
prediction is the argmax over the three candidates.

Faster than the harness through batching: every candidate sequence of every example goes
into length-sorted batches (little padding), and the LM head only runs where a score is read.

Example, with any causal LM::

    from tli_lightning.zeroshot import score_xnli, accuracy_and_f1
    loglik = score_xnli(model, tokenizer, examples, language="sw")   # [n, 3]
    acc, f1 = accuracy_and_f1(loglik.argmax(1), [e.label for e in examples])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from tli_lightning.representations import decoder_of
from tli_lightning.xnli import XNLIExample, candidate_templates, candidates


def context_token_id(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def _lm_head(model: torch.nn.Module) -> torch.nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_output_embeddings()


@torch.no_grad()
def score_sequences(
    model: torch.nn.Module,
    tokenizer,
    continuations: Sequence[str],
    *,
    batch_size: int = 32,
    progress: Callable | None = None,
) -> Tensor:
    """Summed log-probability of each ``continuation`` given the BOS token, ``[len(continuations)]`` float64."""
    device = next(model.parameters()).device
    start = context_token_id(tokenizer)
    token_lists = tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
    max_len = getattr(model.config, "max_position_embeddings", None) or 10**9
    # lm-eval keeps the last max_length + 1 tokens of context + continuation.
    sequences = [([start] + ids)[-(max_len + 1) :] for ids in token_lists]
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    scores = torch.empty(len(sequences), dtype=torch.float64)
    decoder, head = decoder_of(model), _lm_head(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in progress(batches) if progress else batches:
        length = len(sequences[batch[0]])
        ids = torch.full((len(batch), length), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            mask[row, : len(sequences[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        hidden = decoder(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=False).last_hidden_state
        scored = mask[:, 1:].bool()  # position t predicts token t + 1; padding is not scored
        logprobs = torch.log_softmax(head(hidden[scored]).float(), dim=-1)
        # Summed in float64: a float32 running sum near -600 moves in steps of 6e-5, enough to
        # flip near-tied candidates.
        token_scores = logprobs.gather(1, ids[:, 1:][scored][:, None]).squeeze(1).double()
        row_of = scored.nonzero()[:, 0]
        per_row = torch.zeros(len(batch), dtype=torch.float64, device=device).index_add_(0, row_of, token_scores)
        scores[torch.tensor(batch)] = per_row.cpu()
    return scores


def score_xnli(
    model: torch.nn.Module,
    tokenizer,
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
    texts = [" " + c for e in examples for c in candidates(e, templates)]
    return score_sequences(model, tokenizer, texts, batch_size=batch_size, progress=progress).view(-1, 3)


def accuracy_and_f1(predictions: Tensor, labels: Sequence[int]) -> tuple[float, float]:
    """Micro accuracy (lm-eval's ``acc``) and macro F1 over the three labels."""
    target = torch.as_tensor(list(labels))
    predictions = predictions.to(target.device)
    acc = multiclass_accuracy(predictions, target, num_classes=3, average="micro")
    f1 = multiclass_f1_score(predictions, target, num_classes=3, average="macro")
    return float(acc), float(f1)
