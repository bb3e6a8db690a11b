"""``ZeroShotRetention``: lm-eval-exact zero-shot multiple-choice tasks before training and after each epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch

from tli_lightning.callbacks._common import (
    Getter,
    default_model,
    default_tokenizer,
    evaluating,
    given_or_from_datamodule,
    progress_bar,
    sharded_map,
)
from tli_lightning.callbacks.measurement import Measurement
from tli_lightning.errors import TLIError
from tli_lightning.tasks import TASKS, Example, score_examples
from tli_lightning.zeroshot import classification_scores


class ZeroShotRetention(Measurement):
    """Zero-shot accuracy per task (XNLI, XCOPA, XStoryCloze, ...), and how much of it survives training.

    Scores each task exactly as lm-evaluation-harness does (see :mod:`tli_lightning.tasks`) before the first
    training step and after every ``every_n_epochs`` epochs. Logs ``<key>/<task>/acc``,
    ``<key>/<task>/macro_f1`` and ``<key>/<task>/retention`` (accuracy now / accuracy before training; one
    TensorBoard chart per task), a figure ``<key>/accuracy`` (also a PNG under ``<log_dir>/figures/``) and a
    JSON file per evaluation under ``<log_dir>/<key>/`` with per-example log-likelihoods. Accuracy is the exact
    fraction ``correct / n``.

    Works with any LightningModule exposing a Hugging Face causal LM as ``.model`` and its tokenizer as
    ``.tokenizer`` (or pass ``get_model``/``get_tokenizer``)::

        from tli_lightning.tasks import load_examples
        tasks = {name: load_examples(name, "demo") for name in ("xnli_sw", "xcopa_sw")}
        trainer = L.Trainer(callbacks=[ZeroShotRetention(tasks=tasks)])

    Args:
        tasks: ``{task name: [Example, ...]}`` (lm-eval's task names; a name outside
            :data:`tli_lightning.tasks.TASKS` is scored the same way, chance = 1 / its choices); default: the
            DataModule's ``reasoning``.
        limit: At most this many examples per task (the first ones).
        every_n_epochs: Evaluate after every n-th epoch.
        batch_size: Examples per forward pass (each with all its choices).
        progress: Show a progress bar.
        key: The results' folder under the log directory and the scalars' prefix (several instances coexist).
    """

    kind = "multiple_choice"
    figure_name = "accuracy"

    def __init__(
        self,
        tasks: Mapping[str, Sequence[Example]] | None = None,
        limit: int | None = None,
        every_n_epochs: int = 1,
        batch_size: int = 32,
        progress: bool = True,
        get_model: Getter = default_model,
        get_tokenizer: Getter = default_tokenizer,
        key: str = "reasoning",
    ) -> None:
        if batch_size < 1 or (limit is not None and limit < 1):
            raise TLIError(f"ZeroShotRetention: batch_size and limit must be >= 1, got {batch_size}, {limit}")
        super().__init__(key, every_n_epochs)
        self.tasks = tasks
        self.limit = limit
        self.batch_size = batch_size
        self.progress = progress
        self.get_model = get_model
        self.get_tokenizer = get_tokenizer

    def _tasks(self, trainer: L.Trainer) -> dict[str, list[Example]]:
        tasks = given_or_from_datamodule(self.tasks, trainer, "reasoning", "ZeroShotRetention", "tasks")
        return {name: list(rows)[: self.limit] for name, rows in tasks.items()}

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """``{"tasks": {task: {"acc", "correct", "n", "macro_f1", "retention", "chance", "language", "rows",
        "loglikelihoods", "labels"}}}`` for one evaluation."""
        model, tokenizer = self.get_model(pl_module), self.get_tokenizer(pl_module)
        results = {}
        with evaluating(model, trainer):
            for name, examples in self._tasks(trainer).items():
                bar = progress_bar(trainer, name, self.progress)
                loglik = sharded_map(
                    trainer,
                    examples,
                    lambda shard, bar=bar: score_examples(
                        model, tokenizer, shard, batch_size=self.batch_size, progress=bar
                    ),
                )
                labels = [e.label for e in examples]
                choices = loglik.shape[1]
                scores = classification_scores(loglik.argmax(dim=1).tolist(), labels, num_classes=choices)
                task = TASKS.get(name)
                base = (self.first or {}).get("tasks", {}).get(name, {}).get("acc")
                if base is None:  # this is the baseline
                    base = scores["acc"]
                results[name] = {
                    **scores,
                    "retention": scores["acc"] / base if base else float("nan"),
                    "chance": 1 / choices,
                    "language": task.language if task else None,
                    "benchmark": task.benchmark if task else None,
                    "rows": [e.row for e in examples],
                    "loglikelihoods": loglik.tolist(),
                    "labels": labels,
                }
        return {"tasks": results}

    def compact(self, report: dict[str, Any]) -> dict[str, Any]:
        kept = ("acc", "correct", "n", "macro_f1", "retention", "chance", "language")
        return {"tasks": {name: {k: r[k] for k in kept} for name, r in report["tasks"].items()}}

    def scalars(self, report: dict[str, Any]) -> dict[str, float]:
        return {
            f"{self.key}/{name}/{what}": r[what]
            for name, r in report["tasks"].items()
            for what in ("acc", "macro_f1", "retention")
        }

    def layout(self, datamodule: Any) -> dict[str, dict[str, list]]:
        tasks = self.tasks if self.tasks is not None else getattr(datamodule, "reasoning", {})
        return {
            "zero-shot reasoning": {
                f"{self.key}: {task} {what}": ["Multiline", [rf"{self.key}/{task}/{what}"]]
                for task in tasks
                for what in ("acc", "retention")
            }
        }

    @property
    def baseline(self) -> dict[str, float]:
        """``{task: accuracy before training}``."""
        return {name: r["acc"] for name, r in (self.first or {}).get("tasks", {}).items()}

    def figure(self, trainer: L.Trainer) -> Any:
        from tli_lightning.plots import retention_figure

        chance = {name: r["chance"] for name, r in self.last["tasks"].items()}
        return retention_figure(self.history, chance, prefix=self.key)

    def headline(self) -> dict[str, Any] | None:
        if self.first is None:
            return None
        first, last = self.first["tasks"], self.last["tasks"]
        return {
            "epoch": self.last["epoch"],
            "tasks": {
                name: {
                    "acc": [first[name]["acc"], r["acc"]],
                    "correct_of": [[first[name]["correct"], first[name]["n"]], [r["correct"], r["n"]]],
                    "retention": r["retention"],
                    "chance": r["chance"],
                    "language": r.get("language"),
                }
                for name, r in last.items()
            },
        }

    @classmethod
    def summary_lines(cls, key: str, headline: dict[str, Any]) -> list[str]:
        lines = [f"zero-shot accuracy ({key}), before training -> epoch {headline['epoch']}:"]
        width = max((len(name) for name in headline["tasks"]), default=0)
        for name, r in headline["tasks"].items():
            (c0, n0), (c1, n1) = r["correct_of"]
            retention = r["retention"]
            retained = "n/a" if retention is None or retention != retention else f"{retention:.3f}"
            lines.append(
                f"  {name:{width}}  {c0}/{n0} = {r['acc'][0]:.3f} -> {c1}/{n1} = {r['acc'][1]:.3f}   "
                f"change {r['acc'][1] - r['acc'][0]:+.3f}   retention {retained}   (chance {r['chance']:.3f})"
            )
        return lines

    @classmethod
    def hparam_metrics(cls, key: str, headline: dict[str, Any]) -> dict[str, float]:
        prefix = "" if key == "reasoning" else f"{key}_"  # two instances measuring one task stay apart
        metrics = {}
        for name, r in headline["tasks"].items():
            metrics[f"hparams/{prefix}{name}_acc"] = r["acc"][1]
            metrics[f"hparams/{prefix}{name}_retention"] = r["retention"]
        return metrics
