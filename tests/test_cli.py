"""The real entry point, `python -m tli_lightning ...`: help, refusals, the demo, scan/zeroshot and their bases."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from cli_helpers import QUICK, REPO, cli, image_tags, load, run_main, scalars

DEMO = REPO / "src" / "tli_lightning" / "demo_data"
XNLI_ROW = {"premise": "Mvua ilinyesha.", "hypothesis": "Ardhi ni mbichi.", "label": 0}


def test_help_documents_options_and_layer_numbering():
    code, out, _ = run_main(["fit", "--help"])
    assert code == 0
    assert "0 = embeddings, i = output of block i-1" in out
    assert "--model.target_layer" in out and "The ``hidden_states`` index the loss reads" in out
    assert "--data.leakage" in out and "remove them from the trained set" in out
    assert "--ckpt_path last" in out and "logs/<name>/version_<n>/" in out
    assert "--measure.weight_update" in out and "--measure.drift" in out and "false turns it off" in out
    for command in ("scan", "zeroshot", "compare"):
        code, out, _ = run_main([command, "--help"])
        assert code == 0 and "--output" in out, command


def _write(path: Path, content: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def _xnli(tmp: Path, row: dict) -> list[str]:
    lines = [json.dumps(XNLI_ROW), json.dumps(row)]
    _write(tmp / "x_sw.jsonl", "\n".join(lines) + "\n")
    _write(tmp / "x_en.jsonl", "\n".join([json.dumps(XNLI_ROW)] * 2) + "\n")
    tasks = [{"task": f"xnli_{lang}", "path": str(tmp / f"x_{lang}.jsonl")} for lang in ("sw", "en")]
    return ["--data.reasoning_tasks", json.dumps(tasks)]


def _lexicon(tmp: Path, body: str | bytes) -> list[str]:
    head = b"sw\ten\nmaji\twater\nmoto\tfire\n"
    path = _write(tmp / "lex.tsv", head + (body if isinstance(body, bytes) else body.encode("utf-8")))
    return ["--data.lexicon_path", path, "--data.control_path", "null", "--data.control_fraction", "0.3"]


# (arguments given the case's tmp directory, the one error line expected). Each is refused before a run exists.
BAD_INPUT = {
    "json_null_word": (
        lambda t: [
            "--data.lexicon_path",
            _write(t / "l.json", '[{"swahili": null, "english": "water"}]'),
            "--data.control_path",
            "null",
        ],
        "l.json:1: entries must be non-empty strings, got None",
    ),
    "json_number_word": (
        lambda t: [
            "--data.lexicon_path",
            _write(t / "l.json", '[{"swahili": 7, "english": "seven"}]'),
            "--data.control_path",
            "null",
        ],
        "l.json:1: entries must be non-empty strings, got 7",
    ),
    "latin1_bytes": (lambda t: _lexicon(t, b"caf\xe9\tcoffee\n"), "lex.tsv:4: not UTF-8 text (bytes b'\\xe9"),
    "word_too_long": (
        lambda t: _lexicon(t, "m" * 10_000 + "\tlong\n"),
        "lex.tsv:4: entry of 10000 characters (at most 100)",
    ),
    "lexicon_is_a_directory": (
        lambda t: ["--data.lexicon_path", str(t), "--data.control_path", "null"],
        "is a directory; give the file itself",
    ),
    "lexicon_missing": (
        lambda t: ["--data.lexicon_path", str(t / "nope.tsv"), "--data.control_path", "null"],
        "lexicon file not found",
    ),
    "tsv_short_row": (lambda t: _lexicon(t, "moto\n"), "lex.tsv:4: expected 2 tab-separated fields, got 1: ['moto']"),
    "premise_null": (
        lambda t: _xnli(t, {**XNLI_ROW, "premise": None}),
        "x_sw.jsonl:2: premise must be a non-empty string, got None",
    ),
    "label_fraction": (
        lambda t: _xnli(t, {**XNLI_ROW, "label": 1.7}),
        "x_sw.jsonl:2: label must be 0 (entailment), 1 (neutral) or 2",
    ),
    "label_true": (lambda t: _xnli(t, {**XNLI_ROW, "label": True}), "got True"),
    "label_text_in_json": (lambda t: _xnli(t, {**XNLI_ROW, "label": "1"}), "x_sw.jsonl:2: label must be 0"),
    "xnli_missing": (
        lambda t: ["--data.reasoning_tasks", json.dumps([{"task": "xnli_sw", "path": str(t / "none_sw.jsonl")}])],
        "none_sw.jsonl",
    ),
    "reasoning_limit_negative": (
        lambda t: ["--data.reasoning_limit", "-5"],
        "a reasoning task's limit must be at least 1 (or null for every example), got -5",
    ),
    "reasoning_limit_zero": (lambda t: ["--data.reasoning_limit", "0"], "limit must be at least 1"),
    "unknown_task": (lambda t: ["--data.reasoning_tasks", "[{task: xnli_xx}]"], "unknown task 'xnli_xx'"),
    "batch_of_one": (lambda t: ["--data.batch_size", "1"], "batch_size must be at least 2"),
    "lora_rank_zero": (lambda t: ["--model.lora_r", "0"], "lora_r must be at least 1, got 0"),
    "full_on_4bit": (lambda t: ["--model.adaptation", "full"], "adaptation 'full' trains the weights themselves"),
    "half_true_precision": (lambda t: ["--trainer.precision", "bf16-true"], "precision 'bf16-true' is not supported"),
    "layer_out_of_range": (
        lambda t: ["--model.target_layer", "9"],
        "layer 9 is out of range for a model with 4 blocks",
    ),
    "on_exception_checkpoint": (
        lambda t: [
            "--trainer.callbacks+=lightning.pytorch.callbacks.OnExceptionCheckpoint",
            "--trainer.callbacks.dirpath=x",
        ],
        "OnExceptionCheckpoint makes every plain `fit` resume",
    ),
    "resume_without_checkpoint": (lambda t: ["--ckpt_path", "last"], "--ckpt_path last: no checkpoint under"),
    "resume_from_empty_file": (
        lambda t: ["--ckpt_path", _write(t / "empty.ckpt", b"")],
        "empty.ckpt: not a readable Lightning checkpoint",
    ),
    "resume_from_a_directory": (lambda t: ["--ckpt_path", str(t)], "is a directory, not a checkpoint file"),
    "gpu_config_on_a_cpu": (
        lambda t: ["--config", str(REPO / "configs" / "multi_gpu" / "ddp.yaml")],
        "No supported gpu backend found! (configs/multi_gpu/*.yaml ask for GPUs",
    ),
    "misspelled_option": (
        lambda t: ["--model.lora_rr", "3"],
        "unrecognized arguments: --model.lora_rr 3 (every option: python -m tli_lightning fit --help)",
    ),
    "not_an_integer": (
        lambda t: ["--model.lora_r", "abc"],
        "\"model.lora_r\": Expected a <class 'int'>. Got value: abc",
    ),
    # The user's own file's error, not the refusal of the default control_path (demo) that comes after it.
    "own_lexicon_error_first": (
        lambda t: ["--data.lexicon_path", _write(t / "l.tsv", "sw\ten\nmaji\n")],
        "l.tsv:2: expected 2 tab-separated fields, got 1",
    ),
    "own_lexicon_error_first_in_a_config": (
        lambda t: ["--config", _write(t / "c.yaml", "data:\n  lexicon_path: " + _write(t / "l.tsv", "sw\ten\nx\n"))],
        "l.tsv:2: expected 2 tab-separated fields, got 1",
    ),
    "model_path_is_a_file": (
        lambda t: ["--model.model_name_or_path", _write(t / "model.safetensors", b"")],
        "model.safetensors is a file; give the model's directory",
    ),
}
# Refused only once the Trainer exists (its precision, the model's depth): the rest before it prints its banner.
AFTER_THE_TRAINER = {"half_true_precision", "layer_out_of_range"}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_clear_line_without_traceback(tmp_path, monkeypatch, caplog, tiny_dir, case):
    if case == "gpu_config_on_a_cpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the GPU config would train")
    arguments, message = BAD_INPUT[case]
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "inputs"
    data.mkdir()
    code, _, err = run_main(["fit", *QUICK, *arguments(data)])
    assert code == 2, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert "Traceback" not in err and "usage:" not in err
    assert "run the command again" not in err  # it would fail the same way
    assert ("GPU available:" in caplog.text) is (case in AFTER_THE_TRAINER)  # Lightning's banner, a log record
    assert not list(tmp_path.glob("logs/*/version_*")) and not list(
        tmp_path.glob("checkpoints/*/*/*.ckpt")
    )  # nothing left to resume


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["zeroshot", "--model", "tiny", "--data", "x.jsonl", "--language", "sw", "--batch-size", "0"],
            "--batch-size: must be at least 1, got 0",
        ),
        (["scan", "--model", "tiny", "--lexicon", "x.tsv", "--limit", "-1"], "--limit: must be at least 1, got -1"),
        (
            ["zeroshot", "--adapter", "nowhere", "--data", "x.jsonl", "--language", "sw"],
            "nowhere: not a PEFT adapter directory",
        ),
        (["scan", "--lexicon", "x.tsv"], "--model is required (or --adapter with a tli_settings.json naming its base)"),
        (["scan", "--model", "tiny"], "the following arguments are required: --lexicon"),
        (["compare", "logs/x", "--resamples", "0"], "argument --resamples: must be at least 1, got 0"),
        (["compares", "logs/x"], "unknown command 'compares'; the commands are fit, validate, test, scan,"),
    ],
)
def test_measurement_commands_refuse_bad_input(tmp_path, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(arguments)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err and "usage:" not in err


def test_a_broken_adapter_directory_is_named(tmp_path, monkeypatch, tiny_dir):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "adapter" / "adapter_config.json", '{"peft_type": "LORA", "r": 4}')  # no weights
    code, _, err = run_main(
        [
            "zeroshot",
            "--adapter",
            "adapter",
            "--model",
            "tiny",
            "--data",
            str(DEMO / "xnli_{lang}.jsonl"),
            "--language",
            "sw",
            "--limit",
            "2",
            "--no-progress",
        ]
    )
    assert code == 2 and "error: adapter: cannot apply this adapter to tiny" in err and "Traceback" not in err


def test_validate_and_test_say_they_score_the_untrained_base(tmp_path, monkeypatch, tiny_dir):
    monkeypatch.chdir(tmp_path)
    for stage, key in (("validate", "val/pos_sim"), ("test", "test/pos_sim")):
        code, out, err = run_main([stage, *QUICK])
        assert code == 0 and key in out, err[-2000:]
        assert f"{stage} without --ckpt_path scores the untrained base model" in err
    assert not (tmp_path / "logs" / "demo").exists()  # not runs: they log beside them


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_dir) -> Path:
    """`python -m tli_lightning fit` with no arguments: the embedded default, whole."""
    root = tmp_path_factory.mktemp("demo")
    result = cli(["fit"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "run demo/version_0 finished at step 205 (5 epochs)" in result.stdout
    assert "Traceback" not in result.stderr
    for noise in ("litlogger", "ckpt_path", "exists and is not empty", "v_num"):
        assert noise not in result.stderr, noise
    assert result.stderr.splitlines()[0].startswith("fit: base tiny (nf4 4-bit, compute bfloat16)") or (
        result.stderr.splitlines()[1].startswith("fit: base tiny (nf4 4-bit, compute bfloat16)")  # after bitsandbytes'
    )
    messages = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]  # progress bars aside
    assert len(messages) == len(set(messages)), messages  # each log line once
    return root


@pytest.mark.slow
def test_the_demo_trains_measures_and_keeps_adapter_only_checkpoints(demo_run, tiny_dir):
    run = demo_run / "logs" / "demo" / "version_0"
    series = scalars(run)
    epoch_loss = [v for _, v in series["train/loss_epoch"]]
    assert len(epoch_loss) == 5 and epoch_loss[-1] < epoch_loss[0]  # the loss falls
    assert series["val/pos_sim"][-1][1] > series["val/pos_sim"][0][1]  # positive similarity rises
    assert len(series["reasoning/xnli_sw/acc"]) == 6 and len(series["align/control/gap/layer_02"]) == 6  # + baseline
    assert len(series["reasoning/xcopa_sw/acc"]) == 6 and len(series["lm/sw/token_loglikelihood"]) == 6
    assert {"alignment/per_layer", "reasoning/accuracy"} <= set(image_tags(run))
    assert any(tag.startswith("hparams/") for tag in series)  # the HPARAMS tab's metrics
    summary = json.loads((run / "summary.json").read_text())
    xnli = json.loads((run / "reasoning" / "epoch_05.json").read_text())["tasks"]["xnli_sw"]
    assert (
        summary["measurements"]["reasoning"]["tasks"]["xnli_sw"]["acc"][1] == xnli["correct"] / xnli["n"] == xnli["acc"]
    )  # an exact fraction
    # One figure per evaluation of alignment, reasoning, weight update and drift (held-out text has none).
    assert len(list((run / "figures").glob("*.png"))) == 4 * 6 and (run / "config.yaml").is_file()
    # Per-layer scalars for the target and the final layer only; every layer is in the JSON and the figure.
    assert {tag.rsplit("_", 1)[1] for tag in series if tag.startswith("align/")} == {"02", "04"}
    assert len(json.loads((run / "alignment" / "epoch_05.json").read_text())["sets"]["control"]["gap"]) == 5

    # Every setting and data fingerprint, in HPARAMS and in hparams.yaml.
    import yaml

    hparams = _tensorboard_hparams(run)
    for key in (
        "model/lora_alpha",
        "model/margin",
        "model/warmup_steps",
        "data/batch_size",
        "data/lexicon_path",
        "trainer/max_epochs",
        "trainer/precision",
    ):
        assert key in hparams, key
    assert hparams["data/fingerprint/trained_pairs"] == summary["data"]["fingerprint"]["trained_pairs"]
    saved = yaml.safe_load((run / "hparams.yaml").read_text())
    assert saved["model"]["lora_alpha"] == 32 and saved["data"]["fingerprint"] == summary["data"]["fingerprint"]

    checkpoints = demo_run / "checkpoints" / "demo" / "version_0"
    checkpoint = load(checkpoints / "last.ckpt")
    assert checkpoint["state_dict"] and all("lora_" in k for k in checkpoint["state_dict"])  # never the frozen base
    assert (
        checkpoint["optimizer_states"]
        and checkpoint["lr_schedulers"]
        and checkpoint["hyper_parameters"]["quantization"] == "nf4"
    )
    from peft import PeftModel

    from tli_lightning.loading import load_causal_lm

    base, _ = load_causal_lm(str(tiny_dir), quantization="nf4", compute_dtype="bfloat16")
    exported = dict(PeftModel.from_pretrained(base, checkpoints / "adapter_epoch05").named_parameters())
    for name, tensor in checkpoint["state_dict"].items():
        assert torch.equal(exported[name.removeprefix("model.")].float(), tensor.float()), name
    card = (checkpoints / "adapter_epoch05" / "README.md").read_text()
    gap = series["align/trained/gap/layer_02"][-1][1]
    for line in (
        "base_model: tiny",
        "| method | LoRA r=16, alpha=32, dropout=0.05 on ['q_proj', 'v_proj'] of blocks [0, 1] |",
        "| target layer | hidden_states[2]",
        f"| fingerprint trained_pairs | `{summary['data']['fingerprint']['trained_pairs']}` |",
        f"| `align/trained/gap/layer_02` | {gap:.4f} |",
        "python -m tli_lightning fit\n",
    ):
        assert line in card, line
    settings = json.loads((checkpoints / "adapter_epoch05" / "tli_settings.json").read_text())
    assert settings == {
        "model_name_or_path": "tiny",
        "quantization": "nf4",
        "compute_dtype": "bfloat16",
        "double_quant": False,
        "quant_storage": "uint8",
        "adaptation": "lora",
        "include_special_tokens": False,
        "word_template": "{word}",
        "target_layer": 2,
        "precision": "32-true",
    }


def _tensorboard_hparams(run_dir: Path) -> dict:
    """The settings of a run's HPARAMS tab, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    data = plugin_data_pb2.HParamsPluginData()
    data.ParseFromString(events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content)
    return {
        key: value.string_value or value.number_value or value.bool_value
        for key, value in data.session_start_info.hparams.items()
    }


