import collections

import pytest

from tli_lightning.errors import TLIError
from tli_lightning.xnli import (
    VERBALIZERS,
    XNLIExample,
    candidate_templates,
    candidates,
    load_xnli,
    read_xnli_file,
    stratified_indices,
)


def test_lm_eval_candidates_for_swahili_and_english():
    example = XNLIExample("Naye akasema", "Hakusema chochote.", 2)
    assert candidates(example, candidate_templates("sw")) == [
        "Naye akasema, sahihi? Ndiyo, Hakusema chochote.",
        "Naye akasema, sahihi? Hivyo, Hakusema chochote.",
        "Naye akasema, sahihi? Hapana, Hakusema chochote.",
    ]
    assert candidates(XNLIExample("P", "H", 0), candidate_templates("en"))[1] == "P, right? Also, H"
    assert len(VERBALIZERS) == 15


def test_unknown_language():
    with pytest.raises(TLIError, match="no lm-eval XNLI verbalizers for language 'xx'"):
        candidate_templates("xx")


def test_jsonl_and_tsv_and_errors(tmp_path):
    (tmp_path / "x_en.jsonl").write_text('{"premise": "a", "hypothesis": "b", "label": 1}\n\n', encoding="utf-8")
    (tmp_path / "x.tsv").write_text("premise\thypothesis\tlabel\na\tb\t2\n", encoding="utf-8")
    assert load_xnli(str(tmp_path / "x_{lang}.jsonl"), "en") == [XNLIExample("a", "b", 1)]
    assert read_xnli_file(tmp_path / "x.tsv") == [XNLIExample("a", "b", 2)]
    (tmp_path / "bad.jsonl").write_text(
        '{"premise": "a", "hypothesis": "b", "label": 0}\n{"premise": "a", "hypothesis": "b", "label": 5}\n',
        encoding="utf-8",
    )
    with pytest.raises(TLIError, match=r"bad.jsonl:2: label must be 0 .* got 5"):
        read_xnli_file(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(TLIError, match=r"broken.jsonl:1: not valid JSON"):
        read_xnli_file(tmp_path / "broken.jsonl")


def test_stratified_subsample_keeps_proportions_order_and_seed():
    labels = [0] * 60 + [1] * 30 + [2] * 10
    chosen = stratified_indices(labels, 20, seed=0)
    assert chosen == sorted(chosen) and len(chosen) == 20
    assert collections.Counter(labels[i] for i in chosen) == {0: 12, 1: 6, 2: 2}
    assert stratified_indices(labels, 20, seed=0) == chosen
    assert stratified_indices(labels, 20, seed=1) != chosen
    assert stratified_indices(labels, None, seed=0) == list(range(100))


def test_real_xnli_files_are_parallel(shared_data):
    sw = read_xnli_file(shared_data / "xnli_sw_validation.jsonl")
    en = read_xnli_file(shared_data / "xnli_en_validation.jsonl")
    assert len(sw) == len(en) == 2490
    assert [e.label for e in sw] == [e.label for e in en]
    assert collections.Counter(e.label for e in sw) == {0: 830, 1: 830, 2: 830}


def test_hub_source_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        TLIError, match=r"cannot load XNLI 'facebook/xnli' \(sw, validation\).*point xnli_source at local files"
    ):
        load_xnli("facebook/xnli", "sw")
