"""``ZeroShotRetention``: lm-eval-exact zero-shot XNLI before training and after each epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import torch

from tli_lightning.callbacks._common import (
    EpochMeasurement, Getter, default_model, default_tokenizer, evaluating, log_dir, log_figure, log_scalars, progress_bar,
    sharded_map, write_json,
)
from tli_lightning.errors import TLIError
from tli_lightning.plots import retention_figure
from tli_lightning.xnli import XNLIExample, candidate_templates
from tli_lightning.zeroshot import accuracy_and_f1, score_xnli


class ZeroShotRetention(EpochMeasurement):
    """Zero-shot XNLI accuracy per language, and how much of it survives training.

    Scores exactly as lm-evaluation-harness's ``xnli_<lang>`` (see :mod:`tli_lightning.zeroshot`)
    before the first training step and after every ``every_n_epochs`` epochs. Logs
    ``xnli/<lang>/acc``, ``xnli/<lang>/macro_f1`` and ``xnli/<lang>/retention`` (accuracy now /
    accuracy before training), a TensorBoard figure ``xnli/accuracy`` and a JSON file per
    evaluation under ``<log_dir>/xnli/`` with per-example log-likelihoods.

    Works with any LightningModule exposing a Hugging Face causal LM as ``.model`` and its
    tokenizer as ``.tokenizer`` (or pass ``get_model``/``get_tokenizer``)::

        trainer = L.Trainer(callbacks=[ZeroShotRetention(examples={"sw": sw_examples})])

    Args:
        examples: ``{language: [XNLIExample, ...]}``; default: the DataModule's ``xnli``.
        templates: ``{language: (entailment, neutral, contradiction)}`` ``str.format``
            templates with ``{premise}``/``{hypothesis}``, replacing lm-eval's verbalizers.
        limit: At most this many examples per language (the first ones).
        every_n_epochs: Evaluate after every n-th epoch.
        batch_size: Candidate sequences per forward pass.
        progress: Show a progress bar.
    """

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
        """``{language: {"acc", "macro_f1", "loglikelihoods", "labels"}}`` for one evaluation."""
        model, tokenizer = self.get_model(pl_module), self.get_tokenizer(pl_module)
        results = {}
        with evaluating(model):
            for language, examples in self._examples(trainer).items():
                templates = self.templates.get(language) or candidate_templates(language)
                bar = progress_bar(trainer, f"xnli {language}", self.progress)
                loglik = sharded_map(
                    trainer,
                    examples,
                    lambda shard: score_xnli(model, tokenizer, shard, templates=templates, batch_size=self.batch_size, progress=bar),
                )
                labels = [e.label for e in examples]
                acc, f1 = accuracy_and_f1(loglik.argmax(dim=1), labels)
                results[language] = {"acc": acc, "macro_f1": f1, "loglikelihoods": loglik.tolist(), "labels": labels}
        return results

    def has_baseline(self) -> bool:
        return bool(self.baseline)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> None:
        results = self.measure(trainer, pl_module)
        if not self.baseline:
            self.baseline = {lang: r["acc"] for lang, r in results.items()}
        scalars: dict[str, float] = {}
        for lang, r in results.items():
            base = self.baseline.get(lang, float("nan"))
            r["retention"] = r["acc"] / base if base else float("nan")
            scalars.update({f"xnli/{lang}/acc": r["acc"], f"xnli/{lang}/macro_f1": r["macro_f1"], f"xnli/{lang}/retention": r["retention"]})
        epoch = trainer.current_epoch + (0 if name == "baseline" else 1)
        self.history.append({"epoch": epoch, **scalars})
        log_scalars(trainer, scalars, trainer.global_step)
        directory = log_dir(trainer)  # a collective: every rank, before the rank-0 branch
        if trainer.is_global_zero:
            write_json(directory / "xnli" / f"{name}.json", {"epoch": epoch, "global_step": trainer.global_step, "languages": results})
            figure = retention_figure(self.history, list(results))
            log_figure(trainer, "xnli/accuracy", figure, trainer.global_step)
            plt.close(figure)

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.baseline = dict(state_dict.get("baseline", {}))
        self.history = list(state_dict.get("history", []))
