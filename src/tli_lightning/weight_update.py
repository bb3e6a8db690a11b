"""The weight update of a run, per adapted matrix: how large it is and how many directions it uses.

"LoRA Learns Less and Forgets Less" (Biderman et al. 2024, arXiv 2405.09673) found full fine-tuning's
update to have 10-100x the rank of a typical LoRA's. Per adapted matrix this module reports:

- ``relative_norm``: ``||dW||_F / ||W_base||_F``;
- ``singular_values``: the update's largest singular values (``spectrum_values`` of them), and
  ``spectral_norm`` (the largest);
- ``effective_rank``: how many of the largest singular values hold 90% of ``||dW||_F^2`` (0 for no update);

and per block (block ``b`` produces ``hidden_states[b + 1]``, so its ``layer`` is ``b + 1``; matrices outside
the blocks, i.e. the embeddings, are ``layer`` 0): the block's relative norm (over all its matrices together),
the mean and largest effective rank, the largest spectral norm.

**LoRA** (PEFT): ``dW = scaling * B @ A`` for every active adapter, PEFT's own ``scaling`` (``alpha / r``, or
``alpha / sqrt(r)`` with rsLoRA). The spectrum is computed without forming ``dW``: with ``B = Q_B R_B`` and
``A^T = Q_A R_A``, ``B A = Q_B (R_B R_A^T) Q_A^T`` has the singular values of the ``r x r`` core. ``W_base``
(for the relative norm) is read one matrix at a time, dequantised when 4-bit
(``bitsandbytes.functional.dequantize_4bit``); its norm is computed once per process.

**Full-rank arms**: ``dW = W_now - W_base`` for every trained matrix, one matrix at a time, from a host copy of
the trained tensors' base values (:func:`snapshot_trained`), taken before the first step. The copy is kept in
the trained dtype, or in bfloat16 where that holds every value exactly (float32 master weights of a bfloat16
checkpoint, as the 8B recipes train). Chosen over re-reading the base checkpoint's safetensors because it needs
no mapping of checkpoint keys to parameter names and no knowledge of the dtype casts loading made, and it works
for any model however it was built; the cost is host memory and checkpoint size. At 8B: ``full_all`` trains
7.5B parameters, 15 GB in bfloat16 on the host of each process (and in the checkpoint, beside its float32
weights and two AdamW moments, 7.5B x 12 bytes = 90 GB: +17%); ``full_early`` (blocks 0-1: 2 x 218M) 0.9 GB.
Computed, not measured.

The SVD of each ``dW`` runs where the weights are (the GPU in training); timings are in ``benchmarks/RESULTS.md``.

Example, on any PEFT-LoRA model (or a full-rank one, with its snapshot)::

    from tli_lightning.weight_update import lora_update_report, full_update_report, snapshot_trained
    report = lora_update_report(peft_model)
    report["blocks"][0]["effective_rank_mean"], report["matrices"][0]["relative_norm"]
    base = snapshot_trained(model)   # before training
    ...                              # train
    report = full_update_report(model, base)
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tli_lightning.backbones import blocks_of

EFFECTIVE_RANK_MASS = 0.9
SPECTRUM_VALUES = 256  # singular values kept per matrix in the JSON (the largest)
# The Frobenius norm of each LoRA layer's frozen base weight.
_BASE_NORMS: weakref.WeakKeyDictionary[nn.Module, float] = weakref.WeakKeyDictionary()


def effective_rank(singular_values: Tensor, mass: float = EFFECTIVE_RANK_MASS) -> int:
    """The number of largest singular values holding ``mass`` of the squared Frobenius norm (0 if all are 0)."""
    squared = singular_values.double().sort(descending=True).values ** 2
    total = squared.sum()
    if total <= 0:
        return 0
    # A relative tolerance: a rank-r update's mass reaches 0.9 within rounding, not above it by chance.
    reached = squared.cumsum(0) >= mass * total * (1 - 1e-12)
    return int(reached.nonzero()[0, 0]) + 1


def low_rank_singular_values(b: Tensor, a: Tensor, scale: float = 1.0) -> Tensor:
    """Singular values of ``scale * b @ a`` (``b``: ``[out, r]``, ``a``: ``[r, in]``) without forming it.

    float64, descending, ``min(r, out, in)`` values.
    """
    _, r_b = torch.linalg.qr(b.double())
    _, r_a = torch.linalg.qr(a.double().T)
    return torch.linalg.svdvals(r_b @ r_a.T) * abs(scale)


@dataclass
class _Matrix:
    name: str
    block: int | None
    shape: tuple[int, ...]
    singular_values: Callable[[], Tensor]  # descending
    base_norm: Callable[[], float]


def matrix_entry(matrix: _Matrix, spectrum_values: int = SPECTRUM_VALUES) -> dict[str, Any]:
    """One matrix's numbers (JSON-ready)."""
    s = matrix.singular_values().double()
    norm = float(s.square().sum().sqrt())
    base = matrix.base_norm()
    return {
        "name": matrix.name,
        "block": matrix.block,
        "layer": 0 if matrix.block is None else matrix.block + 1,
        "shape": list(matrix.shape),
        "norm": norm,
        "base_norm": base,
        "relative_norm": norm / base if base > 0 else math.nan,
        "spectral_norm": float(s[0]) if len(s) else 0.0,
        "effective_rank": effective_rank(s),
        "singular_values": [float(v) for v in s[:spectrum_values]],
    }


