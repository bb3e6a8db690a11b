"""``report.md``: the report dict as tables and the verdict in words."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tli_lightning.compare._shared import FIGURES, PAPER_LAYER, SETS, _fmt, _p, _spread
from tli_lightning.compare.why import why_markdown
from tli_lightning.layers import LAYERS_NOTE


def _labels(runs: list[dict[str, Any]]) -> list[str]:
    labels = [f"{r['arm']}/version_{r['version']}" for r in runs]
    # Runs from different log roots can share name and version: then the directory tells them apart.
    return labels if len(set(labels)) == len(labels) else [r["dir"] for r in runs]


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _arrow(pair: Sequence[Any], sign: bool = False, digits: int = 4) -> str:
    return f"{_fmt(pair[0], digits, sign=sign)} -> {_fmt(pair[1], digits, sign=sign)}"


PAPER = {
    # arXiv 2506.15415, its public code's figures at hidden_states[2]: mean raw cosine of translation pairs.
    "trained": (0.3211, 0.4113),
    "control": (0.3143, 0.4033),
    "pilot_bos": 0.99998,
}


def _ci(pair: Sequence[Any] | None, sign: bool = True) -> str:
    if not pair or pair[0] is None:
        return "n/a"
    if pair[0] == pair[1]:  # every resample the same: no interval, not certainty
        return "none (no spread)"
    return f"[{_fmt(pair[0], sign=sign)}, {_fmt(pair[1], sign=sign)}]"


def _verdict_lines(report: dict[str, Any]) -> list[str]:
    settings, arms = report["settings"], report["arms"]
    verdict = report["verdict"]
    lines = ["## Verdict", "", "Decision rules, the same for every question, applied per task first:", ""]
    lines += [
        f"- deciding: {verdict['rules']['decision']}",
        f"- combining: {verdict['rules']['combining']}",
        "",
    ]
    ret = verdict["retention"]
    lines += [
        f"**{ret['question']}** {ret['answer'].capitalize()}: {ret['words']}.",
        "",
        f"Effect: {ret['effect']}.",
        "",
    ]
    for c in ret["comparisons"]:
        lora, full = c["early_lora"], c["full"]
        head = f"- **{lora} vs {full}** ({c['full_kind']}): **{c['answer']}**"
        if c["answer"] == "not answerable":
            lines.append(f"{head}: {c['words']}")
            if c["different_bases"]:
                lines.append(f"  - **warning: {c['different_bases']}**")
            continue
        agreement = ""
        if c["tasks_agree"] is not None and not (c["tasks_agree"] and c["answer"] == "inconclusive"):
            agreement = "; the answered tasks agree" if c["tasks_agree"] else "; **the answered tasks do not agree**"
        lines.append(f"{head}{agreement}; seeds {c['distinct_seeds'][lora]} vs {c['distinct_seeds'][full]}.")
        for task, v in c["per_task"].items():
            lines.append(f"  - {task}{' (secondary)' if task == 'pooled' else ''}: {v['answer']}: {v['words']}")
        for lang, v in c["lm"].items():
            lines.append(
                f"  - held-out text {lang}, mean token log-likelihood change, LoRA minus {full} (beside the "
                f"retention answer): {v['answer']}: {v['words']}"
            )
        lines.append(
            f"  - descriptive: mean accuracy change {lora} {_spread(c['acc_change'][lora], unit=' runs')}, {full} "
            f"{_spread(c['acc_change'][full], unit=' runs')}; retention (final / baseline, secondary, meaningless "
            f"near chance) {lora} {_spread(c['retention'][lora], sign=False)}, {full} "
            f"{_spread(c['retention'][full], sign=False)}"
        )
        if c["different_bases"]:
            lines.append(f"  - **warning: {c['different_bases']}**")
    lines.append("")
    ali = verdict["alignment"]
    conf = ali["confidence"]
    k = round((1 - settings["confidence"]) / (1 - conf))
    bonferroni = (
        f" (each arm's CI at {conf:.2%}: Bonferroni over {k} answerable early-layer LoRA arms)" if k > 1 else ""
    )
    lines.append(f"Alignment endpoint: {ali['endpoint']}{bonferroni}.")
    lines.append("")
    for key, question in ali["questions"].items():
        lines.append(f"**{question}** {ali['answer_' + key].capitalize()}.")
        lines.append("")
        for arm, v in ali["arms"].items():
            lines.append(f"- {arm} ({arms[arm]['kind']}): {v[key]['answer']}: {v[key]['words']}")
        if not ali["arms"]:
            lines.append("- no early-layer LoRA run among those compared")
        lines.append("")
    notes = [f"- {arm}: {v['note']}" for arm, v in ali["arms"].items() if v["note"]]
    if notes:
        lines += ["Descriptive, not evidence either way:", "", *notes, ""]
    if settings["stats_layer"] != PAPER_LAYER:
        lines += [f"Note: {ali.get('note')}.", ""]
    return lines


def _context_lines(report: dict[str, Any]) -> list[str]:
    lines = ["## Context: chance, sample size, what a seed varies", ""]
    pool = report["data"].get("pool") or {}
    if pool:
        lines.append(
            f"- Retrieval: {pool.get('candidates')} candidates ({pool.get('words')}), CSLS k = {pool.get('k')}, "
            "mean-centered vectors; chance P@1 of a set is its mean of (right answers / candidates), in the tables."
        )
    for task, c in report["reasoning_context"].items():
        mde = c["mde_observed"]
        observed = (
            (f"{mde:.3f}" if mde is not None else "none at all")
            + f" when {c['discordance_observed']:.0%} of the examples change answer, as in these runs"
            if c["discordance_observed"]
            else "none: no example changed answer in these runs"
        )
        reference = ", ".join(
            f"{v:.3f} at {float(d):.0%}" if v is not None else f"none at {float(d):.0%}"
            for d, v in c["mde_at_discordance"].items()
        )
        lines.append(
            f"- {task}: chance {c['chance']:.3f} ({c['choices']} choices); {', '.join(map(str, c['examples']))} "
            "examples; the "
            f"smallest within-run accuracy change an exact McNemar test detects (alpha 0.05, 80% power): {observed} "
            f"({reference} of examples changing)."
        )
        if c["one_class_runs"]:
            lines.append(
                f"  - **{c['one_class_runs']} of {c['runs']} runs predict one choice for at least 95% of the {task} "
                "examples** (before or after training): their accuracy is the share of that choice, not reasoning."
            )
        if c["below_chance_baselines"]:
            lines.append(
                f"  - {c['below_chance_baselines']} of {c['runs']} runs start at or below chance in {task}: a "
                "retention ratio there mostly measures drift back towards chance."
            )
    varies: dict[tuple, list[str]] = {}
    for r in report["runs"]:
        if r.get("seed_varies"):
            varies.setdefault(tuple(r["seed_varies"]), [])
            if r["arm"] not in varies[tuple(r["seed_varies"])]:
                varies[tuple(r["seed_varies"])].append(r["arm"])
    if varies:
        for v, arms_of in varies.items():
            lines.append(f"- A seed varied, in {', '.join(arms_of)}: {', '.join(v)}.")
    else:
        lines.append(
            "- A seed varied: the batch order and the LoRA initialisation and dropout (these runs do not say more)."
        )
    lines.append(
        "- Items are "
        + (
            "the same in every run (paired across runs and arms)."
            if report["settings"]["paired_items"]
            else "different between runs (seeds also varied the data sample): resampled run by run."
        )
    )
    lines.append("")
    return lines


def _paper_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        "## The TLI paper, side by side (layer 2)",
        "",
        "What the paper's numbers measured: its 0.3211 -> 0.4113 (trained) and 0.3143 -> 0.4033 (control) are the "
        "mean raw cosine of translation pairs at hidden_states[2], our `cos`: a global shift of the space raises it "
        "for every pair of words, so alone it cannot tell alignment from anisotropy. Its pilot's 0.99998 is the "
        "BOS-inclusive mean (`cos_bos`): in Llama-3 models the BOS position carries a huge, nearly constant "
        "activation from block 1 on (massive activations, arXiv 2402.17762; not measured by these runs), so every "
        "BOS-inclusive vector looks alike. The `gap` subtracts each pair's random-pair "
        "baseline but still shrinks under a shift; the primary endpoint (CSLS P@1 over the shared pool, centered) "
        "does not move under a shift or a rescaling.",
        "",
    ]
    header = ["arm (runs)", "set", "paper cos", "cos", "cos_bos", "gap", "CSLS P@1", "chance P@1"]
    rows = [
        ["paper (Lugha-Llama-8B)", name, f"{PAPER[name][0]:.4f} -> {PAPER[name][1]:.4f}", "", "", "", "", ""]
        for name in SETS
    ]
    rows.append(["paper pilot (BOS included)", "-", "", "", f"{PAPER['pilot_bos']:.5f}", "", "", ""])
    for arm in report["arms"]:
        members = [r["paper_layer"] for r in report["runs"] if r["arm"] == arm and r["paper_layer"]]
        for name in SETS:
            values = [m[name] for m in members if name in m]
            if not values:
                continue

            def mean(metric: str, values: list = values) -> str:
                pairs = [v[metric] for v in values]
                return f"{sum(p[0] for p in pairs) / len(pairs):.4f} -> {sum(p[1] for p in pairs) / len(pairs):.4f}"

            rows.append(
                [
                    f"{arm} ({len(values)})",
                    name,
                    "",
                    mean("cos"),
                    mean("cos_bos"),
                    mean("gap"),
                    mean("csls_p_at_1"),
                    _fmt(values[0]["chance_p_at_1"]),
                ]
            )
    return lines + _table(header, rows)


def format_markdown(report: dict[str, Any]) -> str:
    """``report.md``: what was compared, the verdict with its rules, context, then tables per run and arm."""
    settings, runs, arms = report["settings"], report["runs"], report["arms"]
    layer, conf = settings["stats_layer"], settings["confidence"]
    labels = _labels(runs)
    tasks = report["data"]["tasks"]
    lines = [
        f"# Comparison of {len(runs)} run(s), {len(arms)} arm(s)",
        "",
        f"Written by `python -m tli_lightning compare`. {LAYERS_NOTE} Layer {layer} is the TLI paper's. Gains are "
        "final - baseline (the last evaluated epoch against the evaluation before training).",
        "",
        f"**Primary endpoints.** Alignment: {report['primary_endpoints']['alignment']}, at layer {layer}. Retention: "
        f"{report['primary_endpoints']['retention']}. Everything else in this report is secondary and descriptive.",
        "",
    ]
    if report["warnings"]:
        lines += ["## Warnings", ""] + [f"- warning: {w}" for w in report["warnings"]] + [""]
    lines += _what_was_compared(report)
    lines += _verdict_lines(report)
    lines += _context_lines(report)
    lines += _paper_lines(report)

    lines += ["## Primary endpoint per run: control and trained CSLS P@1, baseline -> final", ""]
    header = [
        "arm",
        "run",
        "seed",
        "set",
        "layer",
        "queries (clusters)",
        "P@1",
        "chance",
        "gain",
        f"{conf:.0%} CI",
        "McNemar p",
        "Holm p",
        "MRR",
    ]
    rows = []
    for r, label in zip(runs, labels):
        holm_p = {t["test"]: t["holm_p"] for t in r["tests"]}
        for layer_key, sets in r["endpoint"].items():
            for name, e in sets.items():
                rows.append(
                    [
                        r["arm"],
                        label,
                        r["seed"],
                        name,
                        layer_key,
                        f"{e['queries']} ({e['clusters']})",
                        _arrow(e["p_at_1"]),
                        _fmt(e["chance_p_at_1"]),
                        _fmt(e["gain"], sign=True),
                        _ci(e["gain_ci"]),
                        _p(e["mcnemar"]["pvalue"]),
                        _p(holm_p.get(f"CSLS P@1 {name} L{layer_key}, McNemar")),
                        _arrow(e["mrr"]),
                    ]
                )
    lines += _table(header, rows)
    excluded = sorted({e["identical_excluded"] for r in runs for sets in r["endpoint"].values() for e in sets.values()})
    lines += [
        "Queries: the set's distinct source words (a word with several translations is one query, right when any "
        "of them ranks first); clusters: queries linked through shared words, resampled together. Identical-string "
        f"pairs (the same word on both sides) left out of the endpoint: {', '.join(map(str, excluded))} per set.",
        "",
    ]

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
            "learning rate",
            "base",
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
                r["learning_rate"],
                f"{r['base_model']['identity']} ({r['base_precision']})",
                r["alignment_epoch"],
                r["global_step"],
            ]
            for r, label in zip(runs, labels)
        ],
    )
    for which, title in (("target", "the run's target layer"), ("final", "the final layer")):
        lines += [f"## Alignment at {title}, baseline -> final (secondary: descriptive)", ""]
        header = ["arm", "run", "seed", "layer"] + [f"{s} {m}" for s in SETS for m in ("cos", "gap", "own-pool P@1")]
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

    lines += ["## Zero-shot tasks, baseline -> final", ""]
    header = [
        "arm",
        "run",
        "seed",
        "task",
        "chance",
        "acc",
        "correct",
        "final 95% CI",
        "macro-F1",
        "one choice",
        "retention",
        "McNemar p",
        "Holm p",
    ]
    rows = []
    for r, label in zip(runs, labels):
        holm_p = {t["test"]: t["holm_p"] for t in r["tests"]}
        for task in tasks:
            x = r["reasoning"][task]
            counts = f"{x['mcnemar']['baseline_correct']}/{x['n']} -> {x['mcnemar']['final_correct']}/{x['n']}"
            rows.append(
                [
                    r["arm"],
                    label,
                    r["seed"],
                    task,
                    _fmt(x["chance"]),
                    _arrow(x["acc"]),
                    counts,
                    _ci(x["acc_ci"][1], sign=False),
                    _arrow(x["macro_f1"]),
                    " -> ".join("yes" if f else "no" for f in x["one_class"]),
                    _fmt(x["retention"]),
                    _p(x["mcnemar"]["pvalue"]),
                    _p(holm_p.get(f"{task} accuracy, McNemar")),
                ]
            )
    lines += [
        "Retention (final / baseline accuracy) is secondary: near chance it is meaningless. One choice: the run "
        "predicts one choice for at least 95% of the examples (before -> final).",
        "",
    ]
    lines += _table(header, rows)
    languages = report["data"].get("lm_languages") or []
    if languages:
        lines += [
            "## Held-out text, baseline -> final",
            "",
            "Mean token log-likelihood (total / tokens) of each language's held-out texts; the change's CI and tests "
            "pair each text's own mean token log-likelihood before and after training.",
            "",
        ]
        header = ["arm", "run", "seed", "language", "texts", "tokens", "token log-likelihood", "perplexity"]
        header += ["per-text change, 95% CI", "t-test p", "Wilcoxon p", "Holm p"]
        rows = []
        for r, label in zip(runs, labels):
            holm_p = {t["test"]: t["holm_p"] for t in r["tests"]}
            for lang in languages:
                x = r["lm"].get(lang)
                if x is None:
                    continue
                st = x["per_text"]
                rows.append(
                    [
                        r["arm"],
                        label,
                        r["seed"],
                        lang,
                        x["texts"],
                        x["tokens"],
                        _arrow(x["token_loglikelihood"]),
                        _arrow(x["perplexity"], digits=2),
                        f"{_fmt(st['mean_gain'], sign=True)} {_ci((st['ci_low'], st['ci_high']))}",
                        _p(st["t_pvalue"]),
                        _p(st["wilcoxon_pvalue"]),
                        _p(holm_p.get(f"held-out text {lang} token log-likelihood, t-test")),
                    ]
                )
        lines += _table(header, rows)
    lines += [
        "## Every test of each run, Holm-adjusted within the run",
        "",
        "Tests of `cos` and `margin` say the space moved, not that translations did (they are not shift-invariant).",
        "",
    ]
    alpha = settings["alpha"]
    for r, label in zip(runs, labels):
        primary = next((t for t in r["tests"] if t["primary"]), None)
        significant = [t["test"] for t in r["tests"] if t["holm_p"] is not None and t["holm_p"] < alpha]
        family = sum(t["p"] is not None for t in r["tests"])
        first = f"{primary['test']}: p = {_p(primary['p'])}, Holm p = {_p(primary['holm_p'])}" if primary else "n/a"
        lines.append(
            f"- {label} (seed {r['seed']}): {family} tests (Holm's family); primary {first}; significant after Holm at "
            f"{alpha:.2f}: {len(significant)}" + (f" ({'; '.join(significant)})" if significant else "")
        )
    lines.append("")

    lines += [
        "## Paired statistics per run (per-pair, baseline vs final; secondary)",
        "",
        "quantity `cos`: the pair's cosine; `margin`: cosine minus its random-pair baseline. Neither is invariant to "
        "a shift of the vectors (the margin shrinks under one); pairs sharing a word are not independent here.",
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
            "base",
            "learning rates",
            f"control CSLS P@1 gain L{layer}",
            f"control margin gain L{layer}",
            f"control cos gain L{layer}",
            f"trained margin gain L{layer}",
        ]
        + [f"{task} acc change" for task in tasks]
        + [f"held-out {lang} token LL change" for lang in report["data"].get("lm_languages") or []]
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
                f"{a['base_model']} ({a['base_precision']})",
                ", ".join(f"{lr:g}" for lr in a["learning_rates"]),
                _spread(a["endpoint"]["control"]["gain"]),
                _spread(a["gains"]["control"]["margin"]),
                _spread(a["gains"]["control"]["cos"]),
                _spread(a["gains"]["trained"]["margin"]),
            ]
            + [_spread(a["reasoning"][task]["acc_diff"]) for task in tasks]
            + [
                _spread(a["lm"][lang]["change"]) if lang in a["lm"] else "n/a"
                for lang in report["data"].get("lm_languages") or []
            ]
            + [_spread(a["retention_mean"], sign=False)]
        )
    lines += _table(header, rows)
    lines += why_markdown(report)

    lines += _cost_lines(runs, labels)
    lines += [
        "## Figures",
        "",
        f"![learning vs forgetting: control CSLS P@1 gain against each task's accuracy change]({FIGURES['tradeoff']})",
        "",
        f"![control pairs per layer: CSLS P@1 against chance, and the gap]({FIGURES['per_layer']})",
        "",
        f"![zero-shot accuracy per task before and after training, with 95% CIs]({FIGURES['accuracy']})",
        "",
    ]
    return "\n".join(lines)


def _cost_lines(runs: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """What each run cost: the last session's wall time (loading, evaluations and training), the peak memory,
    and each measurement's time per evaluation (kept across resumes)."""
    measurements = sorted(
        {m for r in runs for m in (((r.get("provenance") or {}).get("timings") or {}).get("evaluations") or {})}
    )
    if not measurements:
        return []
    header = ["run", "session wall s", "peak memory GB", "peak memory kind"]
    header += [f"{m} s per evaluation (count)" for m in measurements]
    rows = []
    for r, label in zip(runs, labels):
        t = (r.get("provenance") or {}).get("timings") or {}
        peak = t.get("peak_memory_bytes")
        row = [label, _fmt(t.get("fit_wall_s"), 1), _fmt(peak / 1e9, 2) if peak else "n/a", t.get("peak_memory_kind")]
        for m in measurements:
            done = (t.get("evaluations") or {}).get(m) or []
            walls = [e["wall_s"] for e in done if e.get("wall_s") is not None]
            row.append(f"{sum(walls) / len(walls):.2f} ({len(walls)})" if walls else "n/a")
        rows.append(row)
    return ["## Cost per run", "", "Session wall time: from start to summary of the last session of the run.", ""] + (
        _table(header, rows)
    )


