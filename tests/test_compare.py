"""``python -m tli_lightning compare`` end to end on real demo runs: two arms, two seeds of one arm."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sp

from tli_lightning.compare import build_report, compare, format_markdown, write_report
from tli_lightning.compare.numbers import _kind
from tli_lightning.errors import TLIError
from tli_lightning.stats import bootstrap_ci

from cli_helpers import cli

QUICK_FIT = [
    "fit",
    "--trainer.max_epochs",
    "2",
    "--data.reasoning_limit",
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
    "--data.reasoning_limit",
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
        "reasoning": (json.loads((run_dir / "reasoning" / "baseline.json").read_text()), last("reasoning")),
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
    kinds = {r["arm"]: (r["group"], r["kind"]) for r in report["runs"]}
    assert kinds == {
        "demo": ("early_lora", "early-layer LoRA"),
        "full_early": ("full", "full-rank fine-tuning, blocks 0-1"),
    }
    assert "## Verdict" in md and "## Runs" in md


@pytest.mark.slow
def test_the_tables_show_what_the_runs_logged(compared, runs_root):
    _, report, md = compared
    target_rows = {row["run"]: row for row in _table(md, "Alignment at the run's target layer")}
    final_rows = {row["run"]: row for row in _table(md, "Alignment at the final layer")}
    task_rows = {(row["run"], row["task"]): row for row in _table(md, "Zero-shot tasks")}
    run_rows = {row["run"]: row for row in _table(md, "Runs")}
    for run in report["runs"]:
        logged = _logged(runs_root / run["dir"])
        (a0, a1), (x0, x1), summary = logged["alignment"], logged["reasoning"], logged["summary"]
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
            run["alignment"]["target"]["control"]["gap"][1]
            == summary["measurements"]["alignment"]["layers"]["2"]["control"]["gap"][1]
        )
        assert list(run["reasoning"]) == ["xnli_sw", "xnli_en", "xcopa_sw", "xstorycloze_sw"]
        for task in run["reasoning"]:
            acc = [x0["tasks"][task]["acc"], x1["tasks"][task]["acc"]]
            assert run["reasoning"][task]["acc"] == acc == summary["measurements"]["reasoning"]["tasks"][task]["acc"]
            assert task_rows[label, task]["acc"] == f"{acc[0]:.4f} -> {acc[1]:.4f}"
            correct = [x0["tasks"][task]["correct"], x1["tasks"][task]["correct"]]
            mcnemar = run["reasoning"][task]["mcnemar"]
            assert [mcnemar["baseline_correct"], mcnemar["final_correct"]] == correct
            before, after = (
                np.argmax(x["tasks"][task]["loglikelihoods"], axis=1) == x["tasks"][task]["labels"] for x in (x0, x1)
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
def test_with_too_few_seeds_the_verdict_is_not_answerable_and_says_why(compared):
    _, report, md = compared
    verdict = md.split("## Verdict", 1)[1].split("\n## ", 1)[0]
    assert "Decision rules" in verdict
    # Two seeds against one: no claim either way, and never a "no".
    retention = report["verdict"]["retention"]
    assert retention["answer"] == "not answerable"
    [pair] = retention["comparisons"]
    assert (pair["early_lora"], pair["full"], pair["answer"]) == ("demo", "full_early", "not answerable")
    assert pair["distinct_seeds"] == {"demo": 2, "full_early": 1}
    assert "fewer than 5 distinct seeds per arm (demo: 2, full_early: 1)" in pair["words"]
    assert "- **demo vs full_early** (full-rank fine-tuning, blocks 0-1): **not answerable**" in verdict
    alignment = report["verdict"]["alignment"]
    assert alignment["answer_gain"] == alignment["answer_beyond_chance"] == "not answerable"
    # What the reader needs beside it: the primary endpoint, chance, the detectable effect, the different bases.
    assert md.count("Primary endpoints.") == 1 and "CSLS P@1" in md
    assert "chance 0.333 (3 choices)" in md and "an exact McNemar test detects" in md
    assert "the arms start from different bases (nf4 base, bfloat16 compute vs float32 base)" in verdict, verdict


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
    for relative in ("summary.json", "alignment", "reasoning", "lm"):
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
    for epoch_file in (copy / "reasoning").glob("epoch_*.json"):
        epoch_file.unlink()
    with pytest.raises(TLIError, match=r"version_5: cannot compare this run: missing reasoning/epoch_NN.json"):
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


# ---- made-up runs: every file a run writes, with numbers chosen by the test (fast, no training) ----------------

LAYERS = [0, 1, 2, 3, 4]
PAIRS, EXAMPLES = 12, 20
FINGERPRINT = {"trained_pairs": "t", "control_pairs": "c", "xnli_sw": "s", "xnli_en": "e"}


def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, allow_nan=False))  # strict JSON, as runs write it


def _fake_run(
    logs: Path,
    arm: str,
    version: int,
    seed: int,
    *,
    correct: dict[str, tuple[int, int]] | None = None,
    model: dict | None = None,
    status: str = "finished",
    evaluated: bool = True,
    legacy: bool = False,
    texts: dict[str, tuple[float, float]] | None = None,
    hits: dict[str, tuple[int, int]] | None = None,
    examples: int = EXAMPLES,
) -> Path:
    """``logs/<arm>/version_<n>``; ``correct``: XNLI examples right (baseline, final) per language; ``hits``: control
    and trained queries retrieved first (baseline, final); ``evaluated=False``: a run that stopped before its first
    epoch's evaluation; ``legacy``: the files of tli_lightning 0.2 (``xnli/`` per language, no kinds); ``texts``:
    each held-out text's mean token log-likelihood (baseline, final) per language, for ``lm/``."""
    hits = {"trained": (2, 2), "control": (2, 2), **(hits or {})}
    run = logs / arm / f"version_{version}"
    model = {"adaptation": "lora", "adapt_layers": None, "target_layer": 2, **(model or {})}
    correct = correct or {"xnli_sw": (10, 10), "xnli_en": (10, 10)}
    rng = np.random.default_rng(seed)
    labels = [i % 3 for i in range(examples)]

    def alignment(epoch: int) -> dict:
        sets = {}
        for name in ("trained", "control"):
            cos, rnd = rng.uniform(0.2, 0.6, (PAIRS, len(LAYERS))), rng.uniform(0.1, 0.3, (PAIRS, len(LAYERS)))
            sets[name] = {
                "pairs": [[f"w{i}", f"t{i}"] for i in range(PAIRS)],
                "per_pair_cos": cos.tolist(),
                "per_pair_random": rnd.tolist(),
                "cos": cos.mean(0).tolist(),
                "cos_random": rnd.mean(0).tolist(),
                "gap": (cos - rnd).mean(0).tolist(),
                "p_at_1_s2t": [0.5] * len(LAYERS),
                "cos_bos": [0.99] * len(LAYERS),
                "pool_candidates": 2 * PAIRS,
                "chance_p_at_1": 1 / (2 * PAIRS),
                "chance_mrr": 0.1,
                "identical_excluded": 0,
                "queries": [f"w{i}" for i in range(PAIRS)],
                "query_clusters": list(range(PAIRS)),
                "query_rights": [1] * PAIRS,
                "per_query_rank": [[1 if i < hits[name][min(epoch, 1)] else 3] * len(LAYERS) for i in range(PAIRS)],
            }
            sets[name]["csls_p_at_1"] = [hits[name][min(epoch, 1)] / PAIRS] * len(LAYERS)
        report = {"layers": LAYERS, "epoch": epoch, "sets": sets, "pool": {"candidates": 2 * PAIRS, "k": 10}}
        return report if legacy else {"measurement": "alignment", "key": "alignment", **report}

    def xnli(epoch: int) -> dict:
        languages = {}
        for task, counts in correct.items():
            right, baseline = counts[min(epoch, 1)], counts[0] / examples
            # The first `right` examples score their label highest, the others the next label.
            predicted = [label if i < right else (label + 1) % 3 for i, label in enumerate(labels)]
            acc = right / examples
            languages[task] = {
                "acc": acc,
                "correct": right,
                "n": examples,
                "labels": labels,
                "loglikelihoods": [[float(c == p) for c in range(3)] for p in predicted],
                "retention": acc / baseline if baseline else None,  # undefined over a zero baseline: null
            }
        if legacy:
            return {"epoch": epoch, "languages": {task.removeprefix("xnli_"): e for task, e in languages.items()}}
        chance = {task: {"chance": 1 / 3, "language": task.split("_")[-1]} for task in languages}
        tasks = {task: {**e, **chance[task]} for task, e in languages.items()}
        return {"measurement": "multiple_choice", "key": "reasoning", "epoch": epoch, "tasks": tasks}

    def lm(epoch: int) -> dict:
        languages = {}
        for lang, (before, after) in (texts or {}).items():
            noise = np.random.default_rng([seed, len(arm)]).normal(0, 0.05, EXAMPLES)  # differs between arms
            per_text = [before if epoch == 0 else after + noise[i] for i in range(EXAMPLES)]
            languages[lang] = {
                "token_loglikelihood": sum(per_text) / EXAMPLES,
                "perplexity": float(np.exp(-sum(per_text) / EXAMPLES)),
                "texts": EXAMPLES,
                "tokens": 2 * EXAMPLES,
                "per_text_loglikelihood": [2 * v for v in per_text],
                "per_text_tokens": [2] * EXAMPLES,
            }
        return {"measurement": "lm_likelihood", "key": "lm", "epoch": epoch, "languages": languages}

    _write(
        run / "summary.json",
        {
            "name": arm,
            "version": version,
            "status": status,
            "seed": seed,
            "model": model,
            "target_layer": model["target_layer"],
            "trainable_parameters": 1000,
            "global_step": 10,
            "epochs_completed": int(evaluated),
            "data": {"fingerprint": FINGERPRINT},
        },
    )
    folders = [("alignment", alignment), ("xnli" if legacy else "reasoning", xnli)] + ([("lm", lm)] if texts else [])
    for kind, make in folders:
        _write(run / kind / "baseline.json", make(0))
        if evaluated:
            _write(run / kind / "epoch_01.json", make(1))
    return run


