"""``report.md``: the report dict as tables and the verdict in words."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tli_lightning.compare._shared import FIGURES, SETS, _fmt, _p, _spread
from tli_lightning.layers import LAYERS_NOTE


def _labels(runs: list[dict[str, Any]]) -> list[str]:
    labels = [f"{r['arm']}/version_{r['version']}" for r in runs]
    # Runs from different log roots can share name and version: then the directory tells them apart.
    return labels if len(set(labels)) == len(labels) else [r["dir"] for r in runs]


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _arrow(pair: Sequence[Any], sign: bool = False) -> str:
    return f"{_fmt(pair[0], sign=sign)} -> {_fmt(pair[1], sign=sign)}"


def format_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the verdict first, then one row per run, then the per-arm aggregates."""
    settings, runs, arms = report["settings"], report["runs"], report["arms"]
    layer, conf = settings["stats_layer"], settings["confidence"]
    labels = _labels(runs)
    languages = report["data"]["xnli_languages"]
    lines = [
        f"# Comparison of {len(runs)} run(s), {len(arms)} arm(s)",
        "",
        f"Written by `python -m tli_lightning compare`. {LAYERS_NOTE} Layer {layer} is the TLI paper's. "
        "Gains are final - baseline (the last evaluated epoch against the evaluation before training). The margin of "
        "a pair is its cosine minus its own random-pair baseline (its mean cosine to the other pairs' targets), so a "
        f"shift of every vector is not counted as alignment. {conf:.0%} CIs: percentile bootstrap of the mean gain "
        f"over pairs, {settings['bootstrap_resamples']} resamples, seed {settings['bootstrap_seed']}. Tests: paired "
        "t-test and Wilcoxon signed-rank (scipy defaults) on the same pairs; XNLI: exact McNemar test on the same "
        "examples.",
        "",
    ]
    if report["warnings"]:
        lines += ["## Warnings", ""] + [f"- warning: {w}" for w in report["warnings"]] + [""]

    lines += ["## Verdict", ""]
    ret = report["verdict"]["retention"]
    each = " (early-layer LoRA against each full fine-tuning arm on its own)" if ret["comparisons"] else ""
    lines += [f"**{ret['question']}** {ret['answer'].capitalize()}: {ret['words']}{each}.", ""]
    for c in ret["comparisons"]:
        lora, full, diff = c["early_lora"], c["full"], c["difference"]
        untested = "" if diff["pvalue"] is not None else " (needs 2+ runs per arm, with spread)"
        lines.append(
            f"- {lora} vs {full} ({c['full_kind']}): {c['answer']}: {c['words']}. XNLI accuracy change (final - "
            f"baseline, mean over languages) {lora} {_spread(c['acc_change'][lora], unit=' runs')}, {full} "
            f"{_spread(c['acc_change'][full], unit=' runs')}; difference {_fmt(diff['difference'], sign=True)}, "
            f"Welch's t-test p = {_p(diff['pvalue'])}{untested}; seeds {c['distinct_seeds'][lora]} vs "
            f"{c['distinct_seeds'][full]}; mean retention {lora} {_spread(c['retention'][lora], sign=False)}, "
            f"{full} {_spread(c['retention'][full], sign=False)}"
        )
    sizes = ret["examples_per_language"]
    if sizes:
        lines.append(
            f"- XNLI examples per language: {', '.join(map(str, sizes))} (one example moves accuracy by "
            f"{_fmt(1 / max(sizes), 3)} or more); per-run exact McNemar tests significant at "
            f"{settings['alpha']:.2f}: {ret['mcnemar_significant']} of {ret['mcnemar_tests']}"
        )
    lines.append("")
    ali = report["verdict"]["alignment"]
    lines.append(
        f"**{ali['question']}** {ali['answer'].capitalize()}"
        + (
            ": " + "; ".join(f"{a}: {ali['arms'][a]['words']}" for a in ali["early_lora_arms"]) + "."
            if ali["early_lora_arms"]
            else ": no early-layer LoRA run among those compared."
        )
    )
    lines.append("")
    for arm, v in ali["arms"].items():
        lines.append(
            f"- {arm} ({arms[arm]['kind']}; {v['answer']}): control margin gain at layer {layer} "
            f"{_spread(v['margin_gain'], unit=' runs')}; raw control cosine gain "
            f"{_spread(v['cos_gain'], unit=' runs')}; "
            f"trained-pair margin gain {_spread(arms[arm]['gains']['trained']['margin'], unit=' runs')}"
        )
        for r in v["runs"]:
            m = r["margin"]
            if m:
                lines.append(
                    f"  - {r['dir']} (seed {r['seed']}): margin gain {_fmt(m['mean_gain'], sign=True)} "
                    f"[{conf:.0%} CI {_fmt(m['ci_low'], sign=True)}, {_fmt(m['ci_high'], sign=True)}], "
                    f"t-test p = {_p(m['t_pvalue'])}, Wilcoxon p = {_p(m['wilcoxon_pvalue'])}"
                )
    lines.append("")

    lines += ["## Runs", ""]
    lines += _table(
        [
            "arm",
            "run",
            "seed",
            "status",
            "adaptation",
            "kind",
            "quantization",
            "target layer",
            "final layer",
            "trainable parameters",
            "epochs",
            "steps",
        ],
        [
            [
                r["arm"],
                label,
                r["seed"],
                r["status"],
                r["adaptation"],
                r["kind"],
                r["quantization"],
                r["target_layer"],
                r["final_layer"],
                r["trainable_parameters"],
                r["alignment_epoch"],
                r["global_step"],
            ]
            for r, label in zip(runs, labels)
        ],
    )
    for which, title in (("target", "the run's target layer"), ("final", "the final layer")):
        lines += [f"## Alignment at {title}, baseline -> final", ""]
        header = ["arm", "run", "seed", "layer"] + [f"{s} {m}" for s in SETS for m in ("cos", "gap", "P@1 s2t")]
        rows = []
        for r, label in zip(runs, labels):
            a = r["alignment"][which]
            cells = [r["arm"], label, r["seed"], a["layer"]]
            for s in SETS:
                cells += (
                    [_arrow(a[s]["cos"]), _arrow(a[s]["gap"], sign=True), _arrow(a[s]["p_at_1_s2t"])]
                    if s in a
                    else ["n/a"] * 3
                )
            rows.append(cells)
        lines += _table(header, rows)

    lines += ["## Zero-shot XNLI, baseline -> final", ""]
    header = ["arm", "run", "seed"]
    for lang in languages:
        header += [f"{lang} acc", f"{lang} correct", f"{lang} retention", f"{lang} McNemar p"]
    header += ["mean retention"]
    rows = []
    for r, label in zip(runs, labels):
        cells = [r["arm"], label, r["seed"]]
        for lang in languages:
            x = r["xnli"][lang]
            counts = f"{x['mcnemar']['baseline_correct']}/{x['n']} -> {x['mcnemar']['final_correct']}/{x['n']}"
            cells += [_arrow(x["acc"]), counts, _fmt(x["retention"]), _p(x["mcnemar"]["pvalue"])]
        rows.append(cells + [_fmt(r["retention_mean"])])
    lines += _table(header, rows)

    lines += [
        "## Paired statistics per run (per-pair, baseline vs final)",
        "",
        "quantity `cos`: the pair's cosine; `margin`: cosine minus its random-pair baseline.",
        "",
    ]
    header = [
        "arm",
        "run",
        "seed",
        "set",
        "layer",
        "quantity",
        "pairs",
        "mean baseline",
        "mean final",
        "mean gain",
        f"{conf:.0%} CI",
        "t (p)",
        "Wilcoxon W (p)",
    ]
    rows = []
    for r, label in zip(runs, labels):
        for layer_key, sets in r["paired"].items():
            for s, quantities in sets.items():
                for q, st in quantities.items():
                    t = (
                        "n/a"
                        if st["t_statistic"] is None and st["t_pvalue"] is None
                        else f"{_fmt(st['t_statistic'], 2)} ({_p(st['t_pvalue'])})"
                    )
                    w = (
                        "not computable"
                        if st["wilcoxon_pvalue"] is None
                        else f"{_fmt(st['wilcoxon_statistic'], 1)} ({_p(st['wilcoxon_pvalue'])})"
                    )
                    rows.append(
                        [
                            r["arm"],
                            label,
                            r["seed"],
                            s,
                            layer_key,
                            q,
                            st["n"],
                            _fmt(st["mean_baseline"]),
                            _fmt(st["mean_final"]),
                            _fmt(st["mean_gain"], sign=True),
                            f"[{_fmt(st['ci_low'], sign=True)}, {_fmt(st['ci_high'], sign=True)}]",
                            t,
                            w,
                        ]
                    )
    lines += _table(header, rows)

    lines += ["## Arms (runs of one name aggregated over seeds: mean ± SD (n))", ""]
    header = (
        [
            "arm",
            "kind",
            "runs",
            "seeds",
            f"control margin gain L{layer}",
            f"control cos gain L{layer}",
            f"trained margin gain L{layer}",
        ]
        + [f"{lang} acc change" for lang in languages]
        + ["mean retention"]
    )
    rows = []
    for arm, a in arms.items():
        rows.append(
            [
                arm,
                a["kind"],
                len(a["runs"]),
                ", ".join(map(str, a["seeds"])),
                _spread(a["gains"]["control"]["margin"]),
                _spread(a["gains"]["control"]["cos"]),
                _spread(a["gains"]["trained"]["margin"]),
            ]
            + [_spread(a["xnli"][lang]["acc_diff"]) for lang in languages]
            + [_spread(a["retention_mean"], sign=False)]
        )
    lines += _table(header, rows)

    lines += [
        "## Figures",
        "",
        f"![control margin gain at layer {layer} against XNLI retention]({FIGURES['gain_vs_retention']})",
        "",
        f"![control-set gap per layer, baseline and final]({FIGURES['gap_per_layer']})",
        "",
    ]
    return "\n".join(lines)
