"""Per-run numbers (alignment, paired statistics, zero-shot tasks, held-out text) and their aggregation per arm."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from tli_lightning.compare._shared import HEADLINE_METRICS, ONE_CLASS_SHARE, PAPER_LAYER, SETS
from tli_lightning.compare.reading import _MODEL_IGNORED, _Run


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def _kind(adaptation: Any, adapt_layers: Any, target: int, final: int) -> tuple[str, str | None]:
    """A readable description of the arm, and its group in the verdict (``early_lora``, ``full`` or none)."""
    if adaptation == "lora":
        blocks = "" if adapt_layers is None else f", blocks {adapt_layers}"
        if target < final:
            return f"early-layer LoRA{blocks}", "early_lora"
        return f"LoRA at the final layer{blocks}", None
    if adaptation == "full":
        # adapt_layers "all": every parameter the loss reaches, the final norm only when the target is the last layer.
        if adapt_layers == "all" and target >= final:
            return f"full fine-tuning, whole model: embeddings + blocks 0-{target - 1} + final norm", "full"
        blocks = f"blocks {adapt_layers}" if isinstance(adapt_layers, list) else f"blocks 0-{target - 1}"
        return f"full-rank fine-tuning, {'embeddings + ' if adapt_layers == 'all' else ''}{blocks}", "full"
    return str(adaptation), None


def _alignment_numbers(run: _Run, layer: int) -> dict[str, Any]:
    before, after = run.alignment
    return {
        name: {m: [before["sets"][name][m][layer], after["sets"][name][m][layer]] for m in HEADLINE_METRICS}
        for name in SETS
        if name in before["sets"] and name in after["sets"]
    }


def _paired_numbers(run: _Run, layer: int, bootstrap: dict[str, Any]) -> dict[str, Any]:
    """``bootstrap``: the ``seed``, ``resamples`` and ``confidence`` of :func:`~tli_lightning.stats.paired_stats`."""
    import numpy as np

    from tli_lightning.stats import paired_stats

    before, after = run.alignment
    out = {}
    for name in SETS:
        if name not in before["sets"] or name not in after["sets"]:
            continue
        cos0 = np.asarray(before["sets"][name]["per_pair_cos"], dtype=np.float64)[:, layer]
        cos1 = np.asarray(after["sets"][name]["per_pair_cos"], dtype=np.float64)[:, layer]
        rnd0 = np.asarray(before["sets"][name]["per_pair_random"], dtype=np.float64)[:, layer]
        rnd1 = np.asarray(after["sets"][name]["per_pair_random"], dtype=np.float64)[:, layer]
        out[name] = {
            "cos": paired_stats(cos1, cos0, **bootstrap),
            # The margin over each pair's own random baseline: a shift of every vector leaves it unchanged.
            "margin": paired_stats(cos1 - rnd1, cos0 - rnd0, **bootstrap),
        }
    return out


def query_hits(entry: dict[str, Any], layer: int) -> Any:
    """Per query of a set's evaluation: 1.0 if its translation ranked first at ``layer`` (CSLS), else 0.0."""
    import numpy as np

    return (np.asarray(entry["per_query_rank"], dtype=np.int64)[:, layer] == 1).astype(np.float64)


def query_chance(entry: dict[str, Any]) -> Any:
    """Per query: the chance of a hit, its number of right answers over the shared pool's size."""
    import numpy as np

    return np.asarray(entry["query_rights"], dtype=np.float64) / entry["pool_candidates"]


def task_correct(run: _Run, task: str) -> tuple[Any, Any]:
    """Per example, 1.0 where the run's prediction (argmax of the logged log-likelihoods) was right: baseline, final."""
    import numpy as np

    out = []
    for entry in run.tasks[task]:
        predicted = np.argmax(np.asarray(entry["loglikelihoods"], dtype=np.float64), axis=1)
        out.append((predicted == np.asarray(entry["labels"])).astype(np.float64))
    return out[0], out[1]


def text_loglikelihoods(run: _Run, language: str) -> tuple[Any, Any]:
    """Per held-out text, its mean token log-likelihood: baseline, final."""
    import numpy as np

    return tuple(
        np.asarray(e["per_text_loglikelihood"], dtype=np.float64) / np.asarray(e["per_text_tokens"], dtype=np.float64)
        for e in run.lm[language]
    )


