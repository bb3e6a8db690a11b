"""What the package needs of each model family, in one place: the only module that names one.

Per family (``config.model_type``): where the blocks are, the final norm, the LoRA targets that mean
"attention query and value", whether positions are given as ``position_ids``, and what the causal LM
does to its LM head's output before lm-eval takes the log-softmax. Everything else asks the functions
below. The embedding step up to ``hidden_states[0]`` and every block run inside the model's own
forward (truncated, see :func:`only_first_blocks`), so family details there (Gemma's sqrt(hidden)
scaling, GPT-2's position embeddings, BLOOM's embedding norm) stay the model's own.

Adding a family: one :class:`Family` entry in ``FAMILIES`` (and its tiny model in ``tests/families.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tli_lightning.errors import TLIError


def _plain(model: nn.Module, logits: Tensor) -> Tensor:
    return logits


def _soft_capped(model: nn.Module, logits: Tensor) -> Tensor:
    # Gemma-2/3's final_logit_softcapping, as their ForCausalLM.forward applies it (None: off).
    cap = model.config.final_logit_softcapping
    return logits if cap is None else torch.tanh(logits / cap) * cap


def _scaled(model: nn.Module, logits: Tensor) -> Tensor:
    # Cohere multiplies the logits by the model's own logit_scale (config.logit_scale).
    return logits * model.logit_scale


@dataclass(frozen=True)
class Family:
    """One model family as the package sees it."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values
    blocks: str  # the decoder's ModuleList of blocks; also PEFT's layers_pattern
    final_norm: str  # the decoder's norm after the last block
    query_value: tuple[str, ...]  # LoRA's default targets: attention query and value (fused where the family fuses)
    position_ids: bool = True  # False: positions come from the attention mask (ALiBi)
    logits: Callable[[nn.Module, Tensor], Tensor] = _plain  # LM head output -> the causal LM's logits


_LLAMA_LIKE = dict(blocks="layers", final_norm="norm", query_value=("q_proj", "v_proj"))
FAMILIES: tuple[Family, ...] = (
    Family("Llama", ("llama",), **_LLAMA_LIKE),
    Family("Mistral", ("mistral",), **_LLAMA_LIKE),
    Family("Qwen2", ("qwen2",), **_LLAMA_LIKE),
    Family("Qwen3", ("qwen3",), **_LLAMA_LIKE),
    Family("Gemma-2", ("gemma2",), **_LLAMA_LIKE, logits=_soft_capped),
    Family("Gemma-3 (text)", ("gemma3_text",), **_LLAMA_LIKE, logits=_soft_capped),
    Family("Cohere", ("cohere",), **_LLAMA_LIKE, logits=_scaled),
    Family("Phi-3", ("phi3",), blocks="layers", final_norm="norm", query_value=("qkv_proj",)),
    Family("GPT-2", ("gpt2",), blocks="h", final_norm="ln_f", query_value=("c_attn",)),
    Family("BLOOM", ("bloom",), blocks="h", final_norm="ln_f", query_value=("query_key_value",), position_ids=False),
)
_BY_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}


def base_model(model: nn.Module) -> nn.Module:
    """The causal LM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def family_of(model: nn.Module) -> Family:
    """The family of a causal LM (PEFT-wrapped or not); an unknown one is refused in one line."""
    base = base_model(model)
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    family = _BY_TYPE.get(model_type)
    if family is None:
        known = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)
        raise TLIError(
            f"{type(base).__name__} (model_type {model_type!r}) is not a supported model family; supported: {known}"
        )
    return family


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder stack (``LlamaModel``, ``GPT2Model``, ...): embeddings, blocks, final norm; no LM head."""
    family_of(model)
    return base_model(model).get_decoder()


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The decoder's blocks, in order: block ``b`` produces ``hidden_states[b + 1]``."""
    return getattr(decoder_of(model), family_of(model).blocks)


def num_blocks(model: nn.Module) -> int:
    return len(blocks_of(model))


def final_norm_of(model: nn.Module) -> nn.Module:
    """The norm the decoder applies after its last block (``hidden_states[N]`` is its output)."""
    return getattr(decoder_of(model), family_of(model).final_norm)


def embedding_modules(model: nn.Module) -> list[nn.Module]:
    """Every module with weights before block 0: token embeddings and what the family adds (GPT-2's position
    embeddings, BLOOM's embedding norm); what full training of "all" trains besides the blocks."""
    family, decoder = family_of(model), decoder_of(model)
    return [
        module
        for name, module in decoder.named_children()
        if name not in (family.blocks, family.final_norm) and any(True for _ in module.parameters())
    ]


@contextmanager
def only_first_blocks(model: nn.Module, count: int) -> Iterator[None]:
    """Within the block, the decoder runs only its first ``count`` blocks (0: none, the embedding step alone).

    The decoder's own forward (embedding step, masks, rotary embeddings, attention backend) stays in charge;
    only the block list is shortened for the call.
    """
    family, decoder = family_of(model), decoder_of(model)
    full = getattr(decoder, family.blocks)
    setattr(decoder, family.blocks, full[:count])
    try:
        yield
    finally:
        setattr(decoder, family.blocks, full)


def lm_head_of(model: nn.Module) -> nn.Module:
    """The output embedding (the embedding matrix itself where the family ties them)."""
    return base_model(model).get_output_embeddings()


def output_logits(model: nn.Module, hidden: Tensor) -> Tensor:
    """The causal LM's logits from final hidden states: its LM head, then what the family does after it."""
    return family_of(model).logits(base_model(model), lm_head_of(model)(hidden))


def vocabulary_size(model: nn.Module) -> int:
    head = lm_head_of(model)
    return getattr(head, "out_features", None) or head.weight.shape[0]


def sliding_window(model: nn.Module) -> int | None:
    """The attention window of the model's sliding-window layers (Gemma-2/3, some Mistral and Qwen2 checkpoints);
    None when no layer slides."""
    config = base_model(model).config
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if not window or getattr(config, "use_sliding_window", None) is False:
        return None
    return window if layer_types is None or "sliding_attention" in layer_types else None


def takes_position_ids(model: nn.Module) -> bool:
    return family_of(model).position_ids


def lora_targets(model: nn.Module, names: list[str] | None = None) -> dict[str, Any]:
    """``LoraConfig`` keyword arguments that place LoRA on ``names`` (default: the family's attention query and
    value) inside the blocks; refuses names that no block module ends with, naming the family's own."""
    family = family_of(model)
    names = list(names) if names else list(family.query_value)
    modules = dict(blocks_of(model)[0].named_modules())
    matched = {name: [m for path, m in modules.items() if path.split(".")[-1] == name] for name in names}
    missing = [name for name, hits in matched.items() if not hits]
    if missing:
        raise TLIError(
            f"lora_target_modules {missing} are not modules of a {family.name} block; its attention query and "
            f"value are {list(family.query_value)} (the default when lora_target_modules is not given)"
        )
    from transformers.pytorch_utils import Conv1D

    # GPT-2 keeps its linear layers as Conv1D (weights stored transposed); 4-bit loading turns them into
    # ordinary Linear4bit layers.
    transposed = any(isinstance(m, Conv1D) for hits in matched.values() for m in hits)
    return {"target_modules": names, "layers_pattern": family.blocks, "fan_in_fan_out": transposed}
