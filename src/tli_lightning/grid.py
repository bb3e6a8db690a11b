"""``python -m tli_lightning grid``: arms x seeds x learning rates, each a normal ``fit`` in its own run directory.

    python -m tli_lightning grid --arms tli_lora_early full_early --seeds 1-5 --submit slurm
    python -m tli_lightning grid --arms tli_lora_early full_early --seeds 1-2 --lrs 1e-4 2e-4 \\
        --config configs/demo/on_tiny_model.yaml --submit local --jobs 2

``--submit slurm`` writes ``<output>/grid.sbatch``, a SLURM job array with one task per run, and submits it
with ``sbatch``; each task runs ``srun python -m tli_lightning fit ...`` inside ``<output>`` (so its runs are
``<output>/logs/<arm>/version_<n>/``), is preempted and requeued like ``slurm/fit_1gpu.sbatch`` and continues
its own run. ``--submit local`` runs the same fits here, ``--jobs`` at a time. Both then print the
``compare`` command for the result. A generated ``sbatch`` file rather than a launcher library (submitit):
the file is what a cluster's users and admins read and edit, it needs nothing installed on the cluster
beyond SLURM, and every task is the plain CLI command, resumable by hand.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tli_lightning.errors import OneLineArgumentParser, TLIError

ARMS_DIR = Path("configs") / "lugha_llama_8b"
WRITTEN = re.compile(r"\(written to (\S+)/summary\.json\)")
SBATCH_HEADER = """\
#SBATCH --job-name=tli-grid
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --signal=USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%A_%a.out"""


@dataclass
class Task:
    """One run of the grid: an arm's config (then ``configs``), a seed, a learning rate (None: the arm's)."""

    arm: Path
    seed: int
    learning_rate: float | None = None
    configs: list[Path] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    where: str = "."  # a subdirectory of the grid's output

    def fit_args(self, output: Path | None = None) -> list[str]:
        """The fit's options; with ``output``, its runs go to ``output/where/{logs,checkpoints}`` (the fit runs
        where the grid was started, so that the recipes' relative data paths mean what they mean there)."""
        args = [word for config in (self.arm, *self.configs) for word in ("--config", str(config))]
        if output is not None:
            args += ["--trainer.logger.init_args.save_dir", str(output / self.where / "logs")]
        args += ["--seed_everything", str(self.seed)]
        if self.learning_rate is not None:
            args += ["--model.learning_rate", f"{self.learning_rate:g}"]
        return args + list(self.extra)

    def label(self) -> str:
        rate = f", lr {self.learning_rate:g}" if self.learning_rate is not None else ""
        return f"{self.arm.stem} (seed {self.seed}{rate}{', ' + ' '.join(self.extra) if self.extra else ''})"


def parse_seeds(text: str) -> list[int]:
    """``"1-5"``, ``"1,3,7"`` or ``"42 1-3"``: the seeds, in order, once each."""
    seeds: list[int] = []
    for part in text.replace(",", " ").split():
        first, dash, last = part.partition("-")
        try:
            values = range(int(first), int(last) + 1) if dash else [int(first)]
        except ValueError:
            raise TLIError(f"--seeds {text!r}: {part!r} is not a seed or a range like 1-5") from None
        seeds += [seed for seed in values if seed not in seeds]
    if not seeds:
        raise TLIError(f"--seeds {text!r}: no seeds")
    return seeds


def resolve_arm(arm: str) -> Path:
    """An arm's config: a YAML file, or a name under configs/lugha_llama_8b/ (here, or in this package's checkout)."""
    path = Path(arm)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise TLIError(f"--arms {arm}: no such file")
        return path.resolve()
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = root / ARMS_DIR / f"{arm}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / ARMS_DIR).glob("*.yaml"))
    raise TLIError(f"--arms {arm}: not a YAML file nor one of {ARMS_DIR}/*.yaml ({', '.join(known) or 'none found'})")


def plan(
    arms: list[Path], seeds: list[int], rates: list[float | None], configs: list[Path], extra: list[str]
) -> list[Task]:
    """Every (arm, learning rate, seed), in that order."""
    return [Task(arm, seed, rate, list(configs), list(extra)) for arm in arms for rate in rates for seed in seeds]


def arm_name(config: Path) -> str:
    """The run name a config gives its runs (trainer.logger.init_args.name), else its file's stem."""
    import yaml

    try:
        settings = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        logger = (settings.get("trainer") or {}).get("logger") or {}
        return str((logger.get("init_args") or {}).get("name") or config.stem)
    except (OSError, yaml.YAMLError, AttributeError):
        return config.stem


def compare_command(tasks: list[Task], output: Path, where: str = ".") -> list[str]:
    """``compare`` over every run of the grid (each arm's logs/<name>), the verdict needing every seed."""
    names = dict.fromkeys(arm_name(t.arm) for t in tasks if t.where == where)
    seeds = len({t.seed for t in tasks if t.where == where})
    root = output / where
    return [
        "python",
        "-m",
        "tli_lightning",
        "compare",
        *[str(root / "logs" / name) for name in names],
        "--output",
        str(root / "comparison"),
        "--min-seeds",
        str(seeds),
    ]


# ---- here ----------------------------------------------------------------------------------


def run_task(task: Task, output: Path, threads: int | None = None, quiet_fit: list[str] = ()) -> Path:
    """One fit, its runs under ``output/task.where``: the run directory it wrote."""
    (output / task.where).mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tli_lightning", "fit", *task.fit_args(output), *quiet_fit]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise TLIError(f"{task.label()} failed with exit code {result.returncode}")
    found = WRITTEN.search(result.stdout)
    if found is None:
        raise TLIError(f"{task.label()}: no summary line in its output")
    print(f"== {task.label()}: {result.stdout.strip().splitlines()[0]}", flush=True)
    return Path(found.group(1))


