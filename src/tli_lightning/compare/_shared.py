"""What the parts of ``compare`` share: the report's constants and number formatting."""

from __future__ import annotations

import math
from typing import Any

PAPER_LAYER = 2  # the TLI paper reads and reports hidden_states[2]
HEADLINE_METRICS = ("cos", "cos_random", "gap", "p_at_1_s2t")
SETS = ("trained", "control")
ONE_CLASS_SHARE = 0.95  # a model predicting one class for this share of the examples is flagged
MDE_POWER = 0.8
FIGURES = {
    "tradeoff": "learning_vs_forgetting.png",
    "per_layer": "control_retrieval_per_layer.png",
    "accuracy": "zero_shot_accuracy.png",
}
PRIMARY_ALIGNMENT = (
    "control-pair CSLS P@1 (Swahili -> English retrieval of the right translation among one candidate pool shared "
    "by every set and run: every target word of the trained and control sets; mean-centered vectors, k = 10)"
)
PRIMARY_RETENTION = (
    "zero-shot accuracy change (final - baseline) per task (each benchmark in each language), early-layer LoRA "
    "minus the full fine-tuning arm"
)


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
