"""The demo grid: every comparison arm on the tiny model and bundled data, then the comparison report.

    python tools/demo_grid.py --jobs 2        # 8 runs, 2 at a time, then reports/demo_grid/report.md

On this project's 2-core machine: 91 s with --jobs 2, 170 s with --jobs 1 (measured, 5 epochs per run).

Four arms (configs/lugha_llama_8b/*.yaml, each with configs/demo/on_tiny_model.yaml on top), and three
seeds for the two early arms (TLI and its full-rank counterpart): the same recipes as the 8B runs, with
overrides, never parallel copies. Each run is a normal `fit`, made inside the output directory
(<output>/logs/<arm>/version_<n>/, <output>/checkpoints/...), so demo runs never mix with real runs of the
same arm in ./logs; `compare` then reads the runs this invocation made. On random tiny weights the honest
answer is "no alignment beyond the random-pair baseline": the grid shows the machinery and the report, not
a finding.
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
EARLY_ARMS = ("tli_lora_early", "full_early")  # the question's two arms: several seeds each
OTHER_ARMS = ("full_all", "lora_all")
SEEDS = (42, 1, 2)
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
    result = subprocess.run(command, capture_output=True, text=True, cwd=where, env=env)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"{arm} (seed {seed}) failed with exit code {result.returncode}")
    found = WRITTEN.search(result.stdout)
    if found is None:
        raise SystemExit(f"{arm} (seed {seed}): no summary line in its output")
    print(f"== {arm}, seed {seed}: {result.stdout.strip().splitlines()[0]}", flush=True)
    return found.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output",
        default="reports/demo_grid",
        help="where the runs and compare's report go (default: reports/demo_grid)",
    )
    parser.add_argument("--max-epochs", type=int, help="epochs per run (default: the recipes' 5)")
    parser.add_argument(
        "--seeds", type=int, default=len(SEEDS), choices=range(1, len(SEEDS) + 1), help="seeds of the early arms"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        choices=range(1, 65),
        metavar="N",
        default=1,
        help="runs at a time, sharing the CPU cores between them (default: 1; on 2 cores, 2 took 91 s, 1 took 170 s)",
    )
    args = parser.parse_args()
    extra = ["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else []
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    plan = [(arm, seed) for arm in EARLY_ARMS for seed in SEEDS[: args.seeds]] + [(arm, SEEDS[0]) for arm in OTHER_ARMS]
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    pool = ThreadPoolExecutor(max_workers=args.jobs)  # runs claim their version directories atomically
    try:
        runs = list(pool.map(lambda job: run_arm(*job, extra, output, threads), plan))
    finally:
        pool.shutdown(cancel_futures=True)  # a failed run: the queued ones are not started
    command = [sys.executable, "-m", "tli_lightning", "compare", *runs, "--output", "."]
    subprocess.run(command, check=True, cwd=output)
    print(f"report: {output / 'report.md'}")


if __name__ == "__main__":
    main()