def _strict(text: str) -> dict:
    def refuse(constant: str):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


FULL_ALL = {"adaptation": "full", "adapt_layers": "all", "target_layer": 4}


def test_retention_is_judged_against_each_full_arm_on_its_own(tmp_path):
    logs = tmp_path / "logs"
    # Early-layer LoRA keeps its accuracy; full_early (5 seeds) loses much; full_all (2 seeds) loses some.
    for seed, final in enumerate([10, 11, 10, 9, 10]):
        _fake_run(logs, "tli", seed, seed, correct={"xnli_sw": (10, final), "xnli_en": (12, 12)})
    for seed, final in enumerate([4, 5, 6, 5, 3]):
        _fake_run(
            logs,
            "full_early",
            seed,
            seed,
            correct={"xnli_sw": (10, final), "xnli_en": (12, 5)},
            model={"adaptation": "full"},
        )
    for seed, final in enumerate([7, 8]):
        _fake_run(logs, "full_all", seed, seed, correct={"xnli_sw": (10, final), "xnli_en": (12, 12)}, model=FULL_ALL)
    report = build_report([logs / "tli", logs / "full_early", logs / "full_all"], resamples=2000)
    retention = report["verdict"]["retention"]
    by_full = {c["full"]: c for c in retention["comparisons"]}
    assert [(c["early_lora"], c["full"]) for c in retention["comparisons"]] == [
        ("tli", "full_early"),
        ("tli", "full_all"),
    ]
    early = by_full["full_early"]
    sw = early["per_task"]["xnli_sw"]["difference"]
    # The effect: mean accuracy change of tli's runs minus full_early's, per language and pooled over examples.
    assert sw["estimate"] == pytest.approx((10 - 10) / EXAMPLES - (np.mean([4, 5, 6, 5, 3]) - 10) / EXAMPLES)
    pooled = early["per_task"]["pooled"]["difference"]
    assert pooled["estimate"] == pytest.approx((sw["estimate"] + (0 - (5 - 12) / EXAMPLES)) / 2)
    assert sw["paired"] and sw["runs"] == [5, 5]
    assert early["answer"] == "yes" and early["per_task"]["xnli_sw"]["answer"] == "yes"
    assert early["per_task"]["xnli_en"]["answer"] == "yes"
    assert "kept more zero-shot accuracy than full_early in every task" in early["words"]
    assert by_full["full_all"]["answer"] == "not answerable"  # 2 seeds: the rule applies to this pair alone
    assert "fewer than 5 distinct seeds per arm (full_all: 2)" in by_full["full_all"]["words"]
    assert by_full["full_all"]["full_kind"] == "full fine-tuning, whole model: embeddings + blocks 0-3 + final norm"
    assert retention["answer"] == "yes"  # the pair that cannot be answered does not outvote the one that can
    md = format_markdown(report)
    assert "Decision rules" in md and "not answerable: the CI cannot be computed" in md
    lines = [line for line in md.splitlines() if line.startswith("- **tli vs ")]
    assert len(lines) == 2
    assert lines[0].startswith("- **tli vs full_early** (full-rank fine-tuning, blocks 0-1): **yes**")
    assert lines[1].startswith("- **tli vs full_all** (full fine-tuning, whole model") and "(full_all: 2)" in lines[1]


