"""``python -m tli_lightning {fit,validate,test,scan,zeroshot,compare}``.

``fit``/``validate``/``test`` are a LightningCLI over :class:`TLIModule` and :class:`TLIDataModule`;
with no arguments ``fit`` runs the embedded offline demo. Each ``fit`` is one run with its own
directories (:mod:`tli_lightning.runs`); ``--ckpt_path`` resumes one.
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
from typing import Any, NoReturn

from tli_lightning.errors import RunInterrupted, TLIError, usage_error
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
    "zeroshot": "Zero-shot XNLI exactly as lm-evaluation-harness, one JSON line per example.",
    "compare": "Runs side by side: alignment, XNLI retention, paired statistics, a verdict (report.md).",
}
COMMANDS = ("fit", "validate", "test", *MEASURE_COMMANDS)
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


def _lightning_cli(args: list[str], session: _Session) -> None:
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

    from tli_lightning.data import TLIDataModule
    from tli_lightning.module import TLIModule

    class OneLineParser(LightningArgumentParser):
        def error(self, message: str, ex: Exception | None = None) -> NoReturn:
            if not self.exit_on_error:  # jsonargparse parsing a part on its own: it catches this itself
                super().error(message, ex)
            usage_error((getattr(ex, "subcommand_parser", None) or self).prog, message)

    class TLICLI(LightningCLI):
        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            # No predict: a contrastive word-alignment model has nothing to predict.
            return {name: keys for name, keys in LightningCLI.subcommands().items() if name != "predict"}

        def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            # Lightning's text describes its own `last`; ours means something else (runs.resolve_resume).
            fit = self._subcommand_parsers.get("fit") if add_subcommands else None
            if fit is not None:
                fit._option_string_actions["--ckpt_path"].help = CKPT_PATH_HELP
                _tli_options_first(fit, short=session.help == "short")
            # The subcommand list shows what each does here, not the Trainer methods' docstrings.
            action = getattr(self.parser, "_subcommands_action", None) if add_subcommands else None
            for choice in getattr(action, "_choices_actions", []):
                choice.help = SUBCOMMAND_HELP.get(choice.dest, choice.help)

        def _parse_ckpt_path(self) -> None:
            # Lightning would torch.load the whole checkpoint here (GBs for full fine-tuning) and let its
            # hyperparameters silently override the command line. Runs instead resume with the settings
            # they started with, checked against the run's config.yaml in before_instantiate_classes.
            pass

        def add_arguments_to_parser(self, parser) -> None:
            parser.set_defaults(
                {
                    "trainer.max_epochs": 5,
                    "trainer.precision": "32-true",
                    "trainer.log_every_n_steps": 5,
                    # Logged once the run ends, with its final numbers (hparams.log_run_hparams), for the HPARAMS tab.
                    "trainer.enable_autolog_hparams": False,
                    "trainer.logger": DEFAULT_LOGGER,
                    "trainer.callbacks": DEFAULT_CALLBACKS,
                }
            )
            from tli_lightning.switches import add_switches

            add_switches(parser)

        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            subcommand = self.config.get("subcommand")
            if subcommand in COMMANDS and _is_rank_zero():
                # First, before Lightning's messages: the base every number of this command is measured on.
                from tli_lightning.commands import describe_base

                model = self.config[subcommand].model
                log.info(
                    "%s: %s",
                    subcommand,
                    describe_base(
                        model.model_name_or_path,
                        model.quantization,
                        model.compute_dtype,
                        self.config[subcommand].trainer.precision,
                    ),
                )

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand]
            from tli_lightning.switches import apply_switches

            apply_switches(config)
            _check_callbacks(config)
            _add_progress_bar(config)
            if self.subcommand != "fit":
                # validate/test log beside the runs, not as runs of their own.
                config.trainer.logger.init_args.name = f"{_logger_args(config)['name']}-{self.subcommand}"
                if config.ckpt_path is None:
                    log.warning("%s without --ckpt_path scores the untrained base model", self.subcommand)
                return
            # Every input is checked before the Trainer and the model exist: a mistake costs seconds, not a model load.
            from tli_lightning.loading import check_model_source, resolve_model_path

            if config.model.model_name_or_path != "tiny":
                check_model_source(resolve_model_path(config.model.model_name_or_path))
            self.prepared_data = TLIDataModule(**config.data.as_dict())
            # Data first: a mistyped file fails here, before a run directory is created.
            self.prepared_data.prepare_data()
            self.prepared_data.setup("fit")
            run, fresh = _resolve_run(config)
            if run.resumed_from is not None:
                # Refusals first: a refused resume must leave the run as it was.
                _check_resume_matches(self.parser, self.config, self.subcommand, run)
                _check_something_left_to_train(config, run)
            session.run, session.fresh = run, fresh
            _loggers_follow_run(config, run)

        def instantiate_classes(self) -> None:
            super().instantiate_classes()
            prepared = getattr(self, "prepared_data", None)
            if prepared is not None:  # the one whose files were read and checked, not a second copy
                self.datamodule = self.config_init[self.subcommand]["data"] = prepared

        def before_validate(self) -> None:
            self._resolve_evaluated_checkpoint()

        def before_test(self) -> None:
            self._resolve_evaluated_checkpoint()

        def _resolve_evaluated_checkpoint(self) -> None:
            # `last` and run directories mean what they mean for fit (runs.resolve_resume), not Lightning's `last`.
            spec = self.config[self.subcommand].ckpt_path
            if spec and not Path(str(spec)).is_file():
                from tli_lightning import runs

                config = self.config[self.subcommand]
                name = _logger_args(config)["name"].removesuffix(f"-{self.subcommand}")
                logs = os.path.join(_logger_args(config)["save_dir"], name)
                run = runs.resolve_resume(str(spec), logs, _checkpoints_dir(config, name), name)
                self.config_init[self.subcommand]["ckpt_path"] = str(run.resumed_from)
                log.info("%s: %s (step %d)", self.subcommand, run.resumed_from, run.resumed_step)

        def before_fit(self) -> None:
            from tli_lightning import runs

            session.trainer = self.trainer
            _point_at_run(self.trainer, session.run)
            self.trainer.strategy.checkpoint_io = runs.atomic_checkpoint_io()
            if session.fresh:
                _write_tensorboard_layout(self.trainer, self.datamodule, self.config[self.subcommand].model)
            if session.run.resumed_from is not None:
                self.config_init[self.subcommand]["ckpt_path"] = str(session.run.resumed_from)
                for note in session.run.notes:
                    log.info(note)
                log.info(
                    "resuming %s (step %d) into %s",
                    session.run.resumed_from,
                    session.run.resumed_step,
                    session.run.log_dir,
                )

        def after_fit(self) -> None:
            _finish(session, status="finished")

    class RunConfig(SaveConfigCallback):
        """The resolved config, once per run; a resumed run records its own command beside it."""

        def setup(self, trainer, pl_module, stage) -> None:
            run = session.run
            if run is not None and run.resumed_from is not None:
                # One file per resumption, also when the same checkpoint is resumed twice.
                taken = len(list(run.log_dir.glob("config.resumed*.yaml")))
                self.config_filename = f"config.resumed{taken + 1}_at_step{run.resumed_step}.yaml"
                session.resume_config = run.log_dir / self.config_filename
            super().setup(trainer, pl_module, stage)

    TLICLI(
        TLIModule,
        TLIDataModule,
        args=args,
        parser_class=OneLineParser,
        save_config_callback=RunConfig,
        seed_everything_default=42,
        auto_configure_optimizers=False,  # TLIModule owns its optimizer and schedule (--model.*)
        parser_kwargs={
            "prog": "python -m tli_lightning",
            "description": DESCRIPTION,
            "fit": {"description": DESCRIPTION},
            "validate": {"description": "Contrastive loss and similarities on the control pairs. " + LAYERS_NOTE},
            "test": {"description": "Contrastive loss and similarities on the control pairs. " + LAYERS_NOTE},
        },
    )


def _logger_args(config) -> dict[str, Any]:
    logger = config.trainer.logger
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    class_path = getattr(logger, "class_path", "")
    if not class_path.endswith(("TensorBoardLogger", "CSVLogger")):
        raise TLIError(
            "tli_lightning keeps each run in logs/<name>/version_<n>: trainer.logger (the first one, if several) "
            f"must be a TensorBoardLogger or CSVLogger, got {class_path or logger!r}"
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


def _resolve_run(config):
    """The run this process writes into, and whether it is new. Launched DDP processes join the first one's."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from tli_lightning import runs

    if rank_zero_only.rank != 0 and os.environ.get(runs.RUN_ENV):
        return runs.Run.from_env(os.environ[runs.RUN_ENV]), False
    logger = _logger_args(config)
    name = logger["name"]
    logs, checkpoints = os.path.join(logger["save_dir"], name), _checkpoints_dir(config, name)
    if rank_zero_only.rank != 0:
        raise TLIError(
            f"this process (rank {rank_zero_only.rank}) was started by an external launcher without the run chosen "
            f"by rank 0; launch through Lightning (--trainer.devices N --trainer.strategy ddp) or export "
            f"{runs.RUN_ENV} from rank 0"
        )
    if config.ckpt_path:
        run, fresh = runs.resolve_resume(str(config.ckpt_path), logs, checkpoints, name), False
    else:
        run, fresh = runs.claim_run(logs, checkpoints, name), True
    os.environ[runs.RUN_ENV] = run.to_env()
    return run, fresh


