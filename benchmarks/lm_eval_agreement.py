"""Agreement with, and speed against, lm-evaluation-harness on zero-shot XNLI.

    python benchmarks/lm_eval_agreement.py [--model DIR] [--lm-eval PATH/TO/lm_eval]

Needs lm-eval 0.4.x (`pip install "lm_eval[hf]"`, ideally in its own environment: pass its
`lm_eval` executable) and ../shared/data (skips cleanly without it). For each language it writes
the data to a temporary JSONL, runs lm-eval offline on it through a custom task YAML
(`dataset_path: json`), runs `python -m tli_lightning zeroshot` on the same model and file, and
compares per-example log-likelihoods and predictions. Then it times both whole processes on the
first 600 Swahili examples, side by side, and prints the ratios.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tli_lightning.xnli import VERBALIZERS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def task_yaml(name: str, language: str, data_file: Path) -> str:
    question, yes, also, no = VERBALIZERS[language]
    choices = ",".join(f'premise+", {question}? {word}, "+hypothesis' for word in (yes, also, no))
    return "\n".join(
        [
            f"task: {name}",
            "dataset_path: json",
            "dataset_kwargs:",
            "  data_files:",
            f"    validation: {data_file}",
            "output_type: multiple_choice",
            "validation_split: validation",
            "doc_to_text: ''",
            "doc_to_target: label",
            f"doc_to_choice: '{{{{[{choices}]}}}}'",
            "metric_list:",
            "  - metric: acc",
            "",
        ]
    )


def run_lm_eval(
    lm_eval: str, model: Path, language: str, data_file: Path, batch_size: int, work: Path
) -> tuple[float, list[list[float]]]:
    tasks = work / f"tasks_{language}"
    tasks.mkdir(exist_ok=True)
    name = f"tli_xnli_{language}"
    (tasks / f"{name}.yaml").write_text(task_yaml(name, language, data_file), encoding="utf-8")
    out = work / f"lm_eval_{language}_{batch_size}"
    command = [
        lm_eval,
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model},dtype=float32",
        "--tasks",
        name,
        "--include_path",
        str(tasks),
        "--device",
        "cpu",
        "--batch_size",
        str(batch_size),
        "--log_samples",
        "--output_path",
        str(out),
    ]
    start = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        env={**__import__("os").environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    seconds = time.perf_counter() - start
    samples = [
        json.loads(line)
        for f in glob.glob(str(out / "**" / f"samples_{name}_*.jsonl"), recursive=True)
        for line in Path(f).read_text(encoding="utf-8").splitlines()
    ]
    samples.sort(key=lambda s: s["doc_id"])
    # lm-eval logs each response as [str(loglikelihood), str(is_greedy)].
    return seconds, [[float(r[0]) for r in s["filtered_resps"]] for s in samples]


def run_ours(
    model: Path, language: str, data_file: Path, batch_size: int, work: Path
) -> tuple[float, list[list[float]]]:
    out = work / f"ours_{language}.jsonl"
    command = [
        sys.executable,
        "-m",
        "tli_lightning",
        "zeroshot",
        "--model",
        str(model),
        "--data",
        str(data_file),
        "--language",
        language,
        "--batch-size",
        str(batch_size),
        "--output",
        str(out),
        "--no-progress",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    return seconds, [json.loads(line)["loglikelihoods"] for line in out.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: the embedded tiny model)")
    parser.add_argument("--lm-eval", default=shutil.which("lm_eval") or "lm_eval", help="the lm_eval executable")
    parser.add_argument("--speed-n", type=int, default=600, help="examples in the timing run (default: 600)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each command (default: 3)")
    args = parser.parse_args()
    if not (SHARED / "xnli_sw_validation.jsonl").is_file():
        print(f"skipped: {SHARED} is not present")
        return
    from tli_lightning.tiny_model import build_tiny_model

    model = Path(args.model) if args.model else build_tiny_model()
    work = Path(tempfile.mkdtemp(prefix="tli_bench_"))
    print(f"model: {model}\n")

    print("== agreement: per-example log-likelihoods, lm-eval (--model hf, float32, CPU) vs tli_lightning zeroshot")
    for language in ("sw", "en"):
        data = SHARED / f"xnli_{language}_validation.jsonl"
        _, theirs = run_lm_eval(args.lm_eval, model, language, data, 32, work)
        _, ours = run_ours(model, language, data, 32, work)
        assert len(theirs) == len(ours), (len(theirs), len(ours))
        diff = max(abs(a - b) for t, o in zip(theirs, ours) for a, b in zip(t, o))
        differing = [i for i, (t, o) in enumerate(zip(theirs, ours)) if argmax(t) != argmax(o)]
        print(
            f"{language}: {len(ours)} examples, max |loglik difference| = {diff:.2e}, "
            f"identical predictions {len(ours) - len(differing)}/{len(ours)}"
        )
        for i in differing:
            gap = sorted(theirs[i])[-1] - sorted(theirs[i])[-2]
            print(f"    example {i}: lm-eval {theirs[i]}, ours {ours[i]} (lm-eval's top-two gap {gap:.1e})")

    print(f"\n== speed: whole process, first {args.speed_n} sw examples, same model, file and machine")
    subset = work / "sw_subset.jsonl"
    rows = (SHARED / "xnli_sw_validation.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    subset.write_text("".join(rows[: args.speed_n]), encoding="utf-8")
    # Alternating runs, median of --repeats each, so neither side gets the warm file cache alone.
    runs: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        runs.setdefault("tli_lightning zeroshot --batch-size 32", []).append(run_ours(model, "sw", subset, 32, work)[0])
        for batch_size in (1, 32):
            runs.setdefault(f"lm_eval --batch_size {batch_size}", []).append(
                run_lm_eval(args.lm_eval, model, "sw", subset, batch_size, work)[0]
            )
    medians = {label: statistics.median(times) for label, times in runs.items()}
    ours_s = medians["tli_lightning zeroshot --batch-size 32"]
    for label, seconds in medians.items():
        print(
            f"{label:42s} median {seconds:6.1f} s  (runs: {', '.join(f'{t:.1f}' for t in runs[label])})  "
            f"time / ours: {seconds / ours_s:4.2f}x"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
