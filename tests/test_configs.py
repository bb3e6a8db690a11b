"""Every shipped config: documented key by key, true to the code, and run through the real CLI on the tiny model."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import subprocess
import sys

import pytest
import yaml

from cli_helpers import REPO, TRAINABLE_ON_TINY, cli, fit_probed, run_main

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
ARMS = sorted((REPO / "configs" / "lugha_llama_8b").glob("*.yaml"))


def _keys(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        out += _keys(value, dotted + ".") if isinstance(value, dict) else [dotted]
    return out


@pytest.fixture(scope="module")
def defaults() -> dict:
    code, out, err = run_main(["fit", "--print_config"])
    assert code == 0, err
    return yaml.safe_load(out)


def _default(defaults: dict, dotted: str, config: dict):
    """The default of a dotted key: from the parser, or, inside a class's init_args, from its signature."""
    if dotted.endswith(".class_path"):  # choosing a class for an option: that option's default
        return _default(defaults, dotted.removesuffix(".class_path"), config)
    node: object = defaults
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
            continue
        if part == "init_args":  # a class chosen in this config (e.g. trainer.strategy): its own default
            owner = config
            for p in parts[:index]:
                owner = owner[p]
            module, _, name = owner["class_path"].rpartition(".")
            return (
                inspect.signature(getattr(importlib.import_module(module), name)).parameters[parts[index + 1]].default
            )
        raise KeyError(dotted)
    return node


@pytest.mark.parametrize("path", CONFIGS, ids=[str(c.relative_to(REPO / "configs")) for c in CONFIGS])
def test_each_config_is_a_documented_recipe(path, defaults):
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    command = lines[0]
    for line in lines[1:]:  # a long command goes on over "#" lines after a backslash
        if not command.endswith(" \\"):
            break
        command = command[:-2] + " " + line.removeprefix("#").strip()
    run = re.fullmatch(r"# Run: python -m tli_lightning fit((?: --config \S+)+)", command)
    assert run, f"{path.name} must start with the command that runs it"
    named = run.group(1).split(" --config ")[1:]
    assert str(path.relative_to(REPO)) in named and all((REPO / n).is_file() for n in named)
    assert len(lines) <= 60 and max(len(line) for line in lines) <= 120
    config = yaml.safe_load(text)
    for index, line in enumerate(lines):
        key = re.match(r"^( *)(\w+):", line)
        if not key or lines[index + 1 : index + 2] and lines[index + 1].startswith(key.group(1) + "  "):
            continue  # a section, not a setting
        comment = lines[index - 1].strip()
        assert comment.startswith("#"), f"{path.name}:{index + 1}: {key.group(2)} has no comment of its own"
        stated = re.search(r"\(default: (.*)\)$", comment)
        assert stated, f"{path.name}:{index}: the comment of {key.group(2)} does not give its default"
    for dotted in _keys(config):
        comment = lines[next(i for i, line in enumerate(lines) if re.match(rf"^ *{dotted.split('.')[-1]}:", line)) - 1]
        stated = yaml.safe_load(re.search(r"\(default: (.*)\)$", comment).group(1))
        assert stated == _default(defaults, dotted, config), f"{path.name}: {dotted}: the comment's default is wrong"


@pytest.mark.parametrize("path", CONFIGS, ids=[str(c.relative_to(REPO / "configs")) for c in CONFIGS])
def test_every_config_key_is_an_option_of_fit(path):
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    _, help_text, _ = run_main(["fit", "--help"])
    for dotted in _keys(config):
        dotted = dotted.removesuffix(".class_path")  # choosing the class of an option: the option itself
        if ".init_args." in dotted:  # documented in the chosen class's own help
            owner, _, arg = dotted.partition(".init_args.")
            class_path = (
                yaml.safe_load(path.read_text())
                .get(owner.split(".")[0], {})
                .get(owner.split(".")[1], {})
                .get("class_path")
            )
            _, class_help, _ = run_main(
                ["fit", f"--{owner}.help", class_path or "lightning.pytorch.loggers.TensorBoardLogger"]
            )
            assert f"--{owner}.{arg}" in class_help or f"--{owner}.init_args.{arg}" in class_help, dotted
        else:
            assert f"--{dotted} " in help_text or f"--{dotted}\n" in help_text, (
                f"{path.name}: {dotted} is not an option of fit"
            )


