"""Bilingual lexicons: reading (TSV or the TLI paper's JSON), trained/control split, leakage.

A pair is ``(source, target)``, e.g. ``("maji", "water")``. Entries may be multi-word or
hyphenated; whitespace is normalised, case is kept.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tli_lightning.errors import TLIError
from tli_lightning.textfiles import read_text

Pair = tuple[str, str]
LeakagePolicy = Literal["error", "drop"]
# The key names of the TLI paper's JSON lexicons, used when the configured columns are absent.
_PAPER_KEYS = ("swahili", "english")
# Longest accepted entry (characters): lexicon entries are words or short phrases, and every
# entry is tokenized and run through the model in a padded batch.
MAX_ENTRY_CHARS = 100


@dataclass
class Lexicon:
    pairs: list[Pair]
    duplicates_dropped: int
    path: str


def _clean(text: str) -> str:
    return " ".join(text.split())


def _rows_from_tsv(path: Path, source_column: str, target_column: str) -> Iterator[tuple[int, object, object]]:
    with io.StringIO(read_text(path, "lexicon file"), newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise TLIError(
                f"{path}: the file is empty (expected a header line with '{source_column}' and '{target_column}')"
            )
        header = [h.strip() for h in header]
        missing = [c for c in (source_column, target_column) if c not in header]
        if missing:
            raise TLIError(
                f"{path}:1: header {header} has no column {missing}; set source_column/target_column "
                "to the names your file uses"
            )
        s, t = header.index(source_column), header.index(target_column)
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise TLIError(f"{path}:{line}: expected {len(header)} tab-separated fields, got {len(row)}: {row!r}")
            yield line, row[s], row[t]


def _entries_with_lines(text: str) -> list[tuple[int, object]]:
    """The elements of a (valid) top-level JSON list, each with the line it starts on."""
    decoder, items = json.JSONDecoder(), []
    position = text.index("[") + 1
    while True:
        while text[position] in " \t\r\n,":
            position += 1
        if text[position] == "]":
            return items
        value, end = decoder.raw_decode(text, position)
        items.append((text.count("\n", 0, position) + 1, value))
        position = end


def _rows_from_json(path: Path, source_column: str, target_column: str) -> Iterator[tuple[int, object, object]]:
    text = read_text(path, "lexicon file")
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise TLIError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error
    if not isinstance(entries, list):
        raise TLIError(f'{path}: expected a JSON list of objects like {{"swahili": ..., "english": ...}}')
    for line, entry in _entries_with_lines(text):
        keys = (source_column, target_column) if isinstance(entry, dict) and source_column in entry else _PAPER_KEYS
        if not isinstance(entry, dict) or not all(k in entry for k in keys):
            raise TLIError(
                f"{path}:{line}: entry {entry!r}; expected an object with keys "
                f"'{source_column}'/'{target_column}' or 'swahili'/'english'"
            )
        yield line, entry[keys[0]], entry[keys[1]]


def check_control_choice(lexicon_path: str, control_path: str | None) -> None:
    """The bundled control set belongs to the bundled lexicon only."""
    if control_path == "demo" and lexicon_path != "demo":
        raise TLIError(
            "control_path 'demo' is the bundled control set of the bundled lexicon; with your own "
            "lexicon set --data.control_path to your control file, or to null to split off control_fraction"
        )


def read_lexicon(path: str | Path, source_column: str = "sw", target_column: str = "en") -> Lexicon:
    """Read a TSV lexicon (header naming the two columns) or a JSON list of pairs."""
    path = Path(path)
    rows = _rows_from_json if path.suffix == ".json" else _rows_from_tsv
    pairs: list[Pair] = []
    seen: set[Pair] = set()
    duplicates = 0
    for where, source, target in rows(path, source_column, target_column):
        where = f"{path}:{where}"
        for value in (source, target):
            if not isinstance(value, str) or not value.strip():
                raise TLIError(f"{where}: entries must be non-empty strings, got {value!r} in {(source, target)!r}")
            if len(value) > MAX_ENTRY_CHARS:
                raise TLIError(
                    f"{where}: entry of {len(value)} characters (at most {MAX_ENTRY_CHARS}): {value[:40]!r}..."
                )
        pair = (_clean(source), _clean(target))
        if pair in seen:
            duplicates += 1
            continue
        seen.add(pair)
        pairs.append(pair)
    if not pairs:
        raise TLIError(f"{path}: no pairs found")
    return Lexicon(pairs, duplicates, str(path))


def word_components(pairs: Sequence[Pair]) -> list[int]:
    """Per pair, the id of its connected component in the source-target word graph: pairs linked through a
    shared word (either side, transitively) share an id. Ids number the components in order of first pair."""
    parent: dict[tuple[int, str], tuple[int, str]] = {}

    def find(node: tuple[int, str]) -> tuple[int, str]:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for source, target in pairs:
        parent[find((0, source))] = find((1, target))
    ids: dict[tuple[int, str], int] = {}
    return [ids.setdefault(find((0, source)), len(ids)) for source, _ in pairs]


def split_control(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Hold out about ``fraction`` of the pairs as a control set that shares no word with the rest.

    Pairs are grouped into connected components of the source-target word graph (every
    translation of a source word, every source of a target word, transitively), and whole
    groups are assigned, so the split is leakage-free by construction.
    """
    if not 0.0 < fraction < 1.0:
        raise TLIError(f"control_fraction must be between 0 and 1 (exclusive), got {fraction}")
    groups: dict[int, list[int]] = {}
    for index, component in enumerate(word_components(pairs)):
        groups.setdefault(component, []).append(index)
    ordered = sorted(groups.values())
    random.Random(seed).shuffle(ordered)
    wanted = round(fraction * len(pairs))
    control_ids: set[int] = set()
    for group in ordered:
        if len(control_ids) >= wanted:
            break
        if len(control_ids) + len(group) <= wanted or not control_ids:
            control_ids.update(group)
    trained = [p for i, p in enumerate(pairs) if i not in control_ids]
    control = [p for i, p in enumerate(pairs) if i in control_ids]
    return trained, control


def shared_words(trained: Sequence[Pair], control: Sequence[Pair]) -> tuple[set[str], set[str]]:
    """Source words and target words that occur in both sets."""
    return (
        {s for s, _ in trained} & {s for s, _ in control},
        {t for _, t in trained} & {t for _, t in control},
    )


def resolve_leakage(trained: Sequence[Pair], control: Sequence[Pair], policy: LeakagePolicy) -> tuple[list[Pair], int]:
    """Refuse (``error``) or remove from the trained set (``drop``) pairs sharing a word with the control set.

    Dropping from the trained side keeps the control set, the measurement, intact.
    Returns the trained pairs kept and how many were dropped.
    """
    sources, targets = shared_words(trained, control)
    if not sources and not targets:
        return list(trained), 0
    if policy == "error":
        examples = sorted(sources)[:5] + sorted(targets)[:5]
        raise TLIError(
            f"{len(sources)} source and {len(targets)} target words occur in both the trained and the control "
            f"pairs (e.g. {examples}): the control set would not be held out. Fix the files, or set "
            "--data.leakage drop to remove those pairs from the trained set"
        )
    kept = [(s, t) for s, t in trained if s not in sources and t not in targets]
    return kept, len(trained) - len(kept)
