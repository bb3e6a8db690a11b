"""Checks injected into real `python -m tli_lightning fit` runs (tests/ is on PYTHONPATH in cli_helpers.cli).

--trainer.callbacks+=probes.ArmProbe --trainer.callbacks.report=probe.json
"""

from __future__ import annotations

import json

import bitsandbytes as bnb
import lightning as L
import torch


class ArmProbe(L.Callback):
    """After Lightning's setup: dtypes that must stay float32, 4-bit weights untouched. After the first
    backward pass: every trainable parameter got a gradient. Raises (failing the run) on a violation and
    writes what it checked to ``report``."""

    def __init__(self, report: str = "probe.json") -> None:
        self.report = report
        self.found: dict = {}
        self.touched: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        from tli_lightning.loading import load_causal_lm

        hp = pl_module.hparams
        named = dict(pl_module.named_parameters())
        lora = {n: p.dtype for n, p in named.items() if "lora_" in n}
        assert all(d == torch.float32 for d in lora.values()), f"LoRA weights not float32: {set(lora.values())}"
        rotary = {n: b.dtype for n, b in pl_module.named_buffers() if "inv_freq" in n}
        # GPT-2 (learned positions) and BLOOM (ALiBi) have no rotary embedding.
        uses_rotary = any("rotary_emb" in n for n, _ in pl_module.named_modules())
        assert rotary or not uses_rotary, "a rotary embedding without its inv_freq buffer"
        assert all(d == torch.float32 for d in rotary.values()), f"rotary buffers: {rotary}"
        packed = {
            n.removeprefix("model.").removeprefix("base_model.model.").removesuffix(".base_layer"): m.weight
            for n, m in pl_module.named_modules()
            if isinstance(m, bnb.nn.Linear4bit)
        }
        if hp.quantization != "none":
            fresh, _ = load_causal_lm(
                hp.model_name_or_path, quantization=hp.quantization, compute_dtype=hp.compute_dtype
            )
            expected = {n: m.weight for n, m in fresh.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
            assert packed.keys() == expected.keys() and packed, "4-bit layers differ from a fresh load"
            for name, weight in packed.items():
                assert weight.dtype == torch.uint8 and torch.equal(weight.data, expected[name].data), (
                    f"{name} was altered"
                )
        trainable = {n: p.dtype for n, p in named.items() if p.requires_grad}
        if hp.adaptation == "full":
            wanted = torch.float32 if hp.master_weights else getattr(torch, hp.compute_dtype)
            dtypes = set(trainable.values())
            assert dtypes == {wanted}, f"trainable weights {dtypes}, expected {wanted}"
            assert not any("lm_head" in n for n in trainable), "the LM head is trainable but the loss cannot reach it"
        self.start = {n: p.detach().clone() for n, p in named.items() if p.requires_grad}
        self.found.update(
            lora=len(lora),
            rotary=len(rotary),
            packed=len(packed),
            trainable=len(trainable),
            precision=str(trainer.precision),
        )

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if optimizer.param_groups[0]["lr"] > 0:  # what this step will update (warm-up starts at rate 0)
            for name, p in pl_module.named_parameters():
                if p.requires_grad and p.grad is not None:
                    touched = self.touched.get(name)
                    self.touched[name] = (p.grad != 0) if touched is None else touched | (p.grad != 0)
        if "gradients" in self.found:
            return
        missing = [n for n, p in pl_module.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"trainable parameters without a gradient: {missing[:5]}"
        # LoRA's A matrices get zero gradient while B is still 0 (its initialisation); every B and every
        # full-rank weight must move.
        zero = [
            n
            for n, p in pl_module.named_parameters()
            if p.requires_grad and "lora_A" not in n and not p.grad.abs().sum() > 0
        ]
        assert not zero, f"trainable parameters with an all-zero gradient: {zero[:5]}"
        self.found["gradients"] = sum(1 for p in pl_module.parameters() if p.requires_grad)

    def on_train_end(self, trainer, pl_module) -> None:
        # Training moved the weights: every element an update reached changed, none lost to rounding (in
        # bfloat16, updates below half a weight's spacing vanish).
        lost = {}
        for name, p in pl_module.named_parameters():
            if name in self.touched and self.touched[name].any():
                unchanged = (p.detach() == self.start[name]) & self.touched[name]
                lost[name] = float(unchanged.sum() / self.touched[name].sum())
        # (8-bit AdamW quantizes tiny moments to 0: a few per cent of elements may legitimately stay put.)
        still = [n for n, share in lost.items() if share > 0.1]
        assert lost and not still, f"updates lost to rounding: {[(n, lost[n]) for n in still[:5]]}"
        self.found["lost_updates"] = max(lost.values())
        if trainer.is_global_zero:
            with open(self.report, "w", encoding="utf-8") as handle:
                json.dump(self.found, handle)