@pytest.mark.slow
@pytest.mark.parametrize("path", ARMS, ids=[a.stem for a in ARMS])
def test_every_arm_runs_through_the_cli_with_its_own_precision(tmp_path, tiny_dir, path):
    # The recipe as shipped (precision, quantization, optimizer, checkpointing...), with only the 8B model
    # and the real data swapped for the tiny model and the bundled data; three optimizer steps.
    result, found = fit_probed([path], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert found["trainable"] == found["gradients"] == TRAINABLE_ON_TINY[path.stem]
    assert found["precision"] == "bf16-mixed"
    quantized = yaml.safe_load(path.read_text(encoding="utf-8"))["model"]["quantization"] != "none"
    assert (found["lora"] > 0) == ("lora" in path.stem) and (found["packed"] > 0) == quantized
    summary = json.loads((tmp_path / "logs" / path.stem / "version_0" / "summary.json").read_text())
    assert summary["name"] == path.stem and summary["status"] == "finished"
    if found["lora"]:
        _zeroshot_gives_what_the_run_logged(tmp_path, path.stem)


def _zeroshot_gives_what_the_run_logged(root, arm: str) -> None:
    """`zeroshot --adapter` on the run's XNLI examples: the scores the run's callback logged, under the
    run's own precision (bf16 autocast) and base (NF4), read from the adapter's settings."""
    adapter = root / "checkpoints" / arm / "version_0" / "adapter_epoch01"
    scored = root / "scored.jsonl"
    # --sample 3: the examples the run's --data.reasoning_limit=3 chose (seeded, label-stratified), not the first 3.
    common = ["--data", "demo", "--language", "sw", "--sample", "3", "--no-progress", "--output", str(scored)]
    result = cli(["zeroshot", "--adapter", str(adapter), *common], root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["settings"]["precision"] == "bf16-mixed"
    logged = json.loads((root / "logs" / arm / "version_0" / "reasoning" / "epoch_01.json").read_text())
    got = [json.loads(line)["loglikelihoods"] for line in scored.read_text().splitlines()]
    # Exactly equal: the same 3 examples in one batch, the same base, precision and thread count (both processes
    # start from the same environment); another batch composition would round differently under bf16.
    assert got == logged["tasks"]["xnli_sw"]["loglikelihoods"]


SHARED = REPO.parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (the real data) is not beside this checkout")
def test_an_8b_recipe_measures_its_four_tasks_on_the_real_files_every_epoch(tmp_path, tiny_dir):
    # The recipe's own task list (the real files beside the repo), on the tiny model: 4 examples per task, 2 epochs.
    recipe = REPO / "configs" / "lugha_llama_8b" / "tli_lora_early.yaml"
    work = tmp_path / "work"  # the recipe's paths are ../shared/data/...: a shared/ beside the working directory
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED.parent)
    result = cli(
        ["fit", "--config", str(recipe), "--model.model_name_or_path=tiny", "--data.lexicon_path=demo"]
        + ["--data.control_path=demo", "--data.reasoning_limit=4", "--trainer.max_epochs=2"]
        + ["--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false"],
        work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = work / "logs" / "tli_lora_early" / "version_0"
    files = json.loads((run / "summary.json").read_text())["provenance"]["data_files"]
    for name, file in (("xnli_sw", "xnli_sw_validation.jsonl"), ("xcopa_sw", "xcopa_sw_validation.jsonl")):
        assert files[name]["path"].endswith(file) and len(files[name]["sha256"]) == 64
    for epoch in ("baseline", "epoch_01", "epoch_02"):
        tasks = json.loads((run / "reasoning" / f"{epoch}.json").read_text())["tasks"]
        assert list(tasks) == ["xnli_sw", "xnli_en", "xcopa_sw", "xstorycloze_sw"]
        assert all(t["n"] == 4 for t in tasks.values()) and tasks["xcopa_sw"]["chance"] == 0.5
    # Rows of the real files, not of the demo ones: the real XStoryCloze split has 360.
    assert max(tasks["xstorycloze_sw"]["rows"]) > 40


@pytest.mark.slow
def test_the_demo_grid_runs_every_arm_and_both_controls(tmp_path, tiny_dir):
    # The grid as shipped, shortened (1 epoch, 2 seeds of the early arms and of the positive control, no
    # learning-rate sweep: test_compare checks that a sweep becomes one arm per rate): the recipes with the demo
    # overlay, each a real fit inside the output directory, then compare, once per control.
    grid = tmp_path / "grid"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo_grid.py"), "--max-epochs", "1", "--seeds", "2", "--jobs", "2"]
        + ["--no-sweep", "--output", str(grid)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    runs = sorted(str(p.relative_to(grid / "logs")) for p in grid.glob("logs/*/version_*"))
    # Two seeds for each early arm, one for the others.
    assert runs == [
        "full_all/version_0",
        *[f"full_early/version_{v}" for v in range(2)],
        "lora_all/version_0",
        "lora_early_bf16/version_0",
        *[f"tli_lora_early/version_{v}" for v in range(2)],
    ]
    assert not (tmp_path / "logs").exists()  # nothing mixed into the working directory's runs
    report = json.loads((grid / "report.json").read_text())
    assert sorted(r["method"] for r in report["runs"]) == sorted(r.split("/")[0] for r in runs)
    assert sorted(report["arms"]["tli_lora_early"]["seeds"]) == [1, 42]
    assert report["arms"]["tli_lora_early"]["learning_rates"] == [0.0002]
    md = (grid / "report.md").read_text()
    assert "**Primary endpoints.** Alignment: control-pair CSLS P@1" in md
    assert "Decision rules" in md and "chance 0.333 (3 choices)" in md and "| chance |" in md
    assert "xstorycloze_sw: chance 0.500 (2 choices)" in md and "## Held-out text, baseline -> final" in md
    for name in report["figures"].values():
        for where in (grid, grid / "positive_control"):
            assert (where / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", (where, name)
    # Why, for every arm: the update's size and rank per block, and the drift curve at the final epoch.
    assert set(report["why"]["weight_update"]) == set(report["why"]["drift"]) == set(report["arms"])
    assert all(a["total"]["effective_rank_mean"]["mean"] > 0 for a in report["why"]["weight_update"].values())
    assert "## Why: the weight update and each layer's drift" in md and "Described, not tested" in md
    # The negative control: a random model retrieves its control translations no better than before training.
    assert report["verdict"]["alignment"]["answer_gain"] in ("inconclusive", "not answerable", "no")
    # The positive control: the same recipe on a model with planted alignment finds it beyond chance.
    positive = json.loads((grid / "positive_control" / "report.json").read_text())
    assert {r["base_model"]["name_or_path"] for r in positive["runs"]} == {"tiny-aligned"}
    assert positive["verdict"]["alignment"]["answer_beyond_chance"] == "yes"