def _what_was_compared(report: dict[str, Any]) -> list[str]:
    """Which models, data and code: a reader of this file alone must be able to tell."""
    lines = ["## What was compared", ""]
    for arm, a in report["arms"].items():
        lines.append(
            f"- arm **{arm}**: {a['kind']}; base {a['base_model']} ({a['base_precision']}); learning rates "
            f"{', '.join(f'{lr:g}' for lr in a['learning_rates']) or 'n/a'}; {len(a['runs'])} run(s), seeds "
            f"{', '.join(map(str, a['seeds']))}"
        )
    bases: dict[str, list[str]] = {}
    for arm, a in report["arms"].items():
        bases.setdefault(a["base_precision"], []).append(arm)
    lines.append(
        "- arms by how the base is held (arms in different groups start from different models): "
        + "; ".join(f"{base}: {', '.join(names)}" for base, names in bases.items())
    )
    data = report["data"]
    counts = data.get("counts") or {}
    lines.append(
        "- data: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + "; fingerprints "
        + ", ".join(f"{k} {v}" for k, v in (data.get("fingerprint") or {}).items())
    )
    first = next((r["provenance"] for r in report["runs"] if r.get("provenance")), None)
    if first:
        files = first.get("data_files") or {}
        for key, f in files.items():
            if f:
                where = f.get("path") or f.get("source")
                lines.append(f"  - {key}: {where}" + (f" (sha256 {f['sha256'][:16]})" if f.get("sha256") else ""))
        package, libs, hw = first.get("package") or {}, first.get("libraries") or {}, first.get("hardware") or {}
        commits = sorted(
            {str(((r.get("provenance") or {}).get("package") or {}).get("git_commit")) for r in report["runs"]}
        )
        lines.append(
            f"- code: tli_lightning {package.get('version')}, git {', '.join(c[:12] for c in commits)}"
            + (" (uncommitted changes)" if package.get("git_dirty") else "")
            + "; "
            + ", ".join(f"{k} {v}" for k, v in libs.items())
        )
        lines.append(
            f"- hardware (first run): {hw.get('platform')}, {hw.get('cpu_count')} CPUs, accelerator "
            f"{' '.join([str(hw.get('accelerator')), *(hw.get('devices') or [])])}, {hw.get('world_size')} process(es)"
        )
    else:
        lines.append("- provenance: not recorded by these runs (written before tli_lightning recorded it)")
    lines.append("")
    return lines
