"""``WeightUpdateSpectrum``: the weight update's size and rank per adapted matrix, before training and each epoch."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from tli_lightning.callbacks._common import Getter, default_model
from tli_lightning.callbacks.drift import _mean_wall_s, _seconds
from tli_lightning.callbacks.measurement import Measurement
from tli_lightning.errors import TLIError
from tli_lightning.weight_update import (
    SPECTRUM_VALUES,
    aggregate,
    full_update_report,
    is_lora,
    lora_update_report,
    snapshot_trained,
)


def _number(value: float | None, spec: str) -> str:
    # A headline read back from summary.json holds null where the run had NaN.
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


class WeightUpdateSpectrum(Measurement):
    """Per adapted matrix and per block: the update's norm relative to the base weight, its singular values,
    effective rank (90% of the squared norm) and spectral norm (:mod:`tli_lightning.weight_update`).

    LoRA (a PEFT model): ``scaling * B @ A`` of every active adapter, never formed. Full-rank training: ``W_now -
    W_base`` of every trained matrix, against a host copy of the trained matrices taken before the first step
    (kept in the checkpoint, so a resumed run subtracts the same base; its size at 8B is in
    :mod:`tli_lightning.weight_update`). Writes ``<log_dir>/<key>/<name>.json`` (every matrix, with its largest
    ``spectrum_values`` singular values) and logs ``<key>/relative_norm/total`` and ``<key>/effective_rank/total``
    (over every matrix; each block's are in the figure and the JSON).

    Works with any LightningModule exposing a Hugging Face causal LM of a supported family as ``.model`` (or pass
    ``get_model``)::

        trainer = L.Trainer(callbacks=[WeightUpdateSpectrum()])

    Args:
        key: Where results go (``<log_dir>/<key>/``) and the prefix of its scalars.
        every_n_epochs: Measure after every n-th epoch.
        spectrum_values: Singular values kept per matrix in the JSON (the largest).
    """

    kind = "weight_update"
    figure_name = "spectrum"

    def __init__(
        self,
        key: str = "weight_update",
        every_n_epochs: int = 1,
        spectrum_values: int = SPECTRUM_VALUES,
        get_model: Getter = default_model,
    ) -> None:
        if spectrum_values < 1:
            raise TLIError(f"WeightUpdateSpectrum: spectrum_values must be >= 1, got {spectrum_values}")
        super().__init__(key, every_n_epochs)
        self.spectrum_values = spectrum_values
        self.get_model = get_model
        self.base: dict[str, torch.Tensor] | None = None  # full-rank arms: the trained matrices before training

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        model = self.get_model(pl_module)
        if is_lora(model):
            return {"adaptation": "lora", **lora_update_report(model, self.spectrum_values)}
        if self.base is None:
            if self.first is not None or trainer.global_step > 0:
                # Resumed from a checkpoint without this measurement's base (one written before it was on): the
                # weights have trained, so they are not the base to subtract.
                unavailable = "no base snapshot in the checkpoint it resumed from"
                return {"adaptation": "full", "unavailable": unavailable, **aggregate([])}
            self.base = snapshot_trained(model)  # the baseline: the model is still the base model
        return {"adaptation": "full", **full_update_report(model, self.base, self.spectrum_values)}

    def scalars(self, report: dict[str, Any]) -> dict[str, float]:
        # Two cards whatever the depth; every block is in the figure and the JSON.
        total = report.get("total")
        if not total:
            return {}
        return {
            f"{self.key}/relative_norm/total": total["relative_norm"],
            f"{self.key}/effective_rank/total": total["effective_rank_mean"],
        }

    def figure(self, trainer: L.Trainer) -> Any:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        last = self.last
        if last is None or not last["blocks"]:
            return None
        figure = Figure(figsize=(10, 3.6))
        left, right = figure.subplots(1, 2)
        layers = [b["layer"] for b in last["blocks"]]
        left.plot(layers, [b["relative_norm"] for b in last["blocks"]], marker="o")
        left.set(
            xlabel="layer (block output, hidden_states index)", ylabel="||dW|| / ||W_base||", title="relative norm"
        )
        right.plot(layers, [b["effective_rank_mean"] for b in last["blocks"]], marker="o")
        right.set(xlabel="layer (block output, hidden_states index)", ylabel="mean over the block's matrices")
        right.set_title("effective rank (90% of the squared norm)")
        for ax in (left, right):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        figure.suptitle(f"weight update, epoch {last.get('epoch', '?')}")
        figure.tight_layout()
        return figure

    def compact(self, report: dict[str, Any]) -> dict[str, Any]:
        # Every matrix's spectrum stays in the JSON files, not in the checkpoint.
        return {k: v for k, v in report.items() if k != "matrices"}

    def headline(self) -> dict[str, Any] | None:
        last = self.last
        if last is None:
            return None
        total = last.get("total") or {}
        return {
            "epoch": last["epoch"],
            "adaptation": last.get("adaptation"),
            "matrices": total.get("matrices", 0),
            "relative_norm": total.get("relative_norm"),
            "effective_rank_mean": total.get("effective_rank_mean"),
            "effective_rank_max": total.get("effective_rank_max"),
            "spectral_norm_max": total.get("spectral_norm_max"),
            "per_layer": {
                str(b["layer"]): {"relative_norm": b["relative_norm"], "effective_rank_mean": b["effective_rank_mean"]}
                for b in last["blocks"]
            },
            "wall_s": _mean_wall_s(self.timings),
        } | ({"unavailable": last["unavailable"]} if "unavailable" in last else {})

    @classmethod
    def summary_lines(cls, key: str, headline: dict[str, Any]) -> list[str]:
        if not headline.get("matrices"):
            return [f"weight update ({key}): not measured, {headline.get('unavailable') or 'no adapted matrix'}"]
        return [
            f"weight update ({key}, {headline['adaptation']}, {headline['matrices']} matrices, epoch "
            f"{headline.get('epoch')}): relative norm "
            f"{_number(headline['relative_norm'], '.3g')}, effective rank "
            f"{_number(headline['effective_rank_mean'], '.1f')} mean, {headline['effective_rank_max']} max "
            f"(90% of the squared norm){_seconds(headline)}"
        ]

    @classmethod
    def hparam_metrics(cls, key: str, headline: dict[str, Any]) -> dict[str, float]:
        if not headline.get("matrices"):
            return {}
        return {
            f"hparams/{key}_relative_norm": headline["relative_norm"],
            f"hparams/{key}_effective_rank": headline["effective_rank_mean"],
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "base": self.base}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.base = state_dict.get("base")
