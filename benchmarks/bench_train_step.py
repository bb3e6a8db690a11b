"""The TLI training step, tli_lightning's way against the paper's way, side by side in one process.

    python benchmarks/bench_train_step.py                       # CPU: 16-block Llama shape, NF4
    python benchmarks/bench_train_step.py --shape llama8b --device cuda --json out.json   # the GPU suite

Same model (random weights, Llama-shaped, NF4 through the package's loader), same LoRA placement (r16
on q/v of blocks 0-1), same 8 pairs per step, the same contrastive loss on hidden_states[2]:

  paper        a full forward with output_hidden_states through every block and the LM head, read
               hidden_states[2] (what the paper's code did); torch AdamW;
  tli          TLIModule.contrastive: the forward stops after block 1; torch AdamW;
  tli+fused    the same with fused AdamW (CUDA; what TLIModule uses on a GPU);
  lightning    TLIModule inside a real Lightning Trainer (hooks, logging, ExactResume's RNG
               snapshots), time per step measured between batch starts.

Variants run interleaved, a step of each in turn, after warm-up; prints the median ms per step, the
spread, the ratios, peak memory, and where the time of the `tli` step goes (tokenization, forward,
backward, optimizer), measured with explicit synchronisation in a separate pass.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {
    # name: (blocks, hidden, intermediate, heads, kv heads, vocab)
    "tiny": (4, 128, 256, 4, 2, 1024),
    "cpu16": (16, 512, 1536, 8, 8, 32000),
    "llama8b": (32, 4096, 14336, 32, 8, 128256),  # Llama-3.1-8B
}


def build_model_dir(shape: str, device: str, directory: str | None = None) -> Path:
    """A random Llama-shaped checkpoint with the demo tokenizer, saved for the package's real loader."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tli_lightning.tiny_model import build_tiny_model

    blocks, hidden, intermediate, heads, kv, vocab = SHAPES[shape]
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model())
    config = LlamaConfig(
        vocab_size=max(vocab, len(tokenizer)),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=blocks,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix=f"tli_bench_{shape}_"))
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU takes seconds, not minutes, at 8B
        model = LlamaForCausalLM(config).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    return directory


def make_module(directory: Path, device: str):
    from tli_lightning.module import TLIModule

    module = TLIModule(
        model_name_or_path=str(directory),
        quantization="nf4",
        compute_dtype="bfloat16" if device == "cuda" else "float32",
        lora_dropout=0.0,
    ).to(device)
    module.configure_model()
    return module


def batches(count: int) -> list[dict[str, list[str]]]:
    from tli_lightning.lexicon import read_lexicon
    from tli_lightning.tiny_model import demo_data_path

    pairs = read_lexicon(demo_data_path("lexicon_trained.tsv")).pairs
    return [
        {"source": [s for s, _ in pairs[i : i + 8]], "target": [t for _, t in pairs[i : i + 8]]}
        for i in range(0, 8 * count, 8)
    ]


def paper_loss(module, batch: dict[str, list[str]]) -> torch.Tensor:
    """The paper's forward: every block and the LM head, then hidden_states[2]."""
    from tli_lightning.losses import triplet_hardest_negative
    from tli_lightning.representations import masked_mean, tokenize_words

    tokens = tokenize_words(module.tokenizer, batch["source"] + batch["target"]).to(module.device)
    out = module.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, output_hidden_states=True)
    vectors = masked_mean(out.hidden_states[2], tokens.word_mask)
    source, target = vectors.split(len(batch["source"]))
    return triplet_hardest_negative(source, target).loss


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def optimizers_for(module, device: str) -> dict[str, torch.optim.Optimizer]:
    params = [p for p in module.parameters() if p.requires_grad]
    optimizers = {"paper": torch.optim.AdamW(params, lr=1e-5), "tli": torch.optim.AdamW(params, lr=1e-5)}
    if device == "cuda":
        optimizers["tli+fused"] = torch.optim.AdamW(params, lr=1e-5, fused=True)
    return optimizers


