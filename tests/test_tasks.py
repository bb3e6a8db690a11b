"""tli_lightning.tasks: the three benchmarks' files, lm-eval's prompts, its tokenization, and the scorer.

Agreement with lm-eval itself is tests/test_lm_eval_golden.py's (golden files of lm-eval's own scores); here
the pieces are checked against direct transcriptions of lm-eval 0.4's code, one request at a time.
"""

from __future__ import annotations

import json

import pytest
import torch

from tli_lightning.errors import TLIError
from tli_lightning.tasks import TASKS, Example, get_task, load_examples, score_examples

from cli_helpers import run_main

XCOPA_ROW = {"premise": "Mvua ilinyesha.", "choice1": "Barabara ililowa.", "choice2": "Jua liliwaka.", "label": 0}
STORY = ["Juma aliamka.", "Alioga.", "Alivaa nguo.", "Alikwenda kazini."]
FAIRSEQ = [
    "InputStoryid",
    "InputSentence1",
    "InputSentence2",
    "InputSentence3",
    "InputSentence4",
    "RandomFifthSentenceQuiz1",
    "RandomFifthSentenceQuiz2",
    "AnswerRightEnding",
]
HF = [
    "story_id",
    "input_sentence_1",
    "input_sentence_2",
    "input_sentence_3",
    "input_sentence_4",
    "sentence_quiz1",
    "sentence_quiz2",
    "answer_right_ending",
]


