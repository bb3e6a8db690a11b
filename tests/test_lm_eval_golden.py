"""Our scores against lm-evaluation-harness's own log-likelihoods on tiny models (golden files).

tests/golden/lm_eval_tiny_xnli.json (score_xnli) and every tests/golden/lm_eval_tiny_<task>[_<variant>].json
with a top-level "task" (tli_lightning.tasks.score_examples: xcopa_sw, xstorycloze_sw, xnli_sw on the tiny
Llama, Gemma-2, and a Qwen2 whose tokenizer has no BOS) were written by tools/make_lm_eval_golden.py, which ran
lm-eval itself with its own task files (see each file's "commands" and "versions"); this test needs no lm-eval
installed. A new task's golden file is picked up by itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden" / "lm_eval_tiny_xnli.json"
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_model_and_tokenizer(tiny_dir, golden):
    fingerprint = {name: _sha256(Path(tiny_dir) / name) for name in golden["model_fingerprint"]}
    if fingerprint != golden["model_fingerprint"]:
        pytest.fail(
            f"the tiny model recipe changed: {fingerprint} != golden {golden['model_fingerprint']}; "
            f"regenerate {GOLDEN.relative_to(GOLDEN.parents[2])} with `{golden['regenerate']}` "
            "(lm-eval in its own venv, see the tool's docstring)"
        )
    from tli_lightning.loading import load_causal_lm

    return load_causal_lm(str(tiny_dir), quantization="none", compute_dtype="float32")


def test_golden_file_is_small_and_complete(golden):
    assert GOLDEN.stat().st_size < 100_000
    assert set(golden["languages"]) == {"sw", "en"}
    for entry in golden["languages"].values():
        assert len(entry["examples"]) == 12
        assert all(len(e["loglikelihoods"]) == 3 for e in entry["examples"])


@pytest.mark.parametrize("language", ["sw", "en"])
def test_our_candidates_are_the_strings_lm_eval_scores(golden, language):
    # The golden file's continuations come from lm-eval's own xnli_<lang> task (prompt and verbalizers).
    from tli_lightning.xnli import XNLIExample, candidate_templates, candidates

    for row in golden["languages"][language]["examples"]:
        example = XNLIExample(row["premise"], row["hypothesis"], row["label"])
        assert [" " + c for c in candidates(example, candidate_templates(language))] == row["continuations"]


@pytest.mark.parametrize("language", ["sw", "en"])
def test_score_xnli_matches_lm_eval(golden, tiny_model_and_tokenizer, language):
    import torch

    from tli_lightning.xnli import XNLIExample
    from tli_lightning.zeroshot import score_xnli

    model, tokenizer = tiny_model_and_tokenizer
    rows = golden["languages"][language]["examples"]
    examples = [XNLIExample(r["premise"], r["hypothesis"], r["label"]) for r in rows]
    theirs = torch.tensor([r["loglikelihoods"] for r in rows], dtype=torch.float64)
    ours = score_xnli(model, tokenizer, examples, language)

    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    assert diff <= TOLERANCE, f"{language}: max |loglik difference| vs lm-eval = {diff:.3e} > {TOLERANCE:g}"
    predictions = ours.argmax(1).tolist()
    expected = [r["prediction"] for r in rows]
    assert expected == theirs.argmax(1).tolist()  # the file is self-consistent
    differing = [i for i, (p, q) in enumerate(zip(predictions, expected)) if p != q]
    assert not differing, (
        f"{language}: predictions differ from lm-eval's at examples {differing} "
        f"(ours {predictions}, lm-eval {expected}; max |loglik difference| {diff:.3e})"
    )


# --- Every task of tli_lightning.tasks: golden files written by `tools/make_lm_eval_golden.py --task NAME`,
# lm-eval's own task file on the bundled demo examples (the data source replaced only).

TASK_GOLDENS = sorted(
    path.name
    for path in GOLDEN.parent.glob("lm_eval_tiny_*.json")
    if "task" in json.loads(path.read_text(encoding="utf-8"))
)
_MODELS: dict[str, tuple] = {}


def _task_golden(name: str) -> dict:
    return json.loads((GOLDEN.parent / name).read_text(encoding="utf-8"))


def _golden_model(golden: dict):
    """The model a task golden file was made on: the embedded tiny model, or a family's (without BOS)."""
    from families import build_family
    from golden_models import without_bos

    from tli_lightning.loading import load_causal_lm
    from tli_lightning.tiny_model import build_tiny_model, cache_dir

    directory = Path(build_family(golden["family"], cache_dir()) if "family" in golden else build_tiny_model())
    if golden.get("no_bos"):
        directory = without_bos(directory)
    fingerprint = {name: _sha256(directory / name) for name in golden["model_fingerprint"]}
    if fingerprint != golden["model_fingerprint"]:
        pytest.fail(f"the tiny model of {golden['task']} changed; regenerate with `{golden['regenerate']}`")
    if str(directory) not in _MODELS:
        _MODELS[str(directory)] = load_causal_lm(
            str(directory), quantization="none", compute_dtype="float32", progress=False
        )
    return _MODELS[str(directory)]


def test_every_benchmark_has_golden_files_for_several_tokenizers():
    covered = {(g["task"], g.get("family"), g.get("no_bos", False)) for g in map(_task_golden, TASK_GOLDENS)}
    for task in ("xcopa_sw", "xstorycloze_sw"):
        assert {(task, None, False), (task, "gemma2", False), (task, "qwen2", True)} <= covered
    assert ("xnli_sw", "qwen2", True) in covered


@pytest.mark.parametrize("name", TASK_GOLDENS)
def test_our_examples_are_lm_evals_requests(name):
    # The context and continuations lm-eval's own task file built from the same rows: doc_to_text,
    # doc_to_choice, the target delimiter and the target, as strings.
    from tli_lightning.tasks import get_task, load_examples

    golden = _task_golden(name)
    task = get_task(golden["task"])
    rows = golden["examples"]
    ours = load_examples(task)[: len(rows)]
    assert len(ours) == len(rows) and all(len(r["requests"]) == task.num_choices for r in rows)
    for example, row in zip(ours, rows):
        assert [example.context, list(example.choices), example.label, example.row] == [
            row["context"],
            row["choices"],
            row["label"],
            row["row"],
        ], f"{name}: the demo file changed; regenerate with `{golden['regenerate']}`"
        assert [[example.context, task.target_delimiter + c] for c in example.choices] == row["requests"]
        assert example.label == int(row["lm_eval_label"])  # lm-eval logs its target as text


@pytest.mark.parametrize("name", TASK_GOLDENS)
def test_score_examples_matches_lm_eval(name):
    import torch

    from tli_lightning.tasks import Example, score_examples

    golden = _task_golden(name)
    model, tokenizer = _golden_model(golden)
    rows = golden["examples"]
    examples = [Example(r["context"], tuple(r["choices"]), r["label"], r["row"]) for r in rows]
    theirs = torch.tensor([r["loglikelihoods"] for r in rows], dtype=torch.float64)
    ours = score_examples(model, tokenizer, examples, batch_size=4)  # several batches, mixed lengths

    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    assert diff <= TOLERANCE, f"{name}: max |loglik difference| vs lm-eval = {diff:.3e} > {TOLERANCE:g}"
    assert [r["prediction"] for r in rows] == theirs.argmax(1).tolist()  # the file is self-consistent
    assert ours.argmax(1).tolist() == theirs.argmax(1).tolist(), f"{name}: predictions differ (max |dLL| {diff:.1e})"