def _retention_answer(tmp_path, lora_finals, full_finals, *, baseline, examples, min_seeds=5) -> dict:
    """The verdict of one comparison: sw accuracy (baseline -> each seed's final) for early-layer LoRA and full."""
    logs = tmp_path / "logs"
    for seed, final in enumerate(lora_finals):
        _fake_run(logs, "tli", seed, seed, correct={"xnli_sw": (baseline, final)}, examples=examples)
    for seed, final in enumerate(full_finals):
        _fake_run(
            logs,
            "full",
            seed,
            seed,
            correct={"xnli_sw": (baseline, final)},
            model={"adaptation": "full"},
            examples=examples,
        )
    report = build_report([logs / "tli", logs / "full"], resamples=2000, min_seeds=min_seeds)
    [comparison] = report["verdict"]["retention"]["comparisons"]
    return comparison


def test_five_seeds_one_example_apart_in_sixty_is_inconclusive_not_yes(tmp_path):
    # The review's case: Welch's t-test on per-seed means called this "yes", p = 0.0007.
    c = _retention_answer(tmp_path, [21, 21, 22, 21, 21], [20, 20, 20, 21, 20], baseline=20, examples=60)
    assert c["answer"] == "inconclusive"
    words = c["per_task"]["xnli_sw"]["words"]
    assert "includes 0" in words and "would be detected" in words
    d = c["per_task"]["xnli_sw"]["difference"]
    assert d["ci_low"] <= 0 < d["ci_high"] and d["estimate"] == pytest.approx(6 / 300 - 1 / 300)


