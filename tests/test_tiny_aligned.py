"""The planted-alignment positive control `tiny-aligned` against the random negative control `tiny`, measured with
the package's own alignment code."""

from __future__ import annotations

import json

import pytest

from tli_lightning.alignment import alignment_report, embed_all_layers, words_of
from tli_lightning.lexicon import read_lexicon
from tli_lightning.loading import load_causal_lm, resolve_model_path
from tli_lightning.tiny_model import build_tiny_aligned_model, demo_data_path, lexicon_words

from cli_helpers import QUICK, cli

TARGET_LAYER = 2


@pytest.fixture(scope="module")
def aligned_dir(_isolated_cache):
    return build_tiny_aligned_model()


def _control_report(name: str) -> dict:
    model, tokenizer = load_causal_lm(name)
    pairs = read_lexicon(demo_data_path("lexicon_control.tsv")).pairs
    words = words_of({"control": pairs})
    vectors = embed_all_layers(model.eval(), tokenizer, words)
    return alignment_report(zip(vectors["plain"], vectors["with_bos"]), words, {"control": pairs})["sets"]["control"]


def test_tiny_aligned_is_the_tiny_architecture_with_every_lexicon_word_one_token(aligned_dir, tiny_dir):
    from transformers import AutoTokenizer

    assert resolve_model_path("tiny-aligned") == str(aligned_dir) != resolve_model_path("tiny")
    aligned, tiny = (json.loads((d / "config.json").read_text()) for d in (aligned_dir, tiny_dir))
    aligned.pop("vocab_size"), tiny.pop("vocab_size")  # the lexicon words' tokens: the only difference
    assert aligned == tiny
    tokenizer = AutoTokenizer.from_pretrained(aligned_dir)
    words, _ = lexicon_words()
    assert len(words) > 700 and all(len(tokenizer(w)["input_ids"]) == 2 for w in words)  # BOS + the word


def test_a_second_build_is_identical(aligned_dir, tmp_path):
    again = build_tiny_aligned_model(tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (aligned_dir / "model.safetensors").read_bytes()


def test_translation_retrieval_is_far_above_chance_on_tiny_aligned_and_not_on_tiny(aligned_dir, tiny_dir):
    planted, random = _control_report("tiny-aligned"), _control_report("tiny")
    chance = planted["chance_p_at_1"]
    assert planted["pool_candidates"] == random["pool_candidates"] == 50 and chance == pytest.approx(1 / 50)
    # Layer 0 is the embeddings themselves: the planted cosine, about 1 / sqrt(1 + 2.3^2).
    assert 0.3 < planted["cos"][0] < 0.5 and abs(random["cos"][0]) < 0.1
    # The primary endpoint finds the planted alignment far above chance, and none on the random model.
    p_planted, p_random = planted["csls_p_at_1"][TARGET_LAYER], random["csls_p_at_1"][TARGET_LAYER]
    assert p_planted > 10 * chance and p_random < 5 * chance, (p_planted, p_random)
    assert p_planted < 1.0  # not perfect: training has room to show a gain
    assert planted["gap"][TARGET_LAYER] > 5 * random["gap"][TARGET_LAYER] > 0


@pytest.mark.slow
def test_the_default_fit_runs_on_tiny_aligned(tmp_path, aligned_dir):
    result = cli(["fit", "--model.model_name_or_path", "tiny-aligned", "--trainer.max_epochs", "1", *QUICK], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "logs" / "demo" / "version_0" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["model"]["model_name_or_path"] == "tiny-aligned"
    control = summary["measurements"]["alignment"]["layers"][str(TARGET_LAYER)]["control"]
    # The baseline the run measured (NF4, the default) finds it too, against the chance of the shared pool.
    assert control["csls_p_at_1"][0] > 10 * control["chance_p_at_1"]
