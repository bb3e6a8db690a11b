"""``python -m tli_lightning {fit,validate,test,scan,zeroshot,compare,grid}``.

``fit``/``validate``/``test`` are :class:`TLICLI` (:mod:`tli_lightning.lightning_cli`, also importable from
here), a LightningCLI over :class:`TLIModule` and :class:`TLIDataModule`; with no arguments ``fit`` runs the
embedded offline demo. Each ``fit`` is one run with its own directories (:mod:`tli_lightning.runs`);
``--ckpt_path`` resumes one, and so does a requeued SLURM job its own (:mod:`tli_lightning.slurm`). ``grid``
runs arms x seeds (:mod:`tli_lightning.grid`).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from tli_lightning.errors import RunInterrupted, TLIError
from tli_lightning.layers import LAYERS_NOTE
from tli_lightning.threads import apply_thread_defaults

MEASURE_COMMANDS = ("scan", "zeroshot", "compare")
log = logging.getLogger("tli_lightning")

DESCRIPTION = (
    "Targeted Lexical Injection on PyTorch Lightning. " + LAYERS_NOTE + " With no options, `fit` runs the offline "
    "demo (tiny NF4 Llama, bundled data). Each `fit` is a new run in logs/<name>/version_<n>/ and "
    "checkpoints/<name>/version_<n>/ (<name> = --trainer.logger.init_args.name); `--ckpt_path last` (or a run "
    "directory, or a .ckpt file) resumes one exactly. Measurement commands without training: `scan`, `zeroshot`, "
    "`compare`; see `python -m tli_lightning scan --help`."
)


def _component(class_path: str, **init_args: Any) -> dict:
    return {"class_path": class_path, "init_args": init_args}


CKPT_PATH_HELP = (
    "Resume a run exactly where it stopped (its batches, weights, RNG, evaluations). 'last' = the newest "
    "checkpoint of the newest run of this name that has one; a run directory (logs/<name>/version_<n> or "
    "checkpoints/<name>/version_<n>) = that run's newest checkpoint; or a .ckpt file. The resumed run writes on "
    "into the run it resumes. Without it, fit starts a new run and never resumes anything."
)
SUBCOMMAND_HELP = {
    "fit": "Train a new run (or resume one with --ckpt_path), measuring before training and after every epoch.",
    "validate": "Contrastive loss and similarities on the control pairs, of a run's checkpoint (--ckpt_path).",
    "test": "The same as validate, logged as a test.",
    "scan": "Per-layer alignment of translation pairs, no training (a model, or an adapter on its base).",
    "zeroshot": "A zero-shot task (XNLI, XCOPA, XStoryCloze) exactly as lm-evaluation-harness, one JSON line per "
    "example.",
    "compare": "Runs side by side: alignment, zero-shot and held-out text retention, paired statistics, a verdict "
    "(report.md).",
    "grid": "Arms x seeds x learning rates, each a fit: a SLURM job array (--submit slurm) or here (local).",
}
COMMANDS = ("fit", "validate", "test", *MEASURE_COMMANDS, "grid")
# `fit --help` shows these groups (ours first); `fit --help-all` adds the Trainer's ~370 lines after them.
SHORT_HELP_TRAINER = (
    "--trainer.max_epochs",
    "--trainer.max_steps",
    "--trainer.precision",
    "--trainer.accelerator",
    "--trainer.devices",
    "--trainer.strategy",
    "--trainer.logger",
    "--trainer.callbacks",
    "--trainer.enable_progress_bar",
    "--trainer.accumulate_grad_batches",
)
DEFAULT_CALLBACKS = [
    # First: its signal handlers must be in place before the (long) baseline evaluation starts.
    _component("tli_lightning.callbacks.ExactResume"),
    # One rolling checkpoint per run, written at each epoch's end after the epoch's evaluations.
    _component(
        "lightning.pytorch.callbacks.ModelCheckpoint",
        filename="last",
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=True,
    ),
    _component("tli_lightning.callbacks.LayerwiseAlignment"),
    _component("tli_lightning.callbacks.ZeroShotRetention"),
    _component("tli_lightning.callbacks.LanguageModelRetention"),
    _component("tli_lightning.callbacks.WeightUpdateSpectrum"),  # off: --measure.weight_update false
    _component("tli_lightning.callbacks.RepresentationDrift"),  # off: --measure.drift false
    # After the evaluations: each adapter's card carries that epoch's numbers.
    _component("tli_lightning.callbacks.AdapterExport"),
]

DEFAULT_LOGGER = _component(
    "lightning.pytorch.loggers.TensorBoardLogger", save_dir="logs", name="demo", default_hp_metric=False
)


class _Session:
    """What the CLI learned about the run, for the messages printed after it ends (also on failure)."""

    def __init__(self) -> None:
        self.run = None
        self.fresh = False
        self.resume_config: Path | None = None  # this session's config.resumed<k>_at_step<S>.yaml
        self.command: list[str] = []
        self.trainer = None
        self.started = time.perf_counter()  # the fit's wall time in summary.json counts from here
        self.help = "short"  # what `fit --help` prints: "short" (ours, then a pointer) or "all"


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    # Lightning's advert for its cloud logger, on every Trainer.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )
    # Under SLURM: ExactResume's SIGUSR1 handler replaces Lightning's requeue (tli_lightning.slurm), not "enabled".
    logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").addFilter(
        lambda record: "auto-requeueing enabled" not in record.getMessage()
    )
    # Deprecations inside transformers/PEFT/Lightning that users cannot act on.
    for message in (
        r".*is_gradient_checkpointing.*",
        r".*gradient_checkpointing_enable.*",
        r".*LeafSpec.*",
        r".*distributed.nn.functional.all_gather is deprecated.*",  # Lightning's own all_gather
        r".*is not supported by the model summary.*",  # its size estimate under bf16-mixed: nothing is wrong
        r".*Checkpoint directory .* exists and is not empty.*",  # a resumed run writes on into its own folder
        r".*Experiment logs directory .* exists and is not empty.*",  # a CSVLogger writes into the run's folder
    ):
        warnings.filterwarnings("ignore", message=message)


def _has_logger(config) -> bool:
    """False for ``--trainer.logger false``: the run keeps its directories and checkpoints, without event files."""
    logger = config.trainer.logger
    return bool(logger) and logger is not True


def _logger_args(config) -> dict[str, Any]:
    logger = config.trainer.logger
    if logger is True:  # Lightning's `true`: its default logger, here ours
        config.trainer.logger = logger = _namespace(DEFAULT_LOGGER)
    if not _has_logger(config):
        # No logger: the run's directories are the default logger's (logs/demo/version_<n>).
        return dict(DEFAULT_LOGGER["init_args"])
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    class_path = getattr(logger, "class_path", "")
    if not class_path.endswith(("TensorBoardLogger", "CSVLogger")):
        raise TLIError(
            "tli_lightning keeps each run in logs/<name>/version_<n>: trainer.logger (the first one, if several) "
            f"must be a TensorBoardLogger or CSVLogger, or false for none, got {class_path or logger!r}"
        )
    return dict(vars(logger.init_args))


def _check_callbacks(config) -> None:
    names = [getattr(c, "class_path", type(c).__name__) for c in (config.trainer.callbacks or [])]
    if any(n.endswith("OnExceptionCheckpoint") for n in names):
        raise TLIError(
            "OnExceptionCheckpoint makes every plain `fit` resume the previous run, and saves mid-step states that "
            "do not resume exactly; remove it: tli_lightning.callbacks.ExactResume already saves on interruption"
        )
    if not any(n.endswith("ExactResume") for n in names):
        config.trainer.callbacks = [_namespace(DEFAULT_CALLBACKS[0])] + list(config.trainer.callbacks or [])


def _namespace(component: dict):
    from jsonargparse import Namespace

    return Namespace(class_path=component["class_path"], init_args=Namespace(**component["init_args"]))


def _resolve_run(config, check: Any = None):
    """The run this process writes into, and whether it is new; ``check(run)`` refuses it (rank 0, before the
    other ranks are told). Processes launched by Lightning join the first one's run; those launched by srun or
    torchrun are told rank 0's choice (slurm.share_from_rank_zero)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from tli_lightning import runs, slurm

    rank = rank_zero_only.rank
    if rank != 0 and os.environ.get(runs.RUN_ENV):
        return runs.Run.from_env(os.environ[runs.RUN_ENV]), False
    shared = slurm.world_size() > 1
    if rank != 0:
        if not shared:
            raise TLIError(
                f"this process (rank {rank}) was started by an external launcher without the run chosen by rank 0; "
                f"launch through Lightning (--trainer.devices N --trainer.strategy ddp), srun or torchrun, or export "
                f"{runs.RUN_ENV} from rank 0"
            )
        told = slurm.share_from_rank_zero(rank)
        if "run" in told:
            return runs.Run.from_env(told["run"]), False
        if "finished" in told:
            raise _AlreadyFinished(told["finished"])
        raise _QuietError(told.get("error", "rank 0 stopped"))
    try:
        run, fresh = _choose_run(config)
        if check is not None:
            check(run, fresh)
    except _AlreadyFinished as done:
        if shared:
            slurm.share_from_rank_zero(0, {"finished": str(done)})
        raise
    except TLIError as error:
        if shared:
            slurm.share_from_rank_zero(0, {"error": str(error)})
        raise
    os.environ[runs.RUN_ENV] = run.to_env()
    if shared:
        slurm.share_from_rank_zero(0, {"run": run.to_env()})
    return run, fresh


