"""The report's two PNG figures (matplotlib's Figure API, no pyplot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _arm_colors(report: dict[str, Any]) -> dict[str, str]:
    return {arm: f"C{i % 10}" for i, arm in enumerate(report["arms"])}


def _figure_gain_vs_retention(report: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import (
        Figure,  # no pyplot: no global state, no backend to choose
    )

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
