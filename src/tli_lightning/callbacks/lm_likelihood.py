"""``LanguageModelRetention``: how well the model still predicts held-out text, per language, each epoch."""

from __future__ import annotations

import math
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


class LanguageModelRetention(Measurement):
    """Mean token log-likelihood (and perplexity) of held-out text per language: the cheapest forgetting measure.

    Each text is scored as lm-evaluation-harness scores a document that fits its window
    (``loglikelihood_rolling`` with one window): the summed log-probability of its tokens (no special tokens)
    given the BOS token alone (EOS without one), in float64 (:func:`tli_lightning.zeroshot.score_sequences`). A
    text longer than the model's context is not rolled over several windows: only its last ``context_length``
    tokens are scored (and counted), as for a choice that does not fit. Per language it logs
    ``<key>/<lang>/token_loglikelihood`` (total log-likelihood / total tokens) and ``<key>/<lang>/perplexity``
    (``exp`` of minus that); the JSON files under ``<log_dir>/<key>/`` keep every text's log-likelihood and token
    count, so ``compare`` pairs texts between the baseline and the final evaluation.

    Works with any LightningModule exposing a Hugging Face causal LM as ``.model`` and its tokenizer as
    ``.tokenizer`` (or pass ``get_model``/``get_tokenizer``)::

        trainer = L.Trainer(callbacks=[LanguageModelRetention(texts={"sw": ["Watoto walikwenda shule.", ...]})])

    Args:
        texts: ``{language: [text, ...]}``; default: the DataModule's ``lm_texts`` (the measured XNLI premises
            of each language, or the files of ``data.lm_texts``).
        limit: At most this many texts per language (the first ones).
        every_n_epochs: Evaluate after every n-th epoch.
        batch_size: Texts per forward pass.
        progress: Show a progress bar.
        key: The results' folder under the log directory and the scalars' prefix.
    """

    kind = "lm_likelihood"

    def __init__(
        self,
        texts: Mapping[str, Sequence[str]] | None = None,
        limit: int | None = None,
        every_n_epochs: int = 1,
        batch_size: int = 32,
        progress: bool = True,
        get_model: Getter = default_model,
        get_tokenizer: Getter = default_tokenizer,
        key: str = "lm",
    ) -> None:
        if batch_size < 1 or (limit is not None and limit < 1):
            raise TLIError(f"LanguageModelRetention: batch_size and limit must be >= 1, got {batch_size}, {limit}")
        super().__init__(key, every_n_epochs)
        self.texts = texts
        self.limit = limit
        self.batch_size = batch_size
        self.progress = progress
        self.get_model = get_model
        self.get_tokenizer = get_tokenizer

    def _texts(self, trainer: L.Trainer) -> dict[str, list[str]]:
        texts = given_or_from_datamodule(self.texts, trainer, "lm_texts", "LanguageModelRetention", "texts")
        return {language: list(rows)[: self.limit] for language, rows in texts.items() if rows}

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        from tli_lightning.zeroshot import context_length, score_sequences

        model, tokenizer = self.get_model(pl_module), self.get_tokenizer(pl_module)
        results = {}
        with evaluating(model, trainer):
            for language, texts in self._texts(trainer).items():
                bar = progress_bar(trainer, f"lm {language}", self.progress)
                scores = sharded_map(
                    trainer,
                    texts,
                    lambda shard, bar=bar: score_sequences(
                        model, tokenizer, shard, batch_size=self.batch_size, progress=bar
                    ),
                )
                # What score_sequences scored: every token, or the last context_length of a longer text.
                limit = context_length(model, tokenizer)
                tokens = [min(len(ids), limit) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
                total = float(scores.sum())
                mean = total / sum(tokens)
                results[language] = {
                    "token_loglikelihood": mean,
                    "perplexity": math.exp(-mean),
                    "texts": len(texts),
                    "tokens": sum(tokens),
                    "per_text_loglikelihood": scores.tolist(),
                    "per_text_tokens": tokens,
                }
        return {"languages": results}

    def compact(self, report: dict[str, Any]) -> dict[str, Any]:
        kept = ("token_loglikelihood", "perplexity", "texts", "tokens")
        return {"languages": {lang: {k: r[k] for k in kept} for lang, r in report["languages"].items()}}

    def scalars(self, report: dict[str, Any]) -> dict[str, float]:
        return {
            f"{self.key}/{lang}/{what}": r[what]
            for lang, r in report["languages"].items()
            for what in ("token_loglikelihood", "perplexity")
        }

    def layout(self, datamodule: Any) -> dict[str, dict[str, list]]:
        languages = self.texts if self.texts is not None else getattr(datamodule, "lm_texts", {})
        return {
            "held-out text": {
                f"{self.key}: {language} {what}": ["Multiline", [rf"{self.key}/{language}/{what}"]]
                for language in languages
                for what in ("token_loglikelihood", "perplexity")
            }
        }

    def headline(self) -> dict[str, Any] | None:
        if self.first is None:
            return None
        first = self.first["languages"]
        return {
            "epoch": self.last["epoch"],
            "languages": {
                lang: {
                    "token_loglikelihood": [first[lang]["token_loglikelihood"], r["token_loglikelihood"]],
                    "perplexity": [first[lang]["perplexity"], r["perplexity"]],
                    "texts": r["texts"],
                    "tokens": r["tokens"],
                }
                for lang, r in self.last["languages"].items()
            },
        }

    @classmethod
    def summary_lines(cls, key: str, headline: dict[str, Any]) -> list[str]:
        lines = [f"held-out text ({key}), before training -> epoch {headline['epoch']} (mean token log-likelihood):"]
        for lang, r in headline["languages"].items():
            (ll0, ll1), (p0, p1) = r["token_loglikelihood"], r["perplexity"]
            lines.append(
                f"  {lang}  {ll0:.4f} -> {ll1:.4f}   change {ll1 - ll0:+.4f}   perplexity {p0:.2f} -> {p1:.2f}   "
                f"({r['texts']} texts, {r['tokens']} tokens)"
            )
        return lines

    @classmethod
    def hparam_metrics(cls, key: str, headline: dict[str, Any]) -> dict[str, float]:
        return {
            f"hparams/{key}_{lang}_token_loglikelihood": r["token_loglikelihood"][1]
            for lang, r in headline["languages"].items()
        }
