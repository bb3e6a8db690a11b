"""Zero-shot XNLI scoring with the premise's forward pass shared by the three candidates, vs not.

    python benchmarks/xnli_prefix_sharing.py [--blocks 8] [--hidden 512] [--n 200]

A Llama-shaped model with random weights (float32, CPU) scores the first N Swahili examples of
../shared/data (the bundled demo file when absent) both ways, interleaved, three times each;
prints median times, their ratio, and the largest score difference.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from tli_lightning.loading import load_causal_lm
from tli_lightning.tiny_model import build_tiny_model, demo_data_path
from tli_lightning.xnli import candidate_templates, candidates, load_xnli
from tli_lightning.zeroshot import score_sequences, score_with_shared_prefix

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "xnli_sw_validation.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model())
    directory = tempfile.mkdtemp(prefix="tli_prefix_")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.blocks,
        num_attention_heads=8,
        num_key_value_heads=8,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    model, tokenizer = load_causal_lm(directory, quantization="none", compute_dtype="float32")
    source = SHARED if SHARED.is_file() else demo_data_path("xnli_sw.jsonl")
    examples = load_xnli(str(source), "sw")[: args.n]
    groups = [[" " + c for c in candidates(e, candidate_templates("sw"))] for e in examples]
    flat = [c for g in groups for c in g]

    times: dict[str, list[float]] = {"independent": [], "shared prefix": []}
    for _ in range(3):
        start = time.perf_counter()
        independent = score_sequences(model, tokenizer, flat, batch_size=args.batch_size).view(-1, 3)
        times["independent"].append(time.perf_counter() - start)
        start = time.perf_counter()
        shared = score_with_shared_prefix(model, tokenizer, groups, batch_size=args.batch_size)
        times["shared prefix"].append(time.perf_counter() - start)
    base = statistics.median(times["independent"])
    print(
        f"model: Llama {args.blocks} blocks, hidden {args.hidden}, float32; "
        f"{len(examples)} sw examples from {source.name}"
    )
    for label, runs in times.items():
        print(f"{label:14s} median {statistics.median(runs):6.2f} s  speed-up {base / statistics.median(runs):4.2f}x")
    print(
        f"max |score difference| {(shared - independent).abs().max().item():.2e}; "
        f"same predictions: {bool((shared.argmax(1) == independent.argmax(1)).all())}"
    )


if __name__ == "__main__":
    main()
