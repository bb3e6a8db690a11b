"""Word representations at any layer of a Hugging Face decoder: tokenize, forward, pool.

Layer indices follow ``hidden_states`` (see :mod:`tli_lightning.layers`): 0 = embeddings,
``i`` = output of block ``i - 1``, ``-1`` = final normed output.

Example, with a causal LM of a supported family (:mod:`tli_lightning.backbones`; plain or PEFT-wrapped)::

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tli_lightning.representations import word_vectors

    model = AutoModelForCausalLM.from_pretrained("path/or/hub-id")
    tokenizer = AutoTokenizer.from_pretrained("path/or/hub-id")
    vecs = word_vectors(model, tokenizer, ["maji", "water"], layer=2)  # [2, hidden]
    per_layer = word_vectors(model, tokenizer, ["maji", "water"], layer=None)  # [N+1, 2, hidden]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from tli_lightning.backbones import blocks_of, decoder_of, final_norm_of, num_blocks, only_first_blocks
from tli_lightning.errors import TLIError
from tli_lightning.layers import resolve_layer

if TYPE_CHECKING:  # only for the hints: transformers is heavy to import
    from transformers import PreTrainedTokenizerBase


@dataclass
class TokenizedWords:
    """A right-padded batch of words, with the masks pooling needs."""

    input_ids: Tensor
    attention_mask: Tensor
    word_mask: Tensor  # tokens of the word itself (template text and special tokens excluded)
    special_mask: Tensor  # special tokens that are real input (BOS/EOS), padding excluded

    def to(self, device: torch.device | str) -> TokenizedWords:
        return TokenizedWords(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.word_mask, self.special_mask))
        )

    def pooling_mask(self, include_special_tokens: bool = False) -> Tensor:
        return self.word_mask | self.special_mask if include_special_tokens else self.word_mask


def tokenize_words(tokenizer, words: Sequence[str], template: str = "{word}") -> TokenizedWords:
    """Tokenize each word alone (or inside ``template``) with the tokenizer's special tokens.

    The word's own tokens are found by character offsets when the template adds text around it.
    """
    if "{word}" not in template:
        raise TLIError(f"word_template must contain '{{word}}', got {template!r}")
    if tokenizer.pad_token is None:
        # Llama-3 tokenizers ship without one; padded positions are masked out everywhere.
        tokenizer.pad_token = tokenizer.eos_token
    texts = [template.format(word=w) for w in words]
    need_offsets = template != "{word}"
    encoded = tokenizer(
        texts,
        padding=True,
        padding_side="right",
        return_tensors="pt",
        return_special_tokens_mask=True,
        return_offsets_mapping=need_offsets,
    )
    attention = encoded["attention_mask"].bool()
    special = encoded["special_tokens_mask"].bool() & attention
    if need_offsets:
        start = template.index("{word}")
        spans = torch.tensor([[start, start + len(w)] for w in words])
        offsets = encoded["offset_mapping"]
        in_word = (offsets[..., 1] > spans[:, None, 0]) & (offsets[..., 0] < spans[:, None, 1])
        word = in_word & attention & ~special
    else:
        word = attention & ~special
    if not word.any(dim=1).all():
        empty = [w for w, has in zip(words, word.any(dim=1).tolist()) if not has]
        raise TLIError(f"these words produce no tokens of their own: {empty[:5]}")
    return TokenizedWords(encoded["input_ids"], encoded["attention_mask"], word, special)


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean over the positions where ``mask`` is true: ``[..., T, H]`` x ``[B, T]`` -> ``[..., H]`` (float32)."""
    weights = mask.to(torch.float32)
    summed = (hidden.float() * weights[..., None]).sum(dim=-2)
    return summed / weights.sum(dim=-1, keepdim=True).clamp(min=1.0)


def hidden_state_at(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, layer: int) -> Tensor:
    """``hidden_states[layer]`` of a full forward, computed without the blocks above it or the LM head."""
    decoder, blocks = decoder_of(model), num_blocks(model)
    layer = resolve_layer(layer, blocks)
    if layer == blocks:
        return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    captured: list[Tensor] = []

    def keep_input(_module, args):
        captured.append(args[0])

    # With the first `layer` blocks, what reaches the final norm is hidden_states[layer] (for layer 0 the
    # output of the model's own embedding step, scaling included); the norm's output is not wanted.
    handle = final_norm_of(model).register_forward_pre_hook(keep_input)
    try:
        with only_first_blocks(model, layer):
            decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        handle.remove()
    return captured[0]


def all_hidden_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
    """Every ``hidden_states`` entry (0 .. N) from one forward of the decoder (no LM head).

    Read with hooks on the blocks rather than ``output_hidden_states``: the same under FSDP2, whose
    wrapped block classes transformers' output recording does not recognise.
    """
    decoder, blocks = decoder_of(model), blocks_of(model)
    states: list[Tensor] = []

    def keep_input(_module, args, kwargs):
        states.append(args[0] if args else kwargs["hidden_states"])

    def keep_output(_module, _args, output):
        states.append(output[0] if isinstance(output, tuple) else output)

    handles = [blocks[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
    handles += [block.register_forward_hook(keep_output) for block in blocks[:-1]]
    try:
        final = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    return (*states, final)


def word_vectors(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    words: Sequence[str],
    layer: int | None = -1,
    *,
    template: str = "{word}",
    include_special_tokens: bool = False,
) -> Tensor:
    """Mean-pooled vectors of ``words`` (not normalized), float32.

    ``layer`` an int: ``[len(words), hidden]`` from a forward that stops at that layer.
    ``layer=None``: ``[N + 1, len(words), hidden]``, every layer from one forward.
    Special tokens (BOS/EOS/padding) are excluded unless ``include_special_tokens`` (the
    TLI paper's pilot included BOS, which makes every word look alike from block 1 on).
    """
    device = next(model.parameters()).device
    batch = tokenize_words(tokenizer, words, template).to(device)
    mask = batch.pooling_mask(include_special_tokens)
    if layer is None:
        return masked_mean(torch.stack(all_hidden_states(model, batch.input_ids, batch.attention_mask)), mask)
    return masked_mean(hidden_state_at(model, batch.input_ids, batch.attention_mask, layer), mask)
