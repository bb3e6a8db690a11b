"""The measurement commands, without training: ``scan`` (alignment per layer), ``zeroshot`` (multiple-choice tasks),
``compare`` (runs side by side).

An adapter directory written by a run carries ``tli_settings.json``: the base it was trained on.
``--adapter DIR`` then loads that base (model, quantization, compute dtype) unless told otherwise,
so an adapter is never silently measured on another base.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tli_lightning.errors import OneLineArgumentParser, TLIError
from tli_lightning.layers import LAYERS_NOTE

log = logging.getLogger("tli_lightning")
BASE_KEYS = ("model", "quantization", "dtype", "double_quant", "quant_storage", "precision")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="hub id or local directory of a causal LM; 'tiny' = the embedded random demo model, 'tiny-aligned' = "
        "its planted-alignment positive control "
        "(default with --adapter: the model the adapter was trained on)",
    )
    parser.add_argument(
        "--adapter",
        help="a PEFT adapter directory written by a run (checkpoints/<name>/version_<n>/adapter_epochNN) "
        "to apply on top; its tli_settings.json gives the base's defaults",
    )
    parser.add_argument(
        "--quantization",
        choices=["nf4", "fp4", "none"],
        help="load the base in 4-bit with bitsandbytes (default: the adapter's training setting, else none)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="weight dtype, or 4-bit compute dtype (default: the adapter's training setting, else float32)",
    )
    parser.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed"],
        help="bf16-mixed: forward passes under bfloat16 autocast, as a run trained with it evaluated "
        "(default: the adapter's training setting, else 32-true)",
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=32,
        help="per forward pass: words (scan), or examples with all their choices (zeroshot) (default: 32)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def base_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The base to load: what the adapter was trained on, with the explicit options on top (warned about)."""
    trained: dict[str, Any] = {}
    if args.adapter:
        adapter = Path(args.adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise TLIError(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
        settings_file = adapter / "tli_settings.json"
        if settings_file.is_file():
            try:
                saved = json.loads(settings_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise TLIError(f"{settings_file}:{error.lineno}: not valid JSON ({error.msg})") from None
            trained = {
                "precision": saved.get("precision", "32-true"),
                "model": saved["model_name_or_path"],
                "quantization": saved["quantization"],
                "dtype": saved["compute_dtype"],
                "double_quant": saved["double_quant"],
                "quant_storage": saved["quant_storage"],
            }
            trained["template"] = saved.get("word_template", "{word}")
        else:
            log.warning(
                "%s has no tli_settings.json: pass --model, --quantization and --dtype as it was trained", adapter
            )
    chosen = {"model": args.model, "quantization": args.quantization, "dtype": args.dtype, "precision": args.precision}
    settings = {
        "model": None,
        "quantization": "none",
        "dtype": "float32",
        "double_quant": False,
        "quant_storage": "uint8",
        "precision": "32-true",
    }
    settings.update({k: v for k, v in trained.items() if k in BASE_KEYS})
    for key, value in chosen.items():
        if value is None:
            continue
        if key in trained and trained[key] != value:
            log.warning(
                "--%s %s differs from the adapter's training setting (%s): measuring it on another base",
                key,
                value,
                trained[key],
            )
        settings[key] = value
    if settings["model"] is None:
        raise TLIError("--model is required (or --adapter with a tli_settings.json naming its base)")
    settings["template"] = trained.get("template")
    return settings


# fit's default base (TLIModule's defaults): the demo's numbers are measured on it.
FIT_DEFAULT_BASE = ("nf4", "bfloat16")


def describe_base(model: str, quantization: str, dtype: str, precision: str) -> str:
    """One line naming the base a command measures: the first line of fit, validate, test, scan and zeroshot."""
    weights = f"unquantized {dtype}" if quantization == "none" else f"{quantization} 4-bit, compute {dtype}"
    return f"base {model} ({weights}), precision {precision}"


def _say_base(command: str, args: argparse.Namespace, settings: dict[str, Any]) -> None:
    line = describe_base(settings["model"], settings["quantization"], settings["dtype"], settings["precision"])
    if args.adapter:
        line += f" + adapter {args.adapter}"
    elif (settings["quantization"], settings["dtype"]) != FIT_DEFAULT_BASE:
        # The demo's baseline is NF4: without this, scan's numbers look like a disagreement with fit's.
        line += "; fit's default base is nf4 with bfloat16 compute: --quantization nf4 --dtype bfloat16 measures that"
    log.info("%s: %s", command, line)


def _load(args: argparse.Namespace, settings: dict[str, Any]):
    import torch

    from tli_lightning.loading import load_causal_lm

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_causal_lm(
        settings["model"],
        quantization=settings["quantization"],
        compute_dtype=settings["dtype"],
        double_quant=settings["double_quant"],
        quant_storage=settings["quant_storage"],
        device=device,
        progress=not args.no_progress,
    )
    if args.adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, args.adapter)
        except Exception as error:  # PEFT raises ValueError, KeyError, OSError... for broken or mismatched adapters
            raise TLIError(f"{args.adapter}: cannot apply this adapter to {settings['model']}: {error}") from None
    return model.eval(), tokenizer


def _progress(args: argparse.Namespace, description: str):
    if args.no_progress:
        return None
    from tqdm.auto import tqdm

    return lambda iterable: tqdm(iterable, desc=description, file=sys.stderr, leave=False)


def _record(settings: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The settings actually used, for the output files."""
    return {
        "model": settings["model"],
        "adapter": args.adapter,
        "quantization": settings["quantization"],
        "dtype": settings["dtype"],
        "double_quant": settings["double_quant"],
        "quant_storage": settings["quant_storage"],
        "precision": settings["precision"],
    }


def _precision(model, settings: dict[str, Any]):
    """The forward passes' context: bfloat16 autocast for a run trained with bf16-mixed, as its callbacks ran."""
    import contextlib

    import torch

    if settings["precision"] != "bf16-mixed":
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)


def _output(path: str) -> Path:
    output = Path(path)
    if output.is_dir():
        raise TLIError(f"--output {output} is a directory; give a file name")
    output.parent.mkdir(parents=True, exist_ok=True)
    return output


def _bundled(path: str, demo_file: str) -> str:
    """``demo`` names the bundled demo file, as in fit's --data options."""
    if path != "demo":
        return path
    from tli_lightning.tiny_model import demo_data_path

    return str(demo_data_path(demo_file))


def scan(argv: list[str]) -> None:
    parser = OneLineArgumentParser(
        prog="python -m tli_lightning scan",
        description=f"Per-layer alignment of translation pairs, no training. {LAYERS_NOTE}",
    )
    _model_options(parser)
    parser.add_argument(
        "--lexicon",
        required=True,
        help="pairs to measure: TSV with a header, or the TLI paper's JSON list; demo = the bundled lexicon",
    )
    parser.add_argument(
        "--control",
        help="a second pair set (e.g. held-out control pairs), reported beside the first; demo = the bundled one",
    )
    parser.add_argument("--source-column", default="sw", help="TSV column / JSON key of the source word (default: sw)")
    parser.add_argument("--target-column", default="en", help="TSV column / JSON key of the target word (default: en)")
    parser.add_argument("--limit", type=_positive, help="measure only the first N pairs of each set")
    parser.add_argument(
        "--template",
        help="text around each word; only the word's tokens are averaged "
        "(default: the adapter's training template, else '{word}')",
    )
    parser.add_argument(
        "--output",
        default="scan.json",
        help="JSON report to write; a PNG plot is written beside it (default: scan.json)",
    )
    args = parser.parse_args(argv)

    from tli_lightning.lexicon import read_lexicon

    settings = base_settings(args)
    _say_base("scan", args, settings)
    template = args.template or settings["template"] or "{word}"
    lexicon = _bundled(args.lexicon, "lexicon_trained.tsv")
    sets = {"pairs": read_lexicon(lexicon, args.source_column, args.target_column).pairs[: args.limit]}
    if args.control:
        control = _bundled(args.control, "lexicon_control.tsv")
        sets["control"] = read_lexicon(control, args.source_column, args.target_column).pairs[: args.limit]
    for name, pairs in sets.items():
        if len(pairs) < 2:
            raise TLIError(f"--{'lexicon' if name == 'pairs' else 'control'}: need at least 2 pairs, got {len(pairs)}")
    output = _output(args.output)
    model, tokenizer = _load(args, settings)

    from tli_lightning.alignment import alignment_report, embed_all_layers, words_of
    from tli_lightning.plots import alignment_figure
    from tli_lightning.textfiles import write_json

    words = words_of(sets)
    with _precision(model, settings):
        vectors = embed_all_layers(
            model, tokenizer, words, template=template, batch_size=args.batch_size, progress=_progress(args, "scan")
        )
    report = alignment_report(zip(vectors["plain"], vectors["with_bos"]), words, sets)
    from tli_lightning.backbones import family_of

    report.update(_record(settings, args), template=template, family=family_of(model).name)
    write_json(output, report)
    figure = alignment_figure(report, title=f"{settings['model']}" + (f" + {args.adapter}" if args.adapter else ""))
    figure.savefig(output.with_suffix(".png"), dpi=110)

    columns = ("csls_p_at_1", "csls_mrr", "cos", "cos_bos", "cos_random", "gap", "cos_centered")
    print(f"{report['family']}, {report['layers'][-1]} blocks: layers 0 (embeddings) to {report['layers'][-1]}")
    for name, entry in report["sets"].items():
        print(
            f"\n{'--lexicon' if name == 'pairs' else '--control'}: {len(entry['pairs'])} pairs; CSLS P@1 (primary) "
            f"among {entry['pool_candidates']} candidates (every target word of the sets), chance "
            f"{entry['chance_p_at_1']:.4f}"
        )
        print("layer " + " ".join(f"{c:>12}" for c in columns))
        for layer in report["layers"]:
            print(f"{layer:>5} " + " ".join(f"{entry[c][layer]:>12.4f}" for c in columns))
    print(f"\nwrote {output} and {output.with_suffix('.png')}")


def zeroshot(argv: list[str]) -> None:
    parser = OneLineArgumentParser(
        prog="python -m tli_lightning zeroshot",
        description=(
            "Zero-shot multiple choice exactly as lm-evaluation-harness scores its task: each choice's "
            "continuation (' ' + choice) is scored by its summed log-probability given the example's context "
            "(XNLI: given the BOS token; its three candidates 'premise, <question>? <Yes|Also|No>, hypothesis' "
            "carry the premise); prediction = argmax; acc = lm-eval's."
        ),
    )
    _model_options(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--task",
        help="lm-eval's task name: xnli_<lang> (15 languages), xcopa_<lang>, xstorycloze_<lang>; e.g. xcopa_sw",
    )
    which.add_argument("--language", help="XNLI language code, the same as --task xnli_<language>, e.g. sw")
    parser.add_argument(
        "--data",
        default="demo",
        help="local JSONL/TSV in the task's format (XNLI: premise, hypothesis, label; XCOPA: its JSONL; "
        "XStoryCloze: fairseq's TSV or the hub's column names), a pattern with {lang}, the task's hub id "
        "(facebook/xnli, cambridgeltl/xcopa, juletxara/xstory_cloze), or demo (the bundled examples; default)",
    )
    parser.add_argument("--split", help="hub split (default: the one lm-eval scores: validation, test, eval)")
    subset = parser.add_mutually_exclusive_group()
    subset.add_argument("--limit", type=_positive, help="score only the first N examples (as lm-eval's --limit)")
    subset.add_argument(
        "--sample",
        type=_positive,
        help="score the seeded, label-stratified N examples a run with --data.reasoning_limit N evaluated (with the "
        "run's --data.seed: --seed)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="seed of --sample: the run's --data.seed, or its --seed_everything if that was null (default: 42, "
        "fit's --data.seed)",
    )
    parser.add_argument(
        "--output",
        default="preds.jsonl",
        help="per-example JSONL: 'index' is the example's position among the file's examples (0-based, as "
        "--sample and lm-eval's doc_id count), 'row' its line in --data (or hub row) (default: preds.jsonl)",
    )
    args = parser.parse_args(argv)

    from tli_lightning.tasks import get_task, load_examples
    from tli_lightning.xnli import stratified_indices

    task = get_task(args.task if args.task else f"xnli_{args.language}")
    settings = base_settings(args)
    _say_base("zeroshot", args, settings)
    examples = load_examples(task, args.data, args.split)
    rows = list(range(len(examples)))[: args.limit]
    if args.sample is not None:
        rows = stratified_indices([e.label for e in examples], args.sample, args.seed)
    examples = [examples[i] for i in rows]
    output = _output(args.output)
    model, tokenizer = _load(args, settings)

    from tli_lightning.tasks import score_examples

    with _precision(model, settings):
        loglik = score_examples(
            model,
            tokenizer,
            examples,
            batch_size=args.batch_size,
            progress=_progress(args, task.name),
            target_delimiter=task.target_delimiter,
        )
    predictions = loglik.argmax(dim=1).tolist()
    used = _record(settings, args)  # on every line: a file of scores names the base they were made on
    with output.open("w", encoding="utf-8") as handle:
        for index, example, scores, prediction in zip(rows, examples, loglik.tolist(), predictions):
            record = {
                "index": index,
                "row": example.row,
                "label": example.label,
                "loglikelihoods": scores,
                "prediction": prediction,
            }
            handle.write(json.dumps({**record, "settings": used}) + "\n")
    scores = task.metrics(loglik, examples)
    summary = {"task": task.name, "language": task.language, **scores, "chance": task.chance}
    print(json.dumps({**summary, "settings": used}))


def run_command(name: str, argv: list[str]) -> None:
    if name == "compare":
        from tli_lightning.compare import compare

        compare(argv)
        return
    {"scan": scan, "zeroshot": zeroshot}[name](argv)