def _choose_run(config):
    from tli_lightning import runs, slurm

    logger = _logger_args(config)
    name = logger["name"]
    logs, checkpoints = os.path.join(logger["save_dir"], name), _checkpoints_dir(config, name, logger["save_dir"])
    if config.ckpt_path:
        return runs.resolve_resume(str(config.ckpt_path), logs, checkpoints, name), False
    own = slurm.own_run(Path(logs), Path(checkpoints))
    if own is not None:
        # A requeued SLURM job: the run it claimed before, from its newest checkpoint.
        run = runs.resolve_resume(os.path.join(checkpoints, f"version_{own}"), logs, checkpoints, name)
        run.notes.append(f"SLURM job {slurm.job_key()} requeued (restart {slurm.restart_count()}): continuing its run")
        return run, False
    run = runs.claim_run(logs, checkpoints, name)
    slurm.mark_run(run.log_dir)
    return run, True


class _QuietError(Exception):
    """A non-zero rank stopping because rank 0 refused the input: rank 0 says why, once."""


def _checkpoints_dir(config, name: str, save_dir: str = "logs") -> str:
    # A ModelCheckpoint dirpath, if given, is where this name's runs go (one version_<n> each).
    for callback in config.trainer.callbacks or []:
        if getattr(callback, "class_path", "").endswith("ModelCheckpoint") and callback.init_args.dirpath:
            return str(callback.init_args.dirpath)
    # Beside the logs: <dir>/logs/<name> and <dir>/checkpoints/<name> (the grid puts its runs in its --output).
    save_dir = str(save_dir)
    root = os.path.dirname(os.path.normpath(save_dir)) if os.path.basename(os.path.normpath(save_dir)) == "logs" else ""
    return os.path.join(root, "checkpoints", name)


