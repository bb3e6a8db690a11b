"""Step time and peak memory of the full fine-tuning arms, as the shipped recipes train them.

    python benchmarks/bench_full_arms.py --shape tiny                     # CPU check of the script
    python benchmarks/bench_full_arms.py --shape llama8b --device cuda    # the GPU suite

  full_all          everything the loss reaches (embeddings, every block, final norm), loss on the final
                    output, bitsandbytes AdamW8bit, non-reentrant activation checkpointing
                    (configs/lugha_llama_8b/full_all.yaml);
  full_early        blocks 0-1 full-rank, loss on hidden_states[2], the forward stops there
                    (configs/lugha_llama_8b/full_early.yaml);
  full_early+embed  the same plus the input embeddings (adapt_layers: all at target layer 2).

Weights in bfloat16 on a GPU (float32 on a CPU), unquantized; 8 pairs per step. One arm at a time
(each loads its own model), median ms per step after warm-up, peak GPU memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import torch
from bench_train_step import SHAPES, batches, build_model_dir, sync

ARMS = {
    "full_all": dict(adapt_layers="all", target_layer=-1, gradient_checkpointing=True),
    "full_early": dict(adapt_layers=None, target_layer=2, gradient_checkpointing=False),
    "full_early+embed": dict(adapt_layers="all", target_layer=2, gradient_checkpointing=False),
}


def measure(directory: Path, device: str, arm: str, steps: int, warmup: int) -> dict:
    import bitsandbytes as bnb

    from tli_lightning.module import TLIModule

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    module = TLIModule(
        model_name_or_path=str(directory),
        quantization="none",
        adaptation="full",
        compute_dtype="bfloat16" if device == "cuda" else "float32",
        optimizer="adamw8bit",
        **ARMS[arm],
    ).to(device)
    module.configure_model()
    optimizer = bnb.optim.AdamW8bit([p for p in module.parameters() if p.requires_grad], lr=2e-5)
    times = []
    for index, batch in enumerate(batches(warmup + steps)):
        sync(device)
        start = time.perf_counter()
        module.contrastive(batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    result = {
        "trainable_parameters": module.trainable_parameters,
        "ms_per_step": statistics.median(times),
        "spread_ms": [min(times), max(times)],
    }
    if device == "cuda":
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del module, optimizer
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="model shape (default: tiny)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per arm (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--model-dir", help="a model build_model_dir() saved before (default: build one)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    directory = Path(args.model_dir) if args.model_dir else build_model_dir(args.shape, args.device)
    result = {"shape": args.shape, "device": args.device, "arms": {}}
    blocks, hidden = SHAPES[args.shape][:2]
    print(f"model: {args.shape} ({blocks} blocks, hidden {hidden}), unquantized, {args.device}")
    for arm in ARMS:
        figures = measure(directory, args.device, arm, args.steps, args.warmup)
        result["arms"][arm] = figures
        memory = f", peak GPU {figures['peak_gpu_gib']:.1f} GiB" if "peak_gpu_gib" in figures else ""
        low, high = figures["spread_ms"]
        millions = figures["trainable_parameters"] / 1e6
        print(
            f"  {arm:17s} {millions:9.1f} M trainable  {figures['ms_per_step']:8.1f} ms/step "
            f"(min {low:.1f}, max {high:.1f}){memory}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
