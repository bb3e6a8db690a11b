"""The real entry point: `python -m tli_lightning ...`, shipped configs, errors, demo, resume."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from tli_lightning.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
FAST = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _run_main(args: list[str]) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):  # --print_config exits
        main(args)
    return buffer.getvalue()


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "tli_lightning", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_goes_through_the_cli(config, monkeypatch):
    monkeypatch.chdir(REPO)
    first_line = config.read_text().splitlines()[0]
    assert first_line == f"# Run: python -m tli_lightning fit --config configs/{config.name}"
    resolved = yaml.safe_load(_run_main(["fit", "--config", str(config.relative_to(REPO)), "--print_config"]))
    assert resolved["model"]["target_layer"] in (2, -1)
    assert resolved["trainer"]["logger"]["init_args"]["name"] == config.stem
    assert any(f"checkpoints/{config.stem}" == c["init_args"].get("dirpath") for c in resolved["trainer"]["callbacks"])


def test_the_demo_config_is_the_embedded_default(monkeypatch):
    monkeypatch.chdir(REPO)
    assert _run_main(["fit", "--config", "configs/demo.yaml", "--print_config"]) == _run_main(["fit", "--print_config"])


def test_paper_config_holds_the_papers_settings(monkeypatch):
    monkeypatch.chdir(REPO)
    resolved = yaml.safe_load(_run_main(["fit", "--config", "configs/tli_lugha_llama.yaml", "--print_config"]))
    model, data = resolved["model"], resolved["data"]
    assert model["model_name_or_path"] == "Lugha-Llama/Lugha-Llama-8B-wura"
    assert (model["quantization"], model["compute_dtype"], model["double_quant"]) == ("nf4", "bfloat16", False)
    assert (model["lora_r"], model["lora_alpha"], model["lora_dropout"], model["lora_target_modules"]) == (16, 32, 0.05, ["q_proj", "v_proj"])
    assert (model["target_layer"], model["loss"], model["margin"], model["learning_rate"], model["warmup_steps"]) == (2, "triplet", 0.4, 2e-4, 50)
    assert (data["batch_size"], resolved["trainer"]["max_epochs"], data["xnli_source"]) == (8, 5, "facebook/xnli")


def test_help_documents_options_and_layer_numbering(tmp_path):
    out = _cli(["fit", "--help"], tmp_path).stdout
    assert "0 = embeddings, i = output of block i-1" in out
    assert "--model.target_layer" in out and "The ``hidden_states`` index the loss reads" in out
    assert "--data.leakage" in out and "remove them from the trained set" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.target_layer", "9"], "error: layer 9 is out of range for a model with 4 blocks"),
        (["--data.lexicon_path", "missing.tsv"], "error: control_path 'demo' is the bundled control set"),
        (["--data.lexicon_path", "bad.tsv", "--data.control_path", "null"], "error: bad.tsv:3: expected 2 tab-separated fields, got 1: ['moto']"),
        (["--model.adaptation", "full"], "error: adaptation 'full' trains the weights themselves"),
    ],
)
def test_bad_input_is_one_clear_line_without_traceback(tmp_path, args, message):
    (tmp_path / "bad.tsv").write_text("sw\ten\nmaji\twater\nmoto\n", encoding="utf-8")
    result = _cli(["fit", *args], tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]} | {"_images": events.Tags()["images"]}


@pytest.mark.slow
def test_demo_fit_end_to_end(tmp_path, tiny_dir):
    result = _cli(["fit"], tmp_path)  # no arguments: the embedded default
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "logs" / "demo" / "version_0"
    scalars = _scalars(run)
    steps_per_epoch = len(scalars["train/loss"]) // 5
    first, last = scalars["train/loss"][:steps_per_epoch], scalars["train/loss"][-steps_per_epoch:]
    assert sum(last) / len(last) < sum(first) / len(first)  # the loss falls
    assert scalars["val/pos_sim"][-1] > scalars["val/pos_sim"][0]  # positive similarity rises
    assert len(scalars["xnli/sw/retention"]) == 6 and scalars["xnli/sw/retention"][0] == 1.0
    assert len(scalars["align/control/gap/layer_02"]) == 6
    assert {"align/per_layer", "xnli/accuracy"} <= set(scalars["_images"])
    assert (run / "config.yaml").is_file() and (run / "alignment" / "epoch_05.json").is_file()

    # Adapter-only checkpoint: LoRA tensors, optimizer and scheduler; never the frozen base.
    checkpoint = torch.load(tmp_path / "checkpoints" / "demo" / "last.ckpt", weights_only=False)
    assert checkpoint["state_dict"] and all("lora_" in k for k in checkpoint["state_dict"])
    assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"] and checkpoint["global_step"] > 0

    # The PEFT export loads on a freshly loaded base and holds the same tensors.
    from peft import PeftModel

    from tli_lightning.loading import load_causal_lm

    base, _ = load_causal_lm(str(tiny_dir), quantization="nf4", compute_dtype="bfloat16")
    peft = PeftModel.from_pretrained(base, tmp_path / "checkpoints" / "demo" / "adapter_epoch05")
    exported = {n: p for n, p in peft.named_parameters() if "lora_" in n}
    for name, tensor in checkpoint["state_dict"].items():
        torch.testing.assert_close(exported[name.removeprefix("model.").replace(".default.", ".default.")].float(), tensor.float())


class Crash(L.Callback):
    """Simulates a crash (a lost node, a kill) before batch ``batch`` of ``epoch`` (-1: at epoch start)."""

    def __init__(self, epoch: int, batch: int = -1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and self.batch < 0:
            raise RuntimeError("simulated crash")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError("simulated crash")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("batch", "resume_from"),
    [
        (10, "last"),  # the newest checkpoint: on_exception.ckpt, mid-epoch; the dataloader state skips trained batches
        # A crash between epochs: Lightning 2.6 would resume on_exception.ckpt with the finished epoch's batch
        # count and skip the next epoch, so resume from the epoch-end checkpoint by name (README).
        (-1, "checkpoints/demo/last.ckpt"),
    ],
    ids=["mid_epoch", "between_epochs"],
)
def test_resume_after_a_crash_continues_exactly(tmp_path, monkeypatch, tiny_dir, batch, resume_from):
    def fit(directory: Path, *extra: str) -> dict:
        directory.mkdir(exist_ok=True)
        monkeypatch.chdir(directory)
        _run_main(["fit", *FAST, "--data.xnli_limit", "12", "--trainer.max_epochs", "3", *extra])
        return torch.load(directory / "checkpoints" / "demo" / "last.ckpt", weights_only=False)

    straight = fit(tmp_path / "straight")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path / "crashed", "--trainer.callbacks+=test_cli.Crash", "--trainer.callbacks.epoch=1", f"--trainer.callbacks.batch={batch}")
    assert (tmp_path / "crashed" / "checkpoints" / "demo" / "on_exception.ckpt").is_file()
    resumed = fit(tmp_path / "crashed", "--ckpt_path", resume_from)
    assert resumed["global_step"] == straight["global_step"]
    for name, tensor in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, rtol=0, atol=0)
    # The resumed run kept its baseline instead of measuring a new one.
    second_run = tmp_path / "crashed" / "logs" / "demo" / "version_1"
    assert not (second_run / "xnli" / "baseline.json").exists() and (second_run / "xnli" / "epoch_03.json").exists()
    assert resumed["callbacks"]["ZeroShotRetention"]["baseline"] == straight["callbacks"]["ZeroShotRetention"]["baseline"]


def test_validate_and_test_run_on_the_control_pairs(tmp_path, monkeypatch, tiny_dir):
    monkeypatch.chdir(tmp_path)
    for stage in ("validate", "test"):
        printed = _run_main([stage, *FAST])
        assert f"{'val' if stage == 'validate' else 'test'}/pos_sim" in printed


def test_scan_and_zeroshot_commands(tmp_path, tiny_dir):
    demo = REPO / "src" / "tli_lightning" / "demo_data"
    scan = _cli(["scan", "--model", "tiny", "--lexicon", str(demo / "lexicon_trained.tsv"), "--control", str(demo / "lexicon_control.tsv"),
                 "--limit", "40", "--output", "out/scan.json", "--no-progress"], tmp_path)
    assert scan.returncode == 0, scan.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert report["layers"] == [0, 1, 2, 3, 4] and set(report["sets"]) == {"pairs", "control"}
    assert (tmp_path / "out" / "scan.png").stat().st_size > 10_000
    assert "cos_random" in scan.stdout and "control: 40 pairs" in scan.stdout

    zero = _cli(["zeroshot", "--model", "tiny", "--data", str(demo / "xnli_{lang}.jsonl"), "--language", "sw", "--limit", "10",
                 "--batch-size", "4", "--output", "preds.jsonl", "--no-progress"], tmp_path)
    assert zero.returncode == 0, zero.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(10))
    assert all(len(r["loglikelihoods"]) == 3 and r["prediction"] == max(range(3), key=r["loglikelihoods"].__getitem__) for r in rows)
    summary = json.loads(zero.stdout.strip().splitlines()[-1])
    assert summary["language"] == "sw" and summary["n"] == 10
    assert summary["accuracy"] == pytest.approx(sum(r["prediction"] == r["label"] for r in rows) / 10)


def test_shipped_configs_are_up_to_date_with_the_code(tmp_path, monkeypatch):
    # configs/ are written by tools/write_configs.py from the CLI; a changed default or docstring
    # must be regenerated, not silently diverge.
    import importlib.util

    monkeypatch.chdir(REPO)
    spec = importlib.util.spec_from_file_location("write_configs", REPO / "tools" / "write_configs.py")
    writer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writer)
    for name, (header, args) in writer.CONFIGS.items():
        writer.write(name, header, args, tmp_path)
        assert (tmp_path / f"{name}.yaml").read_text() == (REPO / "configs" / f"{name}.yaml").read_text(), (
            f"configs/{name}.yaml is stale: run python tools/write_configs.py"
        )


@pytest.mark.slow
@pytest.mark.parametrize("config", ["tli_lugha_llama", "full_finetune"])
def test_shipped_8b_recipes_run_end_to_end_on_the_tiny_model(tmp_path, monkeypatch, tiny_dir, config):
    # Everything from the recipe (quantization or not, adaptation, optimizer incl. AdamW8bit,
    # bf16-true, gradient checkpointing, callbacks) except the 8B weights and the hub data.
    monkeypatch.chdir(tmp_path)
    _run_main(["fit", "--config", str(REPO / "configs" / f"{config}.yaml"), *FAST, "--model.model_name_or_path", "tiny",
               "--data.lexicon_path", "demo", "--data.control_path", "demo", "--data.xnli_source", "demo",
               "--data.xnli_limit", "12", "--trainer.max_epochs", "1"])
    checkpoint = torch.load(tmp_path / "checkpoints" / config / "last.ckpt", weights_only=False)
    names = list(checkpoint["state_dict"])
    if config == "full_finetune":
        assert any(n.endswith("embed_tokens.weight") for n in names) and not any("lora_" in n for n in names)
    else:
        assert names and all("lora_" in n for n in names)
    assert (tmp_path / "logs" / config / "version_0" / "xnli" / "epoch_01.json").is_file()
