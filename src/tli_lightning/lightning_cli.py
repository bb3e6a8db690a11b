"""The LightningCLI behind ``python -m tli_lightning {fit,validate,test}``: importable and subclassable.

Kept apart from :mod:`tli_lightning.cli` (whose ``main`` sets the thread defaults before torch loads, and whose
measurement commands never import Lightning); ``from tli_lightning.cli import TLICLI`` works too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from tli_lightning.cli import (
    CKPT_PATH_HELP,
    COMMANDS,
    DEFAULT_CALLBACKS,
    DEFAULT_LOGGER,
    DESCRIPTION,
    SUBCOMMAND_HELP,
    _add_progress_bar,
    _check_callbacks,
    _check_resume_matches,
    _check_something_left_to_train,
    _checkpoints_dir,
    _finish,
    _has_logger,
    _is_rank_zero,
    _logger_args,
    _loggers_follow_run,
    _point_at_run,
    _resolve_run,
    _Session,
    _tli_options_first,
    _write_tensorboard_layout,
    log,
)
from tli_lightning.data import TLIDataModule
from tli_lightning.errors import usage_error
from tli_lightning.layers import LAYERS_NOTE
from tli_lightning.module import TLIModule


class TLIArgumentParser(LightningArgumentParser):
    """Lightning's parser, reporting a mistake as one ``error:`` line."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse parsing a part on its own: it catches this itself
            super().error(message, ex)
        usage_error((getattr(ex, "subcommand_parser", None) or self).prog, message)


class RunConfig(SaveConfigCallback):
    """The resolved config, once per run; a resumed run records its own command beside it."""

    def __init__(self, *args: Any, session: _Session | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session = session

    def setup(self, trainer, pl_module, stage) -> None:
        run = self.session.run if self.session is not None else None
        if run is not None and run.resumed_from is not None:
            # One file per resumption, also when the same checkpoint is resumed twice.
            taken = len(list(run.log_dir.glob("config.resumed*.yaml")))
            self.config_filename = f"config.resumed{taken + 1}_at_step{run.resumed_step}.yaml"
            self.session.resume_config = run.log_dir / self.config_filename
        super().setup(trainer, pl_module, stage)


class TLICLI(LightningCLI):
    """The ``fit``/``validate``/``test`` commands: a LightningCLI over :class:`TLIModule` and :class:`TLIDataModule`
    that gives each ``fit`` its own run directories (:mod:`tli_lightning.runs`) and resumes only when asked.

    Importable and subclassable. ``default_callbacks`` is what ``--trainer.callbacks`` starts from; a subclass
    adding one of its own, run with the CLI's error handling and end-of-run summary by :func:`main`::

        # my_cli.py: python my_cli.py fit --config ...
        from tli_lightning.cli import TLICLI, main

        class MyCLI(TLICLI):
            default_callbacks = [*TLICLI.default_callbacks, {"class_path": "my_package.MyCallback"}]

        if __name__ == "__main__":
            main(cli_class=MyCLI)

    Args:
        args: the command line after the program name (None: ``sys.argv``).
        session: what the run learned, for :func:`main`'s messages after it ends; a fresh one if None.
        **kwargs: more LightningCLI arguments (they override this class's defaults).
    """

    # What --trainer.callbacks and --trainer.logger start from (the same list: entries added to it count).
    default_callbacks: list[dict] = DEFAULT_CALLBACKS
    default_logger: dict | None = DEFAULT_LOGGER

    def __init__(self, args: list[str] | None = None, session: _Session | None = None, **kwargs: Any) -> None:
        self.session = session if session is not None else _Session()
        settings: dict[str, Any] = {
            "model_class": TLIModule,
            "datamodule_class": TLIDataModule,
            "args": args,
            "parser_class": TLIArgumentParser,
            "save_config_callback": RunConfig,
            "save_config_kwargs": {"session": self.session},
            "seed_everything_default": 42,
            "auto_configure_optimizers": False,  # TLIModule owns its optimizer and schedule (--model.*)
            "parser_kwargs": {
                "prog": "python -m tli_lightning",
                "description": DESCRIPTION,
                "fit": {"description": DESCRIPTION},
                "validate": {"description": "Contrastive loss and similarities on the control pairs. " + LAYERS_NOTE},
                "test": {"description": "Contrastive loss and similarities on the control pairs. " + LAYERS_NOTE},
            },
        }
        super().__init__(**{**settings, **kwargs})

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
            _tli_options_first(fit, short=self.session.help == "short")
        # The subcommand list shows what each does here, not the Trainer methods' docstrings.
        action = getattr(self.parser, "_subcommands_action", None) if add_subcommands else None
        for choice in getattr(action, "_choices_actions", []):
            choice.help = SUBCOMMAND_HELP.get(choice.dest, choice.help)

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults(
            {
                "trainer.max_epochs": 5,
                "trainer.precision": "32-true",
                "trainer.log_every_n_steps": 5,
                # Logged once the run ends, with its final numbers (hparams.log_run_hparams), for the HPARAMS tab.
                "trainer.enable_autolog_hparams": False,
                "trainer.logger": self.default_logger,
                "trainer.callbacks": self.default_callbacks,
            }
        )
        from tli_lightning.switches import add_switches

        add_switches(parser)

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand in COMMANDS:
            # Lightning would torch.load the whole checkpoint next (GBs for full fine-tuning) and let its
            # hyperparameters silently override the command line. Runs instead resume with the settings they
            # started with (checked against the run's config.yaml): the path is held back until it has passed.
            self._ckpt_path = self.config[subcommand].get("ckpt_path")
            self.config[subcommand].ckpt_path = None
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
        session = self.session
        config = self.config[self.subcommand]
        config.ckpt_path = getattr(self, "_ckpt_path", None)
        from tli_lightning.switches import apply_switches

        apply_switches(config)
        _check_callbacks(config)
        _add_progress_bar(config)
        if self.subcommand != "fit":
            # validate/test log beside the runs, not as runs of their own.
            if _has_logger(config):
                config.trainer.logger.init_args.name = f"{_logger_args(config)['name']}-{self.subcommand}"
            if config.ckpt_path is None:
                log.warning("%s without --ckpt_path scores the untrained base model", self.subcommand)
            return
        from tli_lightning import slurm

        slurm.check_allocation(config.trainer.num_nodes, config.trainer.devices)
        # Every input is checked before the Trainer and the model exist: a mistake costs seconds, not a model load.
        from tli_lightning.loading import check_model_source, resolve_model_path

        if config.model.model_name_or_path != "tiny":
            check_model_source(resolve_model_path(config.model.model_name_or_path))
        self.prepared_data = TLIDataModule(**config.data.as_dict())
        # Data first: a mistyped file fails here, before a run directory is created.
        self.prepared_data.prepare_data()
        self.prepared_data.setup("fit")

        def check(run, fresh: bool) -> None:
            if run.resumed_from is not None:
                # Refusals first: a refused resume must leave the run as it was.
                _check_resume_matches(self.parser, self.config, self.subcommand, run)
                _check_something_left_to_train(config, run)

        run, fresh = _resolve_run(config, check)
        session.run, session.fresh = run, fresh
        _loggers_follow_run(config, run)
        # Lightning's own files (and its SLURM `hpc_ckpt` lookup) in the run's directory, not the working one.
        config.trainer.default_root_dir = str(run.log_dir)

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

        session = self.session
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
        _finish(self.session, status="finished")