def one_step(module, name: str, optimizer: torch.optim.Optimizer, batch: dict[str, list[str]]) -> None:
    loss = paper_loss(module, batch) if name == "paper" else module.contrastive(batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def time_variants(module, device: str, steps: int, warmup: int) -> dict[str, list[float]]:
    optimizers = optimizers_for(module, device)
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for index, batch in enumerate(batches(warmup + steps)):
        for name, optimizer in optimizers.items():
            sync(device)
            start = time.perf_counter()
            one_step(module, name, optimizer, batch)
            sync(device)
            if index >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def peak_memory(module, device: str) -> dict[str, float]:
    """Peak GPU memory of each variant alone (the paper's LM head would otherwise set everyone's peak)."""
    peaks = {}
    for name, optimizer in optimizers_for(module, device).items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        for batch in batches(3):
            one_step(module, name, optimizer, batch)
        sync(device)
        peaks[name] = torch.cuda.max_memory_allocated() / 2**30
    return peaks


def breakdown(module, device: str, steps: int) -> dict[str, float]:
    """Median ms per phase of the tli step, each phase timed between synchronisations."""
    from tli_lightning.losses import triplet_hardest_negative
    from tli_lightning.representations import hidden_state_at, masked_mean, tokenize_words

    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    phases: dict[str, list[float]] = {"tokenize": [], "forward": [], "backward": [], "optimizer": []}
    for batch in batches(steps + 3)[3:]:
        marks = [time.perf_counter()]
        words = batch["source"] + batch["target"]
        tokens = tokenize_words(module.tokenizer, words, module.hparams.word_template).to(module.device)
        sync(device)
        marks.append(time.perf_counter())
        hidden = hidden_state_at(module.model, tokens.input_ids, tokens.attention_mask, module.target_layer)
        source, target = masked_mean(hidden, tokens.word_mask).split(len(batch["source"]))
        loss = triplet_hardest_negative(source, target).loss
        sync(device)
        marks.append(time.perf_counter())
        loss.backward()
        sync(device)
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        marks.append(time.perf_counter())
        for name, a, b in zip(phases, marks, marks[1:]):
            phases[name].append((b - a) * 1e3)
    return {name: statistics.median(values) for name, values in phases.items()}


def profile_ops(module, device: str, steps: int) -> dict[str, float]:
    """Share of the tli step's operator time by kind (torch.profiler, self time of each op)."""
    from torch.profiler import ProfilerActivity, profile

    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for batch in batches(steps):
            module.contrastive(batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync(device)
    buckets = {
        "4-bit dequantize + matmul (bitsandbytes)": 0.0,
        "other matmul": 0.0,
        "attention": 0.0,
        "optimizer": 0.0,
        "everything else": 0.0,
    }
    for event in prof.key_averages():
        name = event.key.lower()
        spent = event.self_device_time_total if device == "cuda" else event.self_cpu_time_total
        if "bitsandbytes" in name or "4bit" in name or "dequant" in name or "gemv" in name:
            bucket = "4-bit dequantize + matmul (bitsandbytes)"
        elif any(k in name for k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")):
            bucket = "other matmul"
        elif "attention" in name or "softmax" in name:
            bucket = "attention"
        elif "adam" in name or "foreach" in name or "optimizer" in name:
            bucket = "optimizer"
        else:
            bucket = "everything else"
        buckets[bucket] += spent
    total = sum(buckets.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in buckets.items()}


def lightning_step(directory: Path, device: str, steps: int) -> float:
    """Median ms between batch starts inside a real Trainer (the package's callbacks that run per step)."""
    import lightning as L

    from tli_lightning.callbacks import ExactResume
    from tli_lightning.data import TLIDataModule
    from tli_lightning.module import TLIModule

    class StepClock(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            sync(device)
            self.starts.append(time.perf_counter())

    clock = StepClock()
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_steps=steps + 5,
        precision="bf16-mixed" if device == "cuda" else "32-true",
        callbacks=[ExactResume(), clock],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=5,
    )
    module = TLIModule(
        model_name_or_path=str(directory),
        quantization="nf4",
        compute_dtype="bfloat16" if device == "cuda" else "float32",
        lora_dropout=0.0,
    )
    trainer.fit(module, TLIDataModule(reasoning_limit=3))
    gaps = [(b - a) * 1e3 for a, b in zip(clock.starts, clock.starts[1:])][5:]
    return statistics.median(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="cpu16", help="model shape (default: cpu16)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--no-lightning", action="store_true", help="skip the Trainer variant")
    parser.add_argument("--model-dir", help="a model build_model_dir() saved before (default: build one)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    directory = Path(args.model_dir) if args.model_dir else build_model_dir(args.shape, args.device)
    module = make_module(directory, args.device)
    times = time_variants(module, args.device, args.steps, args.warmup)
    names = ("blocks", "hidden", "intermediate", "heads", "kv_heads", "vocab")
    result: dict = {"shape": args.shape, "device": args.device, "model": dict(zip(names, SHAPES[args.shape]))}
    if args.device == "cuda":
        result["peak_memory_gib"] = peak_memory(module, args.device)
        result["device_name"] = torch.cuda.get_device_name()
    result["breakdown_ms"] = breakdown(module, args.device, args.steps)
    result["op_time_percent"] = profile_ops(module, args.device, min(args.steps, 10))
    del module
    if not args.no_lightning:
        times["lightning"] = [lightning_step(directory, args.device, args.steps)]
    result["ms_per_step"] = {name: statistics.median(values) for name, values in times.items()}
    result["spread_ms"] = {name: [min(values), max(values)] for name, values in times.items()}

    model = result["model"]
    print(
        f"model: Llama-shaped, {model['blocks']} blocks, hidden {model['hidden']}, vocab {model['vocab']}, NF4; "
        f"LoRA r16 on q/v of blocks 0-1; 8 pairs per step; {args.device}"
    )
    paper = result["ms_per_step"]["paper"]
    for name, ms in result["ms_per_step"].items():
        low, high = result["spread_ms"][name]
        print(f"  {name:10s} {ms:8.2f} ms/step (min {low:.2f}, max {high:.2f})   paper / this: {paper / ms:5.2f}x")
    print(
        "  where the tli step's time goes (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in result["breakdown_ms"].items())
    )
    print("  operator time by kind (%): " + ", ".join(f"{k} {v}" for k, v in result["op_time_percent"].items()))
    if "lightning" in result["ms_per_step"]:
        overhead = result["ms_per_step"]["lightning"] - result["ms_per_step"]["tli"]
        print(f"  the Trainer around the step (hooks, logging, RNG snapshots): {overhead:+.2f} ms")
    if "peak_memory_gib" in result:
        peaks = ", ".join(f"{name} {gib:.2f}" for name, gib in result["peak_memory_gib"].items())
        print(f"  peak GPU memory (GiB, each variant alone): {peaks} ({result['device_name']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
