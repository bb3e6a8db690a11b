"""Figures people would rather look at than read: per-layer alignment, zero-shot accuracy over epochs.

Sized to stay readable as TensorBoard thumbnails: one row of panels, large text, the baseline
drawn where a reader needs it (random pairs, chance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

# Figures are made directly, not through pyplot: no backend switch, no global style change, nothing to
# close, in whatever program (a notebook) imports the package.
LAYER_LABEL = "layer (hidden_states index; 0 = embeddings)"
_TEXT = {"fontsize": 12}
_TITLE = {"fontsize": 13}
_LEGEND = 10


def alignment_figure(
    now: Mapping, baseline: Mapping | None = None, title: str = "", target_layer: int | None = None
) -> Figure:
    """Per-layer alignment of an :func:`~tli_lightning.alignment.alignment_report` (or its summary).

    Three panels: the translation-pair cosine with the random-pair cosine under it, the gap between them
    (both descriptive: a shift of the space moves them), and the primary endpoint, CSLS P@1 over the shared
    pool, against chance. Dashed: before training; a vertical line marks ``target_layer``.
    """
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(15, 4.6))
    cos_ax, gap_ax, p_ax = fig.subplots(1, 3)
    for index, (name, entry) in enumerate(now["sets"].items()):
        color = f"C{index}"
        before = baseline["sets"].get(name) if baseline is not None else None
        layers = now["layers"]
        cos_ax.plot(layers, entry["cos"], color=color, marker=".", label=f"{name}: translations")
        cos_ax.plot(layers, entry["cos_random"], color=color, linestyle=":", label=f"{name}: random pairs")
        gap_ax.plot(layers, entry["gap"], color=color, marker=".", label=name)
        p_ax.plot(layers, entry["csls_p_at_1"], color=color, marker=".", label=name)
        if before is not None:
            gap_ax.plot(
                baseline["layers"], before["gap"], color=color, linestyle="--", alpha=0.6, label=f"{name}, before"
            )
            p_ax.plot(baseline["layers"], before["csls_p_at_1"], color=color, linestyle="--", alpha=0.6)
        if entry.get("chance_p_at_1"):
            p_ax.axhline(entry["chance_p_at_1"], color=color, linestyle=":", alpha=0.7, label=f"chance ({name})")
    gap_ax.axhline(0.0, color="grey", linewidth=0.8)
    cos_ax.set_title("cosine: translations vs random pairs", **_TITLE)
    gap_ax.set_title("gap = pair - random-pair cosine", **_TITLE)
    p_ax.set_title("CSLS P@1, shared pool (primary)", **_TITLE)
    for ax in (cos_ax, gap_ax, p_ax):
        if target_layer is not None:
            ax.axvline(target_layer, color="black", linestyle="-.", linewidth=0.8, alpha=0.6, label="target layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(LAYER_LABEL, **_TEXT)
        ax.tick_params(labelsize=11)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=_LEGEND)
    fig.suptitle(title, **_TITLE)
    fig.tight_layout()
    return fig


def retention_figure(history: Sequence[Mapping[str, float]], chance: Mapping[str, float], prefix: str) -> Figure:
    """Accuracy per task over evaluations (0 = before training), each task's chance level dotted in its colour.

    ``history``: one dict per evaluation with ``epoch`` and ``<prefix>/<task>/acc``; ``chance``: ``{task: level}``.
    """
    fig = Figure(figsize=(7, 4.6))
    ax = fig.subplots()
    for index, (task, level) in enumerate(chance.items()):
        tag = f"{prefix}/{task}/acc"
        points = [(h["epoch"], h[tag]) for h in history if tag in h]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=f"C{index}", label=task)
        ax.axhline(level, color=f"C{index}", linestyle=":", alpha=0.6)
    ax.set_xlabel("epochs trained", **_TEXT)
    ax.set_ylabel("zero-shot accuracy (dotted: chance)", **_TEXT)
    ax.set_title("zero-shot reasoning (lm-eval definitions)", **_TITLE)
    ax.tick_params(labelsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=_LEGEND)
    fig.tight_layout()
    return fig


def tensorboard_layout(
    pair_sets: Sequence[str],
    measured: Mapping[str, Mapping[str, list]] | None = None,
    layers: Mapping[int, str] | None = None,
    metrics: Sequence[str] = ("csls_p_at_1", "gap", "cos", "cos_random"),
) -> dict:
    """A custom-scalars layout: one category per logged layer (``{layer: label}``), then ``measured``'s categories
    (``{category: {chart title: ["Multiline", [tag regex]]}}``, from each measurement's ``layout``), training.

    TensorBoard's custom scalars colour a chart's lines by run, not by tag, and draw no legend: a
    chart with several tags of one run is lines of one colour that nobody can tell apart. So each
    chart holds one tag and is titled with it; its colours are the runs, which is what the view is
    for (arms and seeds side by side). Every layer of every metric is in the alignment
    figure and the JSON (``alignment/per_layer``). Without ``layers``, one category matches whatever layers were logged.
    """
    alignment: dict[str, dict] = {}
    if layers:
        for layer, label in layers.items():
            alignment[f"alignment at layer {layer} ({label})"] = {
                f"{name}: {metric} (layer {layer})": ["Multiline", [rf"align/{name}/{metric}/layer_{layer:02d}"]]
                for name in pair_sets
                for metric in metrics
            }
    else:
        alignment["alignment, logged layers"] = {
            f"{name}: {metric}": ["Multiline", [rf"align/{name}/{metric}/layer_\d+"]]
            for name in pair_sets
            for metric in metrics
        }
    layout: dict[str, dict] = dict(alignment)
    for category, charts in (measured or {}).items():  # each measurement's own (Measurement.layout)
        layout.setdefault(category, {}).update(charts)
    training = {
        "train/loss_epoch": ["Multiline", [r"train/loss_epoch"]],
        "val/loss": ["Multiline", [r"val/loss"]],
    }
    return {**layout, "training": training}
