"""Lightning's progress bars without the logger's version number.

The bar shows the run's number (``v_num``) as if it were a metric: ``v_num: 0.000`` in Rich's bar.
The run's number is in its directory's name and in the summary printed at the end.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar


class _WithoutVersion:
    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        items.pop("v_num", None)
        return items


class RunProgressBar(_WithoutVersion, TQDMProgressBar):
    """Lightning's TQDM bar, less ``v_num``."""


class RichRunProgressBar(_WithoutVersion, RichProgressBar):
    """Lightning's Rich bar (its default where ``rich`` is installed), less ``v_num``."""
