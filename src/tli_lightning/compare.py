"""``python -m tli_lightning compare``: finished runs side by side, with paired statistics and a verdict.

Reads only what runs wrote (``summary.json``, ``alignment/*.json``, ``xnli/*.json`` in
``logs/<name>/version_<n>/``); nothing is loaded or re-measured. The run's name is its comparison arm;
runs of one arm with different seeds are aggregated. Writes ``report.md``, ``report.json`` (every number
of the report) and two PNG figures into ``--output``.

From Python::

    from tli_lightning.compare import build_report, write_report
    report = build_report(["logs/demo", "logs/full_early/version_0"])
    write_report(report, "comparison")
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tli_lightning.commands import _positive
from tli_lightning.errors import OneLineArgumentParser, TLIError
from tli_lightning.layers import LAYERS_NOTE
from tli_lightning.runs import _versions

PAPER_LAYER = 2  # the TLI paper reads and reports hidden_states[2]
HEADLINE_METRICS = ("cos", "cos_random", "gap", "p_at_1_s2t")
SETS = ("trained", "control")
FIGURES = {"gain_vs_retention": "alignment_vs_retention.png", "gap_per_layer": "control_gap_per_layer.png"}
_EPOCH = re.compile(r"^epoch_(\d+)\.json$")
_MODEL_IGNORED = ("_instantiator",)
_NO_RUNS = "compare needs at least one run directory (logs/<name>/version_<n>, or logs/<name> for all its runs)"


# ---- reading runs --------------------------------------------------------------------------


@dataclass
class _Run:
    path: Path
    summary: dict[str, Any]
    alignment: tuple[dict[str, Any], dict[str, Any]]  # baseline, final
    xnli: tuple[dict[str, Any], dict[str, Any]]
    files: dict[str, str]


def find_runs(specs: Iterable[str | Path], warnings: list[str] | None = None) -> list[Path]:
    """Run directories from ``logs/<name>/version_<n>`` paths, or ``logs/<name>`` meaning all its versions.

    Of a ``logs/<name>``, the versions that are not finished and complete (a run that failed, was interrupted or
    is still running) are skipped with a line in ``warnings``; a run directory named itself is always kept, and
    :func:`load_run` says what it lacks.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for spec in specs:
        path = Path(spec)
        if not path.is_dir():
            raise TLIError(f"{path}: no such directory (expected a run directory logs/<name>/version_<n>)")
        versions = [] if (path / "summary.json").is_file() else [path / f"version_{v}" for v in _versions(path)]
        why = {v: _unusable(v) for v in versions}
        skipped = [
            f"{v}: skipped, not a finished and complete run ({reasons})" for v, reasons in why.items() if reasons
        ]
        if versions and len(skipped) == len(versions):
            raise TLIError(f"{path}: none of its runs can be compared: {'; '.join(skipped)}")
        if warnings is not None:
            warnings += skipped
        for candidate in [v for v, reasons in why.items() if not reasons] or [path]:
            key = candidate.resolve()
            if key not in seen:  # the same run named twice (logs/demo and logs/demo/version_0) counts once
                seen.add(key)
                found.append(candidate)
    if not found:
        raise TLIError(_NO_RUNS)
    return found


def _read_json(path: Path) -> dict[str, Any]:
    try:
        # Runs write strict JSON (an undefined retention is null); Python's json also reads the NaN older runs wrote.
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TLIError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    except OSError as error:
        raise TLIError(f"{path}: cannot read: {error.strerror or error}") from None
    if not isinstance(data, dict):
        raise TLIError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _last_epoch_file(directory: Path) -> Path | None:
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _EPOCH.match(p.name))]
    return max(found)[1] if found else None


def _missing(path: Path) -> list[str]:
    """The evaluation files a run directory lacks for a comparison."""
    return [
        f"{kind}/{name}"
        for kind in ("alignment", "xnli")
        for name, present in (
            ("baseline.json", (path / kind / "baseline.json").is_file()),
            ("epoch_NN.json", _last_epoch_file(path / kind) is not None),
        )
        if not present
    ]


