"""Layer numbering, shared by training, callbacks and commands.

Everything in this package uses the ``hidden_states`` convention of Hugging Face models:
index 0 is the embedding output, index ``i`` is the output of decoder block ``i - 1``, and
index ``N`` (``N`` = number of blocks, also written ``-1``) is the final, normed output.
Blocks themselves (what LoRA or full fine-tuning adapts) are numbered ``0 .. N-1``: block
``b`` produces ``hidden_states[b + 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tli_lightning.errors import TLIError

LAYERS_NOTE = (
    "Layers are hidden_states indices: 0 = embeddings, i = output of block i-1, the last one (also -1) = the "
    "final normed output; blocks, what is adapted, are numbered 0..N-1."
)


def resolve_layer(layer: int, num_blocks: int) -> int:
    """Map a ``hidden_states`` index (``-1`` allowed for the last) to ``0 .. num_blocks``."""
    resolved = num_blocks + 1 + layer if layer < 0 else layer
    if not 0 <= resolved <= num_blocks:
        raise TLIError(
            f"layer {layer} is out of range for a model with {num_blocks} blocks: "
            f"hidden_states indices run from 0 (embeddings) to {num_blocks} (or -1, the final output)"
        )
    return resolved


def resolve_blocks(blocks: Sequence[int] | str | None, target_layer: int, num_blocks: int) -> list[int]:
    """The block indices to adapt: ``None`` means every block below the target layer."""
    if blocks is None:
        return list(range(target_layer))
    if isinstance(blocks, str):
        if blocks != "all":
            raise TLIError(f"adapt_layers must be a list of block indices or 'all', got {blocks!r}")
        return list(range(num_blocks))
    out_of_range = [b for b in blocks if not 0 <= b < num_blocks]
    if out_of_range:
        raise TLIError(
            f"adapt_layers {out_of_range} are not blocks of this model: blocks run from 0 to {num_blocks - 1}"
        )
    return sorted(set(blocks))
