"""The verdict: answers to the research question in plain words, from the per-run and per-arm numbers."""

from __future__ import annotations

from typing import Any


def _run_call(stats: dict[str, Any] | None, alpha: float) -> str:
    """``above``: gain above 0 by the CI and both tests; ``below``: CI entirely below 0; else ``includes 0``."""
    if stats is None or stats["mean_gain"] is None or stats["ci_low"] is None:
        return "n/a"
    tests = [p for p in (stats["t_pvalue"], stats["wilcoxon_pvalue"]) if p is not None]
    if stats["ci_low"] > 0 and tests and all(p < alpha for p in tests):
        return "above"
    if stats["ci_high"] < 0:
        return "below"
    return "includes 0"


def _alignment_verdict(
    runs: list[dict[str, Any]], arms: dict[str, Any], layer: int, min_seeds: int, alpha: float, confidence: float
) -> dict[str, Any]:
    per_arm: dict[str, Any] = {}
    for arm, info in arms.items():
        members = [r for r in runs if r["arm"] == arm]
        stats = [r["paired"].get(str(layer), {}).get("control", {}).get("margin") for r in members]
        cos = [r["paired"].get(str(layer), {}).get("control", {}).get("cos") for r in members]
        calls = [_run_call(s, alpha) for s in stats]
        seeds = info["distinct_seeds"]
        if not calls or "n/a" in calls:
            answer, words = "not answerable", f"no control-pair statistics at layer {layer} for every run"
        elif all(c == "above" for c in calls):
            if seeds < min_seeds:
                answer = "insufficient evidence"
                words = (
                    f"the control margin gain is above 0 in each of its {len(calls)} run(s), but {seeds} seed(s) "
                    f"is fewer than {min_seeds}: not enough to generalise"
                )
            else:
                answer, words = "yes", f"the control margin gain is above 0 in all {len(calls)} runs ({seeds} seeds)"
        elif any(c == "above" for c in calls):
            answer = "no"
            words = (
                f"no consistent alignment beyond the random-pair baseline: the control margin gain is above 0 in "
                f"only {calls.count('above')} of {len(calls)} runs"
            )
        else:
            answer = "no"
            words = "no alignment beyond the random-pair baseline on control pairs"
            if all(c == "below" for c in calls):
                words += f" (the margin over it shrank: the {confidence:.0%} CI is below 0 in every run)"
            else:
                words += f" (the {confidence:.0%} CI of the margin gain includes 0 or lies below it in every run)"
            if seeds < min_seeds:
                words += f"; with {seeds} seed(s) a small effect cannot be ruled out"
        shift = [c for c, s in zip(cos, stats) if c and s and c["ci_low"] is not None and c["ci_low"] > 0]
        if answer == "no" and shift:
            words += (
                "; the raw pair cosine did rise, but the random-pair cosine rose as much or more: a global "
                "shift of the space (anisotropy), not translation alignment"
            )
        per_arm[arm] = {
            "group": info["group"],
            "answer": answer,
            "words": words,
            "run_calls": calls,
            "margin_gain": info["gains"]["control"]["margin"],
            "cos_gain": info["gains"]["control"]["cos"],
            "runs": [
                {"dir": r["dir"], "seed": r["seed"], "margin": s, "cos": c} for r, s, c in zip(members, stats, cos)
            ],
        }
    early = [a for a, v in per_arm.items() if v["group"] == "early_lora"]
    if not early:
        answer = "not answerable"
    elif any(per_arm[a]["answer"] == "yes" for a in early):
        answer = "yes"
    elif all(per_arm[a]["answer"] == "no" for a in early):
        answer = "no"
    elif any(per_arm[a]["answer"] == "insufficient evidence" for a in early):
        answer = "insufficient evidence"
    else:
        answer = "not answerable"
    return {
        "question": "Does early-layer LoRA align translations beyond the random-pair baseline on pairs it never "
        "trained on (control set)?",
        "layer": layer,
        "answer": answer,
        "early_lora_arms": early,
        "arms": per_arm,
    }


def _retention_verdict(
    runs: list[dict[str, Any]], arms: dict[str, Any], min_seeds: int, alpha: float
) -> dict[str, Any]:
    """Early-layer LoRA against each full fine-tuning arm on its own (DESIGN.md §2: full-rank updates of the
    same blocks, and full fine-tuning of the whole model, are different comparisons)."""
    early = [a for a, v in arms.items() if v["group"] == "early_lora"]
    full = [a for a, v in arms.items() if v["group"] == "full"]
    out: dict[str, Any] = {
        "question": "Does early-layer LoRA preserve zero-shot XNLI better than full fine-tuning?",
        "measure": "per run: final - baseline XNLI accuracy, averaged over languages",
        "comparisons": [_retention_pair(runs, arms, lora, other, min_seeds, alpha) for lora in early for other in full],
        "examples_per_language": sorted({x["n"] for r in runs for x in r["xnli"].values()}),
        "mcnemar_significant": sum(x["mcnemar"]["pvalue"] < alpha for r in runs for x in r["xnli"].values()),
        "mcnemar_tests": sum(len(r["xnli"]) for r in runs),
    }
    if not out["comparisons"]:
        missing = (
            "early-layer LoRA (adaptation lora, target layer below the final one)"
            if not early
            else "full fine-tuning (adaptation full)"
        )
        out.update(answer="not answerable", words=f"no {missing} run among those compared")
    else:
        answers = {c["answer"] for c in out["comparisons"]}
        out.update(
            answer=answers.pop() if len(answers) == 1 else "mixed",
            words="; ".join(f"{c['early_lora']} vs {c['full']}: {c['answer']}" for c in out["comparisons"]),
        )
    return out


def _retention_pair(
    runs: list[dict[str, Any]], arms: dict[str, Any], lora: str, full: str, min_seeds: int, alpha: float
) -> dict[str, Any]:
    from tli_lightning.stats import welch

    test = welch(*([r["acc_change_mean"] for r in runs if r["arm"] == arm] for arm in (lora, full)))
    seeds = [arms[lora]["distinct_seeds"], arms[full]["distinct_seeds"]]
    direction = "more" if test["difference"] > 0 else "less" if test["difference"] < 0 else "as much"
    if min(seeds) < min_seeds:
        answer = "insufficient evidence"
        words = f"fewer than {min_seeds} seeds per arm ({lora}: {seeds[0]}, {full}: {seeds[1]})" + (
            "; in this sample both changed XNLI accuracy equally"
            if direction == "as much"
            else f"; in this sample early-layer LoRA kept {direction} XNLI accuracy than {full}, a difference that "
            "seed and sampling noise can explain"
        )
    elif test["pvalue"] is None or test["pvalue"] >= alpha:
        answer, words = "no", "no detectable difference (Welch's t-test not significant or not computable)"
    else:
        answer = "yes" if test["difference"] > 0 else "no"
        words = f"early-layer LoRA kept {direction} XNLI accuracy than {full} (Welch's t-test)"
    return {
        "early_lora": lora,
        "full": full,
        "full_kind": arms[full]["kind"],
        "answer": answer,
        "words": words,
        "difference": test,
        "distinct_seeds": dict(zip((lora, full), seeds)),
        "acc_change": {arm: arms[arm]["acc_change_mean"] for arm in (lora, full)},
        "retention": {arm: arms[arm]["retention_mean"] for arm in (lora, full)},
    }