def _point_at_run(trainer, run) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            callback.dirpath = str(run.checkpoint_dir)


def _loggers_follow_run(config, run) -> None:
    """Every logger writes into, or is named after, this run: set in the config, since loggers take their
    name and version when they are built (before the run is known to Lightning)."""
    if not _has_logger(config):
        return
    loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]
    save_dir = _logger_args(config)["save_dir"]
    for logger in loggers:
        kind = getattr(logger, "class_path", "").rsplit(".", 1)[-1]
        args = logger.init_args
        if kind in ("TensorBoardLogger", "CSVLogger"):
            args.save_dir, args.name, args.version = save_dir, run.name, run.version
            if kind == "TensorBoardLogger":
                # TensorBoard hides what the interrupted session logged from the checkpoint's step on: it is
                # logged again. (Extra keyword arguments go to its SummaryWriter; a resumed session's saved
                # config carries it, which a new run started from that config must not inherit.)
                args.purge_step = run.resumed_step if run.resumed_from is not None else None
        elif kind == "WandbLogger":
            # Its files inside the run's directory; the run's name on the W&B page.
            args.save_dir, args.name = str(run.log_dir), f"{run.name}/version_{run.version}"
        elif kind == "MLFlowLogger":
            args.experiment_name, args.run_name = run.name, f"version_{run.version}"
        else:
            log.warning("%s is not told this run's name (%s/version_%d): name it yourself", kind, run.name, run.version)