def run_local(tasks: list[Task], output: Path, jobs: int = 1) -> list[Path]:
    """Every task here, ``jobs`` at a time (sharing the CPU cores between them); their run directories."""
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    pool = ThreadPoolExecutor(max_workers=jobs)  # runs claim their version directories atomically
    try:
        return list(pool.map(lambda task: run_task(task, output, threads, quiet), tasks))
    finally:
        pool.shutdown(cancel_futures=True)  # a failed run: the queued ones are not started


# ---- on a SLURM cluster ---------------------------------------------------------------------


def write_array(tasks: list[Task], output: Path, jobs: int | None = None, header: str = SBATCH_HEADER) -> Path:
    """``<output>/grid.sbatch``: one array task per run, each ``srun python -m tli_lightning fit ...`` there."""
    throttle = f"%{jobs}" if jobs else ""
    cases = "\n".join(f"  {i}) args=({shlex.join(task.fit_args(output))}) ;;" for i, task in enumerate(tasks))
    script = f"""#!/bin/bash
# Written by `python -m tli_lightning grid`: {len(tasks)} runs, one array task each (edit the #SBATCH lines, or
# pass sbatch options on its command line: they win). Each task is a normal fit, run from {Path.cwd()} (the
# recipes' relative data paths mean what they mean there), its run in {output}/logs and checkpoints; a
# preempted or timed-out task (SIGUSR1 90 s before its limit) saves, is requeued and continues its own run.
#SBATCH --array=0-{len(tasks) - 1}{throttle}
{header}
set -euo pipefail
cd {shlex.quote(str(Path.cwd()))}
case "$SLURM_ARRAY_TASK_ID" in
{cases}
  *) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;
esac
srun {shlex.quote(sys.executable)} -m tli_lightning fit "${{args[@]}}" \\
    --trainer.num_nodes "$SLURM_NNODES" --trainer.devices "$SLURM_NTASKS_PER_NODE" \\
    --trainer.enable_progress_bar false
"""
    path = output / "grid.sbatch"
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)
    return path


def submit(script: Path, sbatch_args: list[str]) -> str:
    """``sbatch`` the array (from its directory, where its output files go); the job id."""
    command = ["sbatch", "--parsable", *sbatch_args, str(script)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=script.parent)
    except FileNotFoundError:
        raise TLIError(f"no sbatch on PATH: {script} is written; submit it where SLURM is") from None
    if result.returncode != 0:
        raise TLIError(f"sbatch refused {script}: {(result.stderr or result.stdout).strip()}")
    return result.stdout.strip().splitlines()[-1].split(";")[0]


def _parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m tli_lightning grid",
        description="Arms x seeds x learning rates, each a normal fit in its own run directory: a SLURM job array "
        "(--submit slurm) or here (--submit local). Fit options after `--` go to every run.",
        epilog="Runs and reports go under --output; compare them with the command printed at the end.",
    )
    parser.add_argument(
        "--arms", nargs="+", required=True, metavar="ARM", help=f"arm configs: names in {ARMS_DIR}/ or YAML files"
    )
    parser.add_argument("--seeds", default="42", help="seeds: 1-5, 1,3,7 or both (default: 42)")
    parser.add_argument(
        "--lrs", nargs="+", type=float, metavar="LR", help="learning rates, each a run per seed (default: the arm's)"
    )
    parser.add_argument(
        "--config", action="append", default=[], metavar="YAML", help="more configs after each arm's (repeatable)"
    )
    parser.add_argument("--output", default="grid", help="where the runs (logs/, checkpoints/) go (default: grid)")
    parser.add_argument("--submit", choices=("slurm", "local"), default="local", help="where to run (default: local)")
    parser.add_argument(
        "--jobs", type=int, metavar="N", help="runs at a time (local: default 1; slurm: the array's %%N throttle)"
    )
    parser.add_argument(
        "--sbatch-args",
        default="",
        metavar="ARGS",
        help='options for sbatch, after an =: --sbatch-args="--partition=gpu --time=4:00:00"',
    )
    parser.add_argument("--dry-run", action="store_true", help="write grid.sbatch (slurm) or list the runs; run none")
    return parser


def main(argv: list[str]) -> None:
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    args = _parser().parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        raise TLIError(f"--jobs {args.jobs}: at least 1")
    output = Path(args.output).resolve()
    configs = []
    for config in args.config:
        if not Path(config).is_file():
            raise TLIError(f"--config {config}: no such file")
        configs.append(Path(config).resolve())
    tasks = plan([resolve_arm(a) for a in args.arms], parse_seeds(args.seeds), list(args.lrs or [None]), configs, extra)
    output.mkdir(parents=True, exist_ok=True)
    compare = shlex.join(compare_command(tasks, output))
    if args.submit == "slurm":
        script = write_array(tasks, output, args.jobs)
        if args.dry_run:
            submit_line = shlex.join(["sbatch", *shlex.split(args.sbatch_args), str(script)])
            print(f"wrote {script} ({len(tasks)} runs); submit it with:\n{submit_line}")
            print(f"once they have finished:\n{compare}")
            return
        job = submit(script, shlex.split(args.sbatch_args))
        print(f"submitted job array {job}: {len(tasks)} runs ({script}); once they have finished:\n{compare}")
        return
    if args.dry_run:
        print(f"# from {Path.cwd()}:")
        for task in tasks:
            print(shlex.join(["python", "-m", "tli_lightning", "fit", *task.fit_args(output)]))
        print(f"# then:\n{compare}")
        return
    run_local(tasks, output, args.jobs or 1)
    print(f"{len(tasks)} runs in {output}; compare them with:\n{compare}")
