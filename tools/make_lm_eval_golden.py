"""Regenerate tests/golden/lm_eval_tiny_xnli.json: lm-eval's own XNLI log-likelihoods on the tiny model
(or, with ``--family NAME``, tests/golden/lm_eval_tiny_xnli_<NAME>.json on that family's tiny model from
tests/families.py). With ``--task NAME`` (any task of ``tli_lightning.tasks`` with a demo file, e.g.
xcopa_sw, xstorycloze_sw): tests/golden/lm_eval_tiny_<NAME>[_<family>].json, lm-eval's own task file on
that task's bundled demo examples.

Usage, from the project venv, with lm-eval 0.4.x installed in its own venv::

    python3 -m venv /tmp/lmeval-venv && . /tmp/lmeval-venv/bin/activate \\
        && pip install torch==2.13.0 && pip install "lm_eval[hf]==0.4.*" && deactivate
    . .venv/bin/activate
    python tools/make_lm_eval_golden.py --lm-eval /tmp/lmeval-venv/bin/lm_eval
    for f in llama mistral qwen2 qwen3 gemma2 gemma3 cohere phi3 gpt2 bloom; do
        python tools/make_lm_eval_golden.py --lm-eval /tmp/lmeval-venv/bin/lm_eval --family $f; done
    for t in xcopa_sw xstorycloze_sw; do for f in "" gemma2; do
        python tools/make_lm_eval_golden.py --lm-eval /tmp/lmeval-venv/bin/lm_eval --task $t ${f:+--family $f}
    done; done
    for t in xnli_sw xcopa_sw xstorycloze_sw; do
        python tools/make_lm_eval_golden.py --lm-eval /tmp/lmeval-venv/bin/lm_eval --task $t --family qwen2 --no-bos
    done

It builds (or finds) the embedded tiny model with this project's recipe (``$TLI_CACHE_DIR``,
default ~/.cache/tli_lightning), writes the first ``--n`` (12) Swahili and English bundled demo
examples to temporary JSONL files, and runs lm-eval once, offline, on both through custom task
YAMLs that include lm-eval's own ``xnli_<lang>.yaml`` (its prompt and verbalizers; only the data
source is replaced), with ``--model hf``, float32, CPU, batch size 1, ``--log_samples``. The golden
file holds the exact command line, lm_eval / transformers / torch versions of the lm-eval venv, the
sha256 of the model's ``model.safetensors`` and ``tokenizer.json``, and per language the examples
with the three candidate strings lm-eval scored, its three per-candidate log-likelihoods and its
predicted index. tests/test_lm_eval_golden.py checks
``tli_lightning.zeroshot.score_xnli`` against it.

A ``--task`` golden file holds, per example, our :class:`tli_lightning.tasks.Example` (context, choices,
label, row), the document lm-eval read (the demo row in the hub dataset's columns: the data source is the
only thing replaced), the (context, continuation) pairs lm-eval scored, its log-likelihoods and prediction.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny family models are the tests' own
from families import FAMILIES, build_family  # noqa: E402
from golden_models import without_bos  # noqa: E402

DEFAULT_OUTPUT = ROOT / "tests" / "golden" / "lm_eval_tiny_xnli.json"
LANGUAGES = ("sw", "en")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
COMMAND = "python tools/make_lm_eval_golden.py --lm-eval /tmp/lmeval-venv/bin/lm_eval"


def lm_eval_task_file(python: str, language: str) -> Path:
    """lm-eval's own ``xnli_<lang>.yaml`` in the lm-eval venv: its prompt and verbalizers, not ours."""
    code = "import lm_eval.tasks, os; print(os.path.dirname(lm_eval.tasks.__file__))"
    tasks = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    path = Path(tasks) / "xnli" / f"xnli_{language}.yaml"
    if not path.is_file():
        sys.exit(f"lm-eval has no {path}")
    return path