def aggregate(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per block (and the matrices outside the blocks as layer 0) and over all: norms, ranks, mean spectrum."""
    groups: dict[int | None, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(entry["block"], []).append(entry)
    order = sorted(groups, key=lambda b: -1 if b is None else b)
    return {
        "matrices": entries,
        "blocks": [_group(groups[b], b) for b in order],
        "total": _total(entries) if entries else None,
        "spectrum": normalised_spectrum(entries),
        "effective_rank_mass": EFFECTIVE_RANK_MASS,
    }


def _group(entries: list[dict[str, Any]], block: int | None) -> dict[str, Any]:
    norm = math.sqrt(sum(e["norm"] ** 2 for e in entries))
    base = math.sqrt(sum(e["base_norm"] ** 2 for e in entries))
    ranks = [e["effective_rank"] for e in entries]
    return {
        "block": block,
        "layer": 0 if block is None else block + 1,
        "matrices": len(entries),
        "relative_norm": norm / base if base > 0 else math.nan,
        "effective_rank_mean": sum(ranks) / len(ranks),
        "effective_rank_max": max(ranks),
        "spectral_norm_max": max(e["spectral_norm"] for e in entries),
    }


def _total(entries: list[dict[str, Any]]) -> dict[str, Any]:
    total = _group(entries, None)
    del total["block"], total["layer"]  # every matrix, not the layer-0 group
    return total


def normalised_spectrum(entries: list[dict[str, Any]]) -> list[float]:
    """The mean over matrices of ``s_k / s_1`` at each index ``k`` (a shorter spectrum counts as 0 beyond its end).

    Empty when no matrix has moved.
    """
    spectra = [e["singular_values"] for e in entries if e["singular_values"] and e["singular_values"][0] > 0]
    if not spectra:
        return []
    width = max(map(len, spectra))
    sums = [0.0] * width
    for s in spectra:
        for k, value in enumerate(s):
            sums[k] += value / s[0]
    return [v / len(spectra) for v in sums]


def _block_of(model: nn.Module) -> Callable[[nn.Module], int | None]:
    owners = {id(m): b for b, block in enumerate(blocks_of(model)) for m in block.modules()}
    return lambda module: owners.get(id(module))


def _dense(weight: Tensor) -> Tensor:
    """A weight as a dense floating matrix: 4-bit weights dequantised, FSDP shards gathered."""
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, quant_state)
    if hasattr(weight, "full_tensor"):  # a DTensor (FSDP2): a collective, every rank in the same order
        return weight.full_tensor()
    return weight.detach()


def lora_matrices(model: nn.Module) -> Iterator[_Matrix]:
    """Every (LoRA layer, active adapter) of a PEFT model, as lazily computed matrices."""
    from peft.tuners.lora import LoraLayer

    block_of = _block_of(model)
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue  # an embedding adapter (lora_embedding_A) or one not on this layer
            a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
            scale = float(module.scaling[adapter])
            base = module.get_base_layer().weight

            def base_norm(module: nn.Module = module, base: Tensor = base) -> float:
                # Constant during training: once per process (4-bit dequantisation is the costly part).
                if module not in _BASE_NORMS:
                    _BASE_NORMS[module] = float(torch.linalg.matrix_norm(_dense(base).float()))
                return _BASE_NORMS[module]

            yield _Matrix(
                name=f"{name}:{adapter}" if len(module.active_adapters) > 1 else name,
                block=block_of(module),
                shape=tuple(base.shape) if base.dim() == 2 else (b.shape[0], a.shape[1]),
                singular_values=lambda a=a, b=b, scale=scale: low_rank_singular_values(b.detach(), a.detach(), scale),
                base_norm=base_norm,
            )


def trained_matrices(model: nn.Module) -> Iterator[tuple[str, int | None, nn.Parameter]]:
    """``(name, block, parameter)`` of every trained 2-D parameter (the matrices of a full-rank arm)."""
    block_of = _block_of(model)
    owners = {id(p): module for module in model.modules() for p in module.parameters(recurse=False)}
    for name, param in model.named_parameters():
        if param.requires_grad and param.dim() == 2:
            yield name, block_of(owners[id(param)]), param


def _exact_in_bfloat16(tensor: Tensor) -> bool:
    return tensor.dtype == torch.float32 and bool((tensor.bfloat16().float() == tensor).all())


def snapshot_trained(model: nn.Module) -> dict[str, Tensor]:
    """Host copies of every trained matrix, in bfloat16 where that holds each value exactly (else as trained)."""
    snapshot = {}
    for name, _block, param in trained_matrices(model):
        value = _dense(param).cpu()
        snapshot[name] = value.bfloat16() if _exact_in_bfloat16(value) else value.clone()
    return snapshot


def full_matrices(model: nn.Module, base: Mapping[str, Tensor]) -> Iterator[_Matrix]:
    """``W_now - W_base`` of every trained matrix, each formed only when its spectrum is asked for."""
    for name, block, param in trained_matrices(model):
        if name not in base:
            continue  # trained now but not when the base was taken: nothing to subtract from

        def singular_values(name: str = name, param: Tensor = param) -> Tensor:
            now = _dense(param)
            delta = now.float() - base[name].to(now.device, torch.float32)
            return torch.linalg.svdvals(delta)

        def base_norm(name: str = name) -> float:
            return float(torch.linalg.matrix_norm(base[name].float()))

        yield _Matrix(name, block, tuple(param.shape), singular_values, base_norm)


def lora_update_report(model: nn.Module, spectrum_values: int = SPECTRUM_VALUES) -> dict[str, Any]:
    """:func:`aggregate` of every LoRA matrix of a PEFT model."""
    return aggregate([matrix_entry(m, spectrum_values) for m in lora_matrices(model)])


def full_update_report(
    model: nn.Module, base: Mapping[str, Tensor], spectrum_values: int = SPECTRUM_VALUES
) -> dict[str, Any]:
    """:func:`aggregate` of every trained matrix against ``base`` (:func:`snapshot_trained`)."""
    return aggregate([matrix_entry(m, spectrum_values) for m in full_matrices(model, base)])


def is_lora(model: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())
