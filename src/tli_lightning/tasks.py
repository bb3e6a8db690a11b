"""Zero-shot multiple-choice tasks as data (XNLI for now; XCOPA and XStoryCloze are being added)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tli_lightning.errors import TLIError
from tli_lightning.xnli import VERBALIZERS, candidate_templates, candidates, load_xnli


@dataclass(frozen=True)
class Example:
    context: str
    choices: tuple[str, ...]
    label: int
    row: int


@dataclass(frozen=True)
class Task:
    name: str
    language: str
    benchmark: str
    num_choices: int
    demo_file: str

    @property
    def chance(self) -> float:
        return 1 / self.num_choices

    def read(self, path: str | Path) -> list[Example]:
        templates = candidate_templates(self.language)
        return [
            Example("", tuple(candidates(e, templates)), e.label, i + 1)
            for i, e in enumerate(load_xnli(str(path), self.language))
        ]


TASKS: dict[str, Task] = {
    f"xnli_{lang}": Task(f"xnli_{lang}", lang, "xnli", 3, f"xnli_{lang}.jsonl") for lang in VERBALIZERS
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise TLIError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def load_examples(task: Task | str, source: str = "demo") -> list[Example]:
    from tli_lightning.tiny_model import demo_data_path

    task = get_task(task) if isinstance(task, str) else task
    return task.read(demo_data_path(task.demo_file) if source == "demo" else source)


def score_examples(
    model: torch.nn.Module,
    tokenizer: object,
    examples: Sequence[Example],
    *,
    batch_size: int = 32,
    progress: Callable | None = None,
) -> torch.Tensor:
    from tli_lightning.zeroshot import score_with_shared_prefix

    groups = [[" " + c for c in e.choices] for e in examples]
    return score_with_shared_prefix(model, tokenizer, groups, batch_size=batch_size, progress=progress)