def task_yaml(name: str, lm_eval_task: Path, data_file: Path) -> str:
    """lm-eval's xnli_<lang> task as it is (included), reading a local JSONL file instead of the hub."""
    return "\n".join(
        [
            f"include: {lm_eval_task}",
            f"task: {name}",
            "dataset_path: json",
            "dataset_name: null",
            "dataset_kwargs:",
            "  data_files:",
            f"    validation: {data_file}",
            "training_split: null",
            "",
        ]
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(model_dir: Path) -> dict[str, str]:
    """What identifies the tiny model: its weights and its tokenizer."""
    return {name: sha256(Path(model_dir) / name) for name in ("model.safetensors", "tokenizer.json")}


def lm_eval_python(lm_eval: str) -> str:
    """The interpreter of the lm-eval venv: the executable's shebang, else its sibling ``python``."""
    path = Path(shutil.which(lm_eval) or lm_eval)
    first = path.read_bytes().split(b"\n", 1)[0].decode(errors="replace")
    if first.startswith("#!") and "python" in first:
        return first[2:].strip().split()[0]
    return str(path.parent / "python")


def lm_eval_versions(python: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({p: m.version(p) for p in ('lm_eval', 'transformers', 'torch', 'datasets', 'tokenizers')}"
        " | {'python': sys.version.split()[0]}))"
    )
    return json.loads(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout)


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def task_golden(args: argparse.Namespace, model: Path, output: Path) -> None:
    """lm-eval's own task file for ``args.task`` on its bundled demo examples: the data source replaced only."""
    from tli_lightning.tasks import get_task, hub_columns, lm_eval_task_yaml, read_records
    from tli_lightning.tiny_model import demo_data_path

    task = get_task(args.task)
    if not task.lm_eval_yaml or not task.demo_file:
        sys.exit(f"{task.name} names no lm-eval task file or demo file")
    python = lm_eval_python(args.lm_eval)
    code = "import lm_eval.tasks, os; print(os.path.dirname(lm_eval.tasks.__file__))"
    lm_eval_tasks = Path(
        subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    )
    lm_eval_task = lm_eval_tasks / task.lm_eval_yaml
    if not lm_eval_task.is_file():
        sys.exit(f"lm-eval has no {lm_eval_task}")
    records = list(read_records(demo_data_path(task.demo_file), task.name))[: args.n]
    ours = [task.to_example(r, where, row, tsv) for r, where, row, tsv in records]
    docs = [hub_columns(r, tsv) for r, _, _, tsv in records]
    work = Path(tempfile.mkdtemp(prefix="tli_lm_eval_golden_"))
    try:
        tasks_dir, out = work / "tasks", work / "out"
        tasks_dir.mkdir()
        data = work / f"{task.name}.jsonl"
        data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
        name = f"tli_{task.name}"
        (tasks_dir / f"{name}.yaml").write_text(lm_eval_task_yaml(task, name, lm_eval_tasks, data), encoding="utf-8")
        command = lm_eval_command(args.lm_eval, model, [name], tasks_dir, out)
        run_lm_eval(command)
        samples = read_samples(out, name, len(docs))
        rows = []
        for example, doc, sample in zip(ours, docs, samples):
            if sample["doc"] != doc:
                sys.exit(f"{task.name}: lm-eval's doc {sample['doc']} is not {doc}")
            loglik = [float(r[0]) for r in sample["filtered_resps"]]
            requests = [sample["arguments"][f"gen_args_{j}"] for j in range(len(loglik))]
            rows.append(
                {
                    "context": example.context,
                    "choices": list(example.choices),
                    "label": example.label,
                    "row": example.row,
                    "doc": doc,
                    "lm_eval_label": sample["target"],
                    "requests": [[r["arg_0"], r["arg_1"]] for r in requests],
                    "loglikelihoods": loglik,
                    "prediction": argmax(loglik),
                }
            )
        regenerate = (
            f"{COMMAND} --task {task.name}"
            + (f" --family {args.family}" if args.family else "")
            + (" --no-bos" if args.no_bos else "")
        )
        golden = {
            "description": f"lm-evaluation-harness's own per-choice log-likelihoods for {task.name} on the "
            + (f"tiny {args.family} model of tests/families.py" if args.family else "embedded tiny model")
            + (" with a tokenizer that has no BOS (tests/golden_models.py)" if args.no_bos else "")
            + f", from its own task file {task.lm_eval_yaml} with only the data source replaced (the first "
            f"{len(rows)} bundled demo examples, {task.demo_file}); tests/test_lm_eval_golden.py checks "
            "tli_lightning.tasks against it. 'requests' are the (context, continuation) pairs lm-eval scored.",
            "task": task.name,
            "lm_eval_task_file": task.lm_eval_yaml,
            "regenerate": regenerate,
            **({"family": args.family} if args.family else {}),
            "no_bos": args.no_bos,
            "commands": [" ".join(f"{k}={v}" for k, v in OFFLINE.items()) + " " + shlex.join(command)],
            "versions": lm_eval_versions(python),
            "model_fingerprint": fingerprint(model),
            "examples": rows,
        }
        acc = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
        print(f"{task.name}: {len(rows)} examples, lm-eval acc {acc:.3f}")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {output} ({output.stat().st_size} bytes)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def lm_eval_command(lm_eval: str, model: Path, names: list[str], tasks_dir: Path, out: Path) -> list[str]:
    return [
        lm_eval,
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model},dtype=float32",
        "--tasks",
        ",".join(names),
        "--include_path",
        str(tasks_dir),
        "--device",
        "cpu",
        "--batch_size",
        "1",
        "--log_samples",
        "--output_path",
        str(out),
    ]


def run_lm_eval(command: list[str]) -> None:
    print("+", " ".join(f"{k}={v}" for k, v in OFFLINE.items()), shlex.join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **OFFLINE})
    if result.returncode != 0:
        sys.exit(f"lm_eval failed (exit {result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")


