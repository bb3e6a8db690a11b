"""XNLI examples and lm-evaluation-harness's zero-shot prompt for them.

Labels: 0 = entailment, 1 = neutral, 2 = contradiction (the order of ``facebook/xnli``).
The harness's ``xnli_<lang>`` task turns each example into three candidate strings
``premise + ", {question}? {verbalizer}, " + hypothesis`` and picks the most likely one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tli_lightning.errors import TLIError

HUB_ID = "facebook/xnli"
LABELS = ("entailment", "neutral", "contradiction")

# language -> (question word, entailment, neutral, contradiction), as lm-eval 0.4 defines them
# (lm_eval/tasks/xnli/utils.py), word for word, including their oddities (ar "contradiction" = "رقم").
VERBALIZERS: dict[str, tuple[str, str, str, str]] = {
    "ar": ("صحيح", "نعم", "لذا", "رقم"),
    "bg": ("правилно", "да", "така", "не"),
    "de": ("richtig", "Ja", "Auch", "Nein"),
    "el": ("σωστός", "Ναί", "Έτσι", "όχι"),
    "en": ("right", "Yes", "Also", "No"),
    "es": ("correcto", "Sí", "Asi que", "No"),
    "fr": ("correct", "Oui", "Aussi", "Non"),
    "hi": ("सही", "हाँ", "इसलिए", "नहीं"),
    "ru": ("правильно", "Да", "Так", "Нет"),
    "sw": ("sahihi", "Ndiyo", "Hivyo", "Hapana"),
    "th": ("ถูกต้อง", "ใช่", "ดังนั้น", "ไม่"),
    "tr": ("doğru", "Evet", "Böylece", "Hayır"),
    "ur": ("صحیح", "جی ہاں", "اس لئے", "نہیں"),
    "vi": ("đúng", "Vâng", "Vì vậy", "Không"),
    "zh": ("正确", "是的", "所以", "不是的"),
}


@dataclass(frozen=True)
class XNLIExample:
    premise: str
    hypothesis: str
    label: int


def candidate_templates(language: str) -> tuple[str, str, str]:
    """The three ``str.format`` templates (fields ``premise``, ``hypothesis``) lm-eval uses for ``language``."""
    if language not in VERBALIZERS:
        raise TLIError(f"no lm-eval XNLI verbalizers for language {language!r}; known: {sorted(VERBALIZERS)}")
    question, *answers = VERBALIZERS[language]
    return tuple("{premise}, " + f"{question}? {answer}, " + "{hypothesis}" for answer in answers)  # type: ignore[return-value]


def candidates(example: XNLIExample, templates: tuple[str, str, str]) -> list[str]:
    return [t.format(premise=example.premise, hypothesis=example.hypothesis) for t in templates]


def _example(record: object, where: str, text_labels: bool = False) -> XNLIExample:
    """One example, refusing rather than converting: ``null`` is not the text "None", nor ``1.7`` the label 1.

    Labels are integers; only a TSV (``text_labels``), whose cells are all text, may write them as "0"/"1"/"2".
    """
    if not isinstance(record, dict) or not all(k in record for k in ("premise", "hypothesis", "label")):
        raise TLIError(f"{where}: expected fields premise, hypothesis and label (0/1/2), got {record!r}")
    for field in ("premise", "hypothesis"):
        if not isinstance(record[field], str) or not record[field].strip():
            raise TLIError(f"{where}: {field} must be a non-empty string, got {record[field]!r}")
    label = record["label"]
    if text_labels and isinstance(label, str) and label.strip() in ("0", "1", "2"):
        label = int(label)
    if type(label) is not int or label not in (0, 1, 2):  # type(): True is an int to isinstance
        raise TLIError(
            f"{where}: label must be 0 (entailment), 1 (neutral) or 2 (contradiction), got {record['label']!r}"
        )
    return XNLIExample(record["premise"], record["hypothesis"], label)


def read_xnli_file(path: str | Path) -> list[XNLIExample]:
    """Local JSONL (one object per line) or TSV (header with premise, hypothesis, label)."""
    from tli_lightning.tasks import read_records  # tasks builds on this module

    examples = [_example(r, where, text_labels=tsv) for r, where, _, tsv in read_records(path, "XNLI")]
    if not examples:
        raise TLIError(f"{path}: no examples found")
    return examples


def local_xnli_path(source: str, language: str) -> str | None:
    """The local file ``source`` names for ``language``; None for a hub id."""
    if "{lang}" in source or Path(source).exists() or source.endswith((".jsonl", ".json", ".tsv", ".txt")):
        return source.format(lang=language)
    return None


def load_xnli(source: str, language: str, split: str = "validation") -> list[XNLIExample]:
    """From a local path pattern containing ``{lang}``, a local file, or the hub id ``facebook/xnli``."""
    local = local_xnli_path(source, language)
    if local is not None:
        return read_xnli_file(local)
    from datasets import load_dataset

    try:
        rows = load_dataset(source, language, split=split)
    except Exception as error:  # datasets raises many types (network, missing config, ...)
        raise TLIError(
            f"cannot load XNLI {source!r} ({language}, {split}) with datasets: {error}. Offline, point "
            "xnli_source at local files, e.g. ../shared/data/xnli_{lang}_validation.jsonl"
        ) from error
    return [_example(row, f"{source}[{language}/{split}][{i}]") for i, row in enumerate(rows)]


def stratified_indices(labels: list[int], limit: int | None, seed: int) -> list[int]:
    """A seeded subsample of ``limit`` indices keeping the label proportions, in original order.

    Depends only on the labels and seed, so parallel files (row i of sw = row i of en) get the
    same rows in every language.
    """
    if limit is None or limit >= len(labels):
        return list(range(len(labels)))
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    for indices in by_label.values():
        rng.shuffle(indices)
    keys = sorted(by_label)
    exact = {k: limit * len(by_label[k]) / len(labels) for k in keys}
    quota = {k: int(exact[k]) for k in keys}
    # Largest remainders get the leftover slots, so proportions are kept within one example.
    for k in sorted(keys, key=lambda k: exact[k] - quota[k], reverse=True)[: limit - sum(quota.values())]:
        quota[k] += 1
    chosen = [i for k in keys for i in by_label[k][: quota[k]]]
    return sorted(chosen)