def _unusable(path: Path) -> str:
    """Why a version found under ``logs/<name>`` is left out (empty: it is finished and complete)."""
    if not (path / "summary.json").is_file():
        return "no summary.json"
    status = _read_json(path / "summary.json").get("status")
    reasons = [] if status == "finished" else [f"status {status!r}"]
    return ", ".join(reasons + [f"no {m}" for m in _missing(path)])


def load_run(path: Path) -> _Run:
    """One run's summary and its baseline and last evaluations; a clear error naming what is missing."""
    if not (path / "summary.json").is_file():
        names = sorted(p.name for p in path.iterdir() if _versions(p)) if path.is_dir() else []
        hint = ""
        if names:
            hint = f"; it holds the runs of {', '.join(names)}: pass {path / names[0]} (all its runs) or a version_<n>"
        raise TLIError(
            f"{path}: not a run directory: no summary.json (expected logs/<name>/version_<n> as written by "
            f"`python -m tli_lightning fit`, or a directory of such version_<n> runs){hint}"
        )
    missing = _missing(path)
    if missing:
        raise TLIError(
            f"{path}: cannot compare this run: missing {', '.join(missing)} (written by the LayerwiseAlignment and "
            "ZeroShotRetention callbacks before training and after each evaluated epoch)"
        )
    files = {"summary": str(path / "summary.json")}
    for kind in ("alignment", "xnli"):
        files[f"{kind}_baseline"] = str(path / kind / "baseline.json")
        files[f"{kind}_final"] = str(_last_epoch_file(path / kind))
    summary = _read_json(path / "summary.json")
    fingerprint = (summary.get("data") or {}).get("fingerprint")
    if not isinstance(fingerprint, dict) or "name" not in summary:
        raise TLIError(
            f"{path}/summary.json: no name or data.fingerprint: cannot tell which arm it is or check that "
            "the runs measured the same data"
        )
    run = _Run(
        path,
        summary,
        (_read_json(Path(files["alignment_baseline"])), _read_json(Path(files["alignment_final"]))),
        (_read_json(Path(files["xnli_baseline"])), _read_json(Path(files["xnli_final"]))),
        files,
    )
    _check_run(run)
    return run


def _check_run(run: _Run) -> None:
    """Baseline and final evaluations of a run must pair up item by item."""
    (a0, a1), (x0, x1) = run.alignment, run.xnli
    for report, name in ((a0, "alignment_baseline"), (a1, "alignment_final")):
        for set_name, entry in (report.get("sets") or {}).items():
            if "per_pair_cos" not in entry or "per_pair_random" not in entry:
                raise TLIError(
                    f"{run.files[name]}: set {set_name!r} has no per_pair_cos/per_pair_random (written by "
                    "an older tli_lightning); paired statistics need them: rerun"
                )
    if a0.get("layers") != a1.get("layers"):
        raise TLIError(f"{run.path}: the baseline and final alignment measured different layers")
    for set_name in set(a0.get("sets", {})) & set(a1.get("sets", {})):
        if a0["sets"][set_name]["pairs"] != a1["sets"][set_name]["pairs"]:
            raise TLIError(f"{run.path}: the baseline and final alignment of {set_name!r} measured different pairs")
    if sorted(x0.get("languages", {})) != sorted(x1.get("languages", {})):
        raise TLIError(f"{run.path}: the baseline and final XNLI evaluations cover different languages")
    for lang, entry in x1["languages"].items():
        if entry.get("labels") != x0["languages"][lang].get("labels"):
            raise TLIError(f"{run.path}: the baseline and final XNLI {lang} evaluations scored different examples")


