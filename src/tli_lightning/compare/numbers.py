"""Per-run numbers (alignment, paired statistics, XNLI) and their aggregation per arm."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from tli_lightning.compare._shared import HEADLINE_METRICS, PAPER_LAYER, SETS
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


def _xnli_numbers(run: _Run, warnings: list[str]) -> dict[str, Any]:
    import numpy as np

    from tli_lightning.stats import mcnemar_exact

    before, after = run.xnli
    out = {}
    for lang, final in after["languages"].items():
        base = before["languages"][lang]
        labels = np.asarray(final["labels"])
        # Predictions as the run made them: argmax of each example's three log-likelihoods.
        correct = [
            np.argmax(np.asarray(r["loglikelihoods"], dtype=np.float64), axis=1) == labels for r in (base, final)
        ]
        test = mcnemar_exact(correct[0], correct[1])
        for which, logged, key in (("baseline", base, "baseline_correct"), ("final", final, "final_correct")):
            if logged.get("correct") is not None and logged["correct"] != test[key]:
                warnings.append(
                    f"{run.path}: XNLI {lang} {which}: {logged['correct']} correct logged, {test[key]} "
                    "from the logged log-likelihoods; McNemar uses the latter"
                )
        out[lang] = {
            "acc": [base["acc"], final["acc"]],
            "correct": [base.get("correct"), final.get("correct")],
            "n": final.get("n", test["n"]),
            "acc_diff": final["acc"] - base["acc"],
            "retention": _finite(final.get("retention")),
            "mcnemar": test,
        }
    return out


def _run_entry(run: _Run, stats_layer: int, bootstrap: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    summary, model = run.summary, run.summary.get("model") or {}
    (a0, a1), (_, x1) = run.alignment, run.xnli
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
        "version": summary.get("version"),
        "seed": summary.get("seed"),
        "status": summary.get("status"),
        "kind": kind,
        "group": group,
        "adaptation": model.get("adaptation"),
        "adapt_layers": model.get("adapt_layers"),
        "lora_r": model.get("lora_r") if model.get("adaptation") == "lora" else None,
        "quantization": model.get("quantization"),
        "target_layer": target,
        "final_layer": final_layer,
        "trainable_parameters": summary.get("trainable_parameters"),
        "global_step": summary.get("global_step"),
        "epochs_completed": summary.get("epochs_completed"),
        "alignment_epoch": a1.get("epoch"),
        "xnli_epoch": x1.get("epoch"),
        "files": run.files,
        "alignment": {
            "target": {"layer": target, **_alignment_numbers(run, target)},
            "final": {"layer": final_layer, **_alignment_numbers(run, final_layer)},
        },
        "paired": {},
        # Figure 2's curves, kept here so that the report alone can redraw it.
        "control_gap_per_layer": {
            "layers": layers,
            "baseline": a0["sets"].get("control", {}).get("gap"),
            "final": a1["sets"].get("control", {}).get("gap"),
        },
    }
    if summary.get("status") != "finished":
        warnings.append(
            f"{run.path}: status {summary.get('status')!r}, not 'finished': its last evaluation (epoch "
            f"{a1.get('epoch')}) is used"
        )
    if a1.get("epoch") != x1.get("epoch"):
        warnings.append(
            f"{run.path}: the last alignment evaluation is epoch {a1.get('epoch')}, the last XNLI one "
            f"epoch {x1.get('epoch')}"
        )
    for layer in sorted({stats_layer, target}):
        if layer not in layers:
            warnings.append(
                f"{run.path}: no layer {layer} (layers {layers[0]}..{layers[-1]}): no paired statistics there"
            )
            continue
        entry["paired"][str(layer)] = _paired_numbers(run, layer, bootstrap)
    entry["xnli"] = _xnli_numbers(run, warnings)
    undefined = [lang for lang, r in entry["xnli"].items() if r["retention"] is None]
    if undefined:
        warnings.append(
            f"{run.path}: XNLI retention undefined for {', '.join(undefined)} (baseline accuracy 0); the "
            "mean retention uses the other languages"
        )
    entry["retention_mean"] = _mean(r["retention"] for r in entry["xnli"].values())
    entry["acc_change_mean"] = _mean(r["acc_diff"] for r in entry["xnli"].values())
    return entry


def _gain(entry: dict[str, Any], layer: int, set_name: str, quantity: str) -> float | None:
    stats = entry["paired"].get(str(layer), {}).get(set_name, {}).get(quantity)
    return None if stats is None else stats["mean_gain"]


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
        differing = sorted({k for s, _ in settings for k in s if s.get(k) != settings[0][0].get(k)})
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
        languages = list(first["xnli"])
        arms[arm] = {
            "kind": first["kind"],
            "group": first["group"],
            "runs": [m["dir"] for m in members],
            "seeds": seeds,
            "distinct_seeds": len(set(seeds)),
            "target_layer": first["target_layer"],
            "final_layer": first["final_layer"],
            "trainable_parameters": first["trainable_parameters"],
            "gains": {
                set_name: {
                    q: describe([_gain(m, stats_layer, set_name, q) for m in members]) for q in ("cos", "margin")
                }
                for set_name in SETS
            },
            "xnli": {
                lang: {
                    "acc_diff": describe([m["xnli"][lang]["acc_diff"] for m in members]),
                    "retention": describe([m["xnli"][lang]["retention"] for m in members]),
                }
                for lang in languages
            },
            "acc_change_mean": describe([m["acc_change_mean"] for m in members]),
            "retention_mean": describe([m["retention_mean"] for m in members]),
        }
    return arms
