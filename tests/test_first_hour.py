"""What a new user meets first: thread defaults, early input checks, the hub, help, the progress bar, logger hints."""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import REPO, TESTS, run_main


def test_thread_defaults_fill_in_what_the_environment_leaves_unset():
    from tli_lightning.threads import apply_thread_defaults

    environ: dict[str, str] = {}
    assert apply_thread_defaults(environ) == {"OMP_WAIT_POLICY": "PASSIVE"} and environ["OMP_WAIT_POLICY"] == "PASSIVE"
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_thread_defaults(mine) == {} and mine == {"OMP_WAIT_POLICY": "ACTIVE"}  # the user's choice wins


def test_the_cli_sets_the_wait_policy_before_torch_loads_openmp(tmp_path, tiny_dir):
    # libgomp reads OMP_WAIT_POLICY once, when torch loads it, and prints what it read with OMP_DISPLAY_ENV.
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # conftest sets it for the tests
    env.update(PYTHONPATH=str(TESTS), OMP_DISPLAY_ENV="TRUE")
    args = ["scan", "--model", "tiny", "--lexicon", "demo", "--limit", "2", "--output", "s.json", "--no-progress"]
    result = subprocess.run(
        [sys.executable, "-m", "tli_lightning", *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in result.stderr
    # The first line of our own says which base was measured, and how to measure fit's.
    ours = [line for line in result.stderr.splitlines() if line.startswith("scan: ")]
    assert ours and ours[0].startswith("scan: base tiny (unquantized float32), precision 32-true; fit's default base")


def test_early_checks_use_the_data_and_model_defaults_of_the_real_classes():
    from tli_lightning.data import TLIDataModule
    from tli_lightning.module import TLIModule
    from tli_lightning.precheck import DEFAULTS

    for key, default in DEFAULTS.items():
        section, name = key.split(".")
        cls = TLIDataModule if section == "data" else TLIModule
        assert inspect.signature(cls.__init__).parameters[name].default == default, key


def test_a_bad_lexicon_is_refused_before_lightning_is_imported(tmp_path):
    (tmp_path / "lex.tsv").write_text("sw\ten\nmaji\n", encoding="utf-8")
    (tmp_path / "c.yaml").write_text(f"data:\n  lexicon_path: {tmp_path / 'lex.tsv'}\n", encoding="utf-8")
    code = (
        "import sys\nfrom tli_lightning.precheck import check_fit_inputs\nfrom tli_lightning.errors import TLIError\n"
        f"try:\n    check_fit_inputs(['--config', {str(tmp_path / 'c.yaml')!r}])\nexcept TLIError as e:\n    print(e)\n"
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout.splitlines()
    assert out[0].endswith("lex.tsv:2: expected 2 tab-separated fields, got 1: ['maji']") and out[1] == "[]"


def test_a_users_own_lexicon_error_comes_before_the_default_control_refusal(tmp_path):
    from tli_lightning.data import TLIDataModule
    from tli_lightning.errors import TLIError

    bad = tmp_path / "lex.tsv"
    bad.write_text("sw\ten\nmaji\n", encoding="utf-8")
    with pytest.raises(TLIError, match="lex.tsv:2: expected 2 tab-separated fields"):
        TLIDataModule(lexicon_path=str(bad))  # control_path is still the bundled "demo"
    bad.write_text("sw\ten\nmaji\twater\n", encoding="utf-8")
    with pytest.raises(TLIError, match="control_path 'demo' is the bundled control set"):
        TLIDataModule(lexicon_path=str(bad))


def test_model_paths_that_are_files_or_missing_say_so(tmp_path):
    from tli_lightning.errors import TLIError
    from tli_lightning.loading import check_model_source

    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(TLIError, match="model.safetensors is a file; give the model's directory"):
        check_model_source(str(tmp_path / "model.safetensors"))
    with pytest.raises(TLIError, match="model directory not found"):
        check_model_source(str(tmp_path / "nope"))
    assert check_model_source(str(tmp_path)) == str(tmp_path)


def test_an_uncached_hub_id_fails_on_the_first_answer(monkeypatch):
    import httpx2
    import huggingface_hub
    import huggingface_hub.constants

    from tli_lightning.errors import TLIError
    from tli_lightning.loading import check_model_source

    calls = []

    def unreachable(url, *args, **kwargs):
        calls.append(url)
        raise httpx2.ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    started = time.monotonic()
    with pytest.raises(TLIError, match="'owner/no-such-model' is not in the local Hugging Face cache and the hub did"):
        check_model_source("owner/no-such-model")
    assert len(calls) == 1 and time.monotonic() - started < 5  # one question, no minute of retries
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TLIError, match="HF_HUB_OFFLINE is set"):
        check_model_source("owner/no-such-model")
    assert len(calls) == 1  # offline: not even one


def test_top_level_help_lists_every_command():
    code, out, _ = run_main(["--help"])
    assert code == 0
    commands = [line.split()[0] for line in out.split("commands:")[1].strip().splitlines()[:6]]
    assert commands == ["fit", "validate", "test", "scan", "zeroshot", "compare"]


def test_fit_help_puts_our_options_first_and_points_at_the_rest():
    code, short, _ = run_main(["fit", "--help"])
    assert code == 0
    lines = short.splitlines()
    first_trainer = next(i for i, line in enumerate(lines) if line.lstrip().startswith("--trainer."))
    assert next(i for i, line in enumerate(lines) if "--model.target_layer" in line) < first_trainer
    assert "--data.lexicon_path" in short and "--ckpt_path" in short and "fit --help-all" in short
    assert "--trainer.max_epochs" in short and "--trainer.gradient_clip_val" not in short
    assert len(lines) < 400
    code, full, _ = run_main(["fit", "--help-all"])
    assert code == 0 and "--trainer.gradient_clip_val" in full
    assert full.index("\n  --model.target_layer") < full.index("\n  --trainer.gradient_clip_val")  # options, not usage


def test_the_progress_bar_shows_no_version_number(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from tli_lightning.callbacks import RichRunProgressBar, RunProgressBar

    bars = [(TQDMProgressBar(), True), (RunProgressBar(), False)]
    if importlib.util.find_spec("rich") is not None:
        bars.append((RichRunProgressBar(), False))
    for bar, shown in bars:
        trainer = L.Trainer(logger=TensorBoardLogger(tmp_path, name="demo", version=3), callbacks=[bar])
        assert ("v_num" in bar.get_metrics(trainer, L.LightningModule())) is shown


def test_the_tensorboard_hint_only_for_runs_with_a_tensorboard_logger(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from tli_lightning.cli import _summary_text

    summary = {
        "name": "demo",
        "version": 0,
        "status": "finished",
        "global_step": 1,
        "epochs_completed": 1,
        "log_dir": "logs/demo/version_0",
        "checkpoint_dir": "checkpoints/demo/version_0",
    }
    path = Path("logs/demo/version_0/summary.json")
    assert "tensorboard --logdir logs" in _summary_text(summary, path, [TensorBoardLogger(tmp_path)])
    text = _summary_text(summary, path, [CSVLogger(tmp_path)])
    assert "tensorboard" not in text and "logs:        logs/demo/version_0\n" in text


def test_our_bar_is_added_once_and_goes_when_bars_are_off():
    from jsonargparse import Namespace

    from tli_lightning.cli import _add_progress_bar

    config = Namespace(trainer=Namespace(enable_progress_bar=True, callbacks=[]))
    _add_progress_bar(config)
    _add_progress_bar(config)  # a resumed run's config.yaml already holds it
    assert [c.class_path.rsplit(".", 1)[1] for c in config.trainer.callbacks] in (
        ["RunProgressBar"],
        ["RichRunProgressBar"],
    )
    config.trainer.enable_progress_bar = False  # `--config <run>/config.yaml --trainer.enable_progress_bar false`
    _add_progress_bar(config)
    assert config.trainer.callbacks == []  # Lightning refuses a bar callback with bars off


def test_per_layer_scalars_for_the_target_and_final_layers_unless_told():
    from tli_lightning.callbacks import LayerwiseAlignment
    from tli_lightning.errors import TLIError

    assert LayerwiseAlignment().scalar_layers_of(32, 2) == [2, 32]  # 16 cards at 33 layers, not 594
    assert LayerwiseAlignment().scalar_layers_of(32, None) == [32]
    assert LayerwiseAlignment(scalar_layers=[0, -2]).scalar_layers_of(32, 2) == [0, 31]
    assert LayerwiseAlignment(scalar_layers="all").scalar_layers_of(4, 2) == [0, 1, 2, 3, 4]
    with pytest.raises(TLIError, match="unknown scalar_metrics"):
        LayerwiseAlignment(scalar_metrics=["cosine"])
