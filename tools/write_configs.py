"""Regenerate configs/*.yaml from the CLI itself, so every key carries its documented comment.

    python tools/write_configs.py

Each config = a header (the command that runs it), then what `fit --print_config=comments`
prints for these overrides, trimmed to the trainer keys a user of this package changes.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

from tli_lightning.cli import main

TRAINER_KEYS = {"accelerator", "strategy", "devices", "num_nodes", "precision", "logger", "callbacks", "max_epochs", "log_every_n_steps", "accumulate_grad_batches", "gradient_clip_val"}


def _callbacks(name: str) -> list[str]:
    ckpt = f"checkpoints/{name}"

    def component(class_path: str, **init_args) -> dict:
        return {"class_path": class_path, "init_args": init_args}

    callbacks = [
        component("lightning.pytorch.callbacks.ModelCheckpoint", dirpath=ckpt, filename="epoch{epoch:02d}", auto_insert_metric_name=False, save_top_k=-1, save_last=True),
        component("lightning.pytorch.callbacks.OnExceptionCheckpoint", dirpath=ckpt, filename="on_exception"),
        component("tli_lightning.callbacks.AdapterExport"),
        component("tli_lightning.callbacks.LayerwiseAlignment"),
        component("tli_lightning.callbacks.ZeroShotRetention"),
    ]
    return ["--trainer.logger.init_args.name", name, "--trainer.callbacks", json.dumps(callbacks)]


CONFIGS = {
    "demo": (
        "The embedded default, written out: a tiny NF4 Llama built offline, bundled hand-written data.\n"
        "Same as `python -m tli_lightning fit` with no options; runs in well under a minute on 2 CPU cores.",
        [],
    ),
    "tli_lugha_llama": (
        "The TLI paper's settings (arXiv 2506.15415) on Lugha-Llama-8B-wura: NF4 (bf16 compute, no double\n"
        "quantization), LoRA r=16/alpha=32/dropout 0.05 on q_proj,v_proj of blocks 0-1, loss on hidden_states[2],\n"
        "triplet margin 0.4, AdamW 2e-4, 50 warm-up steps, 8 pairs per batch, 5 epochs. Needs one GPU and the hub\n"
        "(or set model_name_or_path to a local copy). The lexicon below is the FreeDict list in ../shared/data;\n"
        "point lexicon_path/control_path at the paper's JSON files to reproduce its 623/63 split exactly.",
        [
            "--model.model_name_or_path", "Lugha-Llama/Lugha-Llama-8B-wura", "--model.compute_dtype", "bfloat16",
            "--trainer.precision", "bf16-true",
            "--data.lexicon_path", "../shared/data/lexicon_sw_en.tsv", "--data.control_path", "null",
            "--data.xnli_source", "facebook/xnli",
        ] + _callbacks("tli_lugha_llama"),
    ),
    "full_finetune": (
        "The comparison arm: full fine-tuning of the whole model (every parameter, bf16 weights, no quantization),\n"
        "loss on the final normed output, bitsandbytes AdamW8bit and non-reentrant gradient checkpointing so an\n"
        "8B model fits one 80 GB GPU. Everything else as in tli_lugha_llama.yaml.",
        [
            "--model.model_name_or_path", "Lugha-Llama/Lugha-Llama-8B-wura", "--model.quantization", "none",
            "--model.compute_dtype", "bfloat16", "--model.adaptation", "full", "--model.adapt_layers", "all",
            "--model.target_layer", "-1", "--model.optimizer", "adamw8bit", "--model.learning_rate", "2e-5",
            "--model.gradient_checkpointing", "true", "--trainer.precision", "bf16-true",
            "--data.lexicon_path", "../shared/data/lexicon_sw_en.tsv", "--data.control_path", "null",
            "--data.xnli_source", "facebook/xnli",
        ] + _callbacks("full_finetune"),
    ),
}


def _trim(text: str) -> str:
    """Keep seed, model, data and the chosen trainer keys (each with the comment above it)."""
    out, keep, pending = [], True, []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            pending.append(line) if line.strip() else None
            continue
        top = re.match(r"^(\w+):", line)
        sub = re.match(r"^  (\w+):", line)
        if top:
            keep = top.group(1) in {"seed_everything", "trainer", "model", "data"}
            if keep and out:
                out.append("")
        elif sub and out and _section(out) == "trainer":
            keep = sub.group(1) in TRAINER_KEYS
        if keep:
            out.extend(pending)
            out.append(line)
        pending = []
    return "\n".join(out) + "\n"


def _section(lines: list[str]) -> str:
    for line in reversed(lines):
        match = re.match(r"^(\w+):", line)
        if match:
            return match.group(1)
    return ""


def write(name: str, header: str, args: list[str], directory: Path) -> None:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        main(["fit", *args, "--print_config=comments"])
    command = f"python -m tli_lightning fit --config configs/{name}.yaml"
    # The list of known Callback subclasses depends on import order: noise, and unstable.
    body = re.sub(r", known subclasses: [^)]*\)", ")", _trim(buffer.getvalue()))
    comment = "\n".join(f"# {line}" for line in header.splitlines())
    (directory / f"{name}.yaml").write_text(f"# Run: {command}\n#\n{comment}\n\n{body}", encoding="utf-8")


if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "configs"
    for name, (header, args) in CONFIGS.items():
        write(name, header, args, target)
        print(f"wrote configs/{name}.yaml")
