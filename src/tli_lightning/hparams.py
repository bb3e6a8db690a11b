"""A run's settings and headline numbers for every logger: TensorBoard's HPARAMS tab, ``hparams.yaml``.

Every setting is logged (``model/*``, ``data/*`` with the data's fingerprints and counts, ``trainer/*``),
so that two runs that differ in anything, a demo-data run and a real-data run included, differ in HPARAMS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The trainer's settings that change what a run computes or how long it trains.
TRAINER_SETTINGS = (
    "max_epochs",
    "max_steps",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "limit_train_batches",
    "num_devices",
    "world_size",
)


def run_hparams(summary: dict[str, Any], trainer: Any = None) -> dict[str, Any]:
    """Nested settings of a run (what ``hparams.yaml`` holds): identity, ``model``, ``data``, ``trainer``."""
    params: dict[str, Any] = {
        "arm": summary["name"],
        "version": summary["version"],
        "status": summary["status"],
        "seed": summary["seed"],
        "target_layer": summary.get("target_layer"),
        "trainable_parameters": summary.get("trainable_parameters"),
        "global_step": summary.get("global_step"),
        "epochs_completed": summary.get("epochs_completed"),
        "resumed_from": summary.get("resumed_from"),
        # (LightningCLI adds `_instantiator` and `_class_path` keys: not settings.)
        "model": {k: v for k, v in summary.get("model", {}).items() if not k.startswith("_")},
        "data": dict(summary.get("data", {})),
    }
    if trainer is not None:
        settings = {key: getattr(trainer, key, None) for key in TRAINER_SETTINGS}
        settings["precision"] = str(trainer.precision)
        settings["strategy"] = type(trainer.strategy).__name__
        params["trainer"] = {
            k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for k, v in settings.items()
        }
    return params


def flat(params: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """One level, ``a/b`` keys, values TensorBoard's HPARAMS takes (lists and None as text)."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = "null" if value is None else str(value)
    return out


def run_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The headline numbers, final values: what HPARAMS shows beside the settings."""
    from tli_lightning.callbacks.measurement import hparam_metrics

    return hparam_metrics(summary.get("measurements", {}))


def log_run_hparams(trainer: Any, summary: dict[str, Any]) -> None:
    """The same settings and numbers to every logger of the run (rank 0), and ``hparams.yaml`` in full.

    Lightning's TensorBoard logger writes ``hparams.yaml`` once, at its first save (with what it had then:
    nothing, since the run logs its settings at the end), so the file is written here again.
    """
    from lightning.pytorch.core.saving import save_hparams_to_yaml
    from lightning.pytorch.loggers import TensorBoardLogger

    nested = run_hparams(summary, trainer)
    params, metrics = flat(nested), run_metrics(summary)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=metrics)  # the HPARAMS tab pairs them
        else:
            logger.log_hyperparams(params)
            logger.log_metrics(metrics, step=trainer.global_step)
        logger.save()
    log_dir = getattr(trainer.loggers[0], "log_dir", None) if trainer.loggers else None
    if log_dir:
        save_hparams_to_yaml(Path(log_dir) / "hparams.yaml", nested)
