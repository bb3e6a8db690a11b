"""LMEvalTasks: lm-eval's own simple_evaluate on the live model, during a real (tiny) fit, offline.

Skipped unless lm-eval is importable (it is an optional extra, ``pip install -e ".[lm-eval]"``; CI does not
install it). The task is local: lm-eval's own xcopa_sw task file, included, reading the bundled demo rows
through ``dataset_path: json`` (tli_lightning.tasks.lm_eval_task_yaml).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (optional extra [lm-eval])")

import lightning as L  # noqa: E402

from tli_lightning.callbacks.lm_eval_bridge import LMEvalTasks, _random_state_kept, metric_name  # noqa: E402
from tli_lightning.errors import TLIError  # noqa: E402

N = 8  # demo examples lm-eval scores


class _TinyLM(L.LightningModule):
    """The embedded tiny model, trained a step on a fixed sentence: enough for a measurement to see a change."""

    def __init__(self, model, tokenizer) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer

    def training_step(self, batch, batch_idx):
        ids = torch.tensor([self.tokenizer("Mtoto alilia kwa sababu alikuwa na njaa.")["input_ids"]])
        return self.model(input_ids=ids, labels=ids).loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader([0], batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=0.5)


@pytest.fixture
def local_task(tmp_path) -> Path:
    import os

    from tli_lightning.tasks import get_task, hub_columns, lm_eval_task_yaml, read_records
    from tli_lightning.tiny_model import demo_data_path

    task = get_task("xcopa_sw")
    rows = list(read_records(demo_data_path(task.demo_file)))[:N]
    data = tmp_path / "xcopa_sw.jsonl"
    data.write_text("".join(json.dumps(hub_columns(r, tsv)) + "\n" for r, _, _, tsv in rows), encoding="utf-8")
    folder = tmp_path / "tasks"
    folder.mkdir()
    import lm_eval.tasks

    tasks_root = os.path.dirname(lm_eval.tasks.__file__)
    (folder / "tli_xcopa_sw.yaml").write_text(lm_eval_task_yaml(task, "tli_xcopa_sw", tasks_root, data))
    return folder


def test_lm_eval_runs_on_the_live_model_each_epoch(tmp_path, tiny_dir, local_task, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger

    from tli_lightning.loading import load_causal_lm
    from tli_lightning.tasks import load_examples, score_examples

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = load_causal_lm(str(tiny_dir), quantization="none", compute_dtype="float32", progress=False)
    module = _TinyLM(model, tokenizer)
    examples = load_examples("xcopa_sw")[:N]
    before = score_examples(model, tokenizer, examples)
    callback = LMEvalTasks(["tli_xcopa_sw"], include_path=str(local_task), batch_size=4)
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[callback],
        logger=CSVLogger(tmp_path),
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(module)
    after = score_examples(model, tokenizer, examples)

    folder = Path(trainer.log_dir) / "lm_eval"
    baseline, epoch = (json.loads((folder / f"{n}.json").read_text()) for n in ("baseline", "epoch_01"))
    assert baseline["measurement"] == epoch["measurement"] == "lm_eval"
    # lm-eval's own accuracy on the live model equals ours on the same examples, before and after the step.
    for report, loglik in ((baseline, before), (epoch, after)):
        acc = (loglik.argmax(1) == torch.tensor([e.label for e in examples])).double().mean().item()
        assert report["tasks"]["tli_xcopa_sw"]["acc"] == pytest.approx(acc)
        assert report["n"]["tli_xcopa_sw"] == N
    assert not torch.allclose(before, after)  # the training step changed the model lm-eval then measured
    history = [h["lm_eval/tli_xcopa_sw/acc"] for h in callback.history]
    assert history == [baseline["tasks"]["tli_xcopa_sw"]["acc"], epoch["tasks"]["tli_xcopa_sw"]["acc"]]
    assert "lm_eval/tli_xcopa_sw/acc" in trainer.callback_metrics


def test_lm_evals_seeding_leaves_the_training_random_state_alone():
    import numpy

    random.seed(3), numpy.random.seed(3), torch.manual_seed(3)
    with _random_state_kept():
        random.seed(0), numpy.random.seed(1234), torch.manual_seed(1234)  # what simple_evaluate does
    drawn = (random.random(), numpy.random.rand(), torch.rand(1).item())
    random.seed(3), numpy.random.seed(3), torch.manual_seed(3)
    assert drawn == (random.random(), numpy.random.rand(), torch.rand(1).item())


def test_metric_names_and_refusals(tmp_path, local_task):
    assert metric_name("acc,none") == "acc" and metric_name("acc_stderr,none") == "acc_stderr"
    assert metric_name("exact_match,flexible-extract") == "exact_match_flexible-extract"
    with pytest.raises(TLIError, match="tasks must be a non-empty list"):
        LMEvalTasks("xcopa_sw")
    callback = LMEvalTasks(["no_such_task_xyz"], include_path=str(local_task))
    with pytest.raises(TLIError, match=r"lm-eval knows no task 'no_such_task_xyz' \(also looked in include_path"):
        callback._simple_evaluate(None, None)