def _check_same_data(runs: Sequence[_Run]) -> None:
    """Arms may differ in any model setting, never in what was measured."""
    first = runs[0]
    languages = sorted(first.xnli[1]["languages"])
    for run in runs[1:]:
        theirs = sorted(run.xnli[1]["languages"])
        if theirs != languages:
            raise TLIError(
                f"runs differ in XNLI languages: {first.path} has {', '.join(languages)} vs {run.path} has "
                f"{', '.join(theirs)}"
            )
    reference = first.summary["data"]["fingerprint"]
    for field in ["trained_pairs", "control_pairs", *[f"xnli_{lang}" for lang in languages]]:
        for run in runs:
            if run.summary["data"]["fingerprint"].get(field) != reference.get(field):
                raise TLIError(
                    f"runs differ in data.fingerprint.{field}: {first.path} vs {run.path}; compare only "
                    "runs measured on the same pairs and XNLI examples"
                )


# ---- per-run numbers -----------------------------------------------------------------------


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


# ---- arms, verdict -------------------------------------------------------------------------


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


def _fmt(value: Any, digits: int = 4, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1e}" if value < 0.001 else f"{value:.3f}"


def _spread(d: dict[str, Any], sign: bool = True, unit: str = "") -> str:
    """``mean ± SD (n=...)`` of a :func:`~tli_lightning.stats.describe` dict."""
    if not d["n"]:
        return "n/a"
    sd = f" ± {_fmt(d['sd'])}" if d["sd"] is not None else ""
    return f"{_fmt(d['mean'], sign=sign)}{sd} (n={d['n']}{unit})"


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


# ---- the report ----------------------------------------------------------------------------


