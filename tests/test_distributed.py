"""Multi-process training through the real CLI on 2 CPU processes (gloo): DDP for LoRA, FSDP2 for full fine-tuning.

Each is checked against one process training the same global batch plan with gradient
accumulation (2 batches per step = what 2 processes train per step).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tli_lightning.tiny_model import demo_data_path

from cli_helpers import QUICK, REPO, TRAINABLE_ON_TINY, cli, fit_probed, load, scalars

pytestmark = pytest.mark.slow
TWO = ["--trainer.accelerator=cpu", "--trainer.devices=2"]
# The shipped strategy settings; their GPU settings are overridden by TWO, which must come after them.
DDP = ["--config", str(REPO / "configs" / "multi_gpu" / "ddp.yaml")]
FSDP = ["--config", str(REPO / "configs" / "multi_gpu" / "fsdp.yaml")]
ONE_ACCUMULATING = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.accumulate_grad_batches=2"]


def _conflicting_lexicon(path: Path) -> Path:
    """The demo lexicon plus second translations for many words: batches must keep them apart."""
    rows = demo_data_path("lexicon_trained.tsv").read_text(encoding="utf-8").splitlines()
    pairs = [row.split("\t") for row in rows[1:]]
    extra = [f"{sw}\t{en} (also)" for sw, en in pairs[:60]] + [f"{sw} (pia)\t{en}" for sw, en in pairs[60:100]]
    path.write_text("\n".join([rows[0], *rows[1:], *extra]) + "\n", encoding="utf-8")
    return path


def _final(root: Path) -> dict:
    return load(root / "checkpoints" / "demo" / "version_0" / "last.ckpt")


def _assert_close_runs(a: Path, b: Path, atol: float) -> None:
    first, second = _final(a), _final(b)
    assert first["global_step"] == second["global_step"]
    assert first["state_dict"].keys() == second["state_dict"].keys()
    for name, tensor in first["state_dict"].items():
        if name.startswith("train_means."):
            continue  # compared through the logged epoch means below
        torch.testing.assert_close(second["state_dict"][name].float(), tensor.float(), atol=atol, rtol=0, msg=name)
    losses = [[v for _, v in scalars(r / "logs" / "demo" / "version_0")["train/loss_epoch"]] for r in (a, b)]
    assert len(losses[0]) == 2
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), atol=1e-4, rtol=0)


def test_ddp_lora_on_a_conflicting_lexicon_matches_one_process_with_the_same_plan(tmp_path):
    lexicon = _conflicting_lexicon(tmp_path / "lexicon.tsv")
    # float32 compute: the comparison is about batches and gathering, not bfloat16 rounding across batch shapes.
    common = [
        *QUICK,
        "--trainer.max_epochs=2",
        "--model.lora_dropout=0",
        "--model.compute_dtype=float32",
        "--data.lexicon_path",
        str(lexicon),
        "--data.control_path=null",
        "--data.batch_size=8",
    ]
    runs = {}
    for name, devices in (("ddp", [*DDP, *TWO]), ("single", ONE_ACCUMULATING)):
        (tmp_path / name).mkdir()
        result = cli(["fit", *common, *devices], tmp_path / name)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = tmp_path / name
    assert sorted(p.name for p in (runs["ddp"] / "logs" / "demo").iterdir()) == ["version_0"]  # both processes, one run
    _assert_close_runs(runs["single"], runs["ddp"], atol=2e-5)
    # The evaluation is split across the processes and gathered exactly: the same numbers as one process.
    for what, key in (("reasoning", "tasks"), ("alignment", "sets")):
        one = json.loads((runs["single"] / "logs/demo/version_0" / what / "baseline.json").read_text())[key]
        two = json.loads((runs["ddp"] / "logs/demo/version_0" / what / "baseline.json").read_text())[key]
        if what == "reasoning":
            for task in ("xnli_sw", "xcopa_sw"):
                torch.testing.assert_close(
                    torch.tensor(two[task]["loglikelihoods"]),
                    torch.tensor(one[task]["loglikelihoods"]),
                    atol=1e-4,
                    rtol=0,
                )
        else:
            torch.testing.assert_close(
                torch.tensor(two["control"]["per_pair_cos"]),
                torch.tensor(one["control"]["per_pair_cos"]),
                atol=1e-4,
                rtol=0,
            )


FULL_ALL = [
    "--model.quantization=none",
    "--model.adaptation=full",
    "--model.adapt_layers=all",
    "--model.target_layer=-1",
    "--model.compute_dtype=float32",
    "--model.learning_rate=1e-4",
]


def test_fsdp_full_fine_tuning_matches_one_process_and_resumes_exactly(tmp_path):
    lexicon = _conflicting_lexicon(tmp_path / "lexicon.tsv")  # 48 batches per epoch: 24 steps either way
    common = [
        *QUICK,
        "--trainer.max_epochs=2",
        *FULL_ALL,
        "--data.lexicon_path",
        str(lexicon),
        "--data.control_path=null",
    ]
    roots = {name: tmp_path / name for name in ("fsdp", "single", "interrupted")}
    for root in roots.values():
        root.mkdir()
    straight = cli(["fit", *FSDP, *common, *TWO], roots["fsdp"])
    assert straight.returncode == 0, straight.stderr[-3000:]
    single = cli(["fit", *common, *ONE_ACCUMULATING], roots["single"])
    assert single.returncode == 0, single.stderr[-3000:]
    _assert_close_runs(roots["single"], roots["fsdp"], atol=1e-5)
    assert not any(
        "lm_head" in name for name in _final(roots["fsdp"])["state_dict"]
    )  # never trainable: the loss cannot reach it

    # SIGTERM reaches both processes mid-epoch: they agree on the step, save once, and exit 143.
    fault = [
        "--trainer.callbacks+=faults.Fault",
        "--trainer.callbacks.kind=sigterm",
        "--trainer.callbacks.epoch=1",
        "--trainer.callbacks.batch=3",
    ]
    stopped = cli(["fit", *FSDP, *common, *TWO, *fault], roots["interrupted"])
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    resumed = cli(["fit", *FSDP, *common, *TWO, "--ckpt_path=last"], roots["interrupted"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_close_runs(roots["fsdp"], roots["interrupted"], atol=0)


@pytest.mark.parametrize(
    ("arm", "parallel"), [("tli_lora_early", "ddp"), ("full_all", "fsdp")], ids=["lora+ddp", "full_all+fsdp"]
)
def test_each_multi_gpu_config_runs_its_arm_as_shipped_on_two_processes(tmp_path, tiny_dir, arm, parallel):
    # The shipped pair of configs (precision, optimizer, checkpointing, strategy), with only the 8B model, the
    # real data and the GPUs swapped for the tiny model, the bundled data and 2 CPU processes.
    configs = [REPO / "configs" / "lugha_llama_8b" / f"{arm}.yaml", REPO / "configs" / "multi_gpu" / f"{parallel}.yaml"]
    result, found = fit_probed(configs, tmp_path, TWO)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr and "deprecated" not in result.stderr
    assert found["trainable"] == found["gradients"] == TRAINABLE_ON_TINY[arm]
    assert found["precision"] == "bf16-mixed"
    assert (found["packed"] > 0) == (parallel == "ddp")  # 4-bit weights with DDP; FSDP shards real ones
    checkpoint = load(tmp_path / "checkpoints" / arm / "version_0" / "last.ckpt")
    assert checkpoint["global_step"] == 3 and checkpoint["state_dict"]