@pytest.mark.slow
def test_tensorboard_custom_scalars_one_chart_per_tag_grouped_by_layer(demo_run):
    # TensorBoard colours custom-scalar lines by run and draws no legend: one tag per chart, or lines nobody can
    # tell apart.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    run = demo_run / "logs" / "demo" / "version_0"
    events = EventAccumulator(str(run), size_guidance={"tensors": 0})
    events.Reload()
    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    categories = {c.title: {chart.title: list(chart.multiline.tag) for chart in c.chart} for c in layout.category}
    assert list(categories)[:2] == ["alignment at layer 2 (target)", "alignment at layer 4 (final)"]
    logged = set(scalars(run))
    for charts in categories.values():
        for title, patterns in charts.items():
            drawn = {tag for tag in logged if any(re.fullmatch(pattern, tag) for pattern in patterns)}
            assert len(drawn) == 1, (title, drawn)
    assert categories["alignment at layer 2 (target)"]["control: gap (layer 2)"] == [r"align/control/gap/layer_02"]
    tasks = ("xnli_sw", "xnli_en", "xcopa_sw", "xstorycloze_sw")
    charts = {f"reasoning: {t} {w}" for t in tasks for w in ("acc", "retention")}
    assert set(categories["zero-shot reasoning"]) == charts
    assert set(categories["held-out text"]) == {
        f"lm: {lang} {w}" for lang in ("sw", "en") for w in ("token_loglikelihood", "perplexity")
    }


