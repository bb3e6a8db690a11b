"""Reading the user's text files with errors that name the file, the line and the value; writing strict JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tli_lightning.errors import TLIError


def read_text(path: str | Path, what: str) -> str:
    """The whole file as UTF-8 text; ``what`` names it in errors (e.g. "lexicon file")."""
    path = Path(path)
    if path.is_dir():
        raise TLIError(f"{what} {path} is a directory; give the file itself")
    if not path.is_file():
        raise TLIError(f"{what} not found: {path}")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        bad = raw[error.start : error.end + 8]
        raise TLIError(
            f"{path}:{line}: not UTF-8 text (bytes {bad!r}); re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None


def write_json(path: Path, payload: Any) -> None:
    """Strict JSON: an undefined number (a retention over a zero baseline) is null, not NaN."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(without_nan(payload), indent=1, ensure_ascii=False, allow_nan=False), encoding="utf-8")


def without_nan(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(v) for v in value]
    return value
