"""A tiny Llama as deep as Lugha-Llama-8B (32 blocks: 33 hidden_states layers), to see logs at a real depth.

    python tools/deep_tiny_model.py /tmp/deep_tiny            # builds it (offline, seconds)
    python -m tli_lightning fit --model.model_name_or_path /tmp/deep_tiny --trainer.max_epochs 1

The embedded demo model's tokenizer and width, 32 random blocks; nothing it computes means anything.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def build(directory: Path, blocks: int = 32) -> Path:
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    from tli_lightning.tiny_model import build_tiny_model

    tiny = build_tiny_model()
    directory.mkdir(parents=True, exist_ok=True)
    for name in tiny.iterdir():
        if name.name.startswith("tokenizer") or name.name == "special_tokens_map.json":
            shutil.copy(name, directory / name.name)
    config = AutoConfig.from_pretrained(tiny)
    config.num_hidden_layers = blocks
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--blocks", type=int, default=32)
    args = parser.parse_args()
    print(build(args.directory, args.blocks))


if __name__ == "__main__":
    main()
