"""How far each layer's representations have moved from the base model's: linear CKA and the same text's cosine.

On a fixed, seeded sample of texts (by default XNLI premises of every evaluated language, and lexicon words),
each text is one vector per layer: the mean of its hidden states over its own tokens, BOS/EOS and padding
excluded, exactly as :func:`tli_lightning.alignment.embed_all_layers` pools words. Per layer
(``hidden_states`` numbering: 0 = embeddings, ``i`` = output of block ``i - 1``):

- ``cka``: linear CKA (Kornblith et al. 2019, "Similarity of neural network representations revisited")
  between the base model's ``[texts, hidden]`` matrix and the current model's. 1 = the same geometry up to
  a rotation and a global scale; it ignores both, so it can stay near 1 while every vector moves (Davari
  et al. 2022, "Reliability of CKA as a similarity measure": read it beside ``cos``);
- ``cos``: the mean over texts of the cosine between the text's base vector and its current vector (moves
  with a rotation, which CKA ignores).

The base model's vectors are computed once, before training (the untrained model is the base: LoRA's
``B = 0`` start, a full-rank arm's untouched weights). Their size: layers x texts x hidden x 4 bytes; at 8B
with the defaults (two XNLI languages x 64 premises + 64 words = 192 texts, 33 layers, hidden 4096):
104 MB, kept in the callback's checkpoint state so a resumed run compares against the same vectors.

Example, with any causal LM of a supported family::

    from tli_lightning.drift import drift_report, embed_texts, sample_texts
    texts = sample_texts({"sw": premises_sw, "en": premises_en}, words, seed=0)
    base = {name: embed_texts(model, tokenizer, t) for name, t in texts.items()}   # before training
    ...                                                                                 # train
    now = {name: embed_texts(model, tokenizer, t) for name, t in texts.items()}
    report = drift_report(base, now)
    report["sets"]["premises"]["cka"][2]        # layer 2
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tli_lightning.alignment import embed_all_layers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PREMISES_PER_LANGUAGE = 64
WORDS = 64


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA between ``x`` and ``y`` (``[n, d_x]``, ``[n, d_y]``, rows = the same n examples), in float64.

    ``<K, L>_F / (||K||_F ||L||_F)`` with ``K``, ``L`` the Gram matrices of the column-centred inputs, equal to
    Kornblith et al.'s ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``. NaN when one side has no variance.
    """
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    k, l_ = x @ x.T, y @ y.T  # [n, n]: cheaper than [d, d] for the few hundred texts sampled
    denominator = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l_)
    return float((k * l_).sum() / denominator) if denominator > 0 else float("nan")


def mean_cosine(x: Tensor, y: Tensor) -> float:
    """The mean over rows of ``cos(x_i, y_i)`` (float64)."""
    return float(F.cosine_similarity(x.double(), y.double(), dim=-1).mean())


def sample_texts(
    premises: Mapping[str, Sequence[str]],
    words: Sequence[str],
    premises_per_language: int = PREMISES_PER_LANGUAGE,
    words_count: int = WORDS,
    seed: int = 0,
) -> dict[str, list[str]]:
    """``{"premises": [...], "words": [...]}``: a seeded sample of each language's distinct premises (languages in
    sorted order) and of the distinct words; a set with nothing in it is left out. The same inputs and seed give
    the same sample in every process and every session."""
    rng = random.Random(seed)
    chosen: list[str] = []
    for language in sorted(premises):
        distinct = sorted(set(premises[language]))
        chosen += rng.sample(distinct, min(premises_per_language, len(distinct)))
    distinct_words = sorted(set(words))
    sets = {"premises": chosen, "words": rng.sample(distinct_words, min(words_count, len(distinct_words)))}
    return {name: texts for name, texts in sets.items() if texts}


@torch.no_grad()
def embed_texts(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 32,
    progress: Callable | None = None,
) -> Tensor:
    """``[N + 1, len(texts), hidden]`` float32 on CPU: each text mean-pooled at every layer, special tokens out."""
    return embed_all_layers(model, tokenizer, list(texts), batch_size=batch_size, progress=progress)["plain"]


def drift_report(base: Mapping[str, Tensor], now: Mapping[str, Tensor]) -> dict[str, Any]:
    """Per set and layer, ``cka`` and ``cos`` between ``base[set]`` and ``now[set]`` (``[layers, texts, hidden]``)."""
    sets = {}
    for name, before in base.items():
        after = now[name]
        sets[name] = {
            "texts": int(before.shape[1]),
            "cka": [linear_cka(b, a) for b, a in zip(before, after)],
            "cos": [mean_cosine(b, a) for b, a in zip(before, after)],
        }
    layers = next(iter(base.values())).shape[0] if base else 0
    return {"layers": list(range(layers)), "sets": sets}