def test_a_consistent_ten_point_difference_on_500_examples_is_yes_and_its_mirror_is_no(tmp_path):
    lora, full = [250, 251, 249, 250, 252], [200, 198, 203, 201, 199]
    yes = _retention_answer(tmp_path / "a", lora, full, baseline=250, examples=500)
    assert yes["answer"] == "yes" and yes["per_task"]["xnli_sw"]["difference"]["ci_low"] > 0.05
    no = _retention_answer(tmp_path / "b", full, lora, baseline=250, examples=500)
    assert no["answer"] == "no" and no["per_task"]["xnli_sw"]["difference"]["ci_high"] < -0.05
    assert "lies below 0" in no["words"] and "kept less zero-shot accuracy" in no["words"]
    assert "includes 0" not in no["words"] and "detected" not in no["words"]


def test_no_spread_or_too_few_seeds_is_not_answerable_never_no(tmp_path):
    # Every run makes the same predictions before and after: nothing varies, no interval exists.
    flat = _retention_answer(tmp_path / "a", [10] * 5, [10] * 5, baseline=10, examples=20)
    assert flat["answer"] == "not answerable" and "no spread" in flat["words"]
    one = _retention_answer(tmp_path / "b", [30], [10], baseline=20, examples=40)
    assert one["answer"] == "not answerable" and "fewer than 5 distinct seeds" in one["words"]