def build_report(
    run_dirs: Sequence[str | Path],
    *,
    stats_layer: int = PAPER_LAYER,
    resamples: int = 10_000,
    seed: int = 0,
    min_seeds: int = 5,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Everything ``compare`` reports, as a JSON-ready dict (non-finite numbers as ``None``).

    ``run_dirs``: run directories (``logs/<name>/version_<n>``) or directories of them (``logs/<name>``, whose
    unfinished or incomplete versions are skipped with a warning). Raises :class:`~tli_lightning.errors.TLIError`
    for a run directory named itself that is not a complete run, and for runs that measured different data
    (pairs, XNLI examples or languages).
    """
    if not 0 < confidence < 1 or resamples < 1 or min_seeds < 1:
        raise TLIError(
            f"need 0 < confidence < 1, resamples >= 1 and min_seeds >= 1, got {confidence}, {resamples}, {min_seeds}"
        )
    if isinstance(run_dirs, (str, Path)):  # one directory, not the characters of its name
        run_dirs = [run_dirs]
    warnings: list[str] = []
    loaded = [load_run(path) for path in find_runs(run_dirs, warnings)]
    _check_same_data(loaded)
    bootstrap = {"seed": seed, "resamples": resamples, "confidence": confidence}
    runs = [_run_entry(run, stats_layer, bootstrap, warnings) for run in loaded]
    epochs = sorted({r["alignment_epoch"] for r in runs})
    if len(epochs) > 1:
        warnings.append(
            f"the runs end at different epochs ({', '.join(map(str, epochs))}): each is compared at its last"
        )
    arms = _arms(runs, loaded, stats_layer, warnings)
    alpha = round(1 - confidence, 12)  # 0.05, not 0.050000000000000044, in report.json
    first = loaded[0].summary["data"]
    report = {
        "settings": {
            "stats_layer": stats_layer,
            "bootstrap_resamples": resamples,
            "bootstrap_seed": seed,
            "confidence": confidence,
            "alpha": alpha,
            "min_seeds": min_seeds,
            "layers_note": LAYERS_NOTE,
        },
        "data": {
            "fingerprint": first["fingerprint"],
            "counts": first.get("counts"),
            "xnli_languages": sorted(loaded[0].xnli[1]["languages"]),
        },
        "runs": runs,
        "arms": arms,
        "verdict": {
            "retention": _retention_verdict(runs, arms, min_seeds, alpha),
            "alignment": _alignment_verdict(runs, arms, stats_layer, min_seeds, alpha, confidence),
        },
        "warnings": warnings,
        "figures": dict(FIGURES),
    }
    return _json_ready(report)


def _json_ready(value: Any) -> Any:
    # Not callbacks._common.without_nan: that keeps infinities (paired_stats gives an infinite t statistic for a
    # constant gain), which strict JSON cannot hold either, and importing it would import torch and Lightning.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


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


def _arm_colors(report: dict[str, Any]) -> dict[str, str]:
    return {arm: f"C{i % 10}" for i, arm in enumerate(report["arms"])}


def _figure_gain_vs_retention(report: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend to choose

    layer = report["settings"]["stats_layer"]
    colors = _arm_colors(report)
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    shown: set[str] = set()
    for r in report["runs"]:
        stats = r["paired"].get(str(layer), {}).get("control", {}).get("margin")
        if stats is None or stats["mean_gain"] is None or r["retention_mean"] is None:
            continue
        x = stats["mean_gain"]
        err = [[x - stats["ci_low"]], [stats["ci_high"] - x]] if stats["ci_low"] is not None else None
        ax.errorbar(
            x,
            r["retention_mean"],
            xerr=err,
            fmt="o",
            color=colors[r["arm"]],
            markersize=8,
            capsize=4,
            alpha=0.8,
            label=None if r["arm"] in shown else r["arm"],
        )
        shown.add(r["arm"])
    ax.axvline(0, color="grey", linestyle=":", linewidth=1)
    ax.axhline(1, color="grey", linestyle=":", linewidth=1)
    confidence = report["settings"]["confidence"]
    ax.set_xlabel(
        f"control-pair margin gain at layer {layer}\n(final - baseline; bars: {confidence:.0%} CI)", fontsize=11
    )
    ax.set_ylabel("XNLI retention\n(final / baseline accuracy, mean of languages)", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(title="arm", fontsize=10, title_fontsize=10)
    ax.set_title("alignment beyond chance vs zero-shot retention", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


_Curves = dict[str, list[tuple[list[int], list[float], list[float]]]]  # arm: (layers, gap before, gap after) per run


def _figure_gap_per_layer(report: dict[str, Any], runs_gaps: _Curves, path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    colors = _arm_colors(report)
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    for arm, curves in runs_gaps.items():
        color = colors[arm]
        same_layers = len({tuple(layers) for layers, _, _ in curves}) == 1
        if len(curves) > 1:
            for layers, before, after in curves:
                ax.plot(layers, before, color=color, linestyle="--", linewidth=0.8, alpha=0.4)
                ax.plot(layers, after, color=color, linewidth=0.8, alpha=0.4)
        if same_layers:
            layers = curves[0][0]
            mean = [[sum(v) / len(curves) for v in zip(*[c[k] for c in curves])] for k in (1, 2)]
            ax.plot(layers, mean[0], color=color, linestyle="--", linewidth=2)
            ax.plot(layers, mean[1], color=color, linewidth=2, marker="o", markersize=4)
    ax.axhline(0, color="grey", linestyle=":", linewidth=1)
    ax.axvline(report["settings"]["stats_layer"], color="grey", linestyle="-.", linewidth=0.8)
    handles = [Line2D([], [], color=colors[a], linewidth=2, label=f"{a} (n={len(c)})") for a, c in runs_gaps.items()]
    handles += [
        Line2D([], [], color="black", linestyle="--", label="baseline"),
        Line2D([], [], color="black", label="final"),
    ]
    ax.legend(handles=handles, fontsize=10)
    ax.set_xlabel("layer (hidden_states index; 0 = embeddings)", fontsize=11)
    ax.set_ylabel("control-set gap\n(pair cosine - random-pair cosine)", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.set_title("control pairs: alignment beyond chance per layer", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _control_gaps(report: dict[str, Any]) -> _Curves:
    gaps: _Curves = {}
    for r in report["runs"]:
        curve = r["control_gap_per_layer"]
        if curve["baseline"] is not None and curve["final"] is not None:
            gaps.setdefault(r["arm"], []).append((curve["layers"], curve["baseline"], curve["final"]))
    return gaps


def write_report(report: dict[str, Any], output: str | Path) -> list[Path]:
    """Write ``report.md``, ``report.json`` and the figures into the directory ``output``; returns the paths."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise TLIError(f"--output {output} is a file; give a directory")
    output.mkdir(parents=True, exist_ok=True)
    paths = [
        output / "report.md",
        output / "report.json",
        output / FIGURES["gain_vs_retention"],
        output / FIGURES["gap_per_layer"],
    ]
    paths[0].write_text(format_markdown(report), encoding="utf-8")
    paths[1].write_text(json.dumps(report, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    _figure_gain_vs_retention(report, paths[2])
    _figure_gap_per_layer(report, _control_gaps(report), paths[3])
    return paths


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a hidden_states index >= 0, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m tli_lightning compare",
        description=(
            "Compare runs side by side, baseline -> final, from what they wrote (nothing is re-measured): alignment "
            "of trained and control translation pairs at the target and final layers, zero-shot XNLI accuracy and "
            "retention, paired statistics (t-test, Wilcoxon, bootstrap CI, exact McNemar), and a verdict in plain "
            "words: does early-layer LoRA preserve XNLI better than full fine-tuning, and does it align never-trained "
            "(control) pairs beyond the random-pair baseline? A run's name (--trainer.logger.init_args.name) is its "
            "arm; runs of one arm with different seeds are aggregated. Arms may differ in any model setting; runs "
            f"must share their data (pairs, XNLI examples and languages). {LAYERS_NOTE}"
        ),
    )
    parser.add_argument(
        "run_dirs",
        nargs="*",
        metavar="RUN_DIR",
        help="a run directory logs/<name>/version_<n>, or logs/<name> for all of its version_<n> runs (those not "
        "finished and complete are skipped with a warning)",
    )
    parser.add_argument(
        "--output",
        default="comparison",
        metavar="DIR",
        help="directory to write report.md, report.json and the PNG figures into (created if needed; "
        "existing report files are overwritten; default: comparison)",
    )
    parser.add_argument(
        "--layer",
        type=_nonnegative,
        default=PAPER_LAYER,
        help="hidden_states index of the paired statistics, of figure 1 and of the alignment verdict, "
        "besides each run's own target layer (default: 2, the TLI paper's layer)",
    )
    parser.add_argument(
        "--resamples",
        type=_positive,
        default=10_000,
        help="bootstrap resamples for the confidence intervals (default: 10000)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the bootstrap's numpy default_rng: the same seed gives the same intervals (default: 0)",
    )
    parser.add_argument(
        "--min-seeds",
        type=_positive,
        default=5,
        help="distinct seeds an arm needs before the verdict draws a conclusion; with fewer it says "
        "the evidence is insufficient, whatever the p-values (default: 5)",
    )
    return parser


def compare(argv: list[str]) -> None:
    """``python -m tli_lightning compare RUN_DIR [RUN_DIR ...] --output DIR``."""
    args = _parser().parse_args(argv)
    if not args.run_dirs:
        raise TLIError(_NO_RUNS)
    report = build_report(
        args.run_dirs, stats_layer=args.layer, resamples=args.resamples, seed=args.seed, min_seeds=args.min_seeds
    )
    paths = write_report(report, args.output)
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    for verdict in report["verdict"].values():
        print(f"{verdict['question']} {verdict['answer']}")
        for c in verdict.get("comparisons", []):
            print(f"  {c['early_lora']} vs {c['full']}: {c['answer']}: {c['words']}")
    print(f"wrote {', '.join(str(p) for p in paths)}")
