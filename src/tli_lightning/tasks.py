"""Zero-shot multiple-choice log-likelihood tasks, as data: one :class:`Task` per lm-evaluation-harness task.

A task is how to read its files, the context and the choices of an example (lm-eval's ``doc_to_text`` and
``doc_to_choice``), its target and its chance level. lm-eval 0.4 scores every such task the same way: each
choice's continuation is ``target_delimiter + choice`` (``" "``), its score the summed log-probability of the
continuation's tokens given the context (:func:`tli_lightning.zeroshot.lm_eval_pairs` says how the two are
tokenized), the prediction the argmax; metric ``acc``.

==================  =====================================================  ===============================
task                context                                                choices
==================  =====================================================  ===============================
``xnli_<lang>``     ``""`` (the candidates carry the premise)               ``premise, <question>? <word>,
                                                                           hypothesis`` for 3 words
``xcopa_<lang>``    the premise, stripped, without its last character,     both choices, first letter
                    then " " + the connector of ``question`` (sw: ``kwa    lower-cased
                    sababu`` for cause, ``kwa hiyo`` for effect)
``xstorycloze_*``   the four sentences joined by spaces                    the two endings
==================  =====================================================  ===============================

Example::

    from tli_lightning.tasks import get_task, load_examples, score_examples
    task = get_task("xcopa_sw")
    examples = load_examples(task, "demo")  # or a file (../shared/data/xcopa_sw_validation.jsonl), or the hub id
    loglik = score_examples(model, tokenizer, examples)  # [n, 2] float64
    print(task.metrics(loglik, examples)["acc"])

Adding a task: one :class:`Task` in ``TASKS`` (its ``to_example`` turns a record of its files into an
:class:`Example`), a hand-written demo file in ``demo_data/``, and a golden file from
``tools/make_lm_eval_golden.py --task NAME`` (lm-eval's own scores, checked by tests/test_lm_eval_golden.py).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tli_lightning.errors import TLIError
from tli_lightning.xnli import VERBALIZERS, _example, candidate_templates, candidates

if TYPE_CHECKING:  # only for the hints: torch and transformers are heavy to import
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Example:
    """One multiple-choice example as lm-eval scores it."""

    context: str  # lm-eval's doc_to_text ("" for XNLI: its candidates carry the premise)
    choices: tuple[str, ...]  # lm-eval's doc_to_choice, without the target delimiter
    label: int  # index of the right choice (0-based)
    row: int  # where it is in its file: the 1-based line (JSONL/TSV line number), or the hub row index


# (record, where, row, from_tsv) -> Example: ``where`` ("file:line") goes into every error; ``from_tsv`` allows
# labels written as text, since every TSV cell is text.
ToExample = Callable[[Mapping[str, Any], str, int, bool], Example]


@dataclass(frozen=True)
class Task:
    """One lm-eval multiple-choice task: its name, how to read its data, and lm-eval's prompt for it."""

    name: str  # lm-eval's task name: xnli_sw, xnli_en (all 15 XNLI languages), xcopa_sw, xstorycloze_sw
    language: str  # "sw"
    benchmark: str  # "xnli" | "xcopa" | "xstorycloze"
    num_choices: int
    demo_file: str  # bundled hand-written demo file name under src/tli_lightning/demo_data/ ("" when none)
    to_example: ToExample = field(repr=False, compare=False)
    fields: str = ""  # what a record holds, for errors and --help
    hub_id: str = ""  # the Hugging Face dataset lm-eval reads
    hub_config: str = ""
    hub_split: str = ""  # the split lm-eval scores
    lm_eval_yaml: str = ""  # lm-eval's own task file, relative to lm_eval/tasks/ (tools/make_lm_eval_golden.py)
    target_delimiter: str = " "

    def read(self, path: str | Path) -> list[Example]:
        """A local JSONL (one object per line) or TSV (a header row) file; bad input is a TLIError at file:line."""
        examples = [self.to_example(r, where, row, tsv) for r, where, row, tsv in read_records(path, self.name)]
        if not examples:
            raise TLIError(f"{path}: no examples found")
        return examples

    @property
    def chance(self) -> float:
        return 1 / self.num_choices

    def __reduce__(self) -> Any:
        # A registered task pickles as its name (its to_example is a closure, which pickle cannot carry):
        # checkpoints, DDP broadcasts and spawned workers get the same definition back.
        if TASKS.get(self.name) is self:
            return (get_task, (self.name,))
        return super().__reduce__()

    def metrics(self, loglikelihoods: torch.Tensor, examples: Sequence[Example]) -> dict[str, float | int]:
        """lm-eval's ``acc`` (argmax of the log-likelihoods), with correct, n and macro F1 over the choices."""
        from tli_lightning.zeroshot import classification_scores

        predictions = loglikelihoods.argmax(dim=1).tolist()
        return classification_scores(predictions, [e.label for e in examples], num_classes=self.num_choices)


