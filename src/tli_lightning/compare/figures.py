"""The report's PNG figures (matplotlib's Figure API, no pyplot): the learning-vs-forgetting trade-off, the
primary endpoint per layer, and zero-shot accuracy with its confidence intervals. Legends sit beside the axes,
never over the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _bar(value: float, interval: Any) -> list[list[float]]:
    """Error-bar lengths below and above ``value`` (none where the interval is undefined); rounding can put an
    interval's end a hair inside the value."""
    if not interval or interval[0] is None or interval[1] is None:
        return [[0.0], [0.0]]
    return [[max(0.0, value - interval[0])], [max(0.0, interval[1] - value)]]


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")
_LEGEND = {"fontsize": 9, "loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}


def _arm_colors(report: dict[str, Any]) -> dict[str, str]:
    """One colour per recipe (an arm's name): the arms of a learning-rate sweep share it."""
    methods = list(dict.fromkeys(a["method"] for a in report["arms"].values()))
    return {arm: f"C{methods.index(a['method']) % 10}" for arm, a in report["arms"].items()} | {
        m: f"C{i % 10}" for i, m in enumerate(methods)
    }


def _figure(panels: int, width: float = 5.2, height: float = 4.4) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend to choose

    fig = Figure(figsize=(width * panels + 2.4, height))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def figure_tradeoff(report: dict[str, Any], path: Path) -> None:
    """Learning vs forgetting (Biderman et al. 2024): x = the primary alignment gain on control pairs, y = the
    zero-shot accuracy change, one panel per task, one point per run with its CIs, each arm's learning rates
    joined (means per rate) so that methods compare along a curve, not at one recipe each."""
    layer = report["settings"]["stats_layer"]
    colors = _arm_colors(report)
    tasks = report["data"]["tasks"]
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks):
        for arm in dict.fromkeys(r["method"] for r in report["runs"]):  # a recipe: its rates join one curve
            points = []
            for r in (r for r in report["runs"] if r["method"] == arm):
                e = r["endpoint"].get(str(layer), {}).get("control")
                x = r["reasoning"].get(task)
                if e is None or x is None:
                    continue
                xerr, yerr = _bar(e["gain"], e["gain_ci"]), _bar(x["acc_diff"], x["acc_diff_ci"])
                ax.errorbar(
                    e["gain"],
                    x["acc_diff"],
                    xerr=xerr,
                    yerr=yerr,
                    fmt="o",
                    color=colors[arm],
                    alpha=0.45,
                    markersize=5,
                    capsize=2,
                    elinewidth=0.8,
                )
                points.append((r["learning_rate"], e["gain"], x["acc_diff"]))
            rates = sorted({p[0] for p in points if p[0] is not None})
            means = [
                (rate, *[sum(p[k] for p in points if p[0] == rate) / sum(p[0] == rate for p in points) for k in (1, 2)])
                for rate in rates
            ]
            if means:
                ax.plot(
                    [m[1] for m in means],
                    [m[2] for m in means],
                    color=colors[arm],
                    marker="D",
                    linewidth=1.8,
                    label=f"{arm} (lr {', '.join(f'{m[0]:.0e}' for m in means)})",
                )
                if len(means) > 1:
                    for rate, x_mean, y_mean in means:
                        ax.annotate(
                            f"{rate:.0e}",
                            (x_mean, y_mean),
                            textcoords="offset points",
                            xytext=(4, 4),
                            fontsize=7,
                            color=colors[arm],
                        )
        ax.axvline(0, color="grey", linestyle=":", linewidth=1)
        ax.axhline(0, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(f"control CSLS P@1 gain at layer {layer}\n(final - baseline; bars: 95% CIs)", fontsize=10)
        ax.set_ylabel(f"{task} accuracy change (final - baseline)", fontsize=10)
        ax.set_title(f"learning vs forgetting, {task}", fontsize=11)
        ax.grid(alpha=0.3)
    axes[-1].legend(title="arm: mean per learning rate", title_fontsize=9, **_LEGEND)
    _save(fig, path)


def figure_per_layer(report: dict[str, Any], path: Path) -> None:
    """Control pairs per layer, baseline (dashed) and final (solid), mean per arm: the primary endpoint against
    its chance level, and the descriptive gap (pair minus random-pair cosine), which a shift of the space moves."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    colors = _arm_colors(report)
    fig, (p_ax, gap_ax) = _figure(2)
    chance = None
    for arm in report["arms"]:
        curves = [r["control_gap_per_layer"] for r in report["runs"] if r["arm"] == arm]
        curves = [c for c in curves if c["csls_final"] is not None and c["final"] is not None]
        if not curves or len({tuple(c["layers"]) for c in curves}) > 1:
            continue
        layers = curves[0]["layers"]
        marker = _MARKERS[list(report["arms"]).index(arm) % len(_MARKERS)]  # arms that coincide stay visible
        for ax, before, after in ((p_ax, "csls_baseline", "csls_final"), (gap_ax, "baseline", "final")):
            for key, style in ((before, "--"), (after, "-")):
                mean = [sum(v) / len(curves) for v in zip(*[c[key] for c in curves])]
                ax.plot(
                    layers,
                    mean,
                    color=colors[arm],
                    linestyle=style,
                    linewidth=1.5,
                    marker=marker,
                    markersize=5,
                    fillstyle="none",
                )
        chance = curves[0]["chance"]
    for ax in (p_ax, gap_ax):
        targets = sorted({r["target_layer"] for r in report["runs"]})
        for target in targets:
            ax.axvline(target, color="black", linestyle="-.", linewidth=0.8, alpha=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (hidden_states index; 0 = embeddings)", fontsize=10)
        ax.grid(alpha=0.3)
    if chance is not None:
        p_ax.axhline(chance, color="grey", linestyle=":", linewidth=1.2)
    gap_ax.axhline(0, color="grey", linestyle=":", linewidth=1)
    p_ax.set_ylabel("control CSLS P@1 (shared pool)", fontsize=10)
    p_ax.set_title("primary endpoint per layer", fontsize=11)
    gap_ax.set_ylabel("control gap (pair - random-pair cosine)", fontsize=10)
    gap_ax.set_title("descriptive: gap per layer (not shift-invariant)", fontsize=11)
    n = {arm: sum(r["arm"] == arm for r in report["runs"]) for arm in report["arms"]}
    handles = [
        Line2D(
            [],
            [],
            color=colors[a],
            linewidth=2,
            marker=_MARKERS[i % len(_MARKERS)],
            fillstyle="none",
            label=f"{a} (n={n[a]})",
        )
        for i, a in enumerate(report["arms"])
    ]
    handles += [
        Line2D([], [], color="black", linestyle="--", label="before training"),
        Line2D([], [], color="black", label="final"),
        Line2D([], [], color="black", linestyle="-.", linewidth=0.8, label="target layer"),
        Line2D([], [], color="grey", linestyle=":", label="chance (P@1)"),
    ]
    gap_ax.legend(handles=handles, **_LEGEND)
    _save(fig, path)


def figure_accuracy(report: dict[str, Any], path: Path) -> None:
    """Zero-shot accuracy per run before and after training with Wilson 95% CIs, one panel per task, chance
    drawn: what "retention" is a ratio of, and how far from chance it sits."""
    from matplotlib.lines import Line2D

    colors = _arm_colors(report)
    tasks = report["data"]["tasks"]
    fig, axes = _figure(len(tasks), width=4.6)
    arms = list(report["arms"])
    offsets = []
    for ax, task in zip(axes, tasks):
        chance = report["reasoning_context"][task]["chance"]
        for a, arm in enumerate(arms):
            members = [r for r in report["runs"] if r["arm"] == arm]
            for k, r in enumerate(members):
                x = r["reasoning"][task]
                offset = a * 0.8 / max(1, len(arms)) + k * 0.6 / max(1, len(members)) / max(1, len(arms))
                offsets.append(offset)
                for stage in (0, 1):
                    acc = x["acc"][stage]
                    ax.errorbar(
                        stage + offset,
                        acc,
                        yerr=_bar(acc, x["acc_ci"][stage]),
                        fmt="o" if stage else "s",
                        color=colors[arm],
                        markersize=4,
                        capsize=2,
                        elinewidth=0.8,
                        alpha=0.8,
                    )
        centre = (min(offsets) + max(offsets)) / 2 if offsets else 0.0
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1.2)
        ax.set_xticks([centre, 1 + centre], ["before training", "final"])
        ax.set_ylabel(f"{task} accuracy (Wilson 95% CI)", fontsize=10)
        ax.set_title(f"zero-shot {task} (chance {chance:.2f})", fontsize=11)
        ax.grid(alpha=0.3, axis="y")
    handles = [Line2D([], [], color=colors[a], marker="o", linestyle="", label=a) for a in arms]
    handles.append(Line2D([], [], color="grey", linestyle=":", label="chance"))
    axes[-1].legend(handles=handles, **_LEGEND)
    _save(fig, path)
