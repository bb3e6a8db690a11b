"""Tiny-model variants for the lm-eval golden files beyond tests/families.py's (which all share the demo
tokenizer, whose post-processor prepends BOS to every text, as Llama's and Gemma's do)."""

from __future__ import annotations

import shutil
from pathlib import Path


def without_bos(directory: Path) -> Path:
    """A copy of the tiny model in ``directory`` whose tokenizer has no BOS token and adds none, as Qwen's:
    lm-eval then conditions an empty context on EOS and encodes a context with no special token."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    directory = Path(directory)
    target = directory.with_name(directory.name + "-nobos")
    if (target / "tokenizer.json").exists():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(directory, staging)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    tokenizer.bos_token = None
    tokenizer.save_pretrained(staging)
    staging.rename(target)
    return target