def _add_progress_bar(config) -> None:
    """Lightning's default bar, less `v_num`, unless the user gave one or turned bars off."""
    import importlib.util

    def ours(callback) -> bool:
        path = getattr(callback, "class_path", "")
        return path.startswith("tli_lightning.") and path.endswith(("RunProgressBar", "RichRunProgressBar"))

    if config.trainer.enable_progress_bar is False:
        # A run's saved config.yaml holds the bar this function added: bars off, it goes (Lightning refuses both).
        kept = [c for c in config.trainer.callbacks or [] if not ours(c)]
        config.trainer.callbacks = kept
        return
    names = [getattr(c, "class_path", type(c).__name__) for c in (config.trainer.callbacks or [])]
    if not any(n.endswith("ProgressBar") for n in names):
        # Lightning's own choice: Rich where it is installed.
        rich = importlib.util.find_spec("rich") is not None
        bar = _component(f"tli_lightning.callbacks.{'RichRunProgressBar' if rich else 'RunProgressBar'}")
        config.trainer.callbacks = list(config.trainer.callbacks or []) + [_namespace(bar)]


def _is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0


def _tli_options_first(parser, short: bool) -> None:
    """`fit --help`: our options (model, data, resuming) first; short: only those and the Trainer's usual few."""
    groups = parser._action_groups
    trainer = [g for g in groups if any(a.dest.startswith("trainer.") for a in g._group_actions)]
    ours = [g for g in groups if g not in trainer]
    if not short:
        parser._action_groups = ours + trainer
        return
    for group in trainer:
        group._group_actions = [a for a in group._group_actions if set(a.option_strings) & set(SHORT_HELP_TRAINER)]
        group.title = "The Trainer's most used options (all of them: python -m tli_lightning fit --help-all)"
    parser._action_groups = ours + trainer
    parser.usage = (
        "python -m tli_lightning fit [--config FILE] [--model.* ...] [--data.* ...] [--trainer.* ...] "
        "[--ckpt_path PATH]"
    )
    parser.epilog = (
        "This is the short help: every Trainer option (about 370 lines) is in `python -m tli_lightning fit "
        "--help-all`. Other commands: python -m tli_lightning --help."
    )


def _write_tensorboard_layout(trainer, datamodule, model_settings) -> None:
    """One custom-scalars layout per run (TensorBoard reads the first a run writes), by logged layer."""
    from tli_lightning.callbacks import LayerwiseAlignment
    from tli_lightning.plots import tensorboard_layout

    writer = getattr(trainer.loggers[0], "experiment", None) if trainer.loggers else None
    if not trainer.is_global_zero or not hasattr(writer, "add_custom_scalars"):
        return
    layers = None
    alignment = next((c for c in trainer.callbacks if isinstance(c, LayerwiseAlignment)), None)
    blocks = _num_blocks(model_settings.model_name_or_path)
    if alignment is not None and blocks is not None:
        from tli_lightning.layers import resolve_layer

        target = resolve_layer(model_settings.target_layer, blocks)
        names = {0: "embeddings", blocks: "final", target: "target"}
        layers = {layer: names.get(layer, "") for layer in alignment.scalar_layers_of(blocks, target)}
    from tli_lightning.callbacks.measurement import measurements

    measured: dict[str, dict] = {}
    for callback in measurements(trainer):  # each measurement says its own charts (the alignment's are by layer)
        for category, charts in callback.layout(datamodule).items():
            measured.setdefault(category, {}).update(charts)
    writer.add_custom_scalars(tensorboard_layout(["trained", "control"], measured, layers))


