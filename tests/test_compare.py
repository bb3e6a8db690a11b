"""``python -m tli_lightning compare`` end to end on real demo runs: two arms, two seeds of one arm."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sp

from tli_lightning.compare import build_report, compare
from tli_lightning.errors import TLIError

from cli_helpers import cli

QUICK_FIT = [
    "fit",
    "--trainer.max_epochs",
    "2",
    "--data.xnli_limit",
    "6",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
FULL_EARLY = [
    "--trainer.logger.init_args.name",
    "full_early",
    "--model.quantization",
    "none",
    "--model.adaptation",
    "full",
    "--model.compute_dtype",
    "float32",
]
# Another XNLI subset: its data fingerprint differs. One epoch is enough to be a complete run.
OTHER_DATA = [
    "fit",
    "--trainer.max_epochs",
    "1",
    "--data.xnli_limit",
    "5",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.logger.init_args.name",
    "other_data",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, tiny_dir) -> Path:
    """Four real runs in one logs/ tree: demo (seeds 42 and 7), full_early (seed 42), other_data (other XNLI rows)."""
    root = tmp_path_factory.mktemp("compare_runs")
    commands = [QUICK_FIT, QUICK_FIT + ["--seed_everything", "7"], QUICK_FIT + FULL_EARLY, OTHER_DATA]
    # Two at a time, one thread each, on two cores; runs claim their version directories atomically, so they may
    # start together.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda args: cli(args, root, env={"OMP_NUM_THREADS": "1"}), commands))
    for args, result in zip(commands, results):
        assert result.returncode == 0, f"{args}:\n{result.stderr[-3000:]}"
    return root


@pytest.fixture(scope="module")
def compared(runs_root):
    result = cli(["compare", "logs/demo", "logs/full_early/version_0", "--output", "out"], runs_root)
    report = json.loads((runs_root / "out" / "report.json").read_text()) if result.returncode == 0 else None
    md = (runs_root / "out" / "report.md").read_text() if result.returncode == 0 else ""
    return result, report, md


def _table(md: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table under the section whose heading starts with ``heading``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {heading}"))
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
    assert table, heading
    header = table[0]
    return [dict(zip(header, row)) for row in table[2:]]


def _logged(run_dir: Path) -> dict:
    def last(kind: str) -> dict:
        return json.loads(max((run_dir / kind).glob("epoch_*.json")).read_text())

    return {
        "summary": json.loads((run_dir / "summary.json").read_text()),
        "alignment": (json.loads((run_dir / "alignment" / "baseline.json").read_text()), last("alignment")),
        "xnli": (json.loads((run_dir / "xnli" / "baseline.json").read_text()), last("xnli")),
    }


@pytest.mark.slow
def test_compare_writes_the_report_for_two_arms_and_two_seeds(compared, runs_root):
    result, report, md = compared
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for name in ("report.md", "report.json"):
        assert (runs_root / "out" / name).is_file()
    assert len(report["runs"]) == 3
    assert {r["arm"] for r in report["runs"]} == {"demo", "full_early"}
    assert sorted(r["seed"] for r in report["runs"] if r["arm"] == "demo") == [7, 42]
    kinds = {r["arm"]: r["group"] for r in report["runs"]}
    assert kinds == {"demo": "early_lora", "full_early": "full"}
    assert "## Verdict" in md and "## Runs" in md


@pytest.mark.slow
def test_the_tables_show_what_the_runs_logged(compared, runs_root):
    _, report, md = compared
    target_rows = {row["run"]: row for row in _table(md, "Alignment at the run's target layer")}
    final_rows = {row["run"]: row for row in _table(md, "Alignment at the final layer")}
    xnli_rows = {row["run"]: row for row in _table(md, "Zero-shot XNLI")}
    run_rows = {row["run"]: row for row in _table(md, "Runs")}
    for run in report["runs"]:
        logged = _logged(runs_root / run["dir"])
        (a0, a1), (x0, x1), summary = logged["alignment"], logged["xnli"], logged["summary"]
        label = f"{run['arm']}/version_{run['version']}"
        target, last = summary["target_layer"], a1["layers"][-1]
        assert (run["target_layer"], run["final_layer"]) == (target, last) == (2, 4)
        assert run["trainable_parameters"] == summary["trainable_parameters"]
        assert run_rows[label]["trainable parameters"] == str(summary["trainable_parameters"])
        assert run_rows[label]["seed"] == str(summary["seed"])
        for which, layer, rows in (("target", target, target_rows), ("final", last, final_rows)):
            for set_name in ("trained", "control"):
                numbers = run["alignment"][which][set_name]
                for metric in ("cos", "gap", "p_at_1_s2t"):
                    assert numbers[metric] == [a0["sets"][set_name][metric][layer], a1["sets"][set_name][metric][layer]]
            gap = numbers["gap"]  # control
            assert rows[label]["control gap"] == f"{gap[0]:+.4f} -> {gap[1]:+.4f}"
            cos = run["alignment"][which]["trained"]["cos"]
            assert rows[label]["trained cos"] == f"{cos[0]:.4f} -> {cos[1]:.4f}"
        # The final control gap at layer 2, as the run itself summarised it.
        assert (
            run["alignment"]["target"]["control"]["gap"][1] == summary["alignment"]["layers"]["2"]["control"]["gap"][1]
        )
        for lang in ("sw", "en"):
            acc = [x0["languages"][lang]["acc"], x1["languages"][lang]["acc"]]
            assert run["xnli"][lang]["acc"] == acc == summary["xnli"]["languages"][lang]["acc"]
            assert xnli_rows[label][f"{lang} acc"] == f"{acc[0]:.4f} -> {acc[1]:.4f}"
            correct = [x0["languages"][lang]["correct"], x1["languages"][lang]["correct"]]
            mcnemar = run["xnli"][lang]["mcnemar"]
            assert [mcnemar["baseline_correct"], mcnemar["final_correct"]] == correct
            before, after = (
                np.argmax(x["languages"][lang]["loglikelihoods"], axis=1) == x["languages"][lang]["labels"]
                for x in (x0, x1)
            )
            lost, gained = int(np.sum(before & ~after)), int(np.sum(~before & after))
            expected = sp.binomtest(gained, lost + gained).pvalue if lost + gained else 1.0
            assert mcnemar["pvalue"] == pytest.approx(expected)


@pytest.mark.slow
def test_paired_statistics_use_the_logged_per_pair_cosines(compared, runs_root):
    _, report, _ = compared
    for run in report["runs"]:
        (a0, a1) = _logged(runs_root / run["dir"])["alignment"]
        for set_name in ("trained", "control"):
            cos0, cos1 = (np.asarray(a["sets"][set_name]["per_pair_cos"])[:, 2] for a in (a0, a1))
            rnd0, rnd1 = (np.asarray(a["sets"][set_name]["per_pair_random"])[:, 2] for a in (a0, a1))
            margin = run["paired"]["2"][set_name]["margin"]
            gain = (cos1 - rnd1) - (cos0 - rnd0)
            assert margin["n"] == len(a0["sets"][set_name]["pairs"])
            assert margin["mean_gain"] == pytest.approx(gain.mean())
            assert margin["t_pvalue"] == pytest.approx(sp.ttest_rel(cos1 - rnd1, cos0 - rnd0).pvalue)
            assert margin["ci_low"] <= margin["mean_gain"] <= margin["ci_high"]
            assert run["paired"]["2"][set_name]["cos"]["mean_gain"] == pytest.approx((cos1 - cos0).mean())
    demo = report["arms"]["demo"]
    gains = [r["paired"]["2"]["control"]["margin"]["mean_gain"] for r in report["runs"] if r["arm"] == "demo"]
    assert demo["gains"]["control"]["margin"]["n"] == 2 == len(demo["runs"])
    assert demo["gains"]["control"]["margin"]["mean"] == pytest.approx(np.mean(gains))
    assert demo["gains"]["control"]["margin"]["sd"] == pytest.approx(np.std(gains, ddof=1))


@pytest.mark.slow
def test_the_verdict_finds_no_alignment_beyond_the_baseline_on_random_models(compared):
    _, report, md = compared
    verdict = md.split("## Verdict", 1)[1].split("\n## ", 1)[0].lower()
    assert "no alignment beyond the random-pair baseline" in verdict
    assert report["verdict"]["alignment"]["answer"] == "no"
    assert report["verdict"]["alignment"]["arms"]["demo"]["answer"] == "no"
    # Two seeds against one: no claim either way about retention.
    assert report["verdict"]["retention"]["answer"] == "insufficient evidence"
    assert "insufficient evidence" in verdict and "fewer than 5 seeds" in verdict


@pytest.mark.slow
def test_figures_are_real_pngs(compared, runs_root):
    _, report, _ = compared
    for name in report["figures"].values():
        data = (runs_root / "out" / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        assert len(data) > 5_000, name


@pytest.mark.slow
def test_a_directory_that_is_not_a_run_is_one_clear_error(runs_root, tmp_path):
    (tmp_path / "notes.txt").write_text("not a run")
    result = cli(["compare", str(tmp_path), "logs/demo/version_0", "--output", str(tmp_path / "out")], runs_root)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(tmp_path) in lines[0] and "no summary.json" in lines[0]


@pytest.mark.slow
def test_runs_on_other_data_are_refused_naming_the_field_and_the_runs(runs_root, tmp_path):
    result = cli(
        ["compare", "logs/demo/version_0", "logs/other_data/version_0", "--output", str(tmp_path / "out")], runs_root
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: runs differ in data.fingerprint.xnli_")
    assert "logs/demo/version_0 vs logs/other_data/version_0" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_incomplete_and_unfinished_runs(runs_root, tmp_path):
    # Copies of a real run's JSON files, altered the way an interrupted or truncated run leaves them.
    source = runs_root / "logs" / "demo" / "version_0"
    copy = tmp_path / "logs" / "demo" / "version_5"
    for relative in ("summary.json", "alignment", "xnli"):
        target = copy / relative
        if (source / relative).is_dir():
            shutil.copytree(source / relative, target, ignore=shutil.ignore_patterns("*.png"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / relative, target)
    summary = json.loads((copy / "summary.json").read_text())
    summary["status"] = "interrupted"
    (copy / "summary.json").write_text(json.dumps(summary))
    report = build_report([copy], resamples=200)
    assert any("interrupted" in w and str(copy) in w for w in report["warnings"])
    for epoch_file in (copy / "xnli").glob("epoch_*.json"):
        epoch_file.unlink()
    with pytest.raises(TLIError, match=r"version_5: cannot compare this run: missing xnli/epoch_NN.json"):
        build_report([copy])
    with pytest.raises(TLIError, match="at least one run"):
        compare(["--output", str(tmp_path / "out")])


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as stop:
        compare(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--output", "--layer", "--resamples", "--seed", "--min-seeds", "RUN_DIR"):
        assert option in text
    assert "0 = embeddings" in text and "block i-1" in text