def test_retention_is_decided_per_language_first(tmp_path):
    logs = tmp_path / "logs"
    # Swahili: LoRA keeps what full fine-tuning loses; English: the other way round.
    for seed in range(5):
        _fake_run(logs, "tli", seed, seed, correct={"xnli_sw": (10, 10), "xnli_en": (12, 5)})
        full = {"adaptation": "full"}
        _fake_run(logs, "full", seed, seed, correct={"xnli_sw": (10, 3), "xnli_en": (12, 12)}, model=full)
    [c] = build_report([logs / "tli", logs / "full"], resamples=2000)["verdict"]["retention"]["comparisons"]
    assert (c["per_task"]["xnli_sw"]["answer"], c["per_task"]["xnli_en"]["answer"]) == ("yes", "no")
    assert c["answer"] == "mixed" and "the tasks answer xnli_sw yes, xnli_en no" in c["words"]
    assert c["per_task"]["pooled"]["answer"] == "inconclusive"  # +0.35 - 0.35 = 0: pooling would hide both


def test_the_verdict_says_whether_the_tasks_agree_and_judges_held_out_text_by_the_same_rules(tmp_path):
    logs = tmp_path / "logs"
    # Full fine-tuning loses XNLI; no run changes on the second task, which is therefore not answerable (no spread)
    # and must neither outvote XNLI's yes nor count as agreeing with it. Held-out text: full loses 0.5 nats per
    # token, LoRA nothing.
    for seed in range(5):
        _fake_run(logs, "tli", seed, seed, correct={"xnli_sw": (10, 10), "xcopa_sw": (12, 12)}, texts={"sw": (-3, -3)})
        _fake_run(
            logs,
            "full",
            seed,
            seed,
            correct={"xnli_sw": (10, 3), "xcopa_sw": (12, 12)},
            texts={"sw": (-3, -3.5)},
            model={"adaptation": "full"},
        )
    report = build_report([logs / "tli", logs / "full"], resamples=400)
    (c,) = report["verdict"]["retention"]["comparisons"]
    assert (c["per_task"]["xnli_sw"]["answer"], c["per_task"]["xcopa_sw"]["answer"]) == ("yes", "not answerable")
    # An unanswerable task does not outvote an answer, and is named.
    assert c["answer"] == "yes" and "in every answered task (1 of 2; not answerable: xcopa_sw)" in c["words"]
    assert "only xnli_sw could be answered, so whether the tasks agree cannot be said" in c["words"]
    lm = c["lm"]["sw"]
    assert lm["answer"] == "yes" and lm["difference"]["estimate"] == pytest.approx(0.5, abs=0.05)
    assert abs(report["runs"][0]["lm"]["sw"]["change"]) < 0.05
    for seed in range(5):  # now the second task goes the other way: LoRA loses it, full keeps it
        _fake_run(logs, "tli2", seed, seed, correct={"xnli_sw": (10, 10), "xcopa_sw": (12, 5)})
    report = build_report([logs / "tli2", logs / "full"], resamples=400)
    (c,) = report["verdict"]["retention"]["comparisons"]
    assert c["answer"] == "mixed" and "the answered tasks do not agree" in c["words"]
    assert c["tasks_agree"] is False
    assert c["lm"] == {}  # tli2 measured no held-out text
    # Both arms move a little both ways on both tasks: inconclusive everywhere, which is not "the tasks agree".
    for seed, (x, c) in enumerate(zip([10, 11, 9, 10, 11], [12, 11, 13, 12, 12])):
        _fake_run(logs, "tli3", seed, seed, correct={"xnli_sw": (10, x), "xcopa_sw": (12, c)})
        full = {"adaptation": "full"}
        _fake_run(logs, "full3", seed, seed, correct={"xnli_sw": (10, 20 - x), "xcopa_sw": (12, 24 - c)}, model=full)
    (c,) = build_report([logs / "tli3", logs / "full3"], resamples=400)["verdict"]["retention"]["comparisons"]
    assert c["answer"] == "inconclusive" and "no task answers either way" in c["words"] and "agree" not in c["words"]
    md = format_markdown(build_report([logs / "tli", logs / "full"], resamples=50))
    assert "## Held-out text, baseline -> final" in md and {r["task"] for r in _table(md, "Zero-shot tasks")} == {
        "xnli_sw",
        "xcopa_sw",
    }


