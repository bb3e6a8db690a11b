"""Why a run forgets: the weight update's spectrum and each layer's drift from the base model."""

import json
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from peft import LoraConfig, get_peft_model
from torch.utils.data import DataLoader, TensorDataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from tli_lightning.backbones import lora_targets
from tli_lightning.callbacks import RepresentationDrift, WeightUpdateSpectrum
from tli_lightning.drift import drift_report, embed_texts, linear_cka, mean_cosine, sample_texts
from tli_lightning.weight_update import (
    effective_rank,
    full_update_report,
    lora_update_report,
    low_rank_singular_values,
    snapshot_trained,
)


def test_low_rank_spectrum_equals_the_svd_of_the_formed_matrix():
    generator = torch.Generator().manual_seed(0)
    b, a = torch.randn(48, 4, generator=generator), torch.randn(4, 40, generator=generator)
    formed = torch.linalg.svdvals(2.5 * b.double() @ a.double())
    torch.testing.assert_close(low_rank_singular_values(b, a, 2.5), formed[:4], atol=1e-5, rtol=0)
    assert formed[4:].abs().max() < 1e-10  # the formed matrix has rank 4: nothing is left out


def test_effective_rank_counts_the_values_holding_90_percent():
    assert effective_rank(torch.tensor([3.0, 1.0, 0.0])) == 1  # 9 of 10
    assert effective_rank(torch.tensor([1.0, 1.0, 1.0, 1.0])) == 4  # 3 of 4 < 0.9
    assert effective_rank(torch.zeros(5)) == 0


def _lora(model, r=2):
    config = LoraConfig(r=r, lora_alpha=4, layers_to_transform=[0, 1], **lora_targets(model))
    return get_peft_model(model, config)


def test_lora_update_of_rank_r(tiny_dir):
    from tli_lightning.loading import load_causal_lm

    model, _ = load_causal_lm(str(tiny_dir))
    peft = _lora(model, r=2)
    untrained = lora_update_report(peft)
    assert untrained["total"]["relative_norm"] == 0 and untrained["total"]["effective_rank_max"] == 0
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    report = lora_update_report(peft)
    assert [b["layer"] for b in report["blocks"]] == [1, 2]  # blocks 0 and 1: hidden_states 1 and 2
    assert len(report["matrices"]) == 4  # q_proj and v_proj of two blocks
    matrix = report["matrices"][0]
    assert 1 <= matrix["effective_rank"] <= 2 and len(matrix["singular_values"]) == 2
    # Against the delta PEFT itself forms, and the base weight it adds it to.
    layer = dict(peft.named_modules())[matrix["name"]]
    delta = layer.get_delta_weight("default")
    formed = torch.linalg.svdvals(delta.double())
    torch.testing.assert_close(
        torch.tensor(matrix["singular_values"], dtype=torch.float64), formed[:2], atol=1e-5, rtol=0
    )
    base = layer.get_base_layer().weight
    assert matrix["relative_norm"] == pytest.approx(float(delta.norm() / base.norm()), rel=1e-5)
    assert report["spectrum"][0] == pytest.approx(1.0)


def test_full_rank_update_against_its_snapshot(tiny_dir):
    from tli_lightning.loading import load_causal_lm

    model, _ = load_causal_lm(str(tiny_dir))
    model.requires_grad_(False)
    model.model.layers[1].requires_grad_(True)
    base = snapshot_trained(model)
    assert len(base) == 7  # q, k, v, o, gate, up, down of block 1 (norms are vectors, not matrices)
    untrained = full_update_report(model, base)
    assert untrained["total"]["relative_norm"] == 0 and untrained["total"]["effective_rank_max"] == 0
    with torch.no_grad():
        weight = model.model.layers[1].mlp.up_proj.weight
        weight += 0.01 * torch.outer(torch.ones(weight.shape[0]), torch.arange(weight.shape[1]).float())
    report = full_update_report(model, base)
    up = next(m for m in report["matrices"] if m["name"].endswith("up_proj.weight"))
    assert up["effective_rank"] == 1 and up["layer"] == 2
    assert sum(m["norm"] > 0 for m in report["matrices"]) == 1


def test_cka_invariances_and_sensitivity():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 16, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, 7.5 * x) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, 0.3 * x @ rotation) == pytest.approx(1.0, abs=1e-6)
    perturbed = x + torch.randn(40, 16, generator=generator, dtype=torch.float64)
    assert linear_cka(x, perturbed) < 0.9
    # The cosine is what moves under the rotation CKA ignores.
    assert mean_cosine(x, x) == pytest.approx(1.0) and mean_cosine(x, x @ rotation) < 0.9
    assert math.isnan(linear_cka(torch.ones(5, 3), x[:5]))


def test_text_sample_is_seeded_and_stable():
    premises = {"sw": [f"s{i}" for i in range(100)], "en": [f"e{i}" for i in range(10)]}
    one = sample_texts(premises, ["a", "b", "c"], premises_per_language=20, words_count=2, seed=3)
    assert one == sample_texts(dict(reversed(premises.items())), ["c", "b", "a"], 20, 2, seed=3)
    assert len(one["premises"]) == 30 and len(one["words"]) == 2
    assert one != sample_texts(premises, ["a", "b", "c"], 20, 2, seed=4)


def test_the_base_model_has_not_drifted_from_itself(tiny_float):
    model, tokenizer = tiny_float
    texts = ["Watoto walikwenda shule.", "The sun is hot.", "maji", "moto"]
    base = {"t": embed_texts(model, tokenizer, texts)}
    report = drift_report(base, {"t": embed_texts(model, tokenizer, texts)})
    assert report["layers"] == list(range(5))
    assert report["sets"]["t"]["cka"] == pytest.approx([1.0] * 5, abs=1e-9)
    assert report["sets"]["t"]["cos"] == pytest.approx([1.0] * 5, abs=1e-9)


