"""Reusable callbacks: the measurements (per-layer alignment, zero-shot task retention, held-out text
likelihood, the weight update's spectrum, each layer's drift from the base; all on :class:`Measurement`,
the seam a new one subclasses), adapter export, exact resume.

Each works with any LightningModule that exposes a causal LM of a supported family
(:mod:`tli_lightning.backbones`; plain or PEFT-wrapped) as ``.model`` and its tokenizer as
``.tokenizer``, or through the ``get_model``/``get_tokenizer`` arguments. Importing them does not import the CLI.
"""

from tli_lightning.callbacks.adapter_export import AdapterExport
from tli_lightning.callbacks.alignment import LayerwiseAlignment
from tli_lightning.callbacks.drift import RepresentationDrift
from tli_lightning.callbacks.exact_resume import ExactResume
from tli_lightning.callbacks.lm_eval_bridge import LMEvalTasks
from tli_lightning.callbacks.lm_likelihood import LanguageModelRetention
from tli_lightning.callbacks.measurement import Measurement
from tli_lightning.callbacks.progress import RichRunProgressBar, RunProgressBar
from tli_lightning.callbacks.retention import ZeroShotRetention
from tli_lightning.callbacks.weight_update import WeightUpdateSpectrum

__all__ = [
    "AdapterExport",
    "ExactResume",
    "LMEvalTasks",
    "LanguageModelRetention",
    "LayerwiseAlignment",
    "Measurement",
    "RepresentationDrift",
    "RichRunProgressBar",
    "RunProgressBar",
    "WeightUpdateSpectrum",
    "ZeroShotRetention",
]