def test_an_optional_measurement_not_yet_evaluated_after_training_is_left_out_with_a_warning(tmp_path):
    # WeightUpdateSpectrum(every_n_epochs=2) on a 1-epoch run writes only its baseline: the run is still compared.
    run = _fake_run(tmp_path / "logs", "tli", 0, 0)
    _write(run / "weight_update" / "baseline.json", {"measurement": "weight_update", "key": "weight_update"})
    report = build_report([run], resamples=50, min_seeds=1)
    assert any(
        "weight_update/ left out of the comparison: no evaluation after training" in w for w in report["warnings"]
    )
    assert report["runs"][0]["reasoning"]


def test_runs_written_before_the_measurement_seam_read_as_today(tmp_path):
    # tli_lightning 0.2 wrote xnli/ per language without kinds: the same numbers give the same report.
    for legacy, root in ((False, tmp_path / "new"), (True, tmp_path / "old")):
        for seed in range(2):
            _fake_run(root, "tli", seed, seed, correct={"xnli_sw": (10, 12), "xnli_en": (9, 8)}, legacy=legacy)
    new, old = (build_report([tmp_path / name / "tli"], resamples=50, min_seeds=2) for name in ("new", "old"))
    for key in ("reasoning", "tests"):
        assert json.dumps(old["runs"][0][key], sort_keys=True) == json.dumps(new["runs"][0][key], sort_keys=True)
    assert old["arms"]["tli"]["reasoning"] == new["arms"]["tli"]["reasoning"]
    assert old["verdict"]["retention"] == new["verdict"]["retention"]
    assert (tmp_path / "old" / "tli" / "version_0" / "xnli").is_dir()


def test_the_alignment_verdict_answers_both_questions_from_the_primary_endpoint(tmp_path):
    logs = tmp_path / "logs"
    # Planted: control retrieval rises from 2 to 10 of 12 queries in every seed; random: stays at 1 of 12.
    for seed in range(5):
        _fake_run(logs / "planted", "tli", seed, seed, hits={"control": (2, 10)})
        _fake_run(logs / "random", "tli", seed, seed, hits={"control": (1, 1)})
    planted = build_report([logs / "planted" / "tli"], resamples=2000)["verdict"]["alignment"]
    assert planted["answer_gain"] == "yes" and planted["answer_beyond_chance"] == "yes"
    effect = planted["arms"]["tli"]["gain"]["effect"]
    assert effect["estimate"] == pytest.approx(8 / 12) and effect["ci_low"] > 0.3
    assert "before training: inconclusive" in planted["arms"]["tli"]["beyond_chance"]["words"]  # 2 of 12, 1/24
    random = build_report([logs / "random" / "tli"], resamples=2000)["verdict"]["alignment"]
    assert random["answer_gain"] == "not answerable"  # every query's hit is unchanged: no spread
    assert random["answer_beyond_chance"] == "inconclusive"  # 1 of 12 against a chance of 1/24