def _num_blocks(model_name_or_path: str) -> int | None:
    """The model's block count from its config.json alone (the model loads later); None if it cannot be read."""
    try:
        from transformers import AutoConfig

        from tli_lightning.loading import resolve_model_path

        config = AutoConfig.from_pretrained(resolve_model_path(model_name_or_path))
        return int(config.get_text_config().num_hidden_layers)
    except Exception:  # the model's own loading reports what is wrong with it
        return None


def _check_resume_matches(parser, full_config, subcommand: str, run) -> None:
    """A run goes on with the settings it started with: compare with its saved config.yaml.

    Everything that changes the arithmetic: the seed, model.*, data.*, and the trainer's precision,
    gradient accumulation, clipping and batches per epoch. max_epochs and max_steps may change (training
    extended; the learning-rate schedule then ends later), and so may devices and logging.
    """
    import yaml

    saved = run.log_dir / "config.yaml"
    if not saved.is_file():
        return
    before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    now = (yaml.safe_load(parser.dump(full_config, skip_none=False, skip_check=True)) or {}).get(subcommand, {})
    differences = []
    for section in ("seed_everything", "model", "data"):
        old, new = before.get(section), now.get(section)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += [
                f"{section}.{k}: {new.get(k)!r} (run: {old.get(k)!r})"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            ]
        elif old != new:
            differences.append(f"{section}: {new!r} (run: {old!r})")
    for key in (
        "precision",
        "accumulate_grad_batches",
        "gradient_clip_val",
        "gradient_clip_algorithm",
        "limit_train_batches",
    ):
        old, new = (before.get("trainer") or {}).get(key), (now.get("trainer") or {}).get(key)
        if old != new:
            differences.append(f"trainer.{key}: {new!r} (run: {old!r})")
    if differences:
        raise TLIError(
            f"{run.resumed_from} belongs to a run with other settings: {'; '.join(differences[:6])}. Resume it with "
            f"its own config: python -m tli_lightning fit --config {saved} --ckpt_path {run.checkpoint_dir}"
        )


class _AlreadyFinished(Exception):
    """A resume of a finished run with nothing left to train: said, and the run left untouched (exit 0)."""


def _check_something_left_to_train(config, run) -> None:
    import json

    summary_file = run.log_dir / "summary.json"
    if not summary_file.is_file():
        return
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if summary.get("status") != "finished" or summary.get("global_step") != run.resumed_step:
        return
    max_epochs, max_steps = config.trainer.max_epochs, config.trainer.max_steps
    epochs_done = max_epochs is not None and max_epochs != -1 and summary.get("epochs_completed", 0) >= max_epochs
    steps_done = max_steps is not None and max_steps != -1 and run.resumed_step >= max_steps
    if epochs_done or steps_done:
        epochs = summary.get("epochs_completed")
        limit = "--trainer.max_steps" if steps_done else "--trainer.max_epochs"
        raise _AlreadyFinished(
            f"run {run.name}/version_{run.version} already finished at step {run.resumed_step} "
            f"({epochs} epoch{'' if epochs == 1 else 's'}): nothing left to train, nothing changed. To train it "
            f"further, raise {limit}; its results are in {run.log_dir}"
        )


