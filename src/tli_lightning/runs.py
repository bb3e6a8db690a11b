"""Run directories: each ``fit`` is one run, in ``logs/<name>/version_<n>/`` and ``checkpoints/<name>/version_<n>/``.

A new run claims the next ``n`` free in both trees with an atomic ``mkdir``, so two runs started
at once get different ``n``. Resuming (``--ckpt_path``) writes on into the run that holds the
checkpoint. A plain ``fit`` never resumes anything.

``--ckpt_path`` accepts:

- ``last``: the newest checkpoint of the newest run of that name that has one;
- a run directory (``logs/<name>/version_<n>`` or ``checkpoints/<name>/version_<n>``): its newest checkpoint;
- a checkpoint file. One outside ``checkpoints/<name>/version_<n>/`` resumes into a new run.

"Newest" means furthest along (global step), then most recently written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tli_lightning.errors import TLIError

# Set by the process that claims a run, read by the processes Lightning launches for DDP: they
# re-run the command line and must join the same run instead of claiming their own.
RUN_ENV = "TLI_RUN"
_VERSION = re.compile(r"^version_(\d+)$")
log = logging.getLogger(__name__)


@dataclass
class Run:
    """Where one run's files go."""

    name: str
    version: int
    log_dir: Path
    checkpoint_dir: Path
    resumed_from: Path | None = None
    resumed_step: int = 0
    notes: list[str] = field(default_factory=list)

    def to_env(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "version": self.version,
                "log_dir": str(self.log_dir),
                "checkpoint_dir": str(self.checkpoint_dir),
                "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                "resumed_step": self.resumed_step,
            }
        )

    @classmethod
    def from_env(cls, text: str) -> Run:
        data = json.loads(text)
        resumed = data.pop("resumed_from")
        return cls(
            **{**data, "log_dir": Path(data["log_dir"]), "checkpoint_dir": Path(data["checkpoint_dir"])},
            resumed_from=Path(resumed) if resumed else None,
        )


def _versions(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if p.is_dir() and (m := _VERSION.match(p.name)))


def claim_run(logs: str | Path, checkpoints: str | Path, name: str) -> Run:
    """A new run: the next version free under both ``logs`` and ``checkpoints`` (this name's
    directories), taken with an atomic mkdir."""
    logs, checkpoints = Path(logs), Path(checkpoints)
    for root in (logs, checkpoints):
        _make_writable_dir(root)
    version = max(_versions(logs) + _versions(checkpoints), default=-1) + 1
    while True:
        try:
            os.mkdir(logs / f"version_{version}")  # atomic: of two runs started at once, one gets each n
        except FileExistsError:
            version += 1
            continue
        if (checkpoints / f"version_{version}").exists():  # left by a run whose logs were deleted
            shutil.rmtree(logs / f"version_{version}", ignore_errors=True)
            version += 1
            continue
        break
    run = Run(name, version, logs / f"version_{version}", checkpoints / f"version_{version}")
    _make_writable_dir(run.checkpoint_dir)
    return run


def _make_writable_dir(directory: Path) -> None:
    # Found now, before the model loads, not after the first epoch's training.
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise TLIError(f"cannot write to {directory}: {error.strerror or error}") from None


def discard_unused(run: Run) -> None:
    """Remove a new run's directories if it stopped before its first checkpoint: nothing could resume it,
    so nothing is left for a later `compare` or `--ckpt_path last` to find (a baseline evaluation alone
    is not a run)."""
    if not any(run.checkpoint_dir.glob("*.ckpt")):
        shutil.rmtree(run.log_dir, ignore_errors=True)
        shutil.rmtree(run.checkpoint_dir, ignore_errors=True)


