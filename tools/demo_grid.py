"""The demo grid: every comparison arm on the tiny models and bundled data, then the comparison reports.

    python tools/demo_grid.py --jobs 2        # 22 runs, 2 at a time, then reports/demo_grid/report.md

Arms: configs/lugha_llama_8b/*.yaml, each with configs/demo/on_tiny_model.yaml on top (the same recipes as the
8B runs, with overrides, never parallel copies). The two early arms (TLI and its full-rank counterpart) get five
seeds at their recipe's learning rate, so the verdict is exercised on answerable input, and a learning-rate
sweep (two more rates each), so the learning-vs-forgetting figure has curves, not single points; the other arms
one seed each. Each run is a normal `fit`, made inside the output directory (<output>/logs/<arm>/version_<n>/,
<output>/checkpoints/...), so demo runs never mix with real runs of the same arm in ./logs.

Two reports, as a study needs both controls:
- <output>/report.md, the **negative control**: the random tiny model, where no alignment is expected;
- <output>/positive_control/report.md: TLI on `tiny-aligned`, a tiny model with alignment planted in its
  embeddings, where the endpoint must find alignment beyond chance: the machinery can say yes.
The grid shows the machinery and the reports, not a finding.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EARLY_ARMS = {"tli_lora_early": (5e-5, 1e-3), "full_early": (5e-6, 1e-4)}  # the question's two arms: their sweeps
OTHER_ARMS = ("lora_early_bf16", "full_all", "lora_all")
SEEDS = (42, 1, 2, 3, 4)
POSITIVE_CONTROL = ("tli_lora_early", "tiny-aligned")
WRITTEN = re.compile(r"\(written to (\S+)/summary\.json\)")


def run_arm(arm: str, seed: int, extra: list[str], where: Path, threads: int | None = None) -> str:
    command = [
        sys.executable,
        "-m",
        "tli_lightning",
        "fit",
        "--config",
        str(REPO / "configs" / "lugha_llama_8b" / f"{arm}.yaml"),
        "--config",
        str(REPO / "configs" / "demo" / "on_tiny_model.yaml"),
        "--seed_everything",
        str(seed),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(command, capture_output=True, text=True, cwd=where, env=env)
    label = f"{arm} (seed {seed}{', ' + ' '.join(extra) if extra else ''})"
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"{label} failed with exit code {result.returncode}")
    found = WRITTEN.search(result.stdout)
    if found is None:
        raise SystemExit(f"{label}: no summary line in its output")
    print(f"== {label}: {result.stdout.strip().splitlines()[0]}", flush=True)
    return found.group(1)  # relative to `where`, where compare then runs


def plan(seeds: int, sweep: bool, positive: bool, epochs: list[str]) -> list[tuple[str, int, list[str], str]]:
    """(arm, seed, extra arguments, subdirectory) for every run of the grid."""
    jobs = []
    for arm, rates in EARLY_ARMS.items():
        jobs += [(arm, seed, epochs, ".") for seed in SEEDS[:seeds]]
        if sweep:
            jobs += [(arm, SEEDS[0], [*epochs, "--model.learning_rate", f"{rate:g}"], ".") for rate in rates]
    jobs += [(arm, SEEDS[0], epochs, ".") for arm in OTHER_ARMS]
    if positive:
        arm, model = POSITIVE_CONTROL
        jobs += [
            (arm, seed, [*epochs, "--model.model_name_or_path", model], "positive_control") for seed in SEEDS[:seeds]
        ]
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output",
        default="reports/demo_grid",
        help="where the runs and compare's reports go (default: reports/demo_grid)",
    )
    parser.add_argument("--max-epochs", type=int, help="epochs per run (default: the recipes' 5)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=len(SEEDS),
        choices=range(1, len(SEEDS) + 1),
        help="seeds of the early arms and of the positive control (default: 5); compare's --min-seeds follows it",
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the learning-rate sweep of the early arms")
    parser.add_argument("--no-positive-control", action="store_true", help="skip the planted-alignment model's runs")
    parser.add_argument(
        "--jobs",
        type=int,
        choices=range(1, 65),
        metavar="N",
        default=1,
        help="runs at a time, sharing the CPU cores between them (default: 1; benchmarks/RESULTS.md section 7 has the "
        "measured time with 2)",
    )
    args = parser.parse_args()
    epochs = ["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else []
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    jobs = plan(args.seeds, not args.no_sweep, not args.no_positive_control, epochs)
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    pool = ThreadPoolExecutor(max_workers=args.jobs)  # runs claim their version directories atomically
    try:
        runs = list(pool.map(lambda job: (job[3], run_arm(job[0], job[1], job[2], output / job[3], threads)), jobs))
    finally:
        pool.shutdown(cancel_futures=True)  # a failed run: the queued ones are not started
    for where in dict.fromkeys(where for where, _ in runs):
        command = [sys.executable, "-m", "tli_lightning", "compare", *[r for w, r in runs if w == where]]
        command += ["--output", ".", "--min-seeds", str(args.seeds)]
        print(f"== compare ({'negative control: random tiny model' if where == '.' else where})", flush=True)
        subprocess.run(command, check=True, cwd=output / where)
        print(f"report: {output / where / 'report.md'}", flush=True)


if __name__ == "__main__":
    main()
