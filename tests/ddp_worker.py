"""Run by test_callbacks.py in a subprocess: fit PlainLM with the measurements on 1 or 2 CPU processes."""

import sys

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

out, devices, tests_dir, model_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, tests_dir)
from test_callbacks import PAIRS, PlainLM, _xnli  # noqa: E402

from tli_lightning.callbacks import (  # noqa: E402
    LayerwiseAlignment,
    RepresentationDrift,
    WeightUpdateSpectrum,
    ZeroShotRetention,
)

# 5 texts: shards of unequal size on 2 processes.
DRIFT_TEXTS = {"premises": ["Watoto walikwenda shule.", "Jua ni kali.", "Mvua inanyesha.", "Ndiyo.", "Hapana."]}

if __name__ == "__main__":
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        callbacks=[
            LayerwiseAlignment(pair_sets=PAIRS, progress=False),
            ZeroShotRetention(tasks=_xnli(), progress=False),
            WeightUpdateSpectrum(),
            RepresentationDrift(texts=DRIFT_TEXTS, progress=False),
        ],
        logger=TensorBoardLogger(out, name=f"d{devices}"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(PlainLM(model_dir))
