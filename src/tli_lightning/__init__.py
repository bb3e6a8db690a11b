"""Targeted Lexical Injection on PyTorch Lightning.

Heavy imports stay lazy, so ``from tli_lightning.callbacks import ...`` does not pull in the CLI.
"""

from importlib import import_module
from typing import Any

__version__ = "0.3.0"

_EXPORTS = {
    "TLIModule": "tli_lightning.module",
    "TLIDataModule": "tli_lightning.data",
    "word_vectors": "tli_lightning.representations",
    "triplet_hardest_negative": "tli_lightning.losses",
    "info_nce": "tli_lightning.losses",
    "TLIError": "tli_lightning.errors",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tli_lightning' has no attribute {name!r}")
