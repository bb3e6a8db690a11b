"""Reusable callbacks: per-layer alignment, zero-shot XNLI retention, adapter export, exact resume.

Each works with any LightningModule that exposes a causal LM of a supported family
(:mod:`tli_lightning.backbones`; plain or PEFT-wrapped) as ``.model`` and its tokenizer as
``.tokenizer``, or through the ``get_model``/``get_tokenizer`` arguments. Importing them does not import the CLI.
"""

from tli_lightning.callbacks.adapter_export import AdapterExport
from tli_lightning.callbacks.alignment import LayerwiseAlignment
from tli_lightning.callbacks.exact_resume import ExactResume
from tli_lightning.callbacks.progress import RichRunProgressBar, RunProgressBar
from tli_lightning.callbacks.retention import ZeroShotRetention

__all__ = [
    "AdapterExport",
    "ExactResume",
    "LayerwiseAlignment",
    "RichRunProgressBar",
    "RunProgressBar",
    "ZeroShotRetention",
]
