"""Faults injected into a real `python -m tli_lightning fit` run (put this directory on PYTHONPATH).

--trainer.callbacks+=faults.Fault --trainer.callbacks.kind=sigint \\
        --trainer.callbacks.epoch=1 --trainer.callbacks.batch=7
"""

from __future__ import annotations

import os
import signal

import lightning as L


class Fault(L.Callback):
    """Interrupt the run once, in epoch ``epoch`` (0-based) at batch ``batch``, the way ``kind`` says.

    kinds: ``sigkill`` (before the batch: the process vanishes), ``sigint``/``sigterm`` (sent to
    itself during the batch's backward pass), ``sigusr1`` (the same, as SLURM warns before the time
    limit; not in a requeued job, SLURM_RESTART_COUNT > 0, which must run on), ``step`` (an
    exception during the backward pass, after the forward drew its dropout masks), ``epoch_start``
    (an exception as epoch ``epoch`` starts), ``evaluation`` (an exception inside the end-of-epoch
    XNLI evaluation of epoch ``epoch``), ``sigterm_in_evaluation`` (SIGTERM sent to itself inside
    that evaluation), ``sigint_in_baseline`` (SIGINT inside the XNLI evaluation before training).
    """

    def __init__(self, kind: str, epoch: int = 1, batch: int = 5) -> None:
        self.kind, self.epoch, self.batch = kind, epoch, batch

    def _here(self, trainer: L.Trainer, batch_idx: int | None = None) -> bool:
        return trainer.current_epoch == self.epoch and (batch_idx is None or batch_idx == self.batch)

    def setup(self, trainer, pl_module, stage) -> None:
        if self.kind in ("evaluation", "sigterm_in_evaluation", "sigint_in_baseline"):
            from tli_lightning.callbacks import ZeroShotRetention

            retention = next(c for c in trainer.callbacks if isinstance(c, ZeroShotRetention))
            measure = retention.measure

            def failing_measure(trainer_, pl_module_):
                if self.kind == "sigint_in_baseline":
                    os.kill(os.getpid(), signal.SIGINT)
                elif trainer_.current_epoch == self.epoch and retention.has_baseline():
                    if self.kind == "evaluation":
                        raise RuntimeError("injected fault inside the end-of-epoch evaluation")
                    os.kill(os.getpid(), signal.SIGTERM)
                return measure(trainer_, pl_module_)

            retention.measure = failing_measure

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.kind == "epoch_start" and self._here(trainer):
            raise RuntimeError("injected fault at the start of an epoch")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.kind == "sigkill" and self._here(trainer, batch_idx):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        batch_idx = trainer.fit_loop.epoch_loop.batch_idx
        if not self._here(trainer, batch_idx):
            return
        if self.kind in ("sigint", "sigterm"):
            os.kill(os.getpid(), signal.SIGINT if self.kind == "sigint" else signal.SIGTERM)
        elif self.kind == "sigusr1" and int(os.environ.get("SLURM_RESTART_COUNT", "0")) == 0:
            os.kill(os.getpid(), signal.SIGUSR1)
        elif self.kind == "step":
            raise RuntimeError("injected fault inside a training step")