def _checkpoints_dir(config, name: str) -> str:
    # A ModelCheckpoint dirpath, if given, is where this name's runs go (one version_<n> each).
    for callback in config.trainer.callbacks or []:
        if getattr(callback, "class_path", "").endswith("ModelCheckpoint") and callback.init_args.dirpath:
            return str(callback.init_args.dirpath)
    return os.path.join("checkpoints", name)


def _point_at_run(trainer, run) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            callback.dirpath = str(run.checkpoint_dir)


def _loggers_follow_run(config, run) -> None:
    """Every logger writes into, or is named after, this run: set in the config, since loggers take their
    name and version when they are built (before the run is known to Lightning)."""
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
    sets = ["trained", "control"]
    from tli_lightning.callbacks import LanguageModelRetention, ZeroShotRetention

    measured = {
        c.key: list(c.tasks if c.tasks is not None else getattr(datamodule, "reasoning", {}))
        for c in trainer.callbacks
        if isinstance(c, ZeroShotRetention)
    }
    texts = {
        c.key: list(c.texts if c.texts is not None else getattr(datamodule, "lm_texts", {}))
        for c in trainer.callbacks
        if isinstance(c, LanguageModelRetention)
    }
    writer.add_custom_scalars(tensorboard_layout(sets, measured, layers, texts=texts))


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


