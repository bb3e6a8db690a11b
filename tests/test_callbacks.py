"""The callbacks in a LightningModule that is not TLIModule: a plain HF causal LM, a plain LM loss."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from tli_lightning.callbacks import LanguageModelRetention, LayerwiseAlignment, ZeroShotRetention
from tli_lightning.tasks import load_examples
from tli_lightning.tiny_model import demo_data_path
from tli_lightning.xnli import read_xnli_file
from tli_lightning.zeroshot import score_xnli

PAIRS = {
    "trained": [("maji", "water"), ("moto", "fire"), ("jua", "sun"), ("mama", "mother"), ("mtoto", "child")],
    "control": [("mbwa", "dog"), ("paka", "cat"), ("kuku", "chicken")],
}


class PlainLM(L.LightningModule):
    """Exposes `.model` and `.tokenizer`: all the callbacks need."""

    def __init__(self, path: str, lr: float = 0.0) -> None:
        super().__init__()
        self.model = AutoModelForCausalLM.from_pretrained(path).train()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.lr = lr
        self.modes_seen_in_training: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.modes_seen_in_training.append(self.model.training)
        return self.model(input_ids=batch[0], labels=batch[0]).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        ids = self.tokenizer(["Watoto walikwenda shule."] * 4, return_tensors="pt")["input_ids"]
        return DataLoader(TensorDataset(ids), batch_size=2)


def _xnli(n=7):
    return {"xnli_sw": load_examples("xnli_sw", "demo")[:n]}


def _fit(tmp_path, module, callbacks, max_epochs=2):
    trainer = L.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=TensorBoardLogger(tmp_path, name="run"),
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module)
    return trainer


def test_reuse_in_a_plain_lightning_module(tmp_path, tiny_dir):
    # Learning rate 0: the weights never change, so any difference between evaluations would come from the
    # evaluation itself (dropout left on, state leaking from one evaluation into the next): retention exactly 1.
    module = PlainLM(str(tiny_dir), lr=0.0)
    alignment = LayerwiseAlignment(pair_sets=PAIRS, progress=False)
    retention = ZeroShotRetention(tasks=_xnli(), progress=False)
    texts = LanguageModelRetention(texts={"sw": ["Watoto walikwenda shule.", "Mvua inanyesha leo."]}, progress=False)
    trainer = _fit(tmp_path, module, [alignment, retention, texts])

    run = tmp_path / "run" / "version_0"
    assert sorted(p.name for p in (run / "alignment").iterdir()) == ["baseline.json", "epoch_01.json", "epoch_02.json"]
    baseline = json.loads((run / "reasoning" / "baseline.json").read_text())
    assert baseline["measurement"] == "multiple_choice" and baseline["key"] == "reasoning"
    direct = score_xnli(module.model, module.tokenizer, read_xnli_file(demo_data_path("xnli_sw.jsonl"))[:7], "sw")
    torch.testing.assert_close(
        torch.tensor(baseline["tasks"]["xnli_sw"]["loglikelihoods"], dtype=torch.float64), direct, atol=1e-4, rtol=0
    )
    assert trainer.callback_metrics["reasoning/xnli_sw/retention"].item() == pytest.approx(1.0)
    # Held-out text: the model's own loss on each text (mean token NLL given BOS), unchanged at learning rate 0.
    lm = json.loads((run / "lm" / "epoch_02.json").read_text())["languages"]["sw"]
    ids = module.tokenizer(["Mvua inanyesha leo."], return_tensors="pt")["input_ids"]  # BOS + the text
    with torch.no_grad():
        loss = module.model.eval()(input_ids=ids, labels=ids).loss.item()
    assert lm["per_text_loglikelihood"][1] / lm["per_text_tokens"][1] == pytest.approx(-loss, abs=1e-5)
    assert trainer.callback_metrics["lm/sw/perplexity"].item() == pytest.approx(
        texts.first["languages"]["sw"]["perplexity"]
    )
    # A module without `target_layer`: the final layer's scalars only (every layer is in the JSON).
    assert "align/control/gap/layer_04" in trainer.callback_metrics
    assert "align/control/gap/layer_02" not in trainer.callback_metrics
    report = json.loads((run / "alignment" / "epoch_02.json").read_text())
    assert report["sets"]["trained"]["cos"] == alignment.baseline["sets"]["trained"]["cos"]
    assert len(report["sets"]["control"]["per_pair_cos"]) == 3
    assert all(module.modes_seen_in_training)  # evaluation put the model back in train mode
    assert [h["epoch"] for h in retention.history] == [0, 1, 2]


def test_two_instances_of_a_measurement_coexist_and_resume_their_own_state(tmp_path, tiny_dir):
    # Two task lists under two keys: two folders, two sets of scalars, two states in the checkpoint.
    first = ZeroShotRetention(tasks=_xnli(3), progress=False, key="reasoning")
    second = ZeroShotRetention(tasks={"xnli_en": load_examples("xnli_en", "demo")[:4]}, progress=False, key="english")
    trainer = _fit(tmp_path, PlainLM(str(tiny_dir)), [first, second], max_epochs=1)
    run = tmp_path / "run" / "version_0"
    assert (run / "reasoning" / "epoch_01.json").is_file() and (run / "english" / "epoch_01.json").is_file()
    assert {"reasoning/xnli_sw/acc", "english/xnli_en/acc"} <= set(trainer.callback_metrics)
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    states = torch.load(tmp_path / "c.ckpt", weights_only=False)["callbacks"]
    restored = ZeroShotRetention(key="english")
    restored.load_state_dict(states[restored.state_key])
    assert restored.first == second.first and restored.first["tasks"]["xnli_en"]["n"] == 4


def test_state_survives_a_checkpoint(tmp_path, tiny_dir):
    alignment = LayerwiseAlignment(pair_sets=PAIRS, progress=False)
    retention = ZeroShotRetention(tasks=_xnli(), progress=False)
    trainer = _fit(tmp_path, PlainLM(str(tiny_dir)), [alignment, retention], max_epochs=1)
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    checkpoint = torch.load(tmp_path / "c.ckpt", weights_only=False)
    fresh_alignment, fresh_retention = LayerwiseAlignment(pair_sets=PAIRS), ZeroShotRetention(tasks=_xnli())
    fresh_alignment.load_state_dict(checkpoint["callbacks"][fresh_alignment.state_key])
    fresh_retention.load_state_dict(checkpoint["callbacks"][fresh_retention.state_key])
    assert fresh_alignment.baseline == alignment.baseline and fresh_retention.baseline == retention.baseline


def test_importing_the_callbacks_does_not_import_the_cli():
    code = (
        "import sys, tli_lightning.callbacks; "
        "print('tli_lightning.cli' in sys.modules, 'lightning.pytorch.cli' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.slow
def test_ddp_splits_the_work_and_gathers_every_example_once(tmp_path, tiny_dir):
    # Two CPU processes (gloo); 7 XNLI examples and 16 words: shards of unequal size.
    worker = Path(__file__).with_name("ddp_worker.py")
    for devices in (1, 2):
        subprocess.run(
            [sys.executable, str(worker), str(tmp_path), str(devices), str(worker.parent), str(tiny_dir)],
            check=True,
            capture_output=True,
            timeout=300,
        )

    def read(devices, what):
        return json.loads((tmp_path / f"d{devices}" / "version_0" / what / "baseline.json").read_text())

    single, double = read(1, "reasoning")["tasks"]["xnli_sw"], read(2, "reasoning")["tasks"]["xnli_sw"]
    assert double["labels"] == single["labels"] and len(double["labels"]) == 7
    torch.testing.assert_close(
        torch.tensor(double["loglikelihoods"]), torch.tensor(single["loglikelihoods"]), atol=1e-4, rtol=0
    )
    a1, a2 = read(1, "alignment")["sets"]["control"], read(2, "alignment")["sets"]["control"]
    torch.testing.assert_close(torch.tensor(a2["per_pair_cos"]), torch.tensor(a1["per_pair_cos"]), atol=1e-4, rtol=0)
    # The weight update and the drift through the same collectives (learning rate 0: nothing moved).
    d1, d2 = read(1, "drift")["sets"]["premises"], read(2, "drift")["sets"]["premises"]
    assert d2["texts"] == d1["texts"] == 5 and d2["cka"] == pytest.approx([1.0] * 5, abs=1e-9)
    assert read(2, "weight_update")["total"]["relative_norm"] == read(1, "weight_update")["total"]["relative_norm"] == 0
