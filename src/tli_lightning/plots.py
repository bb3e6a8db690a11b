"""Figures people would rather look at than read: per-layer alignment, XNLI over epochs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files and TensorBoard only; never a window
import matplotlib.pyplot as plt  # noqa: E402

PANELS = ("cos", "cos_random", "gap", "cos_centered", "cos_bos", "p_at_1_s2t")
_TITLES = {
    "cos": "translation-pair cosine",
    "cos_random": "shuffled-pair cosine (baseline)",
    "gap": "gap = pair - shuffled",
    "cos_centered": "mean-centered pair cosine",
    "cos_bos": "cosine with BOS in the mean (artefact)",
    "p_at_1_s2t": "P@1 source -> target",
}


def alignment_figure(now: Mapping, baseline: Mapping | None = None, title: str = ""):
    """Per-layer curves of an :func:`~tli_lightning.alignment.alignment_report`, optionally against a baseline."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    for ax, metric in zip(axes.flat, PANELS):
        for index, (name, entry) in enumerate(now["sets"].items()):
            color = f"C{index}"
            if baseline is not None and name in baseline["sets"]:
                ax.plot(baseline["layers"], baseline["sets"][name][metric], color=color, linestyle="--", alpha=0.6, label=f"{name} (before)")
            ax.plot(now["layers"], entry[metric], color=color, marker=".", label=name)
        ax.set_title(_TITLES[metric], fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("layer (hidden_states index; 0 = embeddings)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def retention_figure(history: Sequence[Mapping[str, float]], languages: Sequence[str]):
    """Accuracy per language over evaluations (0 = before training), with chance at 1/3."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for language in languages:
        points = [(h["epoch"], h[f"xnli/{language}/acc"]) for h in history if f"xnli/{language}/acc" in h]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=language)
    ax.axhline(1 / 3, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("zero-shot XNLI accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