def _finish(session: _Session, status: str, stop: RunInterrupted | None = None, bad_input: bool = False) -> None:
    """Summary to the terminal and to summary.json; after an interruption or a crash, how to resume.

    ``bad_input``: the failure was the input's (its ``error:`` line says what to fix); running the same
    command again would fail the same way, so that is not suggested.
    """
    from tli_lightning import runs

    trainer, run = session.trainer, session.run
    if run is None or not _is_rank_zero():
        return
    if trainer is None:  # stopped before the Trainer existed: nothing ran
        if session.fresh:
            runs.discard_unused(run)
        return
    again = "" if bad_input else "; run the command again"
    if status != "finished" and session.fresh and trainer.global_step == 0:
        runs.discard_unused(run)  # stopped before it started: nothing a later compare or resume would find
        if not run.log_dir.exists():
            if not bad_input:
                print(f"{status} before its first checkpoint: nothing to resume{again}", file=sys.stderr)
            return
    if not session.fresh and trainer.global_step < run.resumed_step:
        # Stopped before the checkpoint was restored (e.g. while the model loaded): the run is as it was.
        if session.resume_config is not None:
            session.resume_config.unlink(missing_ok=True)
        print(
            f"{status} before {run.resumed_from} was restored: the run is unchanged; resume with: "
            f"{_resume_command(session, run)}",
            file=sys.stderr,
        )
        return
    from tli_lightning.hparams import log_run_hparams

    summary = runs.summarize(trainer, run, status, wall_s=time.perf_counter() - session.started)
    path = runs.write_summary(run, summary)
    log_run_hparams(trainer, summary)
    out = sys.stdout if status == "finished" else sys.stderr
    print(_summary_text(summary, path, trainer.loggers), file=out)
    if status != "finished":
        saved = f"saved {stop.checkpoint}; " if stop is not None and stop.checkpoint else ""
        if runs.has_checkpoint(run):
            print(f"{status}: {saved}resume with: {_resume_command(session, run)}", file=out)
        elif not bad_input:
            print(f"{status} before its first checkpoint: nothing to resume{again}", file=out)


def _summary_text(summary: dict, path: Path, loggers: list) -> str:
    from lightning.pytorch.loggers import TensorBoardLogger

    from tli_lightning import runs

    text = runs.format_summary(summary, path)
    if not any(isinstance(logger, TensorBoardLogger) for logger in loggers):
        # The hint is for runs that wrote TensorBoard files.
        text = re.sub(r" +\(tensorboard --logdir [^)]*\)", "", text)
    return text


def _finish_quietly(
    session: _Session, status: str, stop: RunInterrupted | None = None, bad_input: bool = False
) -> None:
    """_finish on a failure path: a second error while reporting must not hide the first."""
    try:
        _finish(session, status, stop, bad_input)
    except Exception as error:  # the original error matters more than the summary
        log.warning("could not write the run's summary: %s", error)


def _not_rank_zero() -> bool:
    """A process other than rank 0 (launched by Lightning, srun or torchrun): rank 0 speaks for the run."""
    return "lightning.fabric" in sys.modules and not _is_rank_zero()


def _requeue(session: _Session, stop: RunInterrupted) -> bool:
    """SIGUSR1 under SLURM (its warning before the time limit): ask for the job to be requeued; whether it was."""
    import signal

    from tli_lightning import runs, slurm

    if getattr(signal, "SIGUSR1", None) != stop.signum or session.run is None or session.trainer is None:
        return False
    start = session.run.resumed_step if session.run.resumed_from is not None else 0
    trained = session.trainer.global_step > start and runs.has_checkpoint(session.run)
    message = slurm.requeue(trained)
    if message is None:
        return False
    print(message, file=sys.stderr)
    return message.startswith("requeued")


def _resume_command(session: _Session, run) -> str:
    args = list(session.command)
    if "--ckpt_path" in args:
        index = args.index("--ckpt_path")
        del args[index : index + 2]
    args = [a for a in args if not a.startswith("--ckpt_path=")]
    return shlex.join(["python", "-m", "tli_lightning", *(args or ["fit"]), "--ckpt_path", str(run.checkpoint_dir)])


def __getattr__(name: str) -> Any:
    # The LightningCLI classes load Lightning: only when asked for (`--help` and the measurement commands never do).
    if name in ("TLICLI", "TLIArgumentParser", "RunConfig"):
        from tli_lightning import lightning_cli

        return getattr(lightning_cli, name)
    raise AttributeError(f"module 'tli_lightning.cli' has no attribute {name!r}")


