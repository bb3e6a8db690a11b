import pytest
import torch

from tli_lightning.xnli import XNLIExample, candidate_templates, candidates
from tli_lightning.zeroshot import classification_scores, score_xnli

EXAMPLES = [
    XNLIExample("Watoto walitembea kwenda shule asubuhi.", "Watoto walikwenda shule.", 0),
    XNLIExample("Mkulima aliuza mahindi yake sokoni.", "Mkulima alipata bei nzuri.", 1),
    XNLIExample("Duka hufungwa saa kumi na mbili jioni.", "Duka halifungwi kamwe.", 2),
    XNLIExample("Mvua.", "Jua.", 0),
]


def _reference(model, tokenizer, text: str) -> float:
    """lm-eval's definition, one sequence at a time: log P(tokens of " " + text | BOS)."""
    ids = [tokenizer.bos_token_id] + tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return sum(logprobs[t, ids[t + 1]].item() for t in range(len(ids) - 1))


@pytest.mark.parametrize("batch_size", [1, 5, 32])
def test_batched_scores_equal_one_sequence_at_a_time(tiny_float, batch_size):
    model, tokenizer = tiny_float
    scores = score_xnli(model, tokenizer, EXAMPLES, "sw", batch_size=batch_size)
    assert scores.shape == (4, 3)
    for i, example in enumerate(EXAMPLES):
        expected = [_reference(model, tokenizer, c) for c in candidates(example, candidate_templates("sw"))]
        assert scores[i].tolist() == pytest.approx(expected, abs=1e-3)


def test_custom_templates_replace_the_verbalizers(tiny_float):
    model, tokenizer = tiny_float
    templates = ("{premise} Yes {hypothesis}", "{premise} Maybe {hypothesis}", "{premise} No {hypothesis}")
    scores = score_xnli(model, tokenizer, EXAMPLES[:1], templates=templates)
    assert scores[0, 1].item() == pytest.approx(
        _reference(model, tokenizer, f"{EXAMPLES[0].premise} Maybe {EXAMPLES[0].hypothesis}"), abs=1e-3
    )


def test_accuracy_is_an_exact_fraction_and_f1_agrees_with_torchmetrics():
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    scores = classification_scores([0] * 7 + [2] * 7 + [0] * 6, [0] * 7 + [1] * 7 + [2] * 6)
    assert scores["acc"] == 7 / 20 and repr(scores["acc"]) == "0.35" and (scores["correct"], scores["n"]) == (7, 20)
    g = torch.Generator().manual_seed(0)
    for n in (1, 5, 60):
        for _ in range(20):
            predictions, labels = torch.randint(0, 3, (n,), generator=g), torch.randint(0, 3, (n,), generator=g)
            ours = classification_scores(predictions.tolist(), labels.tolist())
            assert ours["acc"] == pytest.approx(
                float(multiclass_accuracy(predictions, labels, num_classes=3, average="micro"))
            )
            assert ours["macro_f1"] == pytest.approx(
                float(multiclass_f1_score(predictions, labels, num_classes=3, average="macro")), abs=1e-6
            )


def test_shared_prefix_scoring_equals_independent_scoring(tiny_float):
    from tli_lightning.zeroshot import score_sequences, score_with_shared_prefix

    model, tokenizer = tiny_float
    groups = [
        [" Watoto walitembea shule", " Watoto walitembea sokoni leo asubuhi", " Watoto"],  # one token of its own
        [" maji", " moto", " jua"],  # nothing shared but BOS
        [" sawa sawa", " sawa sawa", " sawa sawa"],  # identical candidates
        [" Mama yangu alipika wali, sahihi? Ndiyo, Baba", " Mama yangu alipika wali, sahihi? Hapana, Baba alikula"],
    ]
    groups[3].append(" Mama yangu")
    shared = score_with_shared_prefix(model, tokenizer, groups, batch_size=3)
    independent = score_sequences(model, tokenizer, [c for g in groups for c in g]).view(len(groups), 3)
    torch.testing.assert_close(shared, independent, atol=1e-3, rtol=0)


def test_the_lm_head_in_chunks_gives_the_same_scores(tiny_float, monkeypatch):
    from tli_lightning import zeroshot

    model, tokenizer = tiny_float
    whole = score_xnli(model, tokenizer, EXAMPLES, "sw")
    monkeypatch.setattr(zeroshot, "LOGITS_PER_CHUNK", 3 * model.config.vocab_size)  # 3 positions at a time
    # Row for row the same arithmetic; only the matrix kernel may round differently for other shapes.
    torch.testing.assert_close(score_xnli(model, tokenizer, EXAMPLES, "sw"), whole, atol=1e-4, rtol=0)


def test_the_batching_plan_takes_every_group_once_and_pads_less():
    from tli_lightning.zeroshot import shared_prefix_plan

    generator = torch.Generator().manual_seed(0)
    grouped = []
    for _ in range(300):  # a shared prefix, then three own parts of one random length
        prefix = torch.randint(3, 40, (1,), generator=generator).item()
        own = torch.randint(1, 30, (1,), generator=generator).item()
        grouped.append([[7] * prefix + [j] * own for j in range(3)])
    lengths, order = shared_prefix_plan(grouped, batch_size=8)
    _, prefix_order = shared_prefix_plan(grouped, batch_size=8, window=1)
    assert sorted(order) == list(range(300)) and lengths == [g[0].count(7) for g in grouped]

    def padded(order):
        batches = [order[i : i + 8] for i in range(0, len(order), 8)]
        return sum(
            len(b) * max(lengths[g] for g in b) + 3 * len(b) * max(len(grouped[g][0]) - lengths[g] for g in b)
            for b in batches
        )

    assert padded(order) < 0.9 * padded(prefix_order)
