"""The embedded default model: a tiny Llama built offline, with a fixed seed.

``model_name_or_path: tiny`` resolves here. The tokenizer is a byte-level BPE trained on the
bundled demo text, so the whole pipeline (tokenizer, 4-bit loading, LoRA, scoring) runs the
same code as for a hub model, with no network. Its weights are random: the demo shows the
mechanics (loss falls, aligned similarity rises), not a finding.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the hints: transformers is heavy to import
    from transformers import PreTrainedTokenizerFast

TINY = "tiny"
# Bump when the recipe below changes, so stale caches are not reused.
_VERSION = "v1"
_ARCH = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)


def demo_data_path(name: str) -> Path:
    """Path of a bundled demo file (``lexicon_trained.tsv``, ``xnli_sw.jsonl``, ...)."""
    return Path(str(resources.files("tli_lightning") / "demo_data" / name))


def cache_dir() -> Path:
    return Path(os.environ.get("TLI_CACHE_DIR", Path.home() / ".cache" / "tli_lightning"))


def _demo_corpus() -> list[str]:
    lines: list[str] = []
    for name in ("lexicon_trained.tsv", "lexicon_control.tsv"):
        lines += demo_data_path(name).read_text(encoding="utf-8").splitlines()[1:]
    for lang in ("sw", "en"):
        for row in demo_data_path(f"xnli_{lang}.jsonl").read_text(encoding="utf-8").splitlines():
            example = json.loads(row)
            lines += [example["premise"], example["hypothesis"]]
    # The lm-eval XNLI verbalizers, so scoring prompts tokenize into known pieces.
    lines += [
        ", right? Yes, ",
        ", right? Also, ",
        ", right? No, ",
        ", sahihi? Ndiyo, ",
        ", sahihi? Hivyo, ",
        ", sahihi? Hapana, ",
    ]
    return lines


def demo_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the bundled demo text, offline: BOS prepended to every text, no EOS (as Llama).

    The embedded model's tokenizer; the tests' tiny models of other families reuse it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_demo_corpus(), trainer=trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _build(directory: Path, vocab_size: int = 1024, seed: int = 0) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = demo_tokenizer(vocab_size)
    tokenizer.save_pretrained(directory)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **_ARCH,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a 2 MB model needs no "Writing model shards" bar
    # A private RNG stream: building the model (on first use, inside a run) must not reseed the run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            LlamaForCausalLM(config).save_pretrained(directory)
        finally:
            hf_logging.enable_progress_bar()


def build_tiny_model(directory: str | os.PathLike | None = None, wait_s: float = 300.0) -> Path:
    """Build (once) and return the directory of the embedded tiny model.

    Safe to call from several processes at once (e.g. DDP ranks): each builds in a private
    temporary directory and the first complete one is renamed into place atomically. Under
    torch.distributed, transformers writes model weights on rank 0 only; other ranks wait for it.
    """
    target = Path(directory) if directory is not None else cache_dir() / f"tiny-llama-{_VERSION}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        _build(staging)
        if (staging / "model.safetensors").exists():
            try:
                os.rename(staging, target)
            except OSError:
                if not (target / "config.json").exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    deadline = time.monotonic() + wait_s
    while not (target / "config.json").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the embedded tiny model did not appear in {target} within {wait_s:.0f} s")
        time.sleep(0.2)
    return target
