"""``fit``'s inputs checked before Lightning is imported: a mistyped file costs a second, not ten.

Importing Lightning, transformers and PEFT takes most of the time a ``fit`` that refuses its input
spends. This reads the data and model settings from ``--config`` files and ``--data.*``/``--model.*``
options the way LightningCLI would (later ones win) and checks what needs no heavy import: the user's
lexicon, control and local XNLI files, and a model path that is a file or a missing directory.
Anything it cannot read with certainty (an unreadable config, an unusual option form) it leaves to
the full check, which runs after LightningCLI has parsed the command (``cli.py``) and says the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tli_lightning.errors import TLIError

DEMO = "demo"
# TLIDataModule's and TLIModule's defaults for what is checked here (tests/test_cli.py compares them).
DEFAULTS = {
    "data.lexicon_path": DEMO,
    "data.control_path": DEMO,
    "data.source_column": "sw",
    "data.target_column": "en",
    "data.reasoning_tasks": None,  # the bundled demo examples of each task
    "model.model_name_or_path": "tiny",
}


def _looks_local(path: str) -> bool:
    """A path the user meant as a file (a hub id is owner/name, without a suffix or a leading ./ or /)."""
    return path.startswith(("/", "./", "../", "~")) or path.endswith((".jsonl", ".json", ".tsv", ".txt"))


class _Unsure(Exception):
    """The command uses a form this reader does not follow: leave the checks to LightningCLI."""


def fit_settings(argv: list[str]) -> dict[str, Any]:
    """The checked settings as LightningCLI would resolve them from ``argv`` (the options after ``fit``)."""
    import yaml

    settings = dict(DEFAULTS)
    index = 0
    while index < len(argv):
        arg = argv[index]
        key, value = (arg.split("=", 1) + [None])[:2] if arg.startswith("--") else (arg, None)
        if key in ("-c", "--config"):
            if value is None:
                index += 1
                value = argv[index] if index < len(argv) else None
            try:
                loaded = yaml.safe_load(Path(value).read_text(encoding="utf-8")) if value else None
            except (OSError, yaml.YAMLError):
                raise _Unsure from None
            if not isinstance(loaded, dict):
                raise _Unsure
            for section in ("data", "model"):
                part = loaded.get(section) or {}
                if not isinstance(part, dict) or "init_args" in part or "class_path" in part:
                    raise _Unsure
                settings.update({f"{section}.{k}": v for k, v in part.items() if f"{section}.{k}" in DEFAULTS})
        elif key in ("--data", "--model"):
            raise _Unsure  # a whole section from a file
        elif key.removeprefix("--") in DEFAULTS:
            if value is None:
                index += 1
                if index >= len(argv):
                    raise _Unsure
                value = argv[index]
            settings[key.removeprefix("--")] = yaml.safe_load(value)
        index += 1
    return settings


def check_fit_inputs(argv: list[str]) -> None:
    """Refuse the user's own files' errors (and a model path that cannot be a model) with TLIError."""
    from tli_lightning.lexicon import check_control_choice, read_lexicon

    try:
        settings = fit_settings(argv)
    except (_Unsure, ValueError, TypeError, AttributeError):
        return
    columns = (settings["data.source_column"], settings["data.target_column"])
    lexicon, control = settings["data.lexicon_path"], settings["data.control_path"]
    if not all(isinstance(v, str) for v in (lexicon, *columns)) or not isinstance(control, (str, type(None))):
        return
    if lexicon != DEMO:
        read_lexicon(lexicon, *columns)
    check_control_choice(lexicon, control)
    if control not in (None, DEMO):
        read_lexicon(control, *columns)
    for spec in settings["data.reasoning_tasks"] or []:
        if not isinstance(spec, dict) or not isinstance(spec.get("task"), str):
            return  # LightningCLI says what is wrong with its shape
        from tli_lightning.tasks import get_task

        task = get_task(spec["task"])  # an unknown task before its file, as TLIDataModule does
        path = spec.get("path", DEMO)
        if isinstance(path, str) and path != DEMO and (Path(path).exists() or _looks_local(path)):
            task.read(path)
    model = settings["model.model_name_or_path"]
    if isinstance(model, str) and model != "tiny":
        path = Path(model).expanduser()
        if path.is_file():
            raise TLIError(f"{model} is a file; give the model's directory (the one holding config.json) or a hub id")
        if model.startswith(("/", "./", "../", "~")) and not path.is_dir():
            raise TLIError(f"model directory not found: {model} (a local path; hub ids look like owner/name)")
