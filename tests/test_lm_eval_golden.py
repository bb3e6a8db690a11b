"""score_xnli against lm-evaluation-harness's own log-likelihoods on the tiny model (a golden file).

tests/golden/lm_eval_tiny_xnli.json was written by tools/make_lm_eval_golden.py, which ran lm-eval
itself (see the file's "commands" and "versions"); this test needs no lm-eval installed.
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