def _jsonl(path, *records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _tsv(path, header, *rows):
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def test_the_task_names_are_lm_evals():
    assert {"xnli_sw", "xnli_en", "xcopa_sw", "xstorycloze_sw"} <= set(TASKS)
    assert sum(t.benchmark == "xnli" for t in TASKS.values()) == 15
    assert (get_task("xcopa_sw").num_choices, get_task("xcopa_sw").chance) == (2, 0.5)
    assert get_task("xnli_sw").chance == pytest.approx(1 / 3)
    with pytest.raises(TLIError, match=r"unknown task 'copa_sw'; known: .*xcopa_sw.*xnli_en.*xstorycloze_sw"):
        get_task("copa_sw")


def test_tasks_and_examples_pickle():
    import pickle

    task = get_task("xcopa_sw")
    assert pickle.loads(pickle.dumps(task)) is task
    examples = load_examples(task)
    assert pickle.loads(pickle.dumps(examples)) == examples


def test_xcopa_context_and_choices_are_lm_evals(tmp_path):
    # lm_eval/tasks/xcopa/utils.py: premise.strip()[:-1] + " " + connector; choice[0].lower() + choice[1:].
    path = _jsonl(
        tmp_path / "x.jsonl",
        {**XCOPA_ROW, "question": "effect"},
        {**XCOPA_ROW, "premise": " Mvua ilinyesha!  ", "question": "cause", "label": 1, "idx": 7},
    )
    first, second = get_task("xcopa_sw").read(path)
    assert first == Example("Mvua ilinyesha kwa hiyo", ("barabara ililowa.", "jua liliwaka."), 0, 1)
    assert (second.context, second.label, second.row) == ("Mvua ilinyesha kwa sababu", 1, 2)
    assert get_task("xcopa_it").read(path)[0].context == "Mvua ilinyesha quindi"


def test_xstorycloze_reads_fairseq_tsv_and_the_hub_columns_as_jsonl_or_tsv(tmp_path):
    task = get_task("xstorycloze_sw")
    fairseq = task.read(_tsv(tmp_path / "f.tsv", FAIRSEQ, ["id1", *STORY, "Alichelewa.", "Aliruka angani.", 1]))
    hf_tsv = task.read(_tsv(tmp_path / "h.tsv", HF, ["id1", *STORY, "Alichelewa.", "Aliruka angani.", 1]))
    hf_jsonl = task.read(
        _jsonl(
            tmp_path / "h.jsonl",
            dict(zip(HF, ["id1", *STORY, "Alichelewa.", "Aliruka angani.", 2])),
        )
    )
    expected = Example(" ".join(STORY), ("Alichelewa.", "Aliruka angani."), 0, 2)
    assert fairseq == hf_tsv == [expected]  # line 2: the header is line 1
    assert hf_jsonl == [Example(expected.context, expected.choices, 1, 1)]


def test_xnli_is_an_empty_context_and_lm_evals_candidates(tmp_path):
    path = _tsv(tmp_path / "x.tsv", ["premise", "hypothesis", "label"], ["Mvua ilinyesha.", "Kulikuwa na maji.", 0])
    assert get_task("xnli_sw").read(path) == [
        Example(
            "",
            tuple(f"Mvua ilinyesha., sahihi? {w}, Kulikuwa na maji." for w in ("Ndiyo", "Hivyo", "Hapana")),
            0,
            2,
        )
    ]


@pytest.mark.parametrize(
    ("task", "line", "message"),
    [
        ("xcopa_sw", {**XCOPA_ROW, "question": "cause", "label": 2}, r"x.jsonl:2: label must be one of 0 .*, got 2"),
        ("xcopa_sw", {**XCOPA_ROW, "question": "cause", "label": "1"}, r"x.jsonl:2: label must be one of .*got '1'"),
        ("xcopa_sw", {**XCOPA_ROW, "question": "cause", "choice2": " "}, r"x.jsonl:2: choice2 must be a non-empty"),
        ("xcopa_sw", {**XCOPA_ROW, "question": "why"}, r"x.jsonl:2: question must be 'cause' or 'effect', got 'why'"),
        ("xcopa_sw", XCOPA_ROW, r"x.jsonl:2: missing field 'question' \(expected premise, choice1"),
        ("xstorycloze_sw", dict(zip(HF, ["i", *STORY, "a", "b", 3])), r"x.jsonl:2: answer_right_ending must be one"),
        ("xstorycloze_sw", dict(zip(HF, ["i", *STORY, "", "b", 1])), r"x.jsonl:2: sentence_quiz1 must be a non-empty"),
        ("xnli_sw", {"premise": "a", "hypothesis": "b", "label": 3}, r"x.jsonl:2: label must be 0 \(entailment\)"),
    ],
)
def test_bad_rows_are_named_by_file_line_and_value(tmp_path, task, line, message):
    good = {
        "xcopa_sw": {**XCOPA_ROW, "question": "cause"},
        "xstorycloze_sw": dict(zip(HF, ["i", *STORY, "a", "b", 1])),
        "xnli_sw": {"premise": "a", "hypothesis": "b", "label": 0},
    }[task]
    with pytest.raises(TLIError, match=message):
        get_task(task).read(_jsonl(tmp_path / "x.jsonl", good, line))


def test_bad_tsv_rows_name_their_line(tmp_path):
    short = _tsv(tmp_path / "s.tsv", FAIRSEQ, ["i", *STORY, "a", "b", 1], ["i", *STORY, "a"])
    with pytest.raises(TLIError, match=r"s.tsv:3: missing field 'RandomFifthSentenceQuiz2', 'AnswerRightEnding'"):
        get_task("xstorycloze_sw").read(short)
    wrong = _tsv(tmp_path / "w.tsv", FAIRSEQ, ["i", *STORY, "a", "b", 0])
    with pytest.raises(TLIError, match=r"w.tsv:2: AnswerRightEnding must be one of 1 .*, got '0'"):
        get_task("xstorycloze_sw").read(wrong)


def test_the_bundled_demo_files_read_cleanly_and_use_both_labels():
    for name in ("xnli_sw", "xnli_en", "xcopa_sw", "xstorycloze_sw"):
        examples = load_examples(name)
        assert len(examples) >= 30 and {e.label for e in examples} == set(range(get_task(name).num_choices))
    with pytest.raises(TLIError, match="xcopa_it has no bundled demo examples"):
        load_examples("xcopa_it")


def test_the_real_files_read_with_lm_evals_prompts(shared_data):
    xcopa = load_examples("xcopa_sw", str(shared_data / "xcopa_sw_validation.jsonl"))
    stories = load_examples("xstorycloze_sw", str(shared_data / "xstorycloze_sw_train.tsv"))
    assert (len(xcopa), len(stories)) == (100, 360)
    assert all(e.context.endswith((" kwa sababu", " kwa hiyo")) and not e.context[:-10].endswith(".") for e in xcopa)
    assert {e.label for e in xcopa} == {e.label for e in stories} == {0, 1}
    assert [e.row for e in stories[:2]] == [2, 3]


# --- lm-eval's tokenization of (context, continuation), transcribed from lm_eval/api/model.py and
# models/huggingface.py (0.4.13): loglikelihood, _encode_pair, tok_encode, prefix_token_id.


def _lm_eval_encode(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    def tok_encode(text, add_special_tokens=None):
        kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and text.startswith(tokenizer.decode(prefix)):
            kwargs["add_special_tokens"] = False
        return tokenizer.encode(text, **kwargs)

    if context == "":
        tokens = tok_encode(continuation, add_special_tokens=False)
        return ([prefix], tokens) if prefix != tokens[0] else (tokens[:1], tokens[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole, context_enc = tok_encode(context + continuation), tok_encode(context)
    return context_enc, whole[len(context_enc) :]


@pytest.fixture(scope="module")
def no_bos_tokenizer(tiny_float):
    import copy

    from tokenizers import processors

    tokenizer = copy.deepcopy(tiny_float[1])
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    tokenizer.bos_token = None
    return tokenizer


REQUESTS = [
    ("", " Mama yangu alipika wali."),
    ("", "<s> Mama"),  # the continuation starts with the prefix token (BOS): it becomes the context
    ("", "</s> Mama"),  # ... (EOS, the prefix token of a tokenizer without BOS)
    ("Mvua ilinyesha kwa hiyo", " barabara ililowa."),
    ("Mvua ilinyesha kwa hiyo ", "barabara ililowa."),  # the trailing space moves to the continuation
    ("Mvua ilinyesha kwa hi", "yo barabara"),  # a token straddles the boundary
    ("<s>Mama yangu", " alipika"),  # the text starts with BOS: no special tokens added
    ("Juma aliamka.  ", " Alioga."),
]


@pytest.mark.parametrize("bos", [True, False])
def test_our_pairs_are_lm_evals_tokens(tiny_float, no_bos_tokenizer, bos):
    from tli_lightning.zeroshot import lm_eval_pairs

    tokenizer = tiny_float[1] if bos else no_bos_tokenizer
    assert (tokenizer("Mama")["input_ids"][0] == tokenizer.bos_token_id) is bos
    expected = [_lm_eval_encode(tokenizer, c, t) for c, t in REQUESTS]
    assert lm_eval_pairs(tokenizer, REQUESTS) == expected
    # lm-eval's special case, taken: the continuation's first token is the context.
    assert expected[1 if bos else 2][0] == [tokenizer.convert_tokens_to_ids("<s>" if bos else "</s>")]


def _reference_loglikelihood(model, tokenizer, context: str, continuation: str, max_length: int) -> float:
    """lm-eval's _loglikelihood_tokens for one request: left-truncated input, the continuation's logits."""
    context_enc, continuation_enc = _lm_eval_encode(tokenizer, context, continuation)
    tokens = (context_enc + continuation_enc)[-(max_length + 1) :]
    with torch.no_grad():
        logits = model(torch.tensor([tokens[:-1]])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)[-len(continuation_enc) :]
    return logprobs.gather(1, torch.tensor(continuation_enc)[:, None]).sum().item()


EXAMPLES = [
    Example("Mvua ilinyesha kwa hiyo", ("barabara ililowa.", "jua liliwaka sana leo mchana."), 0, 1),
    Example("Juma aliamka. Alioga. Alivaa nguo. Alikwenda kazini.", ("Alichelewa.", "Aliruka"), 1, 2),
    Example("Mama", ("yangu", "yangu alipika"), 0, 3),  # the choices share their first token
    Example("Mama yangu ", ("alipika wali.", "alikula"), 1, 4),
    Example("", ("Mama yangu, sahihi? Ndiyo, Baba", "Mama yangu, sahihi? Hapana, Baba alikula"), 0, 5),
]


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_score_examples_equals_lm_evals_one_request_at_a_time(tiny_float, no_bos_tokenizer, batch_size):
    model, tokenizer = tiny_float
    for tok in (tokenizer, no_bos_tokenizer):
        ours = score_examples(model, tok, EXAMPLES, batch_size=batch_size)
        expected = [
            [_reference_loglikelihood(model, tok, e.context, " " + c, 512) for c in e.choices] for e in EXAMPLES
        ]
        torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), atol=1e-4, rtol=0)


def test_past_the_context_window_the_left_is_truncated_as_lm_eval_does(tiny_float, monkeypatch):
    from tli_lightning import zeroshot

    model, tokenizer = tiny_float
    whole = score_examples(model, tokenizer, EXAMPLES)
    monkeypatch.setattr(zeroshot, "context_length", lambda model, tokenizer: 16)
    ours = score_examples(model, tokenizer, EXAMPLES, batch_size=2)
    expected = [
        [_reference_loglikelihood(model, tokenizer, e.context, " " + c, 16) for c in e.choices] for e in EXAMPLES
    ]
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), atol=1e-4, rtol=0)
    assert not torch.allclose(ours, whole)  # truncation did happen


