"""The measurement commands, without training: ``scan`` (alignment per layer) and ``zeroshot`` (XNLI)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from tli_lightning.errors import TLIError

LAYERS_NOTE = "Layers are hidden_states indices: 0 = embeddings, i = output of block i-1, N = final normed output."


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="hub id or local directory of a causal LM; 'tiny' = the embedded demo model")
    parser.add_argument("--adapter", help="a PEFT adapter directory (e.g. checkpoints/demo/adapter_epoch05) to apply on top")
    parser.add_argument("--quantization", choices=["nf4", "fp4", "none"], default="none", help="load the base in 4-bit with bitsandbytes (default: none)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="weight dtype, or 4-bit compute dtype (default: float32)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default: 32)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _load(args: argparse.Namespace):
    from tli_lightning.loading import load_causal_lm

    model, tokenizer = load_causal_lm(args.model, quantization=args.quantization, compute_dtype=args.dtype, device=args.device)
    if args.adapter:
        from peft import PeftModel

        if not Path(args.adapter, "adapter_config.json").is_file():
            raise TLIError(f"{args.adapter}: not a PEFT adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, args.adapter)
    return model.eval(), tokenizer


def _progress(args: argparse.Namespace, description: str):
    if args.no_progress:
        return None
    from tqdm.auto import tqdm

    return lambda iterable: tqdm(iterable, desc=description, file=sys.stderr, leave=False)


def scan(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tli_lightning scan",
        description=f"Per-layer alignment of translation pairs, no training. {LAYERS_NOTE}",
    )
    _model_options(parser)
    parser.add_argument("--lexicon", required=True, help="pairs to measure: TSV with a header, or the TLI paper's JSON list")
    parser.add_argument("--control", help="a second pair set (e.g. held-out control pairs), reported beside the first")
    parser.add_argument("--source-column", default="sw", help="TSV column / JSON key of the source word (default: sw)")
    parser.add_argument("--target-column", default="en", help="TSV column / JSON key of the target word (default: en)")
    parser.add_argument("--limit", type=int, help="measure only the first N pairs of each set")
    parser.add_argument("--template", default="{word}", help="text around each word; only the word's tokens are averaged (default: '{word}')")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled-pair baseline (default: 0)")
    parser.add_argument("--output", default="scan.json", help="JSON report to write; a PNG plot is written beside it (default: scan.json)")
    args = parser.parse_args(argv)

    from tli_lightning.alignment import alignment_report, embed_all_layers, words_of
    from tli_lightning.lexicon import read_lexicon
    from tli_lightning.plots import alignment_figure

    sets = {"pairs": read_lexicon(args.lexicon, args.source_column, args.target_column).pairs[: args.limit]}
    if args.control:
        sets["control"] = read_lexicon(args.control, args.source_column, args.target_column).pairs[: args.limit]
    model, tokenizer = _load(args)
    words = words_of(sets)
    vectors = embed_all_layers(model, tokenizer, words, template=args.template, batch_size=args.batch_size, progress=_progress(args, "scan"))
    report = alignment_report(vectors, words, sets, args.seed)
    report.update(model=args.model, adapter=args.adapter, quantization=args.quantization, dtype=args.dtype)

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    figure = alignment_figure(report, title=f"{args.model}" + (f" + {args.adapter}" if args.adapter else ""))
    figure.savefig(output.with_suffix(".png"), dpi=110)

    columns = ("cos", "cos_bos", "cos_random", "gap", "cos_centered", "p_at_1_s2t", "mrr_s2t")
    for name, entry in report["sets"].items():
        print(f"\n{name}: {len(entry['pairs'])} pairs")
        print("layer " + " ".join(f"{c:>12}" for c in columns))
        for layer in report["layers"]:
            print(f"{layer:>5} " + " ".join(f"{entry[c][layer]:>12.4f}" for c in columns))
    print(f"\nwrote {output} and {output.with_suffix('.png')}")


def zeroshot(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tli_lightning zeroshot",
        description=(
            "Zero-shot XNLI exactly as lm-evaluation-harness's xnli_<lang>: each of three candidates "
            "'premise, <question>? <Yes|Also|No>, hypothesis' is scored by its summed log-probability given "
            "the BOS token; prediction = argmax."
        ),
    )
    _model_options(parser)
    parser.add_argument("--data", required=True, help="local JSONL/TSV (premise, hypothesis, label), or the hub id facebook/xnli")
    parser.add_argument("--language", required=True, help="XNLI language code for the verbalizers (and the hub config), e.g. sw")
    parser.add_argument("--split", default="validation", help="hub split (default: validation, what lm-eval scores)")
    parser.add_argument("--limit", type=int, help="score only the first N examples (as lm-eval's --limit)")
    parser.add_argument("--output", default="preds.jsonl", help="per-example JSONL in input order (default: preds.jsonl)")
    args = parser.parse_args(argv)

    from tli_lightning.xnli import load_xnli
    from tli_lightning.zeroshot import accuracy_and_f1, score_xnli

    examples = load_xnli(args.data, args.language, args.split)[: args.limit]
    model, tokenizer = _load(args)
    loglik = score_xnli(model, tokenizer, examples, args.language, batch_size=args.batch_size, progress=_progress(args, f"xnli {args.language}"))
    predictions = loglik.argmax(dim=1)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for index, (example, row, prediction) in enumerate(zip(examples, loglik.tolist(), predictions.tolist())):
            handle.write(json.dumps({"index": index, "label": example.label, "loglikelihoods": row, "prediction": prediction}) + "\n")
    accuracy, macro_f1 = accuracy_and_f1(predictions, [e.label for e in examples])
    print(json.dumps({"language": args.language, "n": len(examples), "accuracy": accuracy, "macro_f1": macro_f1}))


def run_command(name: str, argv: list[str]) -> None:
    {"scan": scan, "zeroshot": zeroshot}[name](argv)