def test_the_kind_of_an_arm_says_which_parameters_it_trains():
    assert _kind("lora", None, 2, 4) == ("early-layer LoRA", "early_lora")
    assert _kind("lora", None, 4, 4) == ("LoRA at the final layer", None)
    assert _kind("full", None, 2, 4) == ("full-rank fine-tuning, blocks 0-1", "full")
    assert _kind("full", [0, 1], 3, 4) == ("full-rank fine-tuning, blocks [0, 1]", "full")
    # "all": every parameter the loss reaches: the embeddings and the blocks below the target, no more.
    assert _kind("full", "all", 2, 4) == ("full-rank fine-tuning, embeddings + blocks 0-1", "full")
    whole = "full fine-tuning, whole model: embeddings + blocks 0-3 + final norm"
    assert _kind("full", "all", 4, 4) == (whole, "full")


def test_the_confidence_level_sets_the_bootstrap_intervals(tmp_path):
    run = _fake_run(tmp_path / "logs", "tli", 0, 0)
    narrow = build_report([run], resamples=300, seed=4, confidence=0.8)
    wide = build_report([run], resamples=300, seed=4)
    (a0, a1) = (json.loads((run / "alignment" / f).read_text()) for f in ("baseline.json", "epoch_01.json"))
    for set_name in ("trained", "control"):
        cos0, cos1 = (np.asarray(a["sets"][set_name]["per_pair_cos"])[:, 2] for a in (a0, a1))
        stats = narrow["runs"][0]["paired"]["2"][set_name]["cos"]
        assert stats["confidence"] == 0.8
        assert (stats["ci_low"], stats["ci_high"]) == bootstrap_ci(cos1 - cos0, seed=4, resamples=300, confidence=0.8)
        other = wide["runs"][0]["paired"]["2"][set_name]["cos"]
        assert other["ci_low"] < stats["ci_low"] < stats["ci_high"] < other["ci_high"]
    assert narrow["settings"]["confidence"] == 0.8


def test_an_undefined_retention_is_null_in_and_out(tmp_path):
    run = _fake_run(tmp_path / "logs", "tli", 0, 0, correct={"xnli_sw": (0, 3), "xnli_en": (10, 12)})
    assert '"retention": null' in (run / "reasoning" / "epoch_01.json").read_text()
    report = build_report([run], resamples=50)
    entry = report["runs"][0]
    assert entry["reasoning"]["xnli_sw"]["retention"] is None
    assert entry["retention_mean"] == pytest.approx(1.2) == entry["reasoning"]["xnli_en"]["retention"]
    assert any("retention undefined for xnli_sw" in w for w in report["warnings"])
    assert report["arms"]["tli"]["reasoning"]["xnli_sw"]["retention"]["n"] == 0
    write_report(report, tmp_path / "out")
    written = _strict((tmp_path / "out" / "report.json").read_text())
    assert written["runs"][0]["reasoning"]["xnli_sw"]["retention"] is None
    rows = {row["task"]: row for row in _table((tmp_path / "out" / "report.md").read_text(), "Zero-shot tasks")}
    assert rows["xnli_sw"]["retention"] == "n/a" and rows["xnli_en"]["retention"] == "1.2000"