def test_lora_on_a_4bit_base_reads_the_dequantised_weight(tiny_dir, tiny_float):
    from tli_lightning.loading import load_causal_lm

    model, _ = load_causal_lm(str(tiny_dir), quantization="nf4", compute_dtype="float32")
    report = lora_update_report(_lora(model))
    float_norm = float(tiny_float[0].model.layers[0].self_attn.q_proj.weight.norm())
    # NF4's rounding moves the norm by a few percent, no more.
    assert report["matrices"][0]["base_norm"] == pytest.approx(float_norm, rel=0.05)


class _PlainLM(L.LightningModule):
    """A plain HF causal LM with a plain LM loss: what the callbacks need is `.model` and `.tokenizer`."""

    def __init__(self, path: str, lr: float) -> None:
        super().__init__()
        self.model = AutoModelForCausalLM.from_pretrained(path).train()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        return self.model(input_ids=batch[0], labels=batch[0]).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        ids = self.tokenizer(["Watoto walikwenda shule."] * 4, return_tensors="pt")["input_ids"]
        return DataLoader(TensorDataset(ids), batch_size=2)


TEXTS = {"premises": ["Watoto walikwenda shule.", "The sun is hot.", "Mvua inanyesha leo."], "words": ["maji", "moto"]}


def _fit_plain(tmp_path, tiny_dir, lr, max_epochs=1, ckpt_path=None):
    update, drift = WeightUpdateSpectrum(), RepresentationDrift(texts=TEXTS, progress=False)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        callbacks=[update, drift],
        logger=TensorBoardLogger(tmp_path, name="run"),
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    torch.manual_seed(0)
    trainer.fit(_PlainLM(str(tiny_dir), lr), ckpt_path=ckpt_path)
    return trainer, update, drift


def test_an_untrained_run_has_no_update_and_no_drift(tmp_path, tiny_dir):
    trainer, update, drift = _fit_plain(tmp_path, tiny_dir, lr=0.0)
    run = tmp_path / "run" / "version_0"
    report = json.loads((run / "weight_update" / "epoch_01.json").read_text())
    assert report["measurement"] == "weight_update" and report["adaptation"] == "full"
    assert report["matrices"] and all(m["norm"] == 0 and m["effective_rank"] == 0 for m in report["matrices"])
    assert [b["layer"] for b in report["blocks"]] == [0, 1, 2, 3, 4]  # the embeddings, then blocks 0-3
    after = json.loads((run / "drift" / "epoch_01.json").read_text())
    for entry in after["sets"].values():
        assert entry["cka"] == pytest.approx([1.0] * 5, abs=1e-9) and entry["cos"] == pytest.approx([1.0] * 5)
    assert trainer.callback_metrics["drift/premises/cka/lowest"].item() == pytest.approx(1.0)
    # The base is kept where a resumed run finds it again.
    state = drift.state_dict()
    again = RepresentationDrift(texts=TEXTS)
    again.load_state_dict(state)
    assert again.sample == drift.sample and all(torch.equal(again.base[k], drift.base[k]) for k in drift.base)
    assert set(update.state_dict()["base"]) == {m["name"] for m in report["matrices"]}


def test_a_trained_run_moves_the_weights_and_the_deep_layers(tmp_path, tiny_dir):
    _trainer, update, drift = _fit_plain(tmp_path, tiny_dir, lr=0.5)
    assert update.last["total"]["relative_norm"] > 0 and update.last["total"]["effective_rank_max"] >= 1
    cka = drift.last["sets"]["premises"]["cka"]
    assert cka[-1] < 1 - 1e-6
    lines = WeightUpdateSpectrum.summary_lines("w", update.headline()) + RepresentationDrift.summary_lines(
        "d", drift.headline()
    )
    assert lines[0].startswith("weight update (w, full, ") and "lowest CKA" in lines[2]


def test_a_resumed_full_rank_run_measures_against_the_same_base(tmp_path, tiny_dir):
    _, whole_update, whole_drift = _fit_plain(tmp_path / "whole", tiny_dir, lr=0.5, max_epochs=2)
    first, _, _ = _fit_plain(tmp_path / "first", tiny_dir, lr=0.5, max_epochs=1)
    first.save_checkpoint(tmp_path / "epoch1.ckpt")
    # A new process's callbacks: the base snapshot and the base vectors come from the checkpoint alone.
    _, update, drift = _fit_plain(
        tmp_path / "resumed", tiny_dir, lr=0.5, max_epochs=2, ckpt_path=tmp_path / "epoch1.ckpt"
    )
    assert update.last["total"]["relative_norm"] > 0
    assert update.last == whole_update.last and drift.last == whole_drift.last
    # A checkpoint from before the measurements were on: no base to compare with, said, never a trained "base".
    checkpoint = torch.load(tmp_path / "epoch1.ckpt", weights_only=False)
    checkpoint["callbacks"] = {}
    torch.save(checkpoint, tmp_path / "without.ckpt")
    _, update, drift = _fit_plain(tmp_path / "old", tiny_dir, lr=0.5, max_epochs=2, ckpt_path=tmp_path / "without.ckpt")
    assert "unavailable" in update.last and not update.last["blocks"]
    assert "unavailable" in drift.last and not drift.last["sets"]
    assert RepresentationDrift.summary_lines("drift", drift.headline())[0].startswith(
        "drift from the base (drift): not"
    )
