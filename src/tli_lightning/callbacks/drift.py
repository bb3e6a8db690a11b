"""``RepresentationDrift``: each layer's linear CKA and cosine to the base model's vectors, each epoch."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from tli_lightning.callbacks._common import (
    Getter,
    default_model,
    default_tokenizer,
    evaluating,
    progress_bar,
    sharded_map,
)
from tli_lightning.callbacks.measurement import Measurement
from tli_lightning.drift import PREMISES_PER_LANGUAGE, WORDS, drift_report, embed_texts, sample_texts
from tli_lightning.errors import TLIError


def _sortable(value: float | None) -> float:
    return math.inf if value is None or math.isnan(value) else value


def _mean_wall_s(timings: list[dict[str, Any]]) -> float | None:
    seconds = [t["wall_s"] for t in timings if t.get("wall_s") is not None]
    return sum(seconds) / len(seconds) if seconds else None


def _seconds(headline: dict[str, Any]) -> str:
    return "" if headline.get("wall_s") is None else f"; {headline['wall_s']:.2f} s per evaluation"


def _number(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


class RepresentationDrift(Measurement):
    """How far each layer (``hidden_states`` 0..N) has moved from the base model (:mod:`tli_lightning.drift`).

    Before training, embeds a fixed, seeded sample of texts at every layer (by default ``premises_per_language``
    XNLI premises of each of the DataModule's languages and ``words`` lexicon words) and keeps those base
    vectors (in the checkpoint: a resumed run compares against the same ones; their size is in
    :mod:`tli_lightning.drift`); after each epoch, per set and layer, linear CKA and the mean cosine of each
    text's vector to its base vector. Writes ``<log_dir>/<key>/<name>.json`` and logs
    ``<key>/<set>/{cka,cos}/lowest`` (over layers) and ``.../final_layer``; every layer is in the figure and the JSON.

    Works with any LightningModule exposing a Hugging Face causal LM of a supported family as ``.model`` and its
    tokenizer as ``.tokenizer`` (or pass ``get_model``/``get_tokenizer``)::

        trainer = L.Trainer(callbacks=[RepresentationDrift(texts={"premises": premises, "words": words})])

    Args:
        key: Where results go (``<log_dir>/<key>/``) and the prefix of its scalars.
        every_n_epochs: Measure after every n-th epoch.
        texts: ``{set: [text, ...]}`` measured as given; default: a sample of the DataModule's ``lm_texts`` per
            language (``premises``: the measured XNLI examples' premises, unless ``data.lm_texts`` names files)
            and of its trained and control pairs' words (``words``).
        premises_per_language: Premises sampled per language (default texts only).
        words: Words sampled (default texts only).
        seed: The sample's seed.
        batch_size: Texts per forward pass.
        progress: Show a progress bar.
    """

    kind = "drift"
    figure_name = "per_layer"

    def __init__(
        self,
        key: str = "drift",
        every_n_epochs: int = 1,
        texts: Mapping[str, Sequence[str]] | None = None,
        premises_per_language: int = PREMISES_PER_LANGUAGE,
        words: int = WORDS,
        seed: int = 0,
        batch_size: int = 32,
        progress: bool = True,
        get_model: Getter = default_model,
        get_tokenizer: Getter = default_tokenizer,
    ) -> None:
        if batch_size < 1 or premises_per_language < 0 or words < 0:
            raise TLIError(
                f"RepresentationDrift: batch_size must be >= 1 and premises_per_language, words >= 0, got "
                f"{batch_size}, {premises_per_language}, {words}"
            )
        super().__init__(key, every_n_epochs)
        self.texts = texts
        self.premises_per_language = premises_per_language
        self.words = words
        self.seed = seed
        self.batch_size = batch_size
        self.progress = progress
        self.get_model = get_model
        self.get_tokenizer = get_tokenizer
        self.sample: dict[str, list[str]] | None = None
        self.base: dict[str, Tensor] | None = None  # [layers, texts, hidden] per set, float32, before training

    def _sample(self, trainer: L.Trainer) -> dict[str, list[str]]:
        if self.texts is not None:
            return {name: list(texts) for name, texts in self.texts.items() if texts}
        dm = trainer.datamodule
        # The held-out texts of LanguageModelRetention: the measured XNLI examples' premises unless files are given.
        premises = dict(getattr(dm, "lm_texts", None) or {})
        pairs = [*getattr(dm, "train_pairs", []), *getattr(dm, "control_pairs", [])]
        sample = sample_texts(
            premises, [w for pair in pairs for w in pair], self.premises_per_language, self.words, self.seed
        )
        if not sample:
            raise TLIError(
                "RepresentationDrift needs texts=..., or a DataModule with `lm_texts` or train/control pairs"
            )
        return sample

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        if self.base is None and (self.first is not None or trainer.global_step > 0):
            # Resumed from a checkpoint without this measurement's base vectors (one written before it was on):
            # the model has trained, so its vectors now are not the base model's.
            return {"unavailable": "no base vectors in the checkpoint it resumed from", "layers": [], "sets": {}}
        model, tokenizer = self.get_model(pl_module), self.get_tokenizer(pl_module)
        if self.sample is None:
            self.sample = self._sample(trainer)
        now = {}
        with evaluating(model, trainer):
            for name, texts in self.sample.items():
                bar = progress_bar(trainer, f"drift {name}", self.progress)
                # Rows first for the gather across ranks: [texts, layers, hidden].
                rows = sharded_map(
                    trainer,
                    texts,
                    lambda shard, bar=bar: embed_texts(model, tokenizer, shard, self.batch_size, bar).transpose(0, 1),
                )
                now[name] = rows.transpose(0, 1).contiguous()
        if self.base is None:
            self.base = now  # the baseline: the model is still the base model
        return drift_report(self.base, now)

    def scalars(self, report: dict[str, Any]) -> dict[str, float]:
        # The lowest over layers and the final layer's: a few cards whatever the depth (every layer: the figure).
        out = {}
        for name, entry in report["sets"].items():
            for what in ("cka", "cos"):
                out[f"{self.key}/{name}/{what}/lowest"] = min(entry[what], key=_sortable)
                out[f"{self.key}/{name}/{what}/final_layer"] = entry[what][-1]
        return out

    def figure(self, trainer: L.Trainer) -> Any:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        last = self.last
        if last is None or not last["sets"]:
            return None
        figure = Figure(figsize=(10, 3.6))
        axes = figure.subplots(1, 2)
        for ax, what, title in zip(axes, ("cka", "cos"), ("linear CKA to the base", "cosine to the base, same text")):
            for name, entry in last["sets"].items():
                ax.plot(range(len(entry[what])), entry[what], marker="o", label=f"{name} ({entry['texts']})")
            ax.set(xlabel="layer (hidden_states index)", ylabel=what, title=title)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[-1].legend(fontsize=8)
        figure.suptitle(f"drift from the base model, epoch {last.get('epoch', '?')}")
        figure.tight_layout()
        return figure

    def headline(self) -> dict[str, Any] | None:
        last = self.last
        if last is None:
            return None
        sets = {}
        for name, entry in last["sets"].items():
            # NaN (a set without variance) sorts last, so the lowest is a number where there is one.
            lowest = min(range(len(entry["cka"])), key=lambda layer: _sortable(entry["cka"][layer]))
            sets[name] = {
                "texts": entry["texts"],
                "cka": entry["cka"],
                "cos": entry["cos"],
                "cka_min": entry["cka"][lowest],
                "cka_min_layer": lowest,
                "cos_min": min(entry["cos"], key=_sortable),
            }
        headline = {"epoch": last["epoch"], "sets": sets, "wall_s": _mean_wall_s(self.timings)}
        return headline | ({"unavailable": last["unavailable"]} if "unavailable" in last else {})

    @classmethod
    def summary_lines(cls, key: str, headline: dict[str, Any]) -> list[str]:
        if headline.get("unavailable"):
            return [f"drift from the base ({key}): not measured, {headline['unavailable']}"]
        lines = [f"drift from the base ({key}), epoch {headline.get('epoch')}{_seconds(headline)}:"]
        for name, entry in headline.get("sets", {}).items():
            lines.append(
                f"  {name} ({entry['texts']} texts): lowest CKA {_number(entry['cka_min'])} (layer "
                f"{entry['cka_min_layer']}), lowest mean cosine {_number(entry['cos_min'])}"
            )
        return lines

    @classmethod
    def hparam_metrics(cls, key: str, headline: dict[str, Any]) -> dict[str, float]:
        return {
            f"hparams/{key}_{name}_{what}": entry[what]
            for name, entry in headline.get("sets", {}).items()
            for what in ("cka_min", "cos_min")
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "sample": self.sample, "base": self.base}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.sample = state_dict.get("sample")
        self.base = state_dict.get("base")
