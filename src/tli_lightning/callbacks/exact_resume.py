"""``ExactResume``: every interruption leaves a checkpoint from which training continues bit for bit."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from tli_lightning.errors import RunInterrupted

log = logging.getLogger(__name__)
# SIGUSR1: SLURM's warning before the time limit (#SBATCH --signal=USR1@90). Installed before Lightning's
# own SIGUSR1 handler would be (Lightning then installs none): no `hpc_ckpt_<n>.ckpt` outside the run.
_SIGNALS = (signal.SIGINT, signal.SIGTERM, *((signal.SIGUSR1,) if hasattr(signal, "SIGUSR1") else ()))


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ExactResume(Callback):
    """Interruptions that ``fit --ckpt_path last`` recovers from exactly (same batches, same weights).

    - **RNG.** Each process's torch RNG state (LoRA dropout draws from it) is saved in every
      checkpoint and restored when training restarts.
    - **SIGINT (Ctrl-C), SIGTERM and SIGUSR1** finish the optimizer step under way, save
      ``<dirpath>/<filename>.ckpt`` before the next one and stop the run with exit code 130, 143 or
      138 (during an epoch's end, after its checkpoint). Under SLURM the CLI then requeues the job
      after SIGUSR1 (:mod:`tli_lightning.slurm`). A second signal stops at once. With nothing
      trained since the last checkpoint, the run stops at once.
    - **An exception inside a training step** (before the optimizer update) saves the same file,
      with the RNG state the step started from, so the step is redone as it would have run
      (single process only; under DDP the other processes are elsewhere).
    - **Anywhere else** (validation, the end-of-epoch evaluation, an epoch boundary) nothing is
      written: the newest checkpoint (the last epoch end) is already the latest consistent state,
      and resuming replays what followed it.
    - Never writes a checkpoint that is not further along than every checkpoint the run has.

    Outside ``python -m tli_lightning`` (a plain ``Trainer``), two things are the caller's:

    - a signal ends ``trainer.fit`` with :class:`~tli_lightning.errors.RunInterrupted` (a
      ``BaseException``); turn it into the exit code, as the CLI does::

          try:
              trainer.fit(module, datamodule)
          except RunInterrupted as stop:
              raise SystemExit(stop.exit_code)  # 130 (SIGINT) or 143 (SIGTERM)

    - resuming mid-epoch at the same batch needs a stateful train loader (``TLIDataModule``'s is);
      with a plain ``DataLoader`` Lightning restarts the interrupted epoch from its first batch.

    Args:
        dirpath: Where to write; default: the ModelCheckpoint's directory.
        filename: File name without ``.ckpt``.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "interrupted") -> None:
        self.dirpath = dirpath
        self.filename = filename
        self.requested: int | None = None  # the signal received, once a stop is pending
        self._phase = "idle"  # "step": a batch is being trained; "update": its optimizer update has begun
        self._rng_at_step_start: dict[str, Any] | None = None
        self._grads_pending = False  # gradient accumulation: earlier batches' gradients not yet applied
        self._stepped = False
        self._furthest_step = -1  # the furthest global step of a checkpoint this run has written or resumed
        self._rng_to_restore: list[dict[str, Any]] | None = None
        self._trainer: L.Trainer | None = None
        self._original_handlers: dict[int, Any] = {}

    # ---- where to write --------------------------------------------------------------------

    def path(self, trainer: L.Trainer) -> Path:
        directory = self.dirpath or getattr(trainer.checkpoint_callback, "dirpath", None) or trainer.default_root_dir
        return Path(directory) / f"{self.filename}.ckpt"

    def _save(self, trainer: L.Trainer) -> Path:
        path = self.path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # Lightning writes a temporary file and renames it
        return path

    # ---- signals ----------------------------------------------------------------------------

    def _install(self, signums: tuple[int, ...]) -> None:
        for signum in signums:
            self._original_handlers.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.requested is not None or self._trainer is None or self._trainer.global_step <= self._furthest_step:
            # Asked twice, or nothing trained since the last checkpoint: stop now.
            self._forward_to_launched_processes(signum)
            raise RunInterrupted(signum)
        self.requested = signum
        log.warning(
            "%s received: finishing the current step, then saving and stopping (send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def _forward_to_launched_processes(self, signum: int) -> None:
        # Stopping at once leaves the processes Lightning launched waiting in a collective for this one:
        # end them (as Lightning does on KeyboardInterrupt). A polite signal would only make them
        # finish their step, which they cannot do without this process.
        launcher = getattr(self._trainer.strategy, "launcher", None) if self._trainer is not None else None
        if launcher is not None and getattr(launcher, "procs", None) and self._trainer.is_global_zero:
            launcher.kill(signal.SIGKILL)

    def _stop_requested(self, trainer: L.Trainer) -> bool:
        # Every process must stop at the same step, or the next gradient all-reduce hangs.
        wanted = self.requested is not None
        return trainer.strategy.reduce_boolean_decision(wanted, all=False) if trainer.world_size > 1 else wanted

    # ---- hooks ------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._trainer = trainer
            self._install(_SIGNALS)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._original_handlers.items():
            signal.signal(signum, handler)
        self._original_handlers = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning installs its own SIGTERM handler just before training (it broadcasts from
        # inside the handler under DDP); ours replaces it.
        signal.signal(signal.SIGTERM, self._on_signal)
        self._furthest_step = max(self._furthest_step, trainer.global_step)
        if self._rng_to_restore is not None:
            # Here, not on load: the sanity check between loading and training draws from the RNG too.
            states = self._rng_to_restore
            if len(states) == trainer.world_size:
                _set_rng_state(states[trainer.global_rank])
            else:
                log.warning(
                    "the checkpoint holds RNG states of %d processes, not %d: dropout will differ",
                    len(states),
                    trainer.world_size,
                )
            self._rng_to_restore = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stop_requested(trainer):  # arrived during the previous epoch's end: its checkpoint is written
            raise RunInterrupted(self.requested or signal.SIGTERM)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._phase = "step"
        self._rng_at_step_start = _rng_state()
        self._stepped = False
        # Stop before this batch rather than after the last one: that one is then fully done, logged too.
        if not self._grads_pending and self._stop_requested(trainer):
            path = self._save(trainer)
            raise RunInterrupted(self.requested or signal.SIGTERM, checkpoint=path)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self._phase = "update"
        self._stepped = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._phase = "idle"
        self._grads_pending = not self._stepped

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A stop asked for during the last epoch's end: the run is complete; say it was interrupted.
        if self._stop_requested(trainer):
            raise RunInterrupted(self.requested or signal.SIGTERM)
        # A finished run's last checkpoint is further along than any interruption checkpoint.
        stale = self.path(trainer)
        if trainer.is_global_zero and stale.exists():
            stale.unlink()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()  # Lightning calls no teardown hook after an exception
        if isinstance(exception, RunInterrupted) and exception.checkpoint is not None:
            return  # saved already, before the next step
        consistent = self._phase == "step" and not self._grads_pending and trainer.world_size == 1
        if consistent and trainer.global_step > self._furthest_step:
            path = self._save(trainer)
            if isinstance(exception, RunInterrupted):
                exception.checkpoint = path
            log.warning(
                "saved %s (step %d): `fit --ckpt_path last` redoes the interrupted step", path, trainer.global_step
            )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._furthest_step = max(self._furthest_step, trainer.global_step)
        if self._phase in ("step", "update"):
            # Saved inside a step: Lightning assumes checkpoints are taken at a batch's end and,
            # on restart, counts one more logged step than were taken.
            epoch_loop = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]
            epoch_loop["_batches_that_stepped"] -= 1

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._furthest_step = max(self._furthest_step, int(checkpoint.get("global_step", 0)))

    def state_dict(self) -> dict[str, Any]:
        # Inside a step, the state the step started from: resuming redoes the step with the same dropout.
        rng = self._rng_at_step_start if self._phase == "step" else _rng_state()
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            states: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(states, rng)  # each process's own dropout stream
            return {"rng": states}
        return {"rng": [rng]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = state_dict.get("rng")
