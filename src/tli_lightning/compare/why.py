"""Why an arm forgets, described: its weight update (size and rank per block) and each layer's drift from the base.

Read from each run's ``weight_update`` and ``drift`` measurements (:mod:`tli_lightning.weight_update`,
:mod:`tli_lightning.drift`) at its final evaluation, aggregated per arm over its runs (seeds). Nothing here
is a test: the report relates these numbers to retention in words only, as a description.

Example::

    from tli_lightning.compare.why import why_numbers, why_markdown
    report["why"] = why_numbers(loaded_runs, report["runs"], report["arms"])
    lines = why_markdown(report)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tli_lightning.compare._shared import _fmt, _spread
from tli_lightning.stats import describe

WHY_FIGURES = {"drift": "drift_per_layer.png", "spectrum": "update_spectrum.png"}
DRIFT_SET = "premises"  # the report's drift curve: XNLI premises (the words' curve is in report.json)


def _final(run: Any, kind: str) -> dict[str, Any] | None:
    for measured in (getattr(run, "measurements", None) or {}).values():
        if measured.kind == kind:
            return measured.final
    return None


def _mean_lists(lists: list[list[float | None]]) -> list[float | None]:
    """Element-wise mean of the finite values (lists of unequal length: up to the longest)."""
    width = max((len(v) for v in lists), default=0)
    out: list[float | None] = []
    for k in range(width):
        values = [v[k] for v in lists if k < len(v) and v[k] is not None and math.isfinite(v[k])]
        out.append(sum(values) / len(values) if values else None)
    return out


def why_numbers(loaded: Sequence[Any], runs: list[dict[str, Any]], arms: dict[str, Any]) -> dict[str, Any]:
    """``{"weight_update": {arm: ...}, "drift": {arm: ...}, "description": str}`` (arms without the measurement
    are left out)."""
    update: dict[str, Any] = {}
    drift: dict[str, Any] = {}
    for arm in arms:
        members = [i for i, entry in enumerate(runs) if entry["arm"] == arm]
        reports = [r for r in (_final(loaded[i], "weight_update") for i in members) if r and r.get("blocks")]
        if reports:
            layers = sorted({b["layer"] for r in reports for b in r["blocks"]})

            def per_block(layer: int, what: str, reports: list = reports) -> dict[str, Any]:
                return describe([b[what] for r in reports for b in r["blocks"] if b["layer"] == layer])

            update[arm] = {
                "runs": len(reports),
                "adaptation": reports[0].get("adaptation"),
                "blocks": [
                    {
                        "layer": layer,
                        "relative_norm": per_block(layer, "relative_norm"),
                        "effective_rank_mean": per_block(layer, "effective_rank_mean"),
                    }
                    for layer in layers
                ],
                "total": {
                    what: describe([(r.get("total") or {}).get(what) for r in reports])
                    for what in ("relative_norm", "effective_rank_mean")
                },
                "spectrum": _mean_lists([r.get("spectrum") or [] for r in reports]),
            }
        finals = [_final(loaded[i], "drift") for i in members]
        curves = [r["sets"][DRIFT_SET] for r in finals if r and DRIFT_SET in r.get("sets", {})]
        if curves:
            cka = _mean_lists([c["cka"] for c in curves])
            drift[arm] = {
                "runs": len(curves),
                "set": DRIFT_SET,
                "layers": list(range(len(cka))),
                "cka": cka,
                "cos": _mean_lists([c["cos"] for c in curves]),
            }
    return {"weight_update": update, "drift": drift, "description": _description(arms, update, drift)}


def _lowest(curve: list[float | None]) -> tuple[int, float] | None:
    finite = [(value, layer) for layer, value in enumerate(curve) if value is not None]
    return None if not finite else min(finite)[::-1]


def _description(arms: dict[str, Any], update: dict[str, Any], drift: dict[str, Any]) -> str:
    described = [a for a in arms if a in update or a in drift]
    if not described:
        return ""

    def retention(arm: str) -> float:
        mean = (arms[arm].get("retention_mean") or {}).get("mean")
        return -math.inf if mean is None else mean

    parts = []
    for arm in sorted(described, key=retention, reverse=True):
        bits = [f"retention {_fmt((arms[arm].get('retention_mean') or {}).get('mean'), 3)}"]
        if arm in update:
            total = update[arm]["total"]
            bits.append(
                f"update relative norm {_fmt(total['relative_norm']['mean'], 4)}, effective rank "
                f"{_fmt(total['effective_rank_mean']['mean'], 1)}"
            )
        lowest = _lowest(drift[arm]["cka"]) if arm in drift else None
        if lowest is not None:
            bits.append(f"lowest premise CKA {_fmt(lowest[1], 3)} at layer {lowest[0]}")
        parts.append(f"{arm} ({'; '.join(bits)})")
    return (
        "Described, not tested: ordered by mean retention (over the zero-shot tasks), "
        + ", ".join(parts)
        + ". These say how much, in how many directions and where each arm changed the model; they do not test "
        "whether that explains its retention (the verdict above is the only test)."
    )


def why_markdown(report: dict[str, Any]) -> list[str]:
    """The report's section on the weight update and the drift (empty when no run measured either)."""
    why = report.get("why") or {}
    update, drift = why.get("weight_update") or {}, why.get("drift") or {}
    if not update and not drift:
        return []
    lines = ["## Why: the weight update and each layer's drift from the base (descriptive)", ""]
    if update:
        lines += [
            "The update per block at the final evaluation (LoRA: scale x B A; full-rank: W_now - W_base): its "
            "Frobenius norm relative to the base weights', and the effective rank (singular values holding 90% "
            "of its squared norm), mean over the block's matrices; mean ± SD over runs. Layer = hidden_states "
            "index of the block's output (0: the embeddings).",
            "",
            "| arm | layer | relative norm | effective rank |",
            "|---|---|---|---|",
        ]
        for arm, entry in update.items():
            for block in entry["blocks"]:
                lines.append(
                    f"| {arm} | {block['layer']} | {_spread(block['relative_norm'], sign=False)} | "
                    f"{_spread(block['effective_rank_mean'], sign=False)} |"
                )
        lines.append("")
    if drift:
        arms = list(drift)
        lines += [
            "Drift per layer at the final evaluation, on the sampled XNLI premises: linear CKA to the base model's "
            "vectors / mean cosine of each premise to its base vector (1 / 1 = not moved; CKA ignores rotations "
            "and scale, the cosine does not), mean over runs.",
            "",
            "| layer | " + " | ".join(f"{a} CKA / cos" for a in arms) + " |",
            "|---|" + "---|" * len(arms),
        ]
        width = max(len(d["cka"]) for d in drift.values())
        for layer in range(width):
            cells = []
            for arm in arms:
                d = drift[arm]
                cka = d["cka"][layer] if layer < len(d["cka"]) else None
                cos = d["cos"][layer] if layer < len(d["cos"]) else None
                cells.append(f"{_fmt(cka, 4)} / {_fmt(cos, 4)}")
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        lines.append("")
    if why.get("description"):
        lines += [why["description"], ""]
    if drift:
        lines += [f"![drift per layer: CKA and cosine to the base model, per arm]({WHY_FIGURES['drift']})", ""]
    if update:
        lines += [f"![the update's normalised singular values, per arm]({WHY_FIGURES['spectrum']})", ""]
    return lines


