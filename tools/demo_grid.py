"""The demo grid: every comparison arm on the tiny models and bundled data, then the comparison reports.

The `grid` command's tasks (python -m tli_lightning grid, tli_lightning/grid.py), run here; a plan the command's
arms x seeds x rates cannot say in one line (five seeds and a sweep for two arms, one seed for the others).

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
import subprocess
import sys
from pathlib import Path

from tli_lightning.grid import Task, compare_command, run_local

REPO = Path(__file__).resolve().parent.parent
ARMS = REPO / "configs" / "lugha_llama_8b"
ON_TINY = REPO / "configs" / "demo" / "on_tiny_model.yaml"
EARLY_ARMS = {"tli_lora_early": (5e-5, 1e-3), "full_early": (5e-6, 1e-4)}  # the question's two arms: their sweeps
OTHER_ARMS = ("lora_early_bf16", "full_all", "lora_all")
SEEDS = (42, 1, 2, 3, 4)
POSITIVE_CONTROL = ("tli_lora_early", "tiny-aligned")


def plan(seeds: int, sweep: bool, positive: bool, epochs: list[str]) -> list[Task]:
    """Every run of the grid (the `grid` command's tasks: arm, seed, rate, subdirectory)."""

    def task(arm: str, seed: int, rate: float | None = None, extra: list[str] = (), where: str = ".") -> Task:
        return Task(ARMS / f"{arm}.yaml", seed, rate, [ON_TINY], [*epochs, *extra], where)

    jobs = []
    for arm, rates in EARLY_ARMS.items():
        jobs += [task(arm, seed) for seed in SEEDS[:seeds]]
        if sweep:
            jobs += [task(arm, SEEDS[0], rate) for rate in rates]
    jobs += [task(arm, SEEDS[0]) for arm in OTHER_ARMS]
    if positive:
        arm, model = POSITIVE_CONTROL
        extra = ["--model.model_name_or_path", model]
        jobs += [task(arm, seed, extra=extra, where="positive_control") for seed in SEEDS[:seeds]]
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
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    tasks = plan(args.seeds, not args.no_sweep, not args.no_positive_control, epochs)
    try:
        run_local(tasks, output, args.jobs)
    except Exception as error:  # a failed run: its stderr is printed already
        raise SystemExit(str(error)) from None
    for where in dict.fromkeys(task.where for task in tasks):
        command = [sys.executable, *compare_command(tasks, output, where)[1:]]
        command[command.index("--output") + 1] = str(output / where)  # the reports beside the runs
        command[command.index("--min-seeds") + 1] = str(args.seeds)
        print(f"== compare ({'negative control: random tiny model' if where == '.' else where})", flush=True)
        subprocess.run(command, check=True, cwd=output / where)
        print(f"report: {output / where / 'report.md'}", flush=True)


if __name__ == "__main__":
    main()
