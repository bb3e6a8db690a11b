"""The report as one dict (every number of report.md, written as report.json), and writing it."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tli_lightning.compare._shared import FIGURES, PAPER_LAYER, PRIMARY_ALIGNMENT, PRIMARY_RETENTION
from tli_lightning.compare.figures import figure_accuracy, figure_per_layer, figure_tradeoff
from tli_lightning.compare.markdown import format_markdown
from tli_lightning.compare.numbers import _arms, _run_entry, reasoning_context, split_learning_rates
from tli_lightning.compare.reading import _check_same_data, check_same_base, find_runs, load_run
from tli_lightning.compare.verdict import COMBINING, RULES, alignment_verdict, retention_verdict
from tli_lightning.compare.why import draw_why_figures, why_figures, why_numbers
from tli_lightning.errors import TLIError
from tli_lightning.layers import LAYERS_NOTE


def build_report(
    run_dirs: Sequence[str | Path],
    *,
    stats_layer: int = PAPER_LAYER,
    resamples: int = 10_000,
    seed: int = 0,
    min_seeds: int = 5,
    confidence: float = 0.95,
    allow_different_bases: bool = False,
) -> dict[str, Any]:
    """Everything ``compare`` reports, as a JSON-ready dict (non-finite numbers as ``None``).

    ``run_dirs``: run directories (``logs/<name>/version_<n>``) or directories of them (``logs/<name>``, whose
    unfinished or incomplete versions are skipped with a warning). Raises :class:`~tli_lightning.errors.TLIError`
    for a run directory named itself that is not a complete run, and for runs that measured different data
    (pairs, task examples, held-out texts or the tasks themselves), and for runs on different base models unless
    ``allow_different_bases`` (then a warning heads the report).
    """
    if not 0 < confidence < 1 or resamples < 1 or min_seeds < 1:
        raise TLIError(
            f"need 0 < confidence < 1, resamples >= 1 and min_seeds >= 1, got {confidence}, {resamples}, {min_seeds}"
        )
    if isinstance(run_dirs, (str, Path)):  # one directory, not the characters of its name
        run_dirs = [run_dirs]
    warnings: list[str] = []
    loaded = [load_run(path, warnings) for path in find_runs(run_dirs, warnings)]
    paired = _check_same_data(loaded)
    same_base = check_same_base(loaded, allow_different_bases, warnings)
    bootstrap = {"seed": seed, "resamples": resamples, "confidence": confidence}
    runs = [_run_entry(run, stats_layer, bootstrap, warnings) for run in loaded]
    split_learning_rates(runs)
    epochs = sorted({r["alignment_epoch"] for r in runs})
    if len(epochs) > 1:
        warnings.append(
            f"the runs end at different epochs ({', '.join(map(str, epochs))}): each is compared at its last"
        )
    arms = _arms(runs, loaded, stats_layer, warnings)
    alpha = round(1 - confidence, 12)  # 0.05, not 0.050000000000000044, in report.json
    first = loaded[0].summary["data"]
    settings = {
        "stats_layer": stats_layer,
        "bootstrap_resamples": resamples,
        "bootstrap_seed": seed,
        "confidence": confidence,
        "alpha": alpha,
        "min_seeds": min_seeds,
        "paired_items": paired,
        "same_base_model": same_base,
        "layers_note": LAYERS_NOTE,
    }
    verdict_settings = {
        "stats_layer": stats_layer,
        "seed": seed,
        "resamples": resamples,
        "confidence": confidence,
        "min_seeds": min_seeds,
        "paired": paired,
    }
    rules = RULES.format(
        conf=f"{confidence:.0%}",
        power=f"{0.8:.0%}",
        min_seeds=min_seeds,
        resamples=resamples,
        seed=seed,
        items="task examples for retention, held-out texts for language-model retention; clusters of control queries "
        "that share a word for alignment",
    )
    report = {
        "settings": settings,
        "primary_endpoints": {"alignment": PRIMARY_ALIGNMENT, "retention": PRIMARY_RETENTION},
        "data": {
            "fingerprint": first["fingerprint"],
            "counts": first.get("counts"),
            "tasks": list(loaded[0].tasks),
            "lm_languages": list(loaded[0].lm),
            "pool": loaded[0].alignment[1].get("pool"),
        },
        "reasoning_context": reasoning_context(runs),
        "runs": runs,
        "arms": arms,
        "verdict": {
            "rules": {
                "decision": rules,
                "combining": COMBINING,
            },
            "retention": retention_verdict(runs, loaded, arms, verdict_settings),
            "alignment": alignment_verdict(runs, loaded, arms, verdict_settings),
        },
        "warnings": warnings,
        "figures": dict(FIGURES),
    }
    report["why"] = why_numbers(loaded, runs, arms)
    report["figures"].update(why_figures(report["why"]))
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


def write_report(report: dict[str, Any], output: str | Path) -> list[Path]:
    """Write ``report.md``, ``report.json`` and the figures into the directory ``output``; returns the paths."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise TLIError(f"--output {output} is a file; give a directory")
    output.mkdir(parents=True, exist_ok=True)
    paths = [output / "report.md", output / "report.json"]
    paths[0].write_text(format_markdown(report), encoding="utf-8")
    paths[1].write_text(json.dumps(report, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    for key, draw in (("tradeoff", figure_tradeoff), ("per_layer", figure_per_layer), ("accuracy", figure_accuracy)):
        paths.append(output / FIGURES[key])
        draw(report, paths[-1])
    paths += draw_why_figures(report, output)
    return paths