def test_unfinished_versions_of_a_named_arm_are_skipped_with_a_warning(tmp_path, capsys):
    logs = tmp_path / "logs"
    _fake_run(logs, "tli", 0, 0)
    failed = _fake_run(logs, "tli", 1, 1, status="failed", evaluated=False)  # failed before its first evaluation
    interrupted = _fake_run(logs, "tli", 2, 2, status="interrupted")
    compare([str(logs / "tli"), "--output", str(tmp_path / "out"), "--resamples", "50"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert str(failed) in warnings[0] and "status 'failed'" in warnings[0]
    assert "no reasoning/epoch_NN.json" in warnings[0]
    assert str(interrupted) in warnings[1] and "status 'interrupted'" in warnings[1]
    report = _strict((tmp_path / "out" / "report.json").read_text())
    assert [r["version"] for r in report["runs"]] == [0]
    md = (tmp_path / "out" / "report.md").read_text()
    assert all(line.replace("warning: ", "- warning: ", 1) in md for line in warnings)
    # Named itself, an incomplete run is still an error; an interrupted but complete one is compared, with a warning.
    with pytest.raises(TLIError, match=r"version_1: cannot compare this run: missing .*reasoning/epoch_NN.json"):
        build_report([failed])
    assert any("'interrupted'" in w for w in build_report([interrupted], resamples=50)["warnings"])
    only_failed = tmp_path / "other" / "tli"
    shutil.copytree(failed, only_failed / "version_0")
    with pytest.raises(TLIError, match=r"none of its runs can be compared: .*status 'failed'"):
        build_report([only_failed])


def test_a_learning_rate_sweep_is_one_arm_per_rate_joined_in_the_tradeoff_figure(tmp_path):
    logs = tmp_path / "logs"
    for version, (seed, rate) in enumerate([(0, 2e-4), (1, 2e-4), (0, 1e-3), (0, 5e-5)]):
        _fake_run(logs, "tli", version, seed, model={"learning_rate": rate})
    report = build_report([logs / "tli"], resamples=100)
    assert sorted(report["arms"]) == ["tli@lr0.0002", "tli@lr0.001", "tli@lr5e-05"]
    assert report["arms"]["tli@lr0.0002"]["distinct_seeds"] == 2
    assert {a["method"] for a in report["arms"].values()} == {"tli"}
    assert not any("differ in model settings" in w for w in report["warnings"])
    paths = write_report(report, tmp_path / "out")
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in paths if p.suffix == ".png")


def test_runs_on_different_base_models_are_refused_unless_allowed(tmp_path):
    logs = tmp_path / "logs"
    _fake_run(logs, "tli", 0, 0, model={"model_name_or_path": "tiny"})
    _fake_run(logs, "full", 0, 0, model={"model_name_or_path": "other/model", "adaptation": "full"})
    with pytest.raises(TLIError, match=r"runs differ in base model: tiny@unrecorded .*other/model@unrecorded"):
        build_report([logs / "tli", logs / "full"], resamples=50)
    report = build_report([logs / "tli", logs / "full"], resamples=50, allow_different_bases=True)
    assert report["warnings"][0].startswith("THE RUNS DIFFER IN BASE MODEL")
    assert format_markdown(report).split("## Warnings", 1)[1].lstrip().startswith("- warning: THE RUNS DIFFER")


def test_seeds_that_vary_the_data_sample_are_compared_unpaired(tmp_path):
    logs = tmp_path / "logs"
    for seed in range(2):
        run = _fake_run(logs, "tli", seed, seed)
        summary = json.loads((run / "summary.json").read_text())
        summary["data"] = {"seed": None, "reasoning_limit": 20, "fingerprint": {**FINGERPRINT, "xnli_sw": f"s{seed}"}}
        (run / "summary.json").write_text(json.dumps(summary))
    report = build_report([logs / "tli"], resamples=50)
    assert report["settings"]["paired_items"] is False
    assert "different between runs" in format_markdown(report)
    # Fixed data seeds with different samples: refused, naming the field.
    summary["data"]["seed"] = 42
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(TLIError, match="runs differ in data.fingerprint.xnli_sw"):
        build_report([logs / "tli"], resamples=50)


def test_runs_written_before_the_primary_endpoint_are_refused_with_why(tmp_path):
    run = _fake_run(tmp_path / "logs", "tli", 0, 0)
    baseline = json.loads((run / "alignment" / "baseline.json").read_text())
    del baseline["sets"]["control"]["per_query_rank"]
    (run / "alignment" / "baseline.json").write_text(json.dumps(baseline))
    with pytest.raises(TLIError, match=r"no per_query_rank: written by tli_lightning 0.2 or older"):
        build_report([run])
