"""The usage examples in the public modules' docstrings run as written, on the tiny model and the bundled data.

Only placeholders a reader replaces anyway (a model path, a data file) are substituted.
"""

from __future__ import annotations

import importlib
import re
import textwrap

import pytest
import torch

from tli_lightning.tiny_model import demo_data_path

MODULES = ["representations", "alignment", "zeroshot", "tasks", "losses", "data", "drift"]


def _examples(module_name: str) -> list[str]:
    doc = importlib.import_module(f"tli_lightning.{module_name}").__doc__
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", doc + "\n")
    assert blocks, f"tli_lightning.{module_name} documents no example"
    return [textwrap.dedent(block) for block in blocks]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name, tiny_dir, tiny_float):
    from tli_lightning.lexicon import read_lexicon
    from tli_lightning.xnli import read_xnli_file

    model, tokenizer = tiny_float
    placeholders = {
        '"path/or/hub-id"': repr(str(tiny_dir)),
        '"lexicon_sw_en.tsv"': repr(str(demo_data_path("lexicon_trained.tsv"))),
        '"../shared/data/xnli_{lang}_validation.jsonl"': repr(str(demo_data_path("xnli_{lang}.jsonl"))),
    }
    names = {
        "model": model,
        "tokenizer": tokenizer,
        "pairs": read_lexicon(demo_data_path("lexicon_control.tsv")).pairs,
        "examples": read_xnli_file(demo_data_path("xnli_sw.jsonl"))[:6],
        "sw_vectors": torch.randn(8, 16, requires_grad=True),
        "en_vectors": torch.randn(8, 16, requires_grad=True),
        "premises_sw": [e.premise for e in read_xnli_file(demo_data_path("xnli_sw.jsonl"))],
        "premises_en": [e.premise for e in read_xnli_file(demo_data_path("xnli_en.jsonl"))],
        "words": ["maji", "moto", "water", "fire"],
    }
    for code in _examples(module_name):
        for placeholder, value in placeholders.items():
            code = code.replace(placeholder, value)
        exec(compile(code, f"<tli_lightning.{module_name} docstring>", "exec"), dict(names))