def read_samples(out: Path, name: str, n: int) -> list[dict]:
    files = glob.glob(str(out / "**" / f"samples_{name}_*.jsonl"), recursive=True)
    if len(files) != 1:
        sys.exit(f"expected one samples file for {name} under {out}, found {files}")
    lines = Path(files[0]).read_text(encoding="utf-8").splitlines()
    samples = sorted((json.loads(line) for line in lines), key=lambda s: s["doc_id"])
    if [s["doc_id"] for s in samples] != list(range(n)):
        sys.exit(f"{name}: lm-eval logged doc ids {[s['doc_id'] for s in samples]}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--lm-eval", default=shutil.which("lm_eval") or "lm_eval", help="the lm_eval executable of the lm-eval venv"
    )
    parser.add_argument(
        "--n", type=int, help="first N demo examples per language (default: 12), or of --task (default: all)"
    )
    parser.add_argument(
        "--task", help="a task of tli_lightning.tasks (e.g. xcopa_sw): its lm-eval task file on its demo examples"
    )
    parser.add_argument(
        "--family", choices=sorted(FAMILIES), help="a tiny model of tests/families.py instead of the embedded one"
    )
    parser.add_argument(
        "--no-bos",
        action="store_true",
        help="with --task: the model's tokenizer without a BOS token (as Qwen's; tests/golden_models.py)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"golden file (default: {DEFAULT_OUTPUT.relative_to(ROOT)}, or ..._<family>.json with --family)",
    )
    args = parser.parse_args()
    if args.n is None and not args.task:
        args.n = 12
    stem = f"lm_eval_tiny_{args.task}" if args.task else DEFAULT_OUTPUT.stem
    variant = "_".join(([args.family] if args.family else []) + (["nobos"] if args.no_bos else []))
    output = args.output or DEFAULT_OUTPUT.with_name(f"{stem}_{variant}.json" if variant else f"{stem}.json")
    if args.no_bos and not args.task:
        sys.exit("--no-bos needs --task")

    from tli_lightning.tiny_model import build_tiny_model, cache_dir, demo_data_path

    model = build_family(args.family, cache_dir()) if args.family else Path(build_tiny_model())
    if args.task:
        task_golden(args, without_bos(model) if args.no_bos else model, output)
        return
    work = Path(tempfile.mkdtemp(prefix="tli_lm_eval_golden_"))
    try:
        tasks_dir, out = work / "tasks", work / "out"
        tasks_dir.mkdir()
        examples: dict[str, list[dict]] = {}
        names = {}
        for language in LANGUAGES:
            rows = demo_data_path(f"xnli_{language}.jsonl").read_text(encoding="utf-8").splitlines()[: args.n]
            examples[language] = [{k: json.loads(r)[k] for k in ("premise", "hypothesis", "label")} for r in rows]
            data = work / f"xnli_{language}.jsonl"
            data.write_text(
                "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples[language]), encoding="utf-8"
            )
            names[language] = f"tli_xnli_{language}"
            lm_eval_task = lm_eval_task_file(lm_eval_python(args.lm_eval), language)
            (tasks_dir / f"{names[language]}.yaml").write_text(
                task_yaml(names[language], lm_eval_task, data), encoding="utf-8"
            )

        command = [
            args.lm_eval,
            "--model",
            "hf",
            "--model_args",
            f"pretrained={model},dtype=float32",
            "--tasks",
            ",".join(names.values()),
            "--include_path",
            str(tasks_dir),
            "--device",
            "cpu",
            "--batch_size",
            "1",
            "--log_samples",
            "--output_path",
            str(out),
        ]
        print("+", " ".join(f"{k}={v}" for k, v in OFFLINE.items()), shlex.join(command), flush=True)
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **OFFLINE})
        if result.returncode != 0:
            sys.exit(f"lm_eval failed (exit {result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")

        golden = {
            "description": "lm-evaluation-harness's own per-candidate XNLI log-likelihoods on the "
            + (f"tiny {args.family} model of tests/families.py " if args.family else "embedded tiny model ")
            + "(tests/test_lm_eval_golden.py). Candidate j of an example is scored as the summed "
            "log-probability of ' ' + premise + ', {question}? {verbalizer_j}, ' + hypothesis given BOS; "
            "'continuations' are the strings lm-eval scored, from its own xnli_<lang> task.",
            "regenerate": COMMAND + (f" --family {args.family}" if args.family else ""),
            **({"family": args.family} if args.family else {}),
            "commands": [" ".join(f"{k}={v}" for k, v in OFFLINE.items()) + " " + shlex.join(command)],
            "versions": lm_eval_versions(lm_eval_python(args.lm_eval)),
            "model_fingerprint": fingerprint(model),
            "languages": {},
        }
        for language in LANGUAGES:
            files = glob.glob(str(out / "**" / f"samples_{names[language]}_*.jsonl"), recursive=True)
            if len(files) != 1:
                sys.exit(f"expected one samples file for {names[language]} under {out}, found {files}")
            lines = Path(files[0]).read_text(encoding="utf-8").splitlines()
            samples = sorted((json.loads(line) for line in lines), key=lambda s: s["doc_id"])
            if [s["doc_id"] for s in samples] != list(range(len(examples[language]))):
                sys.exit(f"{language}: lm-eval logged doc ids {[s['doc_id'] for s in samples]}")
            rows = []
            for example, sample in zip(examples[language], samples):
                if {k: sample["doc"][k] for k in example} != example:
                    sys.exit(f"{language}: lm-eval's doc {sample['doc']} is not {example}")
                # lm-eval logs each response as [str(loglikelihood), str(is_greedy)].
                loglik = [float(r[0]) for r in sample["filtered_resps"]]
                if len(loglik) != 3:
                    sys.exit(f"{language}: expected 3 responses, got {sample['filtered_resps']}")
                # lm-eval's requests: (context, continuation) per candidate. The continuation is the text
                # scored, so the test can check our candidate strings against lm-eval's own.
                # lm-eval 0.4 logs them as {"gen_args_<j>": {"arg_0": context, "arg_1": continuation}}.
                requests = [sample["arguments"][f"gen_args_{j}"] for j in range(3)]
                continuations = [request["arg_1"] for request in requests]
                if [request["arg_0"] for request in requests] != ["", "", ""]:
                    sys.exit(f"{language}: expected empty contexts, got {sample['arguments']}")
                rows.append(
                    {
                        **example,
                        "continuations": continuations,
                        "loglikelihoods": loglik,
                        "prediction": argmax(loglik),
                    }
                )
            golden["languages"][language] = {"task": names[language], "examples": rows}
            acc = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
            print(f"{language}: {len(rows)} examples, lm-eval acc {acc:.3f}")

        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {output} ({output.stat().st_size} bytes)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
