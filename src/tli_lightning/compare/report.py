"""The report as one dict (every number of report.md, written as report.json), and writing it."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tli_lightning.compare._shared import FIGURES, PAPER_LAYER
from tli_lightning.compare.figures import (
    _control_gaps,
    _figure_gain_vs_retention,
    _figure_gap_per_layer,
)
from tli_lightning.compare.markdown import format_markdown
from tli_lightning.compare.numbers import _arms, _run_entry
from tli_lightning.compare.reading import _check_same_data, find_runs, load_run
from tli_lightning.compare.verdict import _alignment_verdict, _retention_verdict
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
