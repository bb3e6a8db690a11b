"""Training-step time with the truncated forward (stop after the target layer) vs a full forward.

    python benchmarks/truncation_speed.py [--blocks 16] [--hidden 512] [--steps 20]

Builds a Llama-shaped model offline (random weights, NF4 via bitsandbytes, LoRA on blocks 0-1
as in TLI), then times the same contrastive training step two ways, interleaved:
  full:      model(..., output_hidden_states=True).hidden_states[2], as the paper's code did
             (every block and the LM head run);
  truncated: tli_lightning's hidden_state_at(model, ..., 2) (blocks 0-1 only, no LM head).
Prints median step times and their ratio, and checks both give the same loss.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from tli_lightning.loading import load_causal_lm
from tli_lightning.losses import triplet_hardest_negative
from tli_lightning.representations import hidden_state_at, masked_mean, tokenize_words
from tli_lightning.tiny_model import build_tiny_model, demo_data_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000, help="LM-head size (Llama-3: 128256)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model())
    directory = tempfile.mkdtemp(prefix="tli_trunc_")
    config = LlamaConfig(
        vocab_size=args.vocab,
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
    model, tokenizer = load_causal_lm(directory, quantization="nf4", compute_dtype="float32")
    model = get_peft_model(
        model,
        LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 1]
        ),
    )
    pairs = [line.split("\t") for line in demo_data_path("lexicon_trained.tsv").read_text().splitlines()[1:9]]
    batch = tokenize_words(tokenizer, [s for s, _ in pairs] + [t.strip() for _, t in pairs])

    def step(truncated: bool) -> tuple[float, float]:
        start = time.perf_counter()
        if truncated:
            hidden = hidden_state_at(model, batch.input_ids, batch.attention_mask, 2)
        else:
            hidden = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
            ).hidden_states[2]
        source, target = masked_mean(hidden, batch.word_mask).split(len(pairs))
        loss = triplet_hardest_negative(source, target).loss
        loss.backward()
        model.zero_grad()
        return time.perf_counter() - start, loss.item()

    for truncated in (False, True):
        step(truncated)  # warm-up
    times = {False: [], True: []}
    losses = {}
    for _ in range(args.steps):
        for truncated in (False, True):
            seconds, losses[truncated] = step(truncated)
            times[truncated].append(seconds)
    full, trunc = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"model: Llama {args.blocks} blocks, hidden {args.hidden}, vocab {args.vocab}, NF4, "
        "LoRA r=16 on q/v of blocks 0-1; batch 8 pairs"
    )
    print(f"full forward, hidden_states[2]:      {full * 1000:8.1f} ms/step (median of {args.steps})")
    print(f"truncated forward (tli_lightning):   {trunc * 1000:8.1f} ms/step (median of {args.steps})")
    print(
        f"speed-up: {full / trunc:.2f}x; same loss: {abs(losses[False] - losses[True]) < 1e-5} "
        f"({losses[False]:.6f} vs {losses[True]:.6f})"
    )


if __name__ == "__main__":
    main()