def _endpoint_numbers(run: _Run, layer: int, bootstrap: dict[str, Any]) -> dict[str, Any]:
    """The primary endpoint (CSLS P@1 over the shared pool, centered vectors) baseline -> final, per set, with
    the per-query paired tests: exact McNemar on the hits, Wilcoxon (and t) on the reciprocal ranks, and the
    cluster bootstrap CI of the P@1 gain (queries sharing a word resampled together)."""
    import numpy as np

    from tli_lightning.stats import cluster_bootstrap_ci, mcnemar_exact, paired_stats

    before, after = run.alignment
    out = {}
    for name in SETS:
        if name not in before["sets"] or name not in after["sets"] or not after["sets"][name]["queries"]:
            continue
        b, a = before["sets"][name], after["sets"][name]
        hits0, hits1 = query_hits(b, layer), query_hits(a, layer)
        rr0, rr1 = (1.0 / np.asarray(e["per_query_rank"], dtype=np.float64)[:, layer] for e in (b, a))
        low, high = cluster_bootstrap_ci(hits1 - hits0, a["query_clusters"], **bootstrap)
        out[name] = {
            "p_at_1": [float(hits0.mean()), float(hits1.mean())],
            "mrr": [float(rr0.mean()), float(rr1.mean())],
            "chance_p_at_1": a["chance_p_at_1"],
            "chance_mrr": a["chance_mrr"],
            "gain": float((hits1 - hits0).mean()),
            "gain_ci": [low, high],
            "queries": len(hits0),
            "clusters": len(set(a["query_clusters"])),
            "identical_excluded": a.get("identical_excluded", 0),
            "pool_candidates": a["pool_candidates"],
            "mcnemar": mcnemar_exact(hits0.astype(bool), hits1.astype(bool)),
            "reciprocal_rank": paired_stats(rr1, rr0, **bootstrap),
        }
    return out


