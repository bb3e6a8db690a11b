"""``python -m tli_lightning {fit,validate,test,scan,zeroshot}``.

``fit``/``validate``/``test`` are a LightningCLI over :class:`TLIModule` and
:class:`TLIDataModule`; with no arguments ``fit`` runs the embedded offline demo.
"""

from __future__ import annotations

import logging
import sys

from tli_lightning.errors import TLIError

MEASURE_COMMANDS = ("scan", "zeroshot")


def _component(class_path: str, **init_args) -> dict:
    return {"class_path": class_path, "init_args": init_args}


def _lightning_cli(args: list[str] | None) -> None:
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.loggers import TensorBoardLogger
    from jsonargparse import lazy_instance

    from tli_lightning.data import TLIDataModule
    from tli_lightning.module import TLIModule

    class TLICLI(LightningCLI):
        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            # No predict: a contrastive word-alignment model has nothing to predict.
            return {name: keys for name, keys in LightningCLI.subcommands().items() if name != "predict"}

        def add_arguments_to_parser(self, parser) -> None:
            parser.set_defaults(
                {
                    "trainer.max_epochs": 5,
                    "trainer.precision": "32-true",
                    "trainer.log_every_n_steps": 5,
                    "trainer.logger": lazy_instance(TensorBoardLogger, save_dir="logs", name="demo", default_hp_metric=False),
                    "trainer.callbacks": [
                        _component("lightning.pytorch.callbacks.ModelCheckpoint", dirpath="checkpoints/demo", filename="epoch{epoch:02d}", auto_insert_metric_name=False, save_top_k=-1, save_last=True),
                        _component("lightning.pytorch.callbacks.OnExceptionCheckpoint", dirpath="checkpoints/demo", filename="on_exception"),
                        _component("tli_lightning.callbacks.AdapterExport"),
                        _component("tli_lightning.callbacks.LayerwiseAlignment"),
                        _component("tli_lightning.callbacks.ZeroShotRetention"),
                    ],
                }
            )

    TLICLI(
        TLIModule,
        TLIDataModule,
        args=args,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=42,
        auto_configure_optimizers=False,  # TLIModule owns its optimizer and schedule (--model.*)
        parser_kwargs={
            "prog": "python -m tli_lightning",
            "description": (
                "Targeted Lexical Injection on PyTorch Lightning. Layer numbering everywhere follows "
                "hidden_states: 0 = embeddings, i = output of block i-1, -1 = final normed output. "
                "With no options, `fit` runs the offline demo (tiny NF4 Llama, bundled data). Measurement "
                "commands without training: `scan` (per-layer alignment) and `zeroshot` (XNLI); see "
                "`python -m tli_lightning scan --help`."
            ),
        },
    )


def main(argv: list[str] | None = None) -> None:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv and argv[0] in MEASURE_COMMANDS:
            from tli_lightning.commands import run_command

            run_command(argv[0], argv[1:])
        else:
            # LightningCLI reads sys.argv itself when run as a command (and warns if given both).
            _lightning_cli(["fit"] if not argv else None if from_command_line else argv)
    except TLIError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
