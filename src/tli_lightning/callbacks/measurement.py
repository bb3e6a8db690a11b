"""The measurement seam: a callback that evaluates the model before training and after each epoch.

Everything a run measures (alignment, zero-shot reasoning, language-modelling likelihood, the weight
update, representation drift, lm-eval tasks) is a :class:`Measurement`. The base class owns the
lifecycle, so a new measurement implements only what it computes and how it reads:

- when: before the first training step (``baseline``) and after every ``every_n_epochs`` epochs
  (``epoch_NN``), on every rank (collectives are allowed inside :meth:`Measurement.measure`);
- where: ``<log_dir>/<key>/<name>.json`` = ``{"measurement": kind, "key", "name", "epoch", "global_step",
  **report}``, written on global rank 0, which is what ``compare`` discovers;
- state: the first and latest reports (:meth:`Measurement.compact`), the scalars of every evaluation and
  each evaluation's cost, saved in the checkpoint, so a resumed run continues exactly;
- headline: :meth:`Measurement.headline` goes to ``summary.json["measurements"][key]`` with its ``kind``;
  the end-of-run summary and TensorBoard's HPARAMS are made from it through :data:`KINDS` without knowing
  the callback's type (a run's summary can be re-read long after the callback is gone).

``key`` names the folder and is part of Lightning's ``state_key``, so several instances coexist.

A minimal measurement, usable with any LightningModule::

    import lightning as L
    from tli_lightning.callbacks import Measurement

    class WeightNorm(Measurement):
        kind = "weight_norm"

        def measure(self, trainer, pl_module):
            return {"norm": float(sum(p.detach().norm() ** 2 for p in pl_module.parameters()) ** 0.5)}

        def scalars(self, report):
            return {f"{self.key}/norm": report["norm"]}

    trainer = L.Trainer(callbacks=[WeightNorm(key="weight_norm")])
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import lightning as L
from lightning.pytorch.callbacks import Callback

from tli_lightning.callbacks._common import log_dir, log_scalars, measured, save_figure, write_json
from tli_lightning.errors import TLIError

# kind -> class: how a summary.json headline is turned into lines and HPARAMS metrics.
KINDS: dict[str, type[Measurement]] = {}
_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


class Measurement(Callback):
    """Base of every measurement; see the module docstring. Subclasses set :attr:`kind` and implement
    :meth:`measure` and :meth:`scalars`; the rest has defaults."""

    kind: ClassVar[str] = "measurement"
    # The TensorBoard tag of the figure is <key>/<figure_name> (its PNGs: <log_dir>/figures/).
    figure_name: ClassVar[str] = "figure"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        KINDS.setdefault(cls.kind, cls)  # the first class of a kind reads its headlines

    def __init__(self, key: str, every_n_epochs: int = 1) -> None:
        if not isinstance(key, str) or not _KEY.match(key):
            raise TLIError(f"{type(self).__name__}: key must be a folder name (letters, digits, _ . -), got {key!r}")
        if every_n_epochs < 1:
            raise TLIError(f"{type(self).__name__}: every_n_epochs must be >= 1, got {every_n_epochs}")
        self.key = key
        self.every_n_epochs = every_n_epochs
        self.first: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.timings: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(key=self.key)

    # ---- what a measurement implements -------------------------------------------------------------

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """One evaluation, JSON-ready. Runs on every rank; only rank 0's result is written."""
        raise NotImplementedError

    def scalars(self, report: dict[str, Any]) -> dict[str, float]:
        """The evaluation's scalars for every logger, named ``<key>/...``."""
        return {}

    def compact(self, report: dict[str, Any]) -> dict[str, Any]:
        """What the callback's state (and so every checkpoint) keeps of a report: by default all of it."""
        return report

    def headline(self) -> dict[str, Any] | None:
        """``summary.json["measurements"][key]``: the numbers a reader wants first, from :attr:`first` and
        :attr:`last` (None before the baseline)."""
        if not self.history:
            return None
        return {"epoch": self.history[-1]["epoch"], "scalars": [self.history[0], self.history[-1]]}

    @classmethod
    def summary_lines(cls, key: str, headline: dict[str, Any]) -> list[str]:
        """The end-of-run summary's lines for this headline (read back from summary.json alone)."""
        first, last = headline.get("scalars", [{}, {}])
        names = [k for k in last if k not in ("epoch", "global_step")]
        return [f"{key}, before training -> epoch {headline.get('epoch')}:"] + [
            f"  {name}  {_number(first.get(name))} -> {_number(last.get(name))}" for name in names
        ]

    @classmethod
    def hparam_metrics(cls, key: str, headline: dict[str, Any]) -> dict[str, float]:
        """Final numbers for TensorBoard's HPARAMS tab."""
        last = headline.get("scalars", [{}, {}])[-1]
        return {f"hparams/{k.replace('/', '_')}": v for k, v in last.items() if k not in ("epoch", "global_step")}

    def figure(self, trainer: L.Trainer) -> Any:
        """A matplotlib figure of the measurement so far (TensorBoard and a PNG), or None."""
        return None

    def layout(self, datamodule: Any) -> dict[str, dict[str, list]]:
        """TensorBoard CUSTOM SCALARS charts, before the first evaluation: ``{category: {chart title: ["Multiline",
        [tag regex]]}}``, one tag per chart (TensorBoard colours a chart's lines by run). Default: none (the
        scalars are still in SCALARS)."""
        return {}

    # ---- the lifecycle -----------------------------------------------------------------------------

    def has_baseline(self) -> bool:
        return bool(self.history)

    def last_step(self) -> int | None:
        """The global step of the latest evaluation (None before the baseline)."""
        return self.history[-1]["global_step"] if self.history else None

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> None:
        """Measure, time, keep, write and publish one evaluation named ``name``."""
        with measured(pl_module.device) as cost:
            report = self.measure(trainer, pl_module)
        self.timings.append({"name": name, **cost})
        epoch = trainer.current_epoch + (0 if name == "baseline" else 1)
        stamp = {"epoch": epoch, "global_step": trainer.global_step}
        compact = {**self.compact(report), **stamp, "name": name}
        if self.first is None:
            self.first = compact
        self.last = compact
        self.history.append({**stamp, **self.scalars(report)})
        directory = log_dir(trainer)  # a collective: every rank, before the rank-0 branch
        if trainer.is_global_zero:
            document = {"measurement": self.kind, "key": self.key, "name": name, **stamp, **report}
            write_json(directory / self.key / f"{name}.json", document)
        self.publish(trainer)

    def publish(self, trainer: L.Trainer) -> None:
        """Log the latest evaluation's scalars and figure."""
        last = self.history[-1]
        scalars = {k: v for k, v in last.items() if k not in ("epoch", "global_step")}
        log_scalars(trainer, scalars, last["global_step"])
        directory = log_dir(trainer)
        if trainer.is_global_zero:
            figure = self.figure(trainer)
            if figure is not None:
                save_figure(trainer, directory, f"{self.key}/{self.figure_name}", figure, last["global_step"])

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trained_this_session = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trained_this_session = True
        if not self.has_baseline():
            self.evaluate(trainer, pl_module, "baseline")
        elif self.last_step() == trainer.global_step:
            # Resumed where the latest evaluation was logged: TensorBoard hides what the interrupted
            # session logged from this step on (purge_step), this evaluation included. Show it again.
            self.publish(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resumed with nothing left to train (a stop asked for during the last epoch's evaluation):
        # Lightning skips on_train_start, but TensorBoard hides that evaluation all the same.
        resumed_done = not getattr(self, "_trained_this_session", True) and self.has_baseline()
        if resumed_done and self.last_step() == trainer.global_step:
            self.publish(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.evaluate(trainer, pl_module, f"epoch_{trainer.current_epoch + 1:02d}")

    def state_dict(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "history": self.history, "timings": self.timings}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first = state_dict.get("first")
        self.last = state_dict.get("last")
        self.history = list(state_dict.get("history", []))
        self.timings = list(state_dict.get("timings", []))


def measurements(trainer: L.Trainer) -> list[Measurement]:
    """The trainer's measurements, in callback order."""
    return [c for c in trainer.callbacks if isinstance(c, Measurement)]


def headlines(trainer: L.Trainer) -> dict[str, dict[str, Any]]:
    """``summary.json["measurements"]``: each measurement's headline under its key, with its kind."""
    out = {}
    for callback in measurements(trainer):
        headline = callback.headline()
        if headline is not None:
            out[callback.key] = {"kind": callback.kind, **headline}
    return out


def _reader(kind: Any) -> type[Measurement]:
    import tli_lightning.callbacks  # noqa: F401 (registers the built-in kinds, for a summary read on its own)

    return KINDS.get(kind, Measurement)


def summary_lines(found: dict[str, dict[str, Any]]) -> list[str]:
    """The end-of-run lines of every headline in a summary.json's ``measurements``."""
    lines: list[str] = []
    for key, headline in found.items():
        if headline.get("epoch") == 0:  # stopped before the first epoch's evaluation: nothing to compare yet
            lines.append(f"{key}: measured before training only (no epoch finished yet)")
            continue
        lines += _reader(headline.get("kind")).summary_lines(key, headline)
    return lines


def hparam_metrics(found: dict[str, dict[str, Any]]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key, headline in found.items():
        metrics.update(_reader(headline.get("kind")).hparam_metrics(key, headline))
    return metrics


def _number(value: Any) -> str:
    return "n/a" if not isinstance(value, (int, float)) or value != value else f"{value:.4g}"