def _task_numbers(run: _Run, warnings: list[str], bootstrap: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from tli_lightning.stats import bootstrap_ci, mcnemar_exact

    out = {}
    for task, (base, final) in run.tasks.items():
        labels = np.asarray(final["labels"])
        # Predictions as the run made them: argmax of each example's log-likelihoods.
        predictions = [np.argmax(np.asarray(r["loglikelihoods"], dtype=np.float64), axis=1) for r in (base, final)]
        correct = [p == labels for p in predictions]
        test = mcnemar_exact(correct[0], correct[1])
        for which, logged, key in (("baseline", base, "baseline_correct"), ("final", final, "final_correct")):
            if logged.get("correct") is not None and logged["correct"] != test[key]:
                warnings.append(
                    f"{run.path}: {task} {which}: {logged['correct']} correct logged, {test[key]} "
                    "from the logged log-likelihoods; McNemar uses the latter"
                )
        choices = len(final["loglikelihoods"][0]) if final["loglikelihoods"] else 1
        majority = [float(np.bincount(p, minlength=choices).max() / len(p)) for p in predictions]
        n = final.get("n", test["n"])
        discordant = (test["only_baseline_correct"] + test["only_final_correct"]) / n if n else None
        out[task] = {
            "language": final.get("language"),
            "acc": [base["acc"], final["acc"]],
            "acc_ci": [_wilson(test["baseline_correct"], n), _wilson(test["final_correct"], n)],
            "macro_f1": [_finite(base.get("macro_f1")), _finite(final.get("macro_f1"))],
            "chance": final.get("chance", 1 / choices),
            "majority_share": majority,
            "one_class": [m >= ONE_CLASS_SHARE for m in majority],
            "correct": [base.get("correct"), final.get("correct")],
            "n": n,
            "acc_diff": final["acc"] - base["acc"],
            # Example noise of this run's change alone (the examples resampled, paired).
            "acc_diff_ci": list(bootstrap_ci(correct[1].astype(float) - correct[0].astype(float), **bootstrap)),
            "discordance": discordant,
            "retention": _finite(final.get("retention")),
            "mcnemar": test,
        }
    return out


def _lm_numbers(run: _Run, bootstrap: dict[str, Any]) -> dict[str, Any]:
    """Held-out text per language: the corpus mean token log-likelihood (total / tokens) baseline -> final, and
    the paired statistics of the per-text change of each text's own mean token log-likelihood (texts are the
    items, each weighted equally, whatever its length)."""
    from tli_lightning.stats import paired_stats

    out = {}
    for language, (base, final) in run.lm.items():
        per_text = text_loglikelihoods(run, language)
        out[language] = {
            "token_loglikelihood": [base["token_loglikelihood"], final["token_loglikelihood"]],
            "perplexity": [base["perplexity"], final["perplexity"]],
            "texts": final["texts"],
            "tokens": final["tokens"],
            "change": final["token_loglikelihood"] - base["token_loglikelihood"],
            "per_text": paired_stats(per_text[1], per_text[0], **bootstrap),
        }
    return out


def reasoning_context(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task: chance, examples, how many runs predict one class, and the smallest within-run change a
    McNemar test detects at this sample size (alpha 0.05, 80% power), at the discordance the runs showed."""
    from tli_lightning.stats import mcnemar_mde

    out = {}
    for task in runs[0]["reasoning"] if runs else []:
        entries = [r["reasoning"][task] for r in runs if task in r["reasoning"]]
        sizes = sorted({x["n"] for x in entries})
        shares = [x["discordance"] for x in entries if x["discordance"]]
        observed = sum(shares) / len(shares) if shares else None
        n = sizes[0]
        chance = entries[0]["chance"]
        out[task] = {
            "chance": chance,
            "choices": round(1 / chance),
            "examples": sizes,
            "one_class_runs": sum(any(x["one_class"]) for x in entries),
            "runs": len(entries),
            "below_chance_baselines": sum(x["acc"][0] <= chance for x in entries),
            "discordance_observed": observed,
            "mde_observed": mcnemar_mde(n, observed) if observed else None,
            "mde_at_discordance": {str(d): mcnemar_mde(n, d) for d in (0.1, 0.2)},
        }
    return out


def _wilson(correct: int, n: int, z: float = 1.959963984540054) -> list[float] | None:
    """Wilson score 95% interval of an accuracy (better than the normal one near 0, 1 and at small n)."""
    if not n:
        return None
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [centre - half, centre + half]


def _tests(entry: dict[str, Any], stats_layer: int) -> list[dict[str, Any]]:
    """Every test of one run as one family, with Holm-adjusted p-values; the primary one is marked."""
    from tli_lightning.stats import holm

    tests = []
    for layer, sets in entry["endpoint"].items():
        for name, e in sets.items():
            primary = name == "control" and int(layer) == stats_layer
            tests.append(
                {"test": f"CSLS P@1 {name} L{layer}, McNemar", "p": e["mcnemar"]["pvalue"], "primary": primary}
            )
            tests.append({"test": f"CSLS MRR {name} L{layer}, Wilcoxon", "p": e["reciprocal_rank"]["wilcoxon_pvalue"]})
    for layer, sets in entry["paired"].items():
        for name, quantities in sets.items():
            for quantity, st in quantities.items():
                tests.append({"test": f"{quantity} {name} L{layer}, t-test", "p": st["t_pvalue"]})
    for task, x in entry["reasoning"].items():
        tests.append({"test": f"{task} accuracy, McNemar", "p": x["mcnemar"]["pvalue"]})
    for language, x in entry["lm"].items():
        tests.append({"test": f"held-out text {language} token log-likelihood, t-test", "p": x["per_text"]["t_pvalue"]})
    for test, adjusted in zip(tests, holm([t["p"] for t in tests])):
        test["holm_p"] = adjusted
        test.setdefault("primary", False)
    return tests


def _run_entry(run: _Run, stats_layer: int, bootstrap: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    summary, model = run.summary, run.summary.get("model") or {}
    (a0, a1) = run.alignment
    x1 = run.of_kind("multiple_choice")[0].final
    layers = a1["layers"]
    final_layer = layers[-1]
    target = summary.get("target_layer")
    if target is None:  # a run that failed before the model resolved it: its setting, resolved the same way
        hp = model.get("target_layer", PAPER_LAYER)
        target = hp if hp >= 0 else len(layers) + hp
    kind, group = _kind(model.get("adaptation"), model.get("adapt_layers"), target, final_layer)
    entry: dict[str, Any] = {
        "dir": str(run.path),
        "arm": summary["name"],
        "method": summary["name"],  # the arm's recipe; `arm` gains the learning rate when a name has several
        "version": summary.get("version"),
        "seed": summary.get("seed"),
        "status": summary.get("status"),
        "kind": kind,
        "group": group,
        "adaptation": model.get("adaptation"),
        "adapt_layers": model.get("adapt_layers"),
        "lora_r": model.get("lora_r") if model.get("adaptation") == "lora" else None,
        "quantization": model.get("quantization"),
        "compute_dtype": model.get("compute_dtype"),
        "base_precision": base_precision(model),
        "learning_rate": model.get("learning_rate"),
        "base_model": base_model(summary),
        "provenance": summary.get("provenance"),
        "seed_varies": summary.get("seed_varies"),
        "target_layer": target,
        "final_layer": final_layer,
        "trainable_parameters": summary.get("trainable_parameters"),
        "global_step": summary.get("global_step"),
        "epochs_completed": summary.get("epochs_completed"),
        "alignment_epoch": a1.get("epoch"),
        "reasoning_epoch": x1.get("epoch"),
        "files": run.files,
        "alignment": {
            "target": {"layer": target, **_alignment_numbers(run, target)},
            "final": {"layer": final_layer, **_alignment_numbers(run, final_layer)},
        },
        "paired": {},
        "endpoint": {},
        # The per-layer figure's curves, kept here so that the report alone can redraw it.
        "control_gap_per_layer": {
            "layers": layers,
            "baseline": a0["sets"].get("control", {}).get("gap"),
            "final": a1["sets"].get("control", {}).get("gap"),
            "csls_baseline": a0["sets"].get("control", {}).get("csls_p_at_1"),
            "csls_final": a1["sets"].get("control", {}).get("csls_p_at_1"),
            "chance": a1["sets"].get("control", {}).get("chance_p_at_1"),
        },
        # The TLI paper's quantities at its layer, for the side-by-side section.
        "paper_layer": _paper_layer(a0, a1),
    }
    if summary.get("status") != "finished":
        warnings.append(
            f"{run.path}: status {summary.get('status')!r}, not 'finished': its last evaluation (epoch "
            f"{a1.get('epoch')}) is used"
        )
    for layer in sorted({stats_layer, target}):
        if layer not in layers:
            warnings.append(
                f"{run.path}: no layer {layer} (layers {layers[0]}..{layers[-1]}): no paired statistics there"
            )
            continue
        entry["paired"][str(layer)] = _paired_numbers(run, layer, bootstrap)
        entry["endpoint"][str(layer)] = _endpoint_numbers(run, layer, bootstrap)
    entry["reasoning"] = _task_numbers(run, warnings, bootstrap)
    entry["lm"] = _lm_numbers(run, bootstrap)
    entry["tests"] = _tests(entry, stats_layer)
    undefined = [task for task, r in entry["reasoning"].items() if r["retention"] is None]
    if undefined:
        warnings.append(
            f"{run.path}: retention undefined for {', '.join(undefined)} (baseline accuracy 0); the "
            "mean retention uses the other tasks"
        )
    entry["retention_mean"] = _mean(r["retention"] for r in entry["reasoning"].values())
    entry["acc_change_mean"] = _mean(r["acc_diff"] for r in entry["reasoning"].values())
    return entry


def base_precision(model: dict[str, Any]) -> str:
    """How the frozen base is held: arms that differ here start from different models (NF4 changes predictions)."""
    quantization = model.get("quantization") or "none"
    return (
        f"{quantization} base, {model.get('compute_dtype')} compute"
        if quantization != "none"
        else (f"{model.get('compute_dtype')} base")
    )


def base_model(summary: dict[str, Any]) -> dict[str, Any]:
    """The base model's identity: its name and, where the run recorded one, its revision or content fingerprint."""
    recorded = ((summary.get("provenance") or {}).get("base_model")) or {}
    name = recorded.get("name_or_path") or (summary.get("model") or {}).get("model_name_or_path")
    fingerprint = recorded.get("revision") or recorded.get("fingerprint")
    return {"name_or_path": name, "fingerprint": fingerprint, "identity": f"{name}@{fingerprint or 'unrecorded'}"}


def _paper_layer(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any] | None:
    if PAPER_LAYER not in before.get("layers", []):
        return None
    return {
        name: {
            **{
                m: [before["sets"][name][m][PAPER_LAYER], after["sets"][name][m][PAPER_LAYER]]
                for m in ("cos", "cos_bos", "gap", "csls_p_at_1")
            },
            "chance_p_at_1": after["sets"][name]["chance_p_at_1"],
        }
        for name in SETS
        if name in before["sets"] and name in after["sets"]
    }


def _gain(entry: dict[str, Any], layer: int, set_name: str, quantity: str) -> float | None:
    stats = entry["paired"].get(str(layer), {}).get(set_name, {}).get(quantity)
    return None if stats is None else stats["mean_gain"]


def split_learning_rates(runs: list[dict[str, Any]]) -> None:
    """A name run at several learning rates (a sweep) is one arm per rate in the verdict, ``<name>@lr<rate>``:
    seeds are replicates of one recipe, rates are not. The figures join a name's rates along one curve."""
    rates: dict[str, set] = {}
    for entry in runs:
        rates.setdefault(entry["method"], set()).add(entry["learning_rate"])
    for entry in runs:
        if len(rates[entry["method"]]) > 1:
            entry["arm"] = f"{entry['method']}@lr{entry['learning_rate']:g}"


def _endpoint(entry: dict[str, Any], layer: int, set_name: str, what: str) -> float | None:
    e = entry["endpoint"].get(str(layer), {}).get(set_name)
    if e is None:
        return None
    return e["gain"] if what == "gain" else e["p_at_1"][1]


def _arms(runs: list[dict[str, Any]], loaded: Sequence[_Run], stats_layer: int, warnings: list[str]) -> dict[str, Any]:
    from tli_lightning.stats import describe

    arms: dict[str, Any] = {}
    by_arm: dict[str, list[int]] = {}
    for index, entry in enumerate(runs):
        by_arm.setdefault(entry["arm"], []).append(index)
    for arm, indices in by_arm.items():
        members = [runs[i] for i in indices]
        first = members[0]
        settings = [
            (
                {k: v for k, v in (loaded[i].summary.get("model") or {}).items() if k not in _MODEL_IGNORED},
                runs[i]["target_layer"],
            )
            for i in indices
        ]
        differing = sorted({k for s, _ in settings for k in s if s.get(k) != settings[0][0].get(k)} - {"learning_rate"})
        if differing or len({t for _, t in settings}) > 1:
            warnings.append(
                f"arm {arm}: its runs differ in model settings ({', '.join(differing) or 'target_layer'}) "
                "but share a name, so they are aggregated as one arm; give different settings different "
                "--trainer.logger.init_args.name"
            )
        seeds = [m["seed"] for m in members]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            warnings.append(
                f"arm {arm}: several runs with seed {', '.join(map(str, repeated))}: not independent "
                "replicates; only distinct seeds count towards --min-seeds"
            )
        tasks, languages = list(first["reasoning"]), list(first["lm"])
        arms[arm] = {
            "method": first["method"],
            "kind": first["kind"],
            "group": first["group"],
            "runs": [m["dir"] for m in members],
            "seeds": seeds,
            "distinct_seeds": len(set(seeds)),
            "target_layer": first["target_layer"],
            "final_layer": first["final_layer"],
            "trainable_parameters": first["trainable_parameters"],
            "base_precision": first["base_precision"],
            "base_model": first["base_model"]["identity"],
            "learning_rates": sorted({m["learning_rate"] for m in members if m["learning_rate"] is not None}),
            "endpoint": {
                set_name: {
                    "gain": describe([_endpoint(m, stats_layer, set_name, "gain") for m in members]),
                    "final": describe([_endpoint(m, stats_layer, set_name, "final") for m in members]),
                }
                for set_name in SETS
            },
            "gains": {
                set_name: {
                    q: describe([_gain(m, stats_layer, set_name, q) for m in members]) for q in ("cos", "margin")
                }
                for set_name in SETS
            },
            "reasoning": {
                task: {
                    "acc_diff": describe([m["reasoning"][task]["acc_diff"] for m in members]),
                    "retention": describe([m["reasoning"][task]["retention"] for m in members]),
                }
                for task in tasks
            },
            "lm": {
                lang: {"change": describe([m["lm"][lang]["change"] for m in members if lang in m["lm"]])}
                for lang in languages
            },
            "acc_change_mean": describe([m["acc_change_mean"] for m in members]),
            "retention_mean": describe([m["retention_mean"] for m in members]),
        }
    return arms
