"""``LayerwiseAlignment``: per-layer cross-lingual alignment before training and after each epoch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from tli_lightning.alignment import METRICS, alignment_report, embed_all_layers, words_of
from tli_lightning.callbacks._common import (
    EpochMeasurement,
    Getter,
    default_model,
    default_tokenizer,
    evaluating,
    gather_rows,
    log_dir,
    log_scalars,
    progress_bar,
    save_figure,
    shard,
    write_json,
)
from tli_lightning.errors import TLIError
from tli_lightning.lexicon import Pair

# The metrics logged as scalars (every metric of every layer is in the JSON and the figure).
SCALAR_METRICS = ("csls_p_at_1", "gap", "cos", "cos_random")  # the primary endpoint first


class LayerwiseAlignment(EpochMeasurement):
    """Measure how close translation pairs are at every layer (``hidden_states`` 0..N).

    Runs before the first training step (the baseline) and after every ``every_n_epochs``
    epochs, on each pair set (by default the DataModule's ``train_pairs`` and
    ``control_pairs``), in one batched forward over all words. Logs scalars
    ``align/<set>/<metric>/layer_<LL>`` for a few layers (``scalar_layers``: by default the
    LightningModule's ``target_layer`` and the final layer, so a 32-block model does not fill
    TensorBoard with 600 cards), a TensorBoard figure ``align/per_layer`` of every layer (also a PNG
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
    """

    measurement = "alignment"

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
    ) -> None:
        unknown = sorted(set(scalar_metrics) - set(METRICS))
        if unknown:
            raise TLIError(f"LayerwiseAlignment: unknown scalar_metrics {unknown}; the metrics are {list(METRICS)}")
        if every_n_epochs < 1 or batch_size < 1 or (limit is not None and limit < 2):
            raise TLIError(
                f"LayerwiseAlignment: every_n_epochs and batch_size must be >= 1 and limit >= 2, got "
                f"{every_n_epochs}, {batch_size}, {limit}"
            )
        super().__init__()
        self.pair_sets = pair_sets
        self.limit = limit
        self.every_n_epochs = every_n_epochs
        self.batch_size = batch_size
        self.word_template = word_template
        self.progress = progress
        self.get_model = get_model
        self.get_tokenizer = get_tokenizer
        self.scalar_layers = scalar_layers
        self.scalar_metrics = tuple(scalar_metrics)
        self.baseline: dict | None = None
        self.last: dict | None = None

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

        return alignment_report(layers(), words, sets)

    def has_baseline(self) -> bool:
        return self.baseline is not None

    def last_step(self) -> int | None:
        return None if self.last is None else self.last["global_step"]

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> None:
        report = self.measure(trainer, pl_module)
        report["epoch"] = trainer.current_epoch + (0 if name == "baseline" else 1)
        report["global_step"] = trainer.global_step
        summary = {k: v for k, v in report.items() if k != "sets"}
        summary["sets"] = {
            s: {
                **{m: e[m] for m in METRICS},
                **{k: e[k] for k in ("candidates", "pool_candidates", "chance_p_at_1")},
                "queries": len(e["queries"]),
            }
            for s, e in report["sets"].items()
        }
        summary["name"] = name
        if self.baseline is None:
            self.baseline = summary
        self.last = summary
        directory = log_dir(trainer)  # a collective: every rank, before the rank-0 branch
        if trainer.is_global_zero:
            write_json(directory / "alignment" / f"{name}.json", report)
        self.publish(trainer)

    def publish(self, trainer: L.Trainer) -> None:
        from tli_lightning.plots import alignment_figure

        last = self.last
        scalars = {
            f"align/{s}/{m}/layer_{layer:02d}": values[m][layer]
            for s, values in last["sets"].items()
            for m in self.scalar_metrics
            for layer in self.logged_layers(trainer, last["layers"])
        }
        log_scalars(trainer, scalars, last["global_step"])
        directory = log_dir(trainer)
        if trainer.is_global_zero:
            before = None if last is self.baseline or last == self.baseline else self.baseline
            target = getattr(trainer.lightning_module, "target_layer", None)
            figure = alignment_figure(last, before, title=f"alignment, {last['name']}", target_layer=target)
            save_figure(trainer, directory, "align/per_layer", figure, last["global_step"])

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

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "last": self.last, "timings": self.timings}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.baseline = state_dict.get("baseline")
        self.last = state_dict.get("last")
        self.timings = list(state_dict.get("timings", []))
