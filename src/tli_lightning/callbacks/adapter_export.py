"""``AdapterExport``: a PEFT ``save_pretrained`` directory per epoch, loadable by ``PeftModel.from_pretrained``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from tli_lightning.callbacks._common import Getter, default_model
from tli_lightning.textfiles import write_json

SETTINGS_FILE = "tli_settings.json"


class AdapterExport(Callback):
    """Save the adapter (not the base model) to ``<dirpath>/adapter_epoch<NN>`` after each epoch.

    Beside PEFT's files, ``tli_settings.json`` records the base the adapter was trained on (model,
    quantization, compute dtype, double quantization, storage, target layer, word template, precision), when
    the LightningModule provides them through a ``settings()`` method. ``scan`` and ``zeroshot
    --adapter DIR`` read it, so an adapter is measured on its own base.

    Args:
        dirpath: Where to write; default: the ModelCheckpoint's directory, else the log directory.
    """

    def __init__(self, dirpath: str | None = None, get_model: Getter = default_model) -> None:
        self.dirpath = dirpath
        self.get_model = get_model

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
                write_json(directory / SETTINGS_FILE, {**settings, "precision": str(trainer.precision)})