def atomic_checkpoint_io() -> Any:
    """A Lightning CheckpointIO that writes a checkpoint next to its destination, then renames it.

    Lightning's own goes through fsspec, which stages the file in the system temporary directory and
    moves it: a copy, not a rename, when that is another filesystem, so a kill mid-copy truncates
    ``last.ckpt``, a run's only rolling checkpoint. Here the rename is on one filesystem, after an fsync.
    """
    import torch
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Not a `with` block: the file must outlive it, to be renamed or removed below.
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115
                dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
            )
            try:
                with handle:
                    torch.save(checkpoint, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(handle.name, path)
            except BaseException:
                Path(handle.name).unlink(missing_ok=True)
                raise

    return AtomicCheckpointIO()


@dataclass(frozen=True)
class Progress:
    global_step: int
    epoch: int
    mtime: float


def read_progress(path: Path) -> Progress:
    """Training progress recorded in a checkpoint; a clear error for an unreadable file."""
    import torch

    if path.is_dir():
        raise TLIError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise TLIError(f"checkpoint not found: {path}")
    try:
        # mmap: only the small pickled header is read, even for a multi-GB full fine-tuning checkpoint.
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        return Progress(int(checkpoint["global_step"]), int(checkpoint["epoch"]), path.stat().st_mtime)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise TLIError(
            f"{path}: not a readable Lightning checkpoint (empty, truncated or another format): {error}"
        ) from None


def newest_checkpoint(directory: Path, skipped: list[str] | None = None) -> tuple[Path, Progress] | None:
    """The checkpoint furthest along in ``directory``; unreadable ones are listed in ``skipped``, with why."""
    found = []
    for path in sorted(directory.glob("*.ckpt")):
        try:
            found.append((read_progress(path), path))
        except TLIError as error:
            if skipped is not None:
                skipped.append(str(error))
    if not found:
        return None
    progress, path = max(found, key=lambda item: (item[0].global_step, item[0].mtime))
    return path, progress


def _run_from(name: str, logs: Path, checkpoints: Path, version: int, spec: str) -> Run:
    skipped: list[str] = []
    found = newest_checkpoint(checkpoints / f"version_{version}", skipped)
    if found is None:
        unreadable = f" (unreadable: {'; '.join(skipped)})" if skipped else ""
        raise TLIError(f"--ckpt_path {spec}: run {name}/version_{version} has no readable checkpoint{unreadable}")
    run = Run(
        name, version, logs / f"version_{version}", checkpoints / f"version_{version}", found[0], found[1].global_step
    )
    run.notes += [f"skipped {reason}" for reason in skipped]
    return run


def resolve_resume(spec: str, logs: str | Path, checkpoints: str | Path, name: str) -> Run:
    """The run to write into, and the checkpoint to resume from, for ``--ckpt_path spec``.

    ``logs`` and ``checkpoints`` are this name's directories (``logs/<name>``, ``checkpoints/<name>``).
    """
    logs, checkpoints = Path(logs), Path(checkpoints)
    if spec == "last":
        for version in sorted(set(_versions(logs) + _versions(checkpoints)), reverse=True):
            directory = checkpoints / f"version_{version}"
            if any(directory.glob("*.ckpt")):  # the newest run that has one: resumed, or refused if unreadable
                run = _run_from(name, logs, checkpoints, version, spec)
                newer = [v for v in _versions(checkpoints) if v > version]
                if newer:
                    run.notes.append(f"runs {[f'version_{v}' for v in newer]} have no checkpoint and are not resumed")
                return run
        raise TLIError(
            f"--ckpt_path last: no checkpoint under {checkpoints}/version_*; start a new run without --ckpt_path"
        )
    path = Path(spec)
    match = _VERSION.match(path.name)
    if match and not path.is_file():  # a run directory, in either tree: it must be one of this name's
        if path.parent.resolve() not in (logs.resolve(), checkpoints.resolve()):
            raise TLIError(
                f"--ckpt_path {spec} is not a run of {name!r} (its runs are in {logs}/ and {checkpoints}/): add the "
                "run's own --config, or --trainer.logger.init_args.name with its name"
            )
        return _run_from(name, logs, checkpoints, int(match.group(1)), spec)
    progress = read_progress(path)
    match = _VERSION.match(path.parent.name)
    if match and path.parent.parent.resolve() == checkpoints.resolve():
        version = int(match.group(1))
        return Run(name, version, logs / f"version_{version}", path.parent, path, progress.global_step)
    # A checkpoint from elsewhere: its training state goes on in a new run of this name.
    run = claim_run(logs, checkpoints, name)
    run.resumed_from, run.resumed_step = path, progress.global_step
    run.notes.append(f"{path} is not in {checkpoints}/version_<n>/: resuming it into the new run version_{run.version}")
    return run


def has_checkpoint(run: Run) -> bool:
    return newest_checkpoint(run.checkpoint_dir) is not None


def write_summary(run: Run, summary: dict[str, Any]) -> Path:
    from tli_lightning.textfiles import write_json

    path = run.log_dir / "summary.json"
    write_json(path, summary)
    return path


# ---- what a run tells its user when it ends ------------------------------------------------


def summarize(trainer: Any, run: Run, status: str, wall_s: float | None = None) -> dict[str, Any]:
    """The run's identity, settings and headline numbers, baseline -> final (also ``summary.json``), what a seed
    varied, and its provenance (``wall_s``: this session's wall time, from the command's start)."""
    from tli_lightning.callbacks.measurement import headlines

    module, datamodule = trainer.lightning_module, trainer.datamodule
    summary: dict[str, Any] = {
        "name": run.name,
        "version": run.version,
        "status": status,
        "log_dir": str(run.log_dir),
        "checkpoint_dir": str(run.checkpoint_dir),
        "global_step": trainer.global_step,
        "epochs_completed": trainer.current_epoch,
        "seed": int(os.environ.get("PL_GLOBAL_SEED", "-1")),
        "resumed_from": str(run.resumed_from) if run.resumed_from else None,
        "model": {k: _plain(v) for k, v in getattr(module, "hparams", {}).items()},
        "target_layer": getattr(module, "target_layer", None),
        "trainable_parameters": getattr(module, "trainable_parameters", None),
    }
    if datamodule is not None and hasattr(datamodule, "fingerprint"):
        summary["data"] = {k: _plain(v) for k, v in datamodule.hparams.items()}
        summary["data"]["fingerprint"] = datamodule.fingerprint()
        summary["data"]["seed_resolved"] = datamodule.data_seed()
        summary["data"]["counts"] = {
            "trained_pairs": len(datamodule.train_pairs),
            "control_pairs": len(datamodule.control_pairs),
            **{task: len(examples) for task, examples in datamodule.reasoning.items()},
        }
    # Each measurement's headline, under its key: what the end-of-run summary, HPARAMS and readers show first.
    summary["measurements"] = headlines(trainer)
    summary["seed_varies"] = seed_varies(module, datamodule)
    summary["provenance"] = provenance(trainer, module, datamodule, wall_s)
    return summary


def seed_varies(module: Any, datamodule: Any) -> list[str]:
    """What the run's seed (``seed_everything``) changed, in words: what replicate seeds' spread can include."""
    hp = getattr(module, "hparams", {})
    varies = ["batch order"]
    if hp.get("adaptation") == "lora":
        varies.append("LoRA initialisation and dropout" if hp.get("lora_dropout") else "LoRA initialisation")
    if datamodule is not None and hasattr(datamodule, "seed_varies"):
        varies += datamodule.seed_varies()
    return varies


def provenance(trainer: Any, module: Any, datamodule: Any, wall_s: float | None) -> dict[str, Any]:
    """``summary.json``'s ``provenance``: each part null if it cannot be read, never an error (see
    :mod:`tli_lightning.provenance`)."""
    from tli_lightning import provenance as p

    hp = getattr(module, "hparams", {})
    model = getattr(module, "model", None)
    parts = {
        "package": p.package,
        "libraries": p.libraries,
        "hardware": lambda: p.hardware(trainer),
        "base_model": lambda: p.base_model(hp["model_name_or_path"], getattr(model, "config", None)),
        "data_files": lambda: _data_files(datamodule),
        "timings": lambda: _timings(trainer, wall_s),
    }
    found: dict[str, Any] = {}
    for name, read in parts.items():
        try:
            found[name] = read()
        except Exception as error:  # a summary must be written whatever its provenance lacks
            log.warning("summary.json: provenance.%s not recorded: %s", name, error)
            found[name] = None
    return found


def _data_files(datamodule: Any) -> dict[str, Any] | None:
    if datamodule is None or not hasattr(datamodule, "hparams") or "lexicon_path" not in datamodule.hparams:
        return None
    from tli_lightning.data import DEMO
    from tli_lightning.provenance import file_record
    from tli_lightning.tasks import get_task
    from tli_lightning.tiny_model import demo_data_path

    hp = datamodule.hparams

    def bundled(path: str, demo_name: str) -> str:
        return str(demo_data_path(demo_name)) if path == DEMO else path

    files: dict[str, Any] = {
        "lexicon": file_record(bundled(hp.lexicon_path, "lexicon_trained.tsv")),
        "control": None if hp.control_path is None else file_record(bundled(hp.control_path, "lexicon_control.tsv")),
    }
    for spec in datamodule.reasoning_tasks:
        task = get_task(spec.task)
        if spec.path == DEMO:
            files[spec.task] = file_record(str(demo_data_path(task.demo_file)))
        elif Path(spec.path).exists():
            files[spec.task] = file_record(spec.path)
        else:  # a hub id: its revision is the datasets cache's business
            files[spec.task] = {"source": spec.path}
    for language, path in (hp.get("lm_texts") or {}).items():
        files[f"lm_texts_{language}"] = file_record(path)
    return files


def _timings(trainer: Any, wall_s: float | None) -> dict[str, Any]:
    from tli_lightning.callbacks.measurement import measurements
    from tli_lightning.provenance import peak_memory

    peak, kind = peak_memory(trainer.strategy.root_device)
    return {
        "fit_wall_s": None if wall_s is None else round(wall_s, 3),
        "peak_memory_bytes": int(peak),
        "peak_memory_kind": kind,
        "evaluations": {c.key: list(c.timings) for c in measurements(trainer)},
    }


def _plain(value: Any) -> Any:
    """JSON-ready hyperparameters (tuples, paths and other objects as text)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def format_summary(summary: dict[str, Any], path: Path) -> str:
    lines = [
        f"run {summary['name']}/version_{summary['version']} {summary['status']} at step {summary['global_step']} "
        f"({summary['epochs_completed']} epoch{'' if summary['epochs_completed'] == 1 else 's'})",
        f"  logs:        {summary['log_dir']}   (tensorboard --logdir {Path(summary['log_dir']).parent.parent})",
        f"  checkpoints: {summary['checkpoint_dir']}",
    ]
    from tli_lightning.callbacks.measurement import summary_lines

    lines += summary_lines(summary.get("measurements", {}))
    lines.append(f"  (written to {path})")
    return "\n".join(lines)