@pytest.mark.slow
def test_every_logger_follows_the_run_and_gets_its_settings(tmp_path):
    # A second logger with a save_dir and name of its own: it writes into the run (or is named after it).
    import importlib.util

    wandb, mlflow = (importlib.util.find_spec(name) is not None for name in ("wandb", "mlflow"))
    extra = ["--trainer.logger+=lightning.pytorch.loggers.CSVLogger"]
    extra += ["--trainer.logger.save_dir=elsewhere", "--trainer.logger.name=other"]
    if wandb:
        extra += ["--trainer.logger+=lightning.pytorch.loggers.WandbLogger", "--trainer.logger.offline=true"]
    if mlflow:  # MLflow 3 refuses its old file store: a local database, also offline
        extra += ["--trainer.logger+=lightning.pytorch.loggers.MLFlowLogger"]
        extra += [f"--trainer.logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    result = cli(
        [
            "fit",
            *QUICK,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--data.reasoning_limit=3",
            "--measure.drift=false",  # a default measurement switched off; the other stays on
            *extra,
        ],
        tmp_path,
        env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "elsewhere").exists() and sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["demo"]
    run = tmp_path / "logs" / "demo" / "version_0"
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"align/trained/gap/layer_02", "reasoning/xnli_sw/acc", "hparams/xnli_sw_acc"} <= set(header)
    assert {"reasoning/xcopa_sw/acc", "hparams/xstorycloze_sw_acc", "lm/sw/perplexity"} <= set(header)
    assert "hparams/weight_update_relative_norm" in header and not any(h.startswith("drift/") for h in header)
    assert (run / "weight_update" / "epoch_01.json").is_file() and not (run / "drift").exists()
    hparams = _tensorboard_hparams(run)
    assert "data/fingerprint/trained_pairs" in hparams and "model/lora_alpha" in hparams
    if wandb:
        (record,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
        content = record.read_bytes()
        assert b"demo/version_0" in content and b"data/fingerprint/trained_pairs" in content
    if mlflow:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        (logged,) = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
        assert logged.info.run_name == "version_0" and set(logged.data.params) == set(hparams)
        assert logged.data.params["model/lora_alpha"] == "32"


@pytest.mark.slow
def test_adapters_are_measured_on_the_base_they_were_trained_on(demo_run, tmp_path):
    # zeroshot --adapter with no --model: the adapter's own base (NF4, bfloat16 compute), giving exactly
    # the numbers the run's callback logged for that epoch; the base alone gives the baseline's.
    run = demo_run / "logs" / "demo" / "version_0"
    adapter = demo_run / "checkpoints" / "demo" / "version_0" / "adapter_epoch05"
    common = ["--data", str(DEMO / "xnli_{lang}.jsonl"), "--language", "sw", "--no-progress"]
    for name, base in (
        ("epoch_05", ["--adapter", str(adapter)]),
        ("baseline", ["--model", "tiny", "--quantization", "nf4", "--dtype", "bfloat16"]),
    ):
        result = cli(["zeroshot", *base, *common, "--output", str(tmp_path / f"{name}.jsonl")], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        logged = json.loads((run / "reasoning" / f"{name}.json").read_text())["tasks"]["xnli_sw"]["loglikelihoods"]
        scored = [json.loads(line)["loglikelihoods"] for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        torch.testing.assert_close(torch.tensor(scored), torch.tensor(logged), atol=1e-6, rtol=0)
        settings = json.loads(result.stdout.strip().splitlines()[-1])["settings"]
        assert (settings["model"], settings["quantization"], settings["dtype"]) == ("tiny", "nf4", "bfloat16")
    other = cli(
        [
            "zeroshot",
            "--adapter",
            str(adapter),
            "--quantization",
            "none",
            *common,
            "--limit",
            "3",
            "--output",
            "x.jsonl",
        ],
        tmp_path,
    )
    assert (
        other.returncode == 0
        and "--quantization none differs from the adapter's training setting (nf4)" in other.stderr
    )


@pytest.mark.slow
def test_validate_scores_the_checkpoint_of_a_run(demo_run, monkeypatch):
    monkeypatch.chdir(demo_run)
    code, out, err = run_main(["validate", *QUICK, "--ckpt_path", "last"])
    assert code == 0, err[-2000:]
    assert "validate: checkpoints/demo/version_0/last.ckpt (step 205)" in err and "val/pos_sim" in out
    trained = next(float(line.split()[-2]) for line in out.splitlines() if "val/pos_sim" in line)
    _, base, _ = run_main(["validate", *QUICK])
    untrained = next(float(line.split()[-2]) for line in base.splitlines() if "val/pos_sim" in line)
    assert trained != untrained  # the trained adapters were loaded, not the base alone


@pytest.mark.slow
def test_scan_reports_every_layer_against_the_random_baseline(tmp_path, tiny_dir):
    result = cli(
        [
            "scan",
            "--model",
            "tiny",
            "--lexicon",
            str(DEMO / "lexicon_trained.tsv"),
            "--control",
            str(DEMO / "lexicon_control.tsv"),
            "--limit",
            "40",
            "--output",
            "out/scan.json",
            "--no-progress",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert report["layers"] == [0, 1, 2, 3, 4] and set(report["sets"]) == {"pairs", "control"}
    assert (report["model"], report["quantization"], report["template"]) == ("tiny", "none", "{word}")
    control = report["sets"]["control"]
    assert control["gap"][2] == pytest.approx(control["cos"][2] - control["cos_random"][2], abs=2e-6)
    assert len(control["per_pair_random"]) == 40 and len(control["per_pair_random"][0]) == 5
    assert (tmp_path / "out" / "scan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cos_random" in result.stdout and "control: 40 pairs" in result.stdout
