"""The verdict: answers to the research question in plain words, each from a confidence interval that counts
both sources of noise (the seeds and the benchmark's own examples), with decision rules printed beside it.

Every answer is one of four, and the rules (:data:`RULES`) are the same for every question:

- ``yes``: the CI lies entirely on the favourable side of 0;
- ``no``: it lies entirely on the other side;
- ``inconclusive``: it includes 0; the minimum detectable effect for this design is given;
- ``not answerable``: it cannot be computed (too few seeds, no spread to estimate an interval from), with
  the reason. Never "no".

Several answers to one question (tasks, comparisons, arms) combine as :data:`COMBINING` says; "mixed" is
the honest name for answers that point both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tli_lightning.compare._shared import MDE_POWER, PAPER_LAYER
from tli_lightning.compare.numbers import query_chance, query_hits, task_correct, text_loglikelihoods
from tli_lightning.compare.reading import _Run

RULES = (
    "yes: the {conf} CI of the effect lies entirely above 0; no: entirely below 0; inconclusive: it includes 0 "
    "(the minimum detectable effect, (z(1-alpha/2) + z(power {power})) x the bootstrap SE, is given); not "
    "answerable: the CI cannot be computed (fewer than {min_seeds} distinct seeds in an arm, or no spread to "
    "estimate it from), with the reason, never read as no. CIs: two-stage bootstrap, {resamples} resamples, seed "
    "{seed}: the runs (seeds) of each arm resampled with replacement, then the items ({items}); items shared by "
    "all runs are resampled with the same indices for every run (paired)."
)
COMBINING = (
    "Retention is decided per task first (each benchmark in each language): a comparison's answer combines its "
    "tasks' answers (the same answer: that answer; yes or no beside inconclusive: inconclusive; yes beside no: "
    "mixed), which also says whether the tasks agree; the examples of every task pooled are shown as secondary. "
    "Held-out text likelihood is decided per language by the same rules, beside (not inside) the retention "
    "answer. Answers that are not answerable are left out of a combination. Alignment: with k "
    "early-layer LoRA arms that have the seeds to be answered, each arm's CI is at 1 - alpha/k (Bonferroni), so "
    "the question's answer is yes when any arm's is, no when every answerable arm's is, else inconclusive."
)


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - (1 - confidence) / 2))


def decide(result: dict[str, Any] | None, reason: str | None, confidence: float) -> tuple[str, str]:
    """The answer and its words for one bootstrap result under :data:`RULES`."""
    if reason is not None:
        return "not answerable", reason
    if result is None or result["degenerate"]:
        value = "n/a" if result is None else f"{result['estimate']:+.4f}"
        return "not answerable", (
            f"no spread to estimate an interval from: every resample gives {value} (e.g. every run made the same "
            "predictions before and after training)"
        )
    low, high, estimate = result["ci_low"], result["ci_high"], result["estimate"]
    interval = f"{estimate:+.4f} [{confidence:.1%} CI {low:+.4f}, {high:+.4f}]".replace(".0%", "%")
    if low > 0:
        return "yes", f"{interval}: the interval lies above 0"
    if high < 0:
        return "no", f"{interval}: the interval lies below 0"
    mde = (_z(confidence) + _z(1 - 2 * (1 - MDE_POWER))) * result["se"]
    return "inconclusive", (
        f"{interval} includes 0; with these seeds and examples only an effect of about {mde:.3f} or more would be "
        f"detected ({MDE_POWER:.0%} power)"
    )


def _combine(answers: Sequence[str]) -> str:
    """One answer from several that each stand on their own (languages, arms): agreement or the honest mix; the
    ones that cannot be answered do not outvote those that can."""
    distinct = set(answers) - {"not answerable"}
    if not distinct:
        return "not answerable"
    answers = [a for a in answers if a != "not answerable"]
    if len(distinct) == 1:
        return answers[0]
    if distinct <= {"yes", "inconclusive"} or distinct <= {"no", "inconclusive"}:
        return "inconclusive"
    return "mixed"


def _seed_reason(arms: dict[str, Any], names: Sequence[str], min_seeds: int) -> str | None:
    short = [f"{a}: {arms[a]['distinct_seeds']}" for a in names if arms[a]["distinct_seeds"] < min_seeds]
    if short:
        return (
            f"fewer than {min_seeds} distinct seeds per arm ({', '.join(short)}): the seed noise cannot be estimated "
            "(add seeds, or lower --min-seeds knowingly)"
        )
    return None


def retention_verdict(
    runs: list[dict[str, Any]], loaded: Sequence[_Run], arms: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """Early-layer LoRA against each full fine-tuning arm on its own (DESIGN.md §2: full-rank updates of the
    same blocks, and full fine-tuning of the whole model, are different comparisons)."""
    early = [a for a, v in arms.items() if v["group"] == "early_lora"]
    full = [a for a, v in arms.items() if v["group"] == "full"]
    comparisons = [_retention_pair(runs, loaded, arms, lora, other, settings) for lora in early for other in full]
    out: dict[str, Any] = {
        "question": "Does early-layer LoRA preserve zero-shot reasoning better than full fine-tuning?",
        "effect": "per task, then pooled over tasks: the change in accuracy (final - baseline) per example, "
        "averaged over each arm's runs; early-layer LoRA's minus the full arm's (> 0: LoRA kept more)",
        "comparisons": comparisons,
        "examples_per_task": {
            t: sorted({r["reasoning"][t]["n"] for r in runs if t in r["reasoning"]}) for t in runs[0]["reasoning"]
        }
        if runs
        else {},
    }
    if not comparisons:
        missing = (
            "early-layer LoRA (adaptation lora, target layer below the final one)"
            if not early
            else "full fine-tuning (adaptation full)"
        )
        out.update(answer="not answerable", words=f"no {missing} run among those compared")
    else:
        answered = [c for c in comparisons if c["answer"] != "not answerable"]
        words = "; ".join(f"{c['early_lora']} vs {c['full']}: {c['answer']}" for c in answered)
        if len(answered) < len(comparisons):
            words += f"{'; ' if answered else ''}{len(comparisons) - len(answered)} comparison(s) not answerable"
        out.update(answer=_combine([c["answer"] for c in comparisons]), words=words)
    return out


def _retention_pair(
    runs: list[dict[str, Any]], loaded: Sequence[_Run], arms: dict[str, Any], lora: str, full: str, settings: dict
) -> dict[str, Any]:
    import numpy as np

    from tli_lightning.stats import hierarchical_bootstrap

    members = {arm: [i for i, r in enumerate(runs) if r["arm"] == arm] for arm in (lora, full)}
    languages = list(runs[members[lora][0]]["reasoning"])  # the tasks: each benchmark in each language
    changes = {
        arm: [{task: np.subtract(*reversed(task_correct(loaded[i], task))) for task in languages} for i in indices]
        for arm, indices in members.items()
    }
    reason = _seed_reason(arms, (lora, full), settings["min_seeds"])
    boot = {k: settings[k] for k in ("seed", "resamples", "confidence")}
    per_language = {}
    for lang in [*languages, "pooled"]:

        def values(arm: str, lang: str = lang) -> list[Any]:
            return [np.concatenate([c[x] for x in languages]) if lang == "pooled" else c[lang] for c in changes[arm]]

        result = hierarchical_bootstrap([values(lora), values(full)], [1, -1], paired=settings["paired"], **boot)
        answer, words = decide(result, reason, settings["confidence"])
        per_language[lang] = {"answer": answer, "words": words, "difference": result}
    answer = _combine([per_language[lang]["answer"] for lang in languages])
    each = ", ".join(f"{lang} {per_language[lang]['answer']}" for lang in languages)
    answered = [t for t in languages if per_language[t]["answer"] != "not answerable"]
    # Agreement needs two answered tasks; "agree" on nothing but inconclusive answers would read as confirmation.
    agree = len({per_language[t]["answer"] for t in answered}) == 1 if len(answered) >= 2 else None
    unanswered = [t for t in languages if t not in answered]
    every = "every task"
    if unanswered:
        every = f"every answered task ({len(answered)} of {len(languages)}; not answerable: {', '.join(unanswered)})"
    direction = {"yes": "kept more", "no": "kept less"}.get(answer)
    if answer == "not answerable":
        words = per_language[languages[0]]["words"]
    elif direction:
        words = f"early-layer LoRA {direction} zero-shot accuracy than {full} in {every}"
    elif answered and all(per_language[t]["answer"] == "inconclusive" for t in answered):
        words = f"no task answers either way: {each}"
    else:
        words = f"the tasks answer {each}"
    if len(languages) > 1 and answer != "not answerable":
        if agree is None:
            words += f"; only {answered[0]} could be answered, so whether the tasks agree cannot be said"
        elif direction or not agree:
            words += "; the answered tasks agree" if agree else "; the answered tasks do not agree"
    words += f"; pooled over tasks (secondary): {per_language['pooled']['answer']}, {per_language['pooled']['words']}"
    comparison = {
        "early_lora": lora,
        "full": full,
        "full_kind": arms[full]["kind"],
        "answer": answer,
        "words": words,
        "per_task": per_language,
        "tasks_agree": agree,
        "lm": _lm_pair(runs, loaded, members, reason, settings),
        "distinct_seeds": {arm: arms[arm]["distinct_seeds"] for arm in (lora, full)},
        "acc_change": {arm: arms[arm]["acc_change_mean"] for arm in (lora, full)},
        "retention": {arm: arms[arm]["retention_mean"] for arm in (lora, full)},
        "bases": {arm: arms[arm]["base_precision"] for arm in (lora, full)},
        "different_bases": None,
    }
    if arms[lora]["base_precision"] != arms[full]["base_precision"]:
        comparison["different_bases"] = (
            f"the arms start from different bases ({arms[lora]['base_precision']} vs {arms[full]['base_precision']}); "
            "the difference mixes adaptation with quantization: compare arms on the same base (e.g. lora_early_bf16 "
            "vs full_early) for adaptation alone"
        )
    if comparison["different_bases"] and settings["paired"]:  # the same examples: count what the bases change
        first = {arm: loaded[members[arm][0]] for arm in (lora, full)}
        differ = []
        for lang in languages:
            predictions = [np.argmax(np.asarray(r.tasks[lang][0]["loglikelihoods"]), 1) for r in first.values()]
            differ.append(f"{lang} {int(np.sum(predictions[0] != predictions[1]))} of {len(predictions[0])}")
        comparison["different_bases"] += (
            f"; examples whose baseline prediction differs between the two bases, before any training: "
            f"{', '.join(differ)} (first seeds)"
        )
    return comparison


def _lm_pair(
    runs: list[dict[str, Any]],
    loaded: Sequence[_Run],
    members: dict[str, list[int]],
    reason: str | None,
    settings: dict,
) -> dict[str, Any]:
    """Held-out text per language: the change in each text's mean token log-likelihood, early-layer LoRA's minus the
    full arm's (> 0: LoRA kept more of the language model), by the same rules as retention."""
    import numpy as np

    from tli_lightning.stats import hierarchical_bootstrap

    lora, full = members
    languages = [lang for lang in runs[members[lora][0]]["lm"] if all(lang in runs[i]["lm"] for i in members[full])]
    boot = {k: settings[k] for k in ("seed", "resamples", "confidence")}
    out = {}
    for lang in languages:
        values = [
            [np.subtract(*reversed(text_loglikelihoods(loaded[i], lang))) for i in members[arm]] for arm in (lora, full)
        ]
        result = hierarchical_bootstrap(values, [1, -1], paired=settings["paired"], **boot)
        answer, words = decide(result, reason, settings["confidence"])
        out[lang] = {"answer": answer, "words": words, "difference": result}
    return out


