"""Tiny random models of every supported family, built offline from their transformers configs.

Each is the demo tokenizer (tli_lightning.tiny_model.demo_tokenizer) plus a few small blocks of the family's
own architecture, saved with ``save_pretrained`` and loaded back through the package's real loading code.
Family-specific output steps are switched on with values that matter on random weights, whose logits stay
below 1 (Gemma-2 soft-capping 0.5 where real models use 30, Cohere logit scale 0.25); sliding windows (8) are
shorter than the XNLI prompts, so the sliding layers slide.

Adding a family: one entry in ``tli_lightning.backbones`` and one here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Shared shape: 3 blocks, hidden 64 (4 heads of 16, 2 key-value heads), MLP 128.
_DECODER = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=512
)
_GQA = dict(_DECODER, num_key_value_heads=2)
FAMILIES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", dict(_GQA, tie_word_embeddings=False)),
    "mistral": ("MistralConfig", dict(_GQA, head_dim=16, sliding_window=8)),
    "qwen2": ("Qwen2Config", dict(_GQA, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", dict(_GQA, head_dim=16)),
    "gemma2": (
        "Gemma2Config",
        dict(_GQA, head_dim=16, query_pre_attn_scalar=16, sliding_window=8, final_logit_softcapping=0.5),
    ),
    "gemma3": (
        "Gemma3TextConfig",
        dict(
            _GQA,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        ),
    ),
    "cohere": ("CohereConfig", dict(_GQA, logit_scale=0.25)),
    "phi3": ("Phi3Config", dict(_GQA)),
    "gpt2": ("GPT2Config", dict(n_embd=64, n_inner=128, n_layer=3, n_head=4, n_positions=512)),
    "bloom": ("BloomConfig", dict(hidden_size=64, n_layer=3, n_head=4)),
}
# Blocks of each tiny model: the layer count `scan` must report.
BLOCKS = 3
# Bump when a recipe changes: the golden files name the weights' hash.
VERSION = "v1"


def build_family(family: str, root: Path, seed: int = 0) -> Path:
    """Build (once) the tiny ``family`` model under ``root`` and return its directory."""
    import torch
    import transformers

    from tli_lightning.tiny_model import demo_tokenizer

    directory = Path(root) / f"family-{family}-{VERSION}"  # apart from the embedded tiny-llama-<version>
    if (directory / "config.json").exists():
        return directory
    config_class, arch = FAMILIES[family]
    tokenizer = demo_tokenizer()
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **{"pad_token_id": tokenizer.pad_token_id, **arch},
    )
    staging = directory.with_name(directory.name + ".partial")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config)
        # Random init leaves some families' norms at exactly 1 and biases at 0: perturb every tensor, so a
        # step that skips a norm's weight or a bias cannot agree by luck.
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.02)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(directory)
    return directory


def fingerprint(directory: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((Path(directory) / name).read_bytes()).hexdigest()
        for name in ("model.safetensors", "tokenizer.json")
    }