def read_records(path: str | Path, what: str = "data") -> Iterator[tuple[dict, str, int, bool]]:
    """``(record, "file:line", line, from_tsv)`` per example of a JSONL or TSV (``.tsv``, ``.txt``) file.

    JSONL: blank lines are skipped; lines are split on ``\\n`` only (U+2028 and friends are legal inside a JSON
    string). TSV: a header row, no quoting (a ``"`` is text, as in fairseq's XStoryCloze files).
    """
    from tli_lightning.textfiles import read_text

    path = Path(path)
    text = read_text(path, f"{what} file")
    if path.suffix in (".tsv", ".txt"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
        for record in reader:
            yield record, f"{path}:{reader.line_num}", reader.line_num, True
        return
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise TLIError(f"{path}:{number}: not valid JSON ({error.msg}): {line.strip()[:80]!r}") from None
        if not isinstance(record, dict):
            raise TLIError(f"{path}:{number}: expected a JSON object, got {line.strip()[:80]!r}")
        yield record, f"{path}:{number}", number, False


def _require(record: Mapping[str, Any], names: Sequence[str], where: str, expected: str) -> None:
    # A short TSV row leaves its last cells None: as missing as an absent key.
    missing = [n for n in names if record.get(n) is None]
    if missing:
        raise TLIError(f"{where}: missing field {', '.join(map(repr, missing))} (expected {expected}), got {record!r}")


def _text(record: Mapping[str, Any], name: str, where: str) -> str:
    value = record[name]
    if not isinstance(value, str) or not value.strip():
        raise TLIError(f"{where}: {name} must be a non-empty string, got {value!r}")
    return value


def _label(record: Mapping[str, Any], name: str, where: str, allowed: Mapping[int, str], from_tsv: bool) -> int:
    """An integer label among ``allowed`` (value -> meaning); "1" only from a TSV, never 1.0 nor True."""
    value = record[name]
    if from_tsv and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if type(value) is not int or value not in allowed:  # type(): True is an int to isinstance
        meanings = ", ".join(f"{v} ({m})" for v, m in allowed.items())
        raise TLIError(f"{where}: {name} must be one of {meanings}, got {record[name]!r}")
    return value


# --- XNLI ---------------------------------------------------------------------------------------------------


def _xnli(language: str) -> ToExample:
    templates = candidate_templates(language)

    def to_example(record: Mapping[str, Any], where: str, row: int, from_tsv: bool) -> Example:
        example = _example(record, where, text_labels=from_tsv)
        return Example("", tuple(candidates(example, templates)), example.label, row)

    return to_example


# --- XCOPA (lm_eval/tasks/xcopa/utils.py) ----------------------------------------------------------------------

# language -> (cause, effect) connectors, word for word as lm-eval 0.4's xcopa utils.py.
XCOPA_CONNECTORS: dict[str, tuple[str, str]] = {
    "et": ("sest", "seetõttu"),
    "ht": ("poukisa", "donk sa"),
    "it": ("perché", "quindi"),
    "id": ("karena", "maka"),
    "qu": ("imataq", "chaymi"),
    "sw": ("kwa sababu", "kwa hiyo"),
    "zh": ("因为", "所以"),
    "ta": ("காரணமாக", "எனவே"),
    "th": ("เพราะ", "ดังนั้น"),
    "tr": ("çünkü", "bu yüzden"),
    "vi": ("bởi vì", "vì vậy"),
}
XCOPA_FIELDS = "premise, choice1, choice2, question (cause|effect), label (0|1)"


def _xcopa(language: str) -> ToExample:
    cause, effect = XCOPA_CONNECTORS[language]

    def to_example(record: Mapping[str, Any], where: str, row: int, from_tsv: bool) -> Example:
        _require(record, ("premise", "choice1", "choice2", "question", "label"), where, XCOPA_FIELDS)
        premise = _text(record, "premise", where)
        choices = tuple(_text(record, name, where) for name in ("choice1", "choice2"))
        question = record["question"]
        if question not in ("cause", "effect"):
            raise TLIError(f"{where}: question must be 'cause' or 'effect', got {question!r}")
        label = _label(record, "label", where, {0: "choice1", 1: "choice2"}, from_tsv)
        # lm-eval drops the premise's last character (its period) and lower-cases each choice's first letter.
        context = premise.strip()[:-1] + " " + (cause if question == "cause" else effect)
        return Example(context, tuple(c[0].lower() + c[1:] for c in choices), label, row)

    return to_example


# --- XStoryCloze (lm_eval/tasks/xstorycloze/default_ar.yaml) ---------------------------------------------------

# fairseq's original TSV columns -> the Hugging Face copy's (juletxara/xstory_cloze), which lm-eval reads.
STORY_COLUMNS = {
    **{f"InputSentence{i}": f"input_sentence_{i}" for i in range(1, 5)},
    "RandomFifthSentenceQuiz1": "sentence_quiz1",
    "RandomFifthSentenceQuiz2": "sentence_quiz2",
    "AnswerRightEnding": "answer_right_ending",
}
STORY_FIELDS = (
    "input_sentence_1..4, sentence_quiz1, sentence_quiz2, answer_right_ending (1|2); or fairseq's "
    "InputSentence1..4, RandomFifthSentenceQuiz1, RandomFifthSentenceQuiz2, AnswerRightEnding"
)


def _xstorycloze(record: Mapping[str, Any], where: str, row: int, from_tsv: bool) -> Example:
    if "InputSentence1" in record:  # fairseq's names: rename, so errors name what the file says
        names = {hf: fairseq for fairseq, hf in STORY_COLUMNS.items()}
    else:
        names = {hf: hf for hf in STORY_COLUMNS.values()}
    _require(record, list(names.values()), where, STORY_FIELDS)
    sentences = [_text(record, names[f"input_sentence_{i}"], where) for i in range(1, 5)]
    endings = tuple(_text(record, names[f"sentence_quiz{i}"], where) for i in (1, 2))
    answer = _label(record, names["answer_right_ending"], where, {1: "first ending", 2: "second ending"}, from_tsv)
    # Jinja's join(' ') of the raw cells, and the raw endings: lm-eval strips nothing.
    return Example(" ".join(sentences), endings, answer - 1, row)


XSTORYCLOZE_LANGUAGES = ("ar", "en", "es", "eu", "hi", "id", "my", "ru", "sw", "te", "zh")


def _tasks() -> dict[str, Task]:
    demo = {"xnli_sw": "xnli_sw.jsonl", "xnli_en": "xnli_en.jsonl", "xcopa_sw": "xcopa_sw.jsonl"}
    demo["xstorycloze_sw"] = "xstorycloze_sw.tsv"
    tasks = [
        Task(
            f"xnli_{lang}",
            lang,
            "xnli",
            3,
            demo.get(f"xnli_{lang}", ""),
            _xnli(lang),
            fields="premise, hypothesis, label (0 entailment | 1 neutral | 2 contradiction)",
            hub_id="facebook/xnli",
            hub_config=lang,
            hub_split="validation",
            lm_eval_yaml=f"xnli/xnli_{lang}.yaml",
        )
        for lang in VERBALIZERS
    ]
    tasks += [
        Task(
            f"xcopa_{lang}",
            lang,
            "xcopa",
            2,
            demo.get(f"xcopa_{lang}", ""),
            _xcopa(lang),
            fields=XCOPA_FIELDS,
            hub_id="cambridgeltl/xcopa",
            hub_config=lang,
            hub_split="test",
            lm_eval_yaml=f"xcopa/default_{lang}.yaml",
        )
        for lang in XCOPA_CONNECTORS
    ]
    tasks += [
        Task(
            f"xstorycloze_{lang}",
            lang,
            "xstorycloze",
            2,
            demo.get(f"xstorycloze_{lang}", ""),
            _xstorycloze,
            fields=STORY_FIELDS,
            hub_id="juletxara/xstory_cloze",
            hub_config=lang,
            hub_split="eval",
            lm_eval_yaml=f"xstorycloze/default_{lang}.yaml",
        )
        for lang in XSTORYCLOZE_LANGUAGES
    ]
    return {task.name: task for task in tasks}


TASKS: dict[str, Task] = _tasks()


def hub_columns(record: Mapping[str, Any], from_tsv: bool) -> dict:
    """A row of one of our files as the hub dataset lm-eval reads has it (fairseq's XStoryCloze names renamed,
    TSV labels made integers): what a local lm-eval task (``dataset_path: json``) must be given."""
    row = {STORY_COLUMNS.get(k, k): v for k, v in record.items()}
    if "InputStoryid" in row:
        row["story_id"] = row.pop("InputStoryid")
    for name in ("label", "answer_right_ending"):
        if from_tsv and isinstance(row.get(name), str) and row[name].strip().isdigit():
            row[name] = int(row[name])
    return row


def lm_eval_task_yaml(task: Task, name: str, lm_eval_tasks: str | Path, data_file: str | Path) -> str:
    """An lm-eval task ``name`` that is lm-eval's own task file for ``task`` (included, under the installed
    ``lm_eval/tasks`` folder ``lm_eval_tasks``) reading the local JSONL ``data_file`` (rows as
    :func:`hub_columns` gives them) as the split lm-eval scores; every other split it names is switched off."""
    others = ["training_split: null"] + (["validation_split: null"] if task.hub_split == "test" else [])
    lines = [
        f"include: {Path(lm_eval_tasks) / task.lm_eval_yaml}",
        f"task: {name}",
        "dataset_path: json",
        "dataset_name: null",
        "dataset_kwargs:",
        "  data_files:",
        f"    {task.hub_split}: {data_file}",
        *others,
        "",
    ]
    return "\n".join(lines)


def get_task(name: str) -> Task:
    """The task lm-eval calls ``name``; an unknown name is a TLIError listing the known ones."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise TLIError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def is_local(source: str) -> bool:
    """Whether ``source`` names a local file (rather than a hub id)."""
    return Path(source).exists() or source.endswith((".jsonl", ".json", ".tsv", ".txt")) or "/" not in source


def load_examples(task: Task | str, source: str = "demo", split: str | None = None) -> list[Example]:
    """The examples of ``task`` from ``source``: ``"demo"`` (the bundled hand-written file), a local JSONL/TSV
    file (``{lang}`` in it is replaced by the task's language), or a Hugging Face dataset id read with
    ``datasets`` (``split`` defaults to the split lm-eval scores)."""
    task = get_task(task)
    if source == "demo":
        if not task.demo_file:
            with_demo = sorted(t.name for t in TASKS.values() if t.demo_file)
            raise TLIError(f"{task.name} has no bundled demo examples (tasks with one: {', '.join(with_demo)})")
        from tli_lightning.tiny_model import demo_data_path

        return task.read(demo_data_path(task.demo_file))
    source = source.replace("{lang}", task.language)
    if is_local(source):
        return task.read(source)
    split = split or task.hub_split
    from datasets import load_dataset

    try:
        rows = load_dataset(source, task.hub_config or None, split=split)
    except Exception as error:  # datasets raises many types (network, missing config, ...)
        raise TLIError(
            f"cannot load {task.name} from {source!r} ({task.hub_config}, {split}) with datasets: {error}. "
            "Offline, give a local JSONL/TSV file instead"
        ) from error
    return [task.to_example(row, f"{source}[{task.hub_config}/{split}][{i}]", i, False) for i, row in enumerate(rows)]


def score_examples(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    batch_size: int = 32,
    progress: Callable | None = None,
    target_delimiter: str = " ",
) -> torch.Tensor:
    """``[n, num_choices]`` float64: lm-eval's log-likelihood of ``target_delimiter + choice`` given each
    example's context (its tokenization: :func:`tli_lightning.zeroshot.lm_eval_pairs`). Each context runs
    once; its choices continue from its cached keys and values. ``batch_size`` counts examples."""
    from tli_lightning.zeroshot import score_contexts

    if not examples:
        raise ValueError("no examples to score")
    requests = [(e.context, [target_delimiter + c for c in e.choices]) for e in examples]
    return score_contexts(model, tokenizer, requests, batch_size=batch_size, progress=progress)
