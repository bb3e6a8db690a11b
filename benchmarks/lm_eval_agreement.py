"""Agreement with, and speed against, lm-evaluation-harness on every zero-shot task (xnli_sw, xcopa_sw,
xstorycloze_sw), on the real data in ../shared/data.

    python benchmarks/lm_eval_agreement.py [--model DIR] [--lm-eval PATH/TO/lm_eval] [--tasks xcopa_sw,...]

Needs lm-eval 0.4.x (`pip install "lm_eval[hf]"`, ideally in its own environment: pass its `lm_eval`
executable) and ../shared/data (skips cleanly without it). Per task, lm-eval runs its own task file
(``tli_lightning.tasks.lm_eval_task_yaml``: included, only the data source replaced by a local JSONL in the
hub's columns), offline, ``--model hf``, float32, CPU; ``python -m tli_lightning zeroshot --task`` runs on the
same model and rows (our reader on the original file). Both whole processes are timed, alternating, at the
same ``--batch_size`` (lm-eval's counts (context, continuation) requests, ours examples with all their
choices: ours at B runs k times the sequences of lm-eval at B, so lm-eval gets its best of B and k*B), and the
median of ``--repeats`` runs is reported. Agreement (max |dLL|, identical predictions) is read from the timed
runs' own outputs.

Data: XCOPA's 100 validation rows, XStoryCloze's 360 train rows, XNLI's first ``--xnli-n`` (600) Swahili rows.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tli_lightning.tasks import get_task, hub_columns, lm_eval_task_yaml, read_records

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = {
    "xnli_sw": "xnli_sw_validation.jsonl",
    "xnli_en": "xnli_en_validation.jsonl",
    "xcopa_sw": "xcopa_sw_validation.jsonl",
    "xstorycloze_sw": "xstorycloze_sw_train.tsv",
}
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def lm_eval_tasks_dir(lm_eval: str) -> Path:
    path = Path(shutil.which(lm_eval) or lm_eval)
    first = path.read_bytes().split(b"\n", 1)[0].decode(errors="replace")
    python = first[2:].strip().split()[0] if first.startswith("#!") else str(path.parent / "python")
    code = "import lm_eval.tasks, os; print(os.path.dirname(lm_eval.tasks.__file__))"
    return Path(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip())


def prepare(task_name: str, n: int | None, work: Path, tasks_root: Path) -> tuple[Path, Path, int]:
    """Our input (the original file, first n rows) and lm-eval's task folder (the same rows, hub columns)."""
    task = get_task(task_name)
    source = SHARED / FILES[task_name]
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    header = 1 if source.suffix == ".tsv" else 0
    ours = work / f"{task_name}{source.suffix}"
    ours.write_text("".join(lines[: header + n] if n else lines), encoding="utf-8")
    docs = [hub_columns(record, tsv) for record, _, _, tsv in read_records(ours, task_name)]
    data = work / f"{task_name}_lm_eval.jsonl"
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    tasks = work / f"tasks_{task_name}"
    tasks.mkdir(exist_ok=True)
    (tasks / f"tli_{task_name}.yaml").write_text(
        lm_eval_task_yaml(task, f"tli_{task_name}", tasks_root, data), encoding="utf-8"
    )
    return ours, tasks, len(docs)


def run_lm_eval(lm_eval: str, model: Path, task_name: str, tasks: Path, batch_size: int, work: Path):
    name = f"tli_{task_name}"
    out = work / f"lm_eval_{task_name}_{batch_size}_{time.monotonic_ns()}"
    command = [lm_eval, "--model", "hf", "--model_args", f"pretrained={model},dtype=float32", "--tasks", name]
    command += ["--include_path", str(tasks), "--device", "cpu", "--batch_size", str(batch_size)]
    command += ["--log_samples", "--output_path", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **OFFLINE})
    seconds = time.perf_counter() - start
    samples = [
        json.loads(line)
        for f in glob.glob(str(out / "**" / f"samples_{name}_*.jsonl"), recursive=True)
        for line in Path(f).read_text(encoding="utf-8").splitlines()
    ]
    samples.sort(key=lambda s: s["doc_id"])
    shutil.rmtree(out, ignore_errors=True)
    # lm-eval logs each response as [str(loglikelihood), str(is_greedy)].
    return seconds, [[float(r[0]) for r in s["filtered_resps"]] for s in samples]


