"""``LayerwiseAlignment``: per-layer cross-lingual alignment before training and after each epoch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from tli_lightning.alignment import METRICS, alignment_report, embed_all_layers, words_of
from tli_lightning.callbacks._common import (
    Getter,
    default_model,
    default_tokenizer,
    evaluating,
    gather_rows,
    progress_bar,
    shard,
)
from tli_lightning.callbacks.measurement import Measurement
from tli_lightning.errors import TLIError
from tli_lightning.lexicon import Pair

# The metrics logged as scalars (every metric of every layer is in the JSON and the figure).
SCALAR_METRICS = ("csls_p_at_1", "gap", "cos", "cos_random")  # the primary endpoint first
# The metrics of summary.json's headline, baseline -> final, at the target and final layers.
HEADLINE_METRICS = ("csls_p_at_1", "cos", "cos_random", "gap", "p_at_1_s2t", "p_at_1_t2s")


class LayerwiseAlignment(Measurement):
    """Measure how close translation pairs are at every layer (``hidden_states`` 0..N).

    Runs before the first training step (the baseline) and after every ``every_n_epochs``
    epochs, on each pair set (by default the DataModule's ``train_pairs`` and
    ``control_pairs``), in one batched forward over all words. Logs scalars
    ``align/<set>/<metric>/layer_<LL>`` for a few layers (``scalar_layers``: by default the
    LightningModule's ``target_layer`` and the final layer, so a 32-block model does not fill
    TensorBoard with 600 cards), a TensorBoard figure ``alignment/per_layer`` of every layer (also a PNG
    under ``<log_dir>/figures/``) and a JSON file per evaluation under ``<log_dir>/alignment/`` with
    every number of every layer and per-pair cosines. See :mod:`tli_lightning.alignment` for the metrics.

    Under DDP each process embeds its share of the words; metrics are then computed one layer at a
    time from the gathered ``[words, hidden]`` vectors of that layer, so memory never holds every
    layer of every word on a device.

    Works with any LightningModule exposing a Hugging Face causal LM as ``.model`` and its
    tokenizer as ``.tokenizer`` (or pass ``get_model``/``get_tokenizer``)::

        trainer = L.Trainer(callbacks=[LayerwiseAlignment(pair_sets={"control": [("maji", "water"), ...]})])

    Args:
        pair_sets: ``{name: [(source, target), ...]}``; default: the DataModule's
            ``train_pairs`` as ``trained`` and ``control_pairs`` as ``control``.
        limit: At most this many pairs per set (the first ones), to bound cost.
        every_n_epochs: Evaluate after every n-th epoch.
        batch_size: Words per forward pass.
        word_template: Text around each word (``{word}`` = alone, as in training).
        progress: Show a progress bar.
        scalar_layers: ``hidden_states`` indices logged as scalars (negative: from the end), or ``all``;
            default: the LightningModule's ``target_layer`` (if it has one) and the final layer (-1).
        scalar_metrics: The metrics logged as scalars for those layers.
        key: The results' folder under the log directory (and the state key: several instances coexist).
    """

    kind = "alignment"
    figure_name = "per_layer"

    def __init__(
        self,
        pair_sets: Mapping[str, Sequence[Pair]] | None = None,
        limit: int | None = None,
        every_n_epochs: int = 1,
        batch_size: int = 256,
        word_template: str = "{word}",
        progress: bool = True,
        get_model: Getter = default_model,
        get_tokenizer: Getter = default_tokenizer,
        scalar_layers: Sequence[int] | Literal["all"] | None = None,
        scalar_metrics: Sequence[str] = SCALAR_METRICS,
        key: str = "alignment",
    ) -> None:
        unknown = sorted(set(scalar_metrics) - set(METRICS))
        if unknown:
            raise TLIError(f"LayerwiseAlignment: unknown scalar_metrics {unknown}; the metrics are {list(METRICS)}")
        if every_n_epochs < 1 or batch_size < 1 or (limit is not None and limit < 2):
            raise TLIError(
                f"LayerwiseAlignment: every_n_epochs and batch_size must be >= 1 and limit >= 2, got "
                f"{every_n_epochs}, {batch_size}, {limit}"
            )
        super().__init__(key, every_n_epochs)
        self.pair_sets = pair_sets
        self.limit = limit
        self.batch_size = batch_size
        self.word_template = word_template
        self.progress = progress
        self.get_model = get_model
        self.get_tokenizer = get_tokenizer
        self.scalar_layers = scalar_layers
        self.scalar_metrics = tuple(scalar_metrics)
        self._logged: list[int] = []  # the layers logged as scalars, set by each measure

    def _sets(self, trainer: L.Trainer) -> dict[str, list[Pair]]:
        sets = self.pair_sets
        if sets is None:
            dm = trainer.datamodule
            if dm is None or not hasattr(dm, "train_pairs"):
                raise TLIError("LayerwiseAlignment needs pair_sets=..., or a DataModule with train_pairs/control_pairs")
            sets = {"trained": dm.train_pairs, "control": getattr(dm, "control_pairs", [])}
        return {name: list(pairs)[: self.limit] for name, pairs in sets.items() if len(pairs) >= 2}

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        """One evaluation: the report dict (also what is written to JSON)."""
        model, tokenizer = self.get_model(pl_module), self.get_tokenizer(pl_module)
        sets = self._sets(trainer)
        words = words_of(sets)
        mine = list(shard(trainer, words))
        count = len(mine)
        mine = mine or words[:1]  # an empty shard still runs one word, for the gather
        with evaluating(model, trainer):
            vectors = embed_all_layers(
                model,
                tokenizer,
                mine,
                template=self.word_template,
                batch_size=self.batch_size,
                progress=progress_bar(trainer, "alignment", self.progress),
            )

        def layers() -> Iterator[tuple[Tensor, Tensor]]:
            for plain, with_bos in zip(vectors["plain"], vectors["with_bos"]):
                yield (
                    gather_rows(trainer, plain[:count], len(words)),
                    gather_rows(trainer, with_bos[:count], len(words)),
                )

        report = alignment_report(layers(), words, sets)
        target = getattr(trainer.lightning_module, "target_layer", None)
        report["target_layer"] = target if isinstance(target, int) else None
        self._logged = self.logged_layers(trainer, report["layers"])
        return report

    def compact(self, report: dict) -> dict:
        # Without the per-pair and per-query lists: those are in the JSON files, and state rides in every checkpoint.
        summary = {k: v for k, v in report.items() if k != "sets"}
        summary["sets"] = {
            s: {
                **{m: e[m] for m in METRICS},
                **{k: e[k] for k in ("candidates", "pool_candidates", "chance_p_at_1")},
                "queries": len(e["queries"]),
            }
            for s, e in report["sets"].items()
        }
        return summary

    def scalars(self, report: dict) -> dict[str, float]:
        return {
            f"align/{s}/{m}/layer_{layer:02d}": values[m][layer]
            for s, values in report["sets"].items()
            for m in self.scalar_metrics
            for layer in self._logged
        }

    @property
    def baseline(self) -> dict | None:
        """The evaluation before training (its :meth:`compact` form)."""
        return self.first

    def figure(self, trainer: L.Trainer) -> Any:
        from tli_lightning.plots import alignment_figure

        last, first = self.last, self.first
        before = None if last is first or last == first else first
        target = getattr(trainer.lightning_module, "target_layer", None)
        return alignment_figure(last, before, title=f"alignment, {last['name']}", target_layer=target)

    def headline(self) -> dict[str, Any] | None:
        if self.first is None:
            return None
        before, after = self.first, self.last
        target = before.get("target_layer")
        layers = sorted({target or 0, before["layers"][-1]})
        return {
            "primary_endpoint": "csls_p_at_1 of the control set: CSLS retrieval of the right translation among "
            "every target word of the sets, on mean-centered vectors (a shift or rescaling cannot move it); "
            "gap, cos and cos_random are descriptive",
            "epoch": after["epoch"],
            "target_layer": target,
            "layers": {
                str(layer): {
                    name: {
                        **{m: [entry[m][layer], after["sets"][name][m][layer]] for m in HEADLINE_METRICS},
                        "chance_p_at_1": entry.get("chance_p_at_1"),
                        "queries": entry.get("queries"),
                    }
                    for name, entry in before["sets"].items()
                }
                for layer in layers
            },
        }

    @classmethod
    def summary_lines(cls, key: str, headline: dict[str, Any]) -> list[str]:
        lines = [
            f"alignment, before training -> epoch {headline['epoch']} (primary: CSLS P@1, retrieval among every "
            "target word, centered; gap = pair - random-pair cosine, descriptive):"
        ]
        for layer, sets in headline["layers"].items():
            which = "target" if int(layer) == headline.get("target_layer") else "final"
            for name, m in sets.items():
                p, chance, n = m.get("csls_p_at_1"), m.get("chance_p_at_1"), m.get("queries")
                hits = f"{round(p[0] * n)}/{n} -> {round(p[1] * n)}/{n}" if p and n else ""
                primary = f"CSLS P@1 {hits} (chance {chance:.3f})   " if p and chance else ""
                lines.append(
                    f"  layer {layer:>2} ({which:6}) {name:8} {primary}gap {m['gap'][0]:+.3f} -> {m['gap'][1]:+.3f}   "
                    f"cos {m['cos'][0]:.3f} -> {m['cos'][1]:.3f}"
                )
        return lines

    @classmethod
    def hparam_metrics(cls, key: str, headline: dict[str, Any]) -> dict[str, float]:
        prefix = "" if key == "alignment" else f"{key}_"  # two instances stay apart
        metrics = {}
        for layer, sets in headline["layers"].items():
            which = "target" if int(layer) == headline.get("target_layer") else "final"
            for name, values in sets.items():
                metrics[f"hparams/{prefix}{name}_csls_p_at_1_{which}_layer"] = values["csls_p_at_1"][1]  # primary
                metrics[f"hparams/{prefix}{name}_gap_{which}_layer"] = values["gap"][1]
        return metrics

    def logged_layers(self, trainer: L.Trainer, layers: Sequence[int]) -> list[int]:
        """The layers among ``layers`` (0..N) whose metrics are logged as scalars."""
        return self.scalar_layers_of(max(layers), getattr(trainer.lightning_module, "target_layer", None))

    def scalar_layers_of(self, final: int, target: int | None) -> list[int]:
        """The layers logged as scalars for a model whose final layer is ``final`` and loss reads ``target``."""
        layers = range(final + 1)
        if self.scalar_layers == "all":
            return list(layers)
        chosen = list(self.scalar_layers) if self.scalar_layers is not None else [-1]
        if self.scalar_layers is None and isinstance(target, int):
            chosen.append(target)
        return sorted({final + 1 + layer if layer < 0 else layer for layer in chosen} & set(layers))
