"""``AdapterExport``: a PEFT ``save_pretrained`` directory per epoch, loadable by ``PeftModel.from_pretrained``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from tli_lightning.callbacks._common import Getter, default_model
from tli_lightning.textfiles import write_json

SETTINGS_FILE = "tli_settings.json"
CARD_FILE = "README.md"


class AdapterExport(Callback):
    """Save the adapter (not the base model) to ``<dirpath>/adapter_epoch<NN>`` after each epoch.

    Beside PEFT's files, ``tli_settings.json`` records the base the adapter was trained on (model,
    quantization, compute dtype, double quantization, storage, target layer, word template, precision), when
    the LightningModule provides them through a ``settings()`` method. ``scan`` and ``zeroshot
    --adapter DIR`` read it, so an adapter is measured on its own base.

    ``README.md`` (in place of PEFT's blank template) is the adapter's card: base model, method, target
    layer, data fingerprints, the epoch's numbers (the ``align/*`` and every measurement's metrics in
    ``trainer.callback_metrics``: place this callback after the evaluation callbacks to have that epoch's)
    and the command that made it.

    Args:
        dirpath: Where to write; default: the ModelCheckpoint's directory, else the log directory.
        command: The command recorded in the card; default: this process's command line.
    """

    def __init__(
        self, dirpath: str | None = None, get_model: Getter = default_model, command: str | None = None
    ) -> None:
        self.dirpath = dirpath
        self.get_model = get_model
        self.command = command

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = self.get_model(pl_module)
        if not hasattr(model, "peft_config"):
            return  # full fine-tuning: the Lightning checkpoint already holds the trained tensors
        checkpoint = trainer.checkpoint_callback
        # trainer.log_dir is a broadcast under DDP: resolve on every rank, write on rank 0.
        root = self.dirpath or getattr(checkpoint, "dirpath", None) or trainer.log_dir or trainer.default_root_dir
        if trainer.is_global_zero:
            directory = Path(root) / f"adapter_epoch{trainer.current_epoch + 1:02d}"
            model.save_pretrained(directory)
            settings: dict[str, Any] | None = getattr(pl_module, "settings", lambda: None)()
            if settings is not None:
                # The precision too: the run's evaluations ran under it (bf16-mixed: autocast).
                settings = {**settings, "precision": str(trainer.precision)}
                write_json(directory / SETTINGS_FILE, settings)
            card = adapter_card(trainer, pl_module, model, settings, self.command or command_line(), directory)
            (directory / CARD_FILE).write_text(card, encoding="utf-8")


def command_line() -> str:
    """This process's command, as a user would type it (``python -m tli_lightning ...`` for the CLI)."""
    if Path(sys.argv[0]).name == "__main__.py" and Path(sys.argv[0]).parent.name == "tli_lightning":
        return shlex.join(["python", "-m", "tli_lightning", *sys.argv[1:]])
    return shlex.join(sys.argv)


def _row(key: str, value: Any) -> str:
    return f"| {key} | {str(value).replace('|', '/')} |"


def adapter_card(
    trainer: L.Trainer,
    pl_module: L.LightningModule,
    model: Any,
    settings: dict[str, Any] | None,
    command: str,
    directory: Path,
) -> str:
    """The adapter's README.md: what a reader of the adapter needs to use it and to judge it."""
    settings = settings or {}
    hp = dict(getattr(pl_module, "hparams", {}))
    lora = next(iter(model.peft_config.values()))
    base = settings.get("model_name_or_path", getattr(lora, "base_model_name_or_path", None))
    epoch = trainer.current_epoch + 1
    target = settings.get("target_layer", getattr(pl_module, "target_layer", None))
    blocks = getattr(lora, "layers_to_transform", None)
    modules = sorted(lora.target_modules) if isinstance(lora.target_modules, set | list) else lora.target_modules
    quantization = settings.get("quantization", hp.get("quantization"))
    if quantization in (None, "none"):
        weights = f"unquantized {settings.get('compute_dtype', hp.get('compute_dtype'))}"
    else:
        weights = (
            f"{quantization} 4-bit (compute {settings.get('compute_dtype')}, double quantization "
            f"{settings.get('double_quant')}, storage {settings.get('quant_storage')})"
        )
    lines = [
        "---",
        f"base_model: {base}",
        "library_name: peft",
        "tags: [lora, tli_lightning, cross-lingual-alignment]",
        "---",
        "",
        f"# {directory.parent.parent.name}/{directory.parent.name}: LoRA adapter after epoch {epoch}",
        "",
        "Targeted Lexical Injection (tli_lightning): LoRA on early decoder blocks, trained with a contrastive loss",
        "so that source words and their translations get close at the target layer.",
        "",
        "| | |",
        "| --- | --- |",
        _row("base model", f"`{base}`, {weights}"),
        _row(
            "method",
            f"LoRA r={lora.r}, alpha={lora.lora_alpha}, dropout={lora.lora_dropout} on {modules} of blocks {blocks}",
        ),
        _row(
            "target layer",
            f"hidden_states[{target}] (0 = embeddings, i = output of block i-1)" if target is not None else "n/a",
        ),
        _row(
            "loss",
            f"{hp.get('loss')} (margin {hp.get('margin')}, temperature {hp.get('temperature')}), lr "
            f"{hp.get('learning_rate')}, warm-up {hp.get('warmup_steps')} steps",
        ),
        _row("word template", f"`{settings.get('word_template', hp.get('word_template'))}`"),
        _row("precision", settings.get("precision", str(trainer.precision))),
        _row(
            "trained",
            f"{epoch} epoch{'' if epoch == 1 else 's'}, {trainer.global_step} optimizer steps, seed {_seed()}",
        ),
    ]
    datamodule = trainer.datamodule
    if datamodule is not None and hasattr(datamodule, "fingerprint"):
        data = dict(datamodule.hparams)
        lines += [
            _row("lexicon", f"`{data.get('lexicon_path')}`: {len(datamodule.train_pairs)} trained pairs"),
            _row(
                "control pairs",
                f"`{data.get('control_path')}`: {len(datamodule.control_pairs)} pairs (never trained)",
            ),
            _row(
                "zero-shot tasks",
                ", ".join(
                    f"{spec.task} (`{spec.path}`): {len(datamodule.reasoning.get(spec.task, []))}"
                    for spec in datamodule.reasoning_tasks
                ),
            ),
            *(_row(f"fingerprint {key}", f"`{value}`") for key, value in datamodule.fingerprint().items()),
        ]
    from tli_lightning.callbacks.measurement import measurements

    prefixes = ("align/", *(f"{m.key}/" for m in measurements(trainer)))
    numbers = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefixes)}
    lines += ["", f"## Numbers after epoch {epoch}", ""]
    if numbers:
        lines += [
            "gap = pair cosine - random-pair cosine (alignment beyond a global shift); retention = a task's accuracy "
            "now / before training.",
            "",
            "| metric | value |",
            "| --- | --- |",
            *(_row(f"`{key}`", f"{value:.4f}") for key, value in sorted(numbers.items())),
        ]
    else:
        lines.append("No evaluation metrics were logged before this adapter was saved.")
    lines += [
        "",
        "## Made by",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Use",
        "",
        "```bash",
        f"python -m tli_lightning zeroshot --adapter {directory} --data demo --language sw   # on its own base",
        f"python -m tli_lightning scan --adapter {directory} --lexicon demo",
        "```",
        "",
        "`tli_settings.json` beside this file records the base it was trained on; `PeftModel.from_pretrained(base, "
        "this_directory)` loads it in plain PEFT.",
        "",
    ]
    return "\n".join(lines)


def _seed() -> str:
    import os

    return os.environ.get("PL_GLOBAL_SEED", "n/a")