def _launched_by_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from tli_lightning.runs import RUN_ENV

    return rank_zero_only.rank != 0 and bool(os.environ.get(RUN_ENV))


def _resume_command(session: _Session, run) -> str:
    args = list(session.command)
    if "--ckpt_path" in args:
        index = args.index("--ckpt_path")
        del args[index : index + 2]
    args = [a for a in args if not a.startswith("--ckpt_path=")]
    return shlex.join(["python", "-m", "tli_lightning", *(args or ["fit"]), "--ckpt_path", str(run.checkpoint_dir)])


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


def main(argv: list[str] | None = None) -> None:
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
        if argv and argv[0] in MEASURE_COMMANDS:
            from tli_lightning.commands import run_command

            run_command(argv[0], argv[1:])
        else:
            if argv and argv[0] == "fit" and not {"-h", "--help"} & set(argv):
                from tli_lightning.precheck import check_fit_inputs

                check_fit_inputs(argv[1:])
            # LightningCLI reads sys.argv itself when run as a command (and warns if given both).
            _lightning_cli(["fit"] if not argv else None if from_command_line else argv, session)
    except _AlreadyFinished as done:
        print(done)
    except TLIError as error:
        print(f"error: {error}", file=sys.stderr)
        _finish_quietly(session, "failed", bad_input=True)
        raise SystemExit(2) from None
    except RunInterrupted as stop:
        if _launched_by_rank_zero():
            # Rank 0 reports the interruption; a non-zero exit here would make Lightning kill rank 0 mid-summary.
            raise SystemExit(0) from None
        _finish_quietly(session, "interrupted", stop)
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
        if type(error).__name__ == "MisconfigurationException" and session.trainer is None:
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