def top_level_help() -> str:
    """``python -m tli_lightning --help``: every command, ours and Lightning's (its own parser knows only three)."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: python -m tli_lightning COMMAND [options]   (no command: fit, the offline demo)",
        "",
        DESCRIPTION,
        "",
        "commands:",
        *(f"  {name:<{width}}  {SUBCOMMAND_HELP[name]}" for name in COMMANDS),
        "",
        "Each command's options: python -m tli_lightning COMMAND --help (fit: ours first; --help-all: every "
        "Trainer option too).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None, cli_class: type | None = None) -> None:
    """``python -m tli_lightning``; ``cli_class``: a subclass of :class:`TLICLI` for fit/validate/test."""
    # Before anything imports torch, which reads these once (threads.py says why).
    apply_thread_defaults()
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    _configure_logging()
    session = _Session()
    session.command = argv
    if argv in (["-h"], ["--help"]):
        print(top_level_help())
        return
    if argv and argv[0] in ("fit", "validate", "test") and "--help-all" in argv:
        session.help = "all"
        argv = ["--help" if a == "--help-all" else a for a in argv]
        if from_command_line:
            sys.argv[1:] = argv
    try:
        if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
            raise TLIError(
                f"unknown command {argv[0]!r}; the commands are {', '.join(COMMANDS)} (python -m tli_lightning --help)"
            )
        if argv and argv[0] == "grid":
            from tli_lightning.grid import main as grid

            grid(argv[1:])
        elif argv and argv[0] in MEASURE_COMMANDS:
            from tli_lightning.commands import run_command

            run_command(argv[0], argv[1:])
        else:
            if argv and argv[0] == "fit" and not {"-h", "--help"} & set(argv):
                from tli_lightning.precheck import check_fit_inputs

                check_fit_inputs(argv[1:])
            if cli_class is None:
                from tli_lightning.lightning_cli import TLICLI as cli_class
            # LightningCLI reads sys.argv itself when run as a command (and warns if given both).
            cli_class(["fit"] if not argv else None if from_command_line else argv, session=session)
    except _AlreadyFinished as done:
        if not _not_rank_zero():
            print(done)
    except _QuietError:
        raise SystemExit(2) from None
    except TLIError as error:
        if not _not_rank_zero():  # every rank checks the same input: one line, not one per process
            print(f"error: {error}", file=sys.stderr)
        _finish_quietly(session, "failed", bad_input=True)
        raise SystemExit(2) from None
    except RunInterrupted as stop:
        if _not_rank_zero():
            # Rank 0 reports the interruption; a non-zero exit here would make Lightning kill rank 0 mid-summary.
            raise SystemExit(0) from None
        _finish_quietly(session, "interrupted", stop)
        if _requeue(session, stop):
            raise SystemExit(0) from None  # the job goes on, requeued
        raise SystemExit(stop.exit_code) from None
    except KeyboardInterrupt:  # before the run's own handlers were in place: nothing to save
        _finish_quietly(session, "interrupted")
        raise SystemExit(130) from None
    except SystemExit as stop:
        if type(stop).__name__ != "SIGTERMException":
            raise
        # Lightning's own SIGTERM handling (before ExactResume's replaces it) exits with no code, i.e. 0.
        _finish_quietly(session, "interrupted")
        raise SystemExit(143) from None
    except Exception as error:
        slurm_settings = isinstance(error, (ValueError, RuntimeError)) and "SLURM" in str(error)
        if session.trainer is None and (type(error).__name__ == "MisconfigurationException" or slurm_settings):
            # Lightning refusing the trainer's settings (e.g. a GPU config on a machine without one): bad input.
            hint = ""
            if "gpu" in str(error).lower():
                hint = " (configs/multi_gpu/*.yaml ask for GPUs; on a CPU add --trainer.accelerator cpu after them)"
            print(f"error: {' '.join(str(error).split())}{hint}", file=sys.stderr)
            _finish_quietly(session, "failed", bad_input=True)  # the run claimed for it is removed
            raise SystemExit(2) from None
        # A crash: the traceback is for the developer; the summary and resume hint for the user.
        _finish_quietly(session, "failed")
        raise
    finally:
        from tli_lightning.runs import RUN_ENV

        os.environ.pop(RUN_ENV, None)  # for the processes this run launched only
