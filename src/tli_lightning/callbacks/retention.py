"""``ZeroShotRetention``: lm-eval-exact zero-shot XNLI before training and after each epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch

from tli_lightning.callbacks._common import (
    EpochMeasurement,
    Getter,
    default_model,
    default_tokenizer,
    evaluating,
    log_dir,
    log_scalars,
    progress_bar,
    save_figure,
    sharded_map,
    write_json,
)
from tli_lightning.errors import TLIError
from tli_lightning.xnli import XNLIExample, candidate_templates
from tli_lightning.zeroshot import classification_scores, score_xnli


class ZeroShotRetention(EpochMeasurement):
    """Zero-shot XNLI accuracy per language, and how much of it survives training.

    Scores exactly as lm-evaluation-harness's ``xnli_<lang>`` (see :mod:`tli_lightning.zeroshot`)
    before the first training step and after every ``every_n_epochs`` epochs. Logs
    ``xnli/<lang>/acc``, ``xnli/<lang>/macro_f1`` and ``xnli/<lang>/retention`` (accuracy now /
    accuracy before training), a TensorBoard figure ``xnli/accuracy`` (also a PNG under
    ``<log_dir>/figures/``) and a JSON file per evaluation under ``<log_dir>/xnli/`` with
    per-example log-likelihoods. Accuracy is the exact fraction ``correct / n``.

    Works with any LightningModule exposing a Hugging Face causal LM as ``.model`` and its
    tokenizer as ``.tokenizer`` (or pass ``get_model``/``get_tokenizer``)::

        trainer = L.Trainer(callbacks=[ZeroShotRetention(examples={"sw": sw_examples})])

    Args:
        examples: ``{language: [XNLIExample, ...]}``; default: the DataModule's ``xnli``.
        templates: ``{language: (entailment, neutral, contradiction)}`` ``str.format``
            templates with ``{premise}``/``{hypothesis}``, replacing lm-eval's verbalizers.
        limit: At most this many examples per language (the first ones).
        every_n_epochs: Evaluate after every n-th epoch.
        batch_size: XNLI examples per forward pass (each with its three candidates).
        progress: Show a progress bar.
    """

    measurement = "xnli"

    def __init__(
        self,
        examples: Mapping[str, Sequence[XNLIExample]] | None = None,
        templates: Mapping[str, tuple[str, str, str]] | None = None,
        limit: int | None = None,
        every_n_epochs: int = 1,
        batch_size: int = 32,
        progress: bool = True,
        get_model: Getter = default_model,
        get_tokenizer: Getter = default_tokenizer,
    ) -> None:
        if every_n_epochs < 1 or batch_size < 1 or (limit is not None and limit < 1):
            raise TLIError(
                f"ZeroShotRetention: every_n_epochs, batch_size and limit must be >= 1, got "
                f"{every_n_epochs}, {batch_size}, {limit}"
            )
        super().__init__()
        self.examples = examples
        self.templates = dict(templates or {})
        self.limit = limit
        self.every_n_epochs = every_n_epochs
        self.batch_size = batch_size
        self.progress = progress
        self.get_model = get_model
        self.get_tokenizer = get_tokenizer
        self.baseline: dict[str, float] = {}
        self.history: list[dict[str, float]] = []

    def _examples(self, trainer: L.Trainer) -> dict[str, list[XNLIExample]]:
        examples = self.examples
        if examples is None:
            examples = getattr(trainer.datamodule, "xnli", None)
            if examples is None:
                raise TLIError("ZeroShotRetention needs examples=..., or a DataModule with an `xnli` dict")
        return {lang: list(rows)[: self.limit] for lang, rows in examples.items()}

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, dict[str, Any]]:
        """``{language: {"acc", "correct", "n", "macro_f1", "loglikelihoods", "labels"}}`` for one evaluation."""
        model, tokenizer = self.get_model(pl_module), self.get_tokenizer(pl_module)
        results = {}
        with evaluating(model, trainer):
            for language, examples in self._examples(trainer).items():
                templates = self.templates.get(language) or candidate_templates(language)
                bar = progress_bar(trainer, f"xnli {language}", self.progress)
                loglik = sharded_map(
                    trainer,
                    examples,
                    lambda shard, templates=templates, bar=bar: score_xnli(
                        model, tokenizer, shard, templates=templates, batch_size=self.batch_size, progress=bar
                    ),
                )
                labels = [e.label for e in examples]
                scores = classification_scores(loglik.argmax(dim=1).tolist(), labels)
                results[language] = {**scores, "loglikelihoods": loglik.tolist(), "labels": labels}
        return results

    def has_baseline(self) -> bool:
        return bool(self.baseline)

    def last_step(self) -> int | None:
        return self.history[-1]["global_step"] if self.history else None

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> None:
        results = self.measure(trainer, pl_module)
        if not self.baseline:
            self.baseline = {lang: r["acc"] for lang, r in results.items()}
        scalars: dict[str, float] = {}
        counts: dict[str, list[int]] = {}
        for lang, r in results.items():
            base = self.baseline.get(lang, float("nan"))
            r["retention"] = r["acc"] / base if base else float("nan")
            scalars.update(
                {
                    f"xnli/{lang}/acc": r["acc"],
                    f"xnli/{lang}/macro_f1": r["macro_f1"],
                    f"xnli/{lang}/retention": r["retention"],
                }
            )
            counts[lang] = [r["correct"], r["n"]]
        epoch = trainer.current_epoch + (0 if name == "baseline" else 1)
        self.history.append({"epoch": epoch, "global_step": trainer.global_step, **scalars, "correct_of": counts})
        directory = log_dir(trainer)  # a collective: every rank, before the rank-0 branch
        if trainer.is_global_zero:
            write_json(
                directory / "xnli" / f"{name}.json",
                {"epoch": epoch, "global_step": trainer.global_step, "languages": results},
            )
        self.publish(trainer)

    def publish(self, trainer: L.Trainer) -> None:
        from tli_lightning.plots import retention_figure

        last = self.history[-1]
        scalars = {k: v for k, v in last.items() if k.startswith("xnli/")}
        log_scalars(trainer, scalars, last["global_step"])
        directory = log_dir(trainer)
        if trainer.is_global_zero:
            figure = retention_figure(self.history, list(last["correct_of"]))
            save_figure(trainer, directory, "xnli/accuracy", figure, last["global_step"])

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "history": self.history, "timings": self.timings}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.baseline = dict(state_dict.get("baseline", {}))
        self.history = list(state_dict.get("history", []))
        self.timings = list(state_dict.get("timings", []))
