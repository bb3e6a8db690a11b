"""``fit``'s on/off switches for the default measurements that are cheap enough to run by default but not needed
by every study: ``--measure.weight_update false``, ``--measure.drift false`` (or in a config: ``measure:
{drift: false}``). A switch turned off removes that measurement's callback from ``trainer.callbacks``, whether
it came from the defaults or from the user's list.

Used by the CLI only (:func:`add_switches` on the parser, :func:`apply_switches` before instantiation)::

    add_switches(parser)            # in LightningCLI.add_arguments_to_parser
    apply_switches(config)          # in LightningCLI.before_instantiate_classes
"""

from __future__ import annotations

from typing import Any

# switch -> (callback class name, what it measures)
SWITCHES = {
    "weight_update": (
        "WeightUpdateSpectrum",
        "the weight update's relative norm, singular values and effective rank per adapted matrix and block",
    ),
    "drift": (
        "RepresentationDrift",
        "each layer's linear CKA and cosine to the base model's vectors on sampled XNLI premises and words",
    ),
}


def add_switches(parser: Any) -> None:
    group = parser.add_argument_group(
        "Optional measurements (each epoch, beside alignment, zero-shot task and held-out text retention)"
    )
    for name, (callback, what) in SWITCHES.items():
        group.add_argument(
            f"--measure.{name}",
            type=bool,
            default=True,
            help=f"Measure {what} ({callback}); false turns it off",
        )


def apply_switches(config: Any) -> None:
    """Drop the callbacks whose switch is off from ``config.trainer.callbacks``."""
    settings = config.get("measure") or {}
    off = {SWITCHES[name][0] for name in SWITCHES if settings.get(name) is False}
    if not off:
        return
    config.trainer.callbacks = [
        c
        for c in config.trainer.callbacks or []
        if getattr(c, "class_path", type(c).__name__).rsplit(".", 1)[-1] not in off
    ]