def run_ours(model: Path, task_name: str, data: Path, batch_size: int, work: Path):
    out = work / f"ours_{task_name}.jsonl"
    command = [sys.executable, "-m", "tli_lightning", "zeroshot", "--task", task_name, "--model", str(model)]
    command += ["--data", str(data), "--batch-size", str(batch_size), "--output", str(out), "--no-progress"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    return seconds, [json.loads(line)["loglikelihoods"] for line in out.read_text().splitlines()]


def agreement(theirs: list[list[float]], ours: list[list[float]]) -> tuple[float, list[int]]:
    assert len(theirs) == len(ours), (len(theirs), len(ours))
    diff = max(abs(a - b) for t, o in zip(theirs, ours) for a, b in zip(t, o))
    return diff, [i for i, (t, o) in enumerate(zip(theirs, ours)) if argmax(t) != argmax(o)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: the embedded tiny model)")
    parser.add_argument("--lm-eval", default=shutil.which("lm_eval") or "lm_eval", help="the lm_eval executable")
    default = "xnli_sw,xcopa_sw,xstorycloze_sw"
    parser.add_argument("--tasks", default=default, help=f"comma-separated, of {', '.join(FILES)} (default: {default})")
    parser.add_argument("--xnli-n", type=int, default=600, help="XNLI rows (default: the first 600; 0: all 2490)")
    parser.add_argument("--batch-size", type=int, default=32, help="both sides' --batch_size (default: 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each command (default: 3)")
    args = parser.parse_args()
    if not all((SHARED / f).is_file() for f in FILES.values()):
        print(f"skipped: {SHARED} is not present")
        return
    from tli_lightning.tiny_model import build_tiny_model

    model = Path(args.model) if args.model else build_tiny_model()
    work = Path(tempfile.mkdtemp(prefix="tli_bench_"))
    tasks_root = lm_eval_tasks_dir(args.lm_eval)
    b = args.batch_size
    print(f"model: {model}; lm-eval task files from {tasks_root}; {os.cpu_count()} CPUs\n")
    rows = []
    for task_name in args.tasks.split(","):
        k = get_task(task_name).num_choices
        data, tasks, n = prepare(
            task_name, (args.xnli_n or None) if task_name.startswith("xnli") else None, work, tasks_root
        )
        labels = {"ours": f"tli_lightning zeroshot --batch-size {b}", b: f"lm_eval --batch_size {b}"}
        labels[k * b] = f"lm_eval --batch_size {k * b}"
        runs: dict[str, list[float]] = {}
        outputs: dict[str, list[list[float]]] = {}
        # Alternating runs, so neither side gets the warm file cache or a quiet spell alone.
        for _ in range(args.repeats):
            seconds, outputs["ours"] = run_ours(model, task_name, data, b, work)
            runs.setdefault(labels["ours"], []).append(seconds)
            for size in (b, k * b):
                seconds, outputs[size] = run_lm_eval(args.lm_eval, model, task_name, tasks, size, work)
                runs.setdefault(labels[size], []).append(seconds)
        diff, differing = agreement(outputs[b], outputs["ours"])
        print(
            f"== {task_name}: {n} examples x {k} choices; max |dLL| vs lm-eval {diff:.2e}, identical predictions "
            f"{n - len(differing)}/{n}"
        )
        for i in differing:
            top = sorted(outputs[b][i])
            print(f"    example {i}: lm-eval {outputs[b][i]}, ours {outputs['ours'][i]} (gap {top[-1] - top[-2]:.1e})")
        medians = {label: statistics.median(times) for label, times in runs.items()}
        ours_s = medians[labels["ours"]]
        for label, seconds in medians.items():
            print(
                f"   {label:40s} median {seconds:6.1f} s  (runs: {', '.join(f'{t:.1f}' for t in runs[label])})  "
                f"time / ours: {seconds / ours_s:4.2f}x"
            )
        rows.append((task_name, n, diff, n - len(differing), ours_s, medians[labels[b]], medians[labels[k * b]]))
    print("\n| task | examples | max dLL | identical predictions | ours (s) | lm-eval B (s) | lm-eval kB (s) | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for task_name, n, diff, same, ours_s, at_b, at_kb in rows:
        print(
            f"| {task_name} | {n} | {diff:.1e} | {same}/{n} | {ours_s:.1f} | {at_b:.1f} | {at_kb:.1f} | "
            f"{min(at_b, at_kb) / ours_s:.2f}x |"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