def alignment_verdict(
    runs: list[dict[str, Any]], loaded: Sequence[_Run], arms: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """Two questions per early-layer LoRA arm, on the primary endpoint (control CSLS P@1 at the stats layer):
    is it above chance after training, and did training raise it? With k such arms each CI is at 1 - alpha/k
    (Bonferroni), so "yes" for any one arm keeps the family-wise error at alpha."""
    import numpy as np

    from tli_lightning.stats import hierarchical_bootstrap

    layer = settings["stats_layer"]
    early = [a for a, v in arms.items() if v["group"] == "early_lora"]
    # k counts the arms that can be answered at all, which the seeds decide before any outcome is seen.
    answerable = [a for a in early if arms[a]["distinct_seeds"] >= settings["min_seeds"]]
    confidence = 1 - (1 - settings["confidence"]) / max(1, len(answerable))
    boot = {"seed": settings["seed"], "resamples": settings["resamples"], "confidence": confidence}
    per_arm: dict[str, Any] = {}
    for arm in early:
        indices = [i for i, r in enumerate(runs) if r["arm"] == arm]
        reason = _seed_reason(arms, [arm], settings["min_seeds"])
        final, start, gain, clusters, cos_moves = [], [], [], [], []
        for i in indices:
            before, after = (loaded[i].alignment[k]["sets"].get("control") for k in (0, 1))
            if before is None or after is None or layer not in loaded[i].alignment[1]["layers"]:
                reason = reason or f"{runs[i]['dir']}: no control-pair evaluation at layer {layer}"
                continue
            hits0, hits1 = query_hits(before, layer), query_hits(after, layer)
            final.append(hits1 - query_chance(after))
            start.append(hits0 - query_chance(before))
            gain.append(hits1 - hits0)
            clusters.append(np.asarray(after["query_clusters"]))
            cos_moves.append([after[m][layer] - before[m][layer] for m in ("cos", "cos_random")])
        questions = {}
        for key, values in (("beyond_chance", final), ("before_training", start), ("gain", gain)):
            result = None
            if values and reason is None:
                result = hierarchical_bootstrap([values], [1], [clusters], paired=settings["paired"], **boot)
            answer, words = decide(result, reason, confidence)
            questions[key] = {"answer": answer, "words": words, "effect": result}
        # Above chance after training says nothing about training if it was so before: say both.
        before = questions.pop("before_training")
        questions["beyond_chance"]["before_training"] = before
        if before["answer"] != "not answerable":
            questions["beyond_chance"]["words"] += f"; before training: {before['answer']}, {before['words']}"
        if before["answer"] == "yes":
            questions["beyond_chance"]["words"] += (
                "; it was above chance before any training (words sharing subword tokens, loanwords), so this "
                "is no evidence of what training did: the gain question is"
            )
        note = None
        if cos_moves:
            cos_gain, random_gain = np.mean(cos_moves, axis=0)
            if cos_gain > 0 and random_gain > 0:
                note = (
                    f"the raw pair cosine rose by {cos_gain:+.3f} and the random-pair cosine by {random_gain:+.3f}: "
                    "the whole space moved; only the retrieval endpoint says whether translations moved closer than "
                    "other words"
                )
        per_arm[arm] = {**questions, "note": note, "runs": [runs[i]["dir"] for i in indices]}
    out = {
        "questions": {
            "beyond_chance": "After early-layer LoRA, are never-trained (control) translations retrieved above chance?",
            "gain": "Did early-layer LoRA training raise the retrieval of never-trained (control) translations?",
        },
        "endpoint": f"control CSLS P@1 at layer {layer}, per query (clusters of queries sharing a word resampled "
        "together); beyond chance: final hit minus the query's chance; gain: final hit minus baseline hit",
        "layer": layer,
        "confidence": confidence,
        "early_lora_arms": early,
        "arms": per_arm,
    }
    for key in out["questions"]:
        answers = [v[key]["answer"] for v in per_arm.values()]
        out[f"answer_{key}"] = "yes" if "yes" in answers else _combine(answers) if answers else "not answerable"
        if out[f"answer_{key}"] == "mixed":  # no yes: the answerable arms say no and inconclusive
            out[f"answer_{key}"] = "inconclusive"
    out["question"] = out["questions"]["gain"]
    out["answer"] = out["answer_gain"]
    if layer != PAPER_LAYER:
        out["note"] = f"layer {layer}, not the TLI paper's layer {PAPER_LAYER}"
    return out