def test_xnli_through_score_examples_is_score_xnli(tiny_float):
    from tli_lightning.xnli import XNLIExample
    from tli_lightning.zeroshot import score_xnli

    model, tokenizer = tiny_float
    examples = load_examples("xnli_sw")[:7]
    legacy = [
        XNLIExample(e.choices[0].split(", sahihi? ")[0], e.choices[0].split("Ndiyo, ", 1)[1], e.label) for e in examples
    ]
    assert torch.equal(score_examples(model, tokenizer, examples), score_xnli(model, tokenizer, legacy, "sw"))


def test_two_choice_metrics():
    from tli_lightning.zeroshot import classification_scores

    loglik = torch.tensor([[0.0, -1.0], [-2.0, -1.0], [-1.0, 0.0], [0.0, -3.0]])
    examples = [Example("c", ("a", "b"), label, i) for i, label in enumerate([0, 1, 0, 1])]
    scores = get_task("xcopa_sw").metrics(loglik, examples)
    assert (scores["acc"], scores["correct"], scores["n"]) == (0.5, 2, 4) and scores["macro_f1"] == 0.5
    assert classification_scores([0, 1, 1], [0, 1, 0]) == classification_scores([0, 1, 1], [0, 1, 0], num_classes=2)


def test_zeroshot_command_on_a_task(tmp_path, monkeypatch, tiny_dir):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(
        [
            "zeroshot",
            "--task",
            "xstorycloze_sw",
            "--model",
            "tiny",
            "--limit",
            "4",
            "--output",
            "o.jsonl",
            "--no-progress",
        ]
    )
    assert code == 0, err[-2000:]
    lines = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    summary = json.loads(out.strip().splitlines()[-1])
    assert [(r["index"], r["row"]) for r in lines] == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert all(len(r["loglikelihoods"]) == 2 and r["prediction"] in (0, 1) for r in lines)
    correct = sum(r["prediction"] == r["label"] for r in lines)
    assert (summary["task"], summary["n"], summary["acc"], summary["chance"]) == ("xstorycloze_sw", 4, correct / 4, 0.5)


def test_zeroshot_command_refuses_a_bad_file_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _jsonl(tmp_path / "x.jsonl", {**XCOPA_ROW, "question": "cause", "label": 5})
    code, _, err = run_main(["zeroshot", "--task", "xcopa_sw", "--model", "tiny", "--data", "x.jsonl"])
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert (
        code == 2
        and len(errors) == 1
        and "x.jsonl:1: label must be one of 0 (choice1), 1 (choice2), got 5" in errors[0]
    )


def test_a_hub_source_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TLIError, match=r"cannot load xcopa_sw from 'cambridgeltl/xcopa' \(sw, test\).*give a local"):
        load_examples("xcopa_sw", "cambridgeltl/xcopa")