def why_figures(why: dict[str, Any]) -> dict[str, str]:
    """The file names of the figures :func:`draw_why_figures` draws for ``why`` (those with something to draw)."""
    names = {}
    if why.get("drift"):
        names["drift"] = WHY_FIGURES["drift"]
    if any(u["spectrum"] for u in (why.get("weight_update") or {}).values()):
        names["spectrum"] = WHY_FIGURES["spectrum"]
    return names


def draw_why_figures(report: dict[str, Any], output: Path) -> list[Path]:
    """The drift-per-layer and the spectrum figures (those with something to draw); their paths."""
    from matplotlib.ticker import MaxNLocator

    from tli_lightning.compare.figures import _LEGEND, _arm_colors, _figure, _save

    why = report.get("why") or {}
    colors = _arm_colors(report)
    paths = []
    if why.get("drift"):
        fig, axes = _figure(2)
        for ax, what, title in zip(axes, ("cka", "cos"), ("linear CKA to the base", "cosine to the base (same text)")):
            for arm, d in why["drift"].items():
                points = [(layer, v) for layer, v in enumerate(d[what]) if v is not None]
                ax.plot(*zip(*points), marker="o", color=colors.get(arm), label=arm)
            ax.set(xlabel="layer (hidden_states index)", ylabel=what, title=f"{title}, XNLI premises")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[-1].legend(title="arm", **_LEGEND)
        paths.append(output / WHY_FIGURES["drift"])
        _save(fig, paths[-1])
    drawable = {arm: u["spectrum"] for arm, u in (why.get("weight_update") or {}).items() if u["spectrum"]}
    if drawable:
        fig, axes = _figure(1)
        for arm, spectrum in drawable.items():
            points = [(k + 1, v) for k, v in enumerate(spectrum) if v is not None and v > 0]
            axes[0].plot(*zip(*points), color=colors.get(arm), label=arm)
        axes[0].set(
            yscale="log",
            xscale="log",
            xlabel="singular value index",
            ylabel="s_k / s_1 (mean over matrices and runs)",
            title="the weight update's spectrum",
        )
        axes[0].legend(title="arm", **_LEGEND)
        paths.append(output / WHY_FIGURES["spectrum"])
        _save(fig, paths[-1])
    return paths
