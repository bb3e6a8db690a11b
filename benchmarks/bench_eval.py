"""One end-of-epoch evaluation, timed and sized: the per-layer alignment scan and zero-shot XNLI.

    python benchmarks/bench_eval.py --shape tiny                 # CPU check of the script, bundled data
    python benchmarks/bench_eval.py --shape llama8b --device cuda \
        --lexicon ../shared/data/lexicon_sw_en.tsv --xnli '../shared/data/xnli_{lang}_validation.jsonl'

What LayerwiseAlignment and ZeroShotRetention do after every epoch, on a random Llama-shaped model in
NF4 (the paper's setting at --shape llama8b): embed every word of the lexicon at every layer and
compute all alignment metrics one layer at a time; score the three candidates of every XNLI example
per language. Prints seconds, scored tokens per second, peak GPU memory and the host memory the word
vectors take.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
from bench_train_step import SHAPES, build_model_dir, sync


def main() -> None:
    from tli_lightning.alignment import alignment_report, embed_all_layers, words_of
    from tli_lightning.lexicon import read_lexicon, split_control
    from tli_lightning.loading import load_causal_lm
    from tli_lightning.tiny_model import demo_data_path
    from tli_lightning.xnli import candidate_templates, candidates, load_xnli
    from tli_lightning.zeroshot import score_xnli

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="model shape (default: tiny)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--lexicon", default=str(demo_data_path("lexicon_trained.tsv")), help="pairs (default: the bundled lexicon)"
    )
    parser.add_argument("--xnli", default=str(demo_data_path("xnli_{lang}.jsonl")), help="XNLI pattern with {lang}")
    parser.add_argument("--batch-size", type=int, default=32, help="XNLI examples per batch (default: 32)")
    parser.add_argument("--xnli-limit", type=int, help="score only the first N examples per language (default: all)")
    parser.add_argument("--model-dir", help="a model build_model_dir() saved before (default: build one)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    directory = Path(args.model_dir) if args.model_dir else build_model_dir(args.shape, args.device)
    compute = "bfloat16" if args.device == "cuda" else "float32"
    model, tokenizer = load_causal_lm(str(directory), quantization="nf4", compute_dtype=compute, device=args.device)
    model.eval()
    result: dict = {"shape": args.shape, "device": args.device}
    if args.device == "cuda":
        result["device_name"] = torch.cuda.get_device_name()
        result["model_gib"] = torch.cuda.memory_allocated() / 2**30

    # The alignment scan: trained and control pairs as the DataModule splits them.
    trained, control = split_control(read_lexicon(args.lexicon).pairs, 0.1, seed=42)
    sets = {"trained": trained, "control": control}
    words = words_of(sets)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(args.device)
    start = time.perf_counter()
    vectors = embed_all_layers(model, tokenizer, words, batch_size=256)
    report = alignment_report(zip(vectors["plain"], vectors["with_bos"]), words, sets)
    sync(args.device)
    result["alignment"] = {
        "words": len(words),
        "pairs": len(trained) + len(control),
        "layers": len(report["layers"]),
        "seconds": time.perf_counter() - start,
        "word_vectors_host_gib": sum(v.numel() * v.element_size() for v in vectors.values()) / 2**30,
    }
    if args.device == "cuda":
        result["alignment"]["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del vectors

    # Zero-shot XNLI, each language in full.
    result["xnli"] = {}
    for language in ("sw", "en"):
        examples = load_xnli(args.xnli, language)[: args.reasoning_limit]
        texts = [" " + c for e in examples for c in candidates(e, candidate_templates(language))]
        tokens = sum(len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync(args.device)
        start = time.perf_counter()
        score_xnli(model, tokenizer, examples, language, batch_size=args.batch_size)
        sync(args.device)
        seconds = time.perf_counter() - start
        entry = {
            "examples": len(examples),
            "candidate_tokens": tokens,
            "seconds": seconds,
            "candidate_tokens_per_s": tokens / seconds,
        }
        if args.device == "cuda":
            entry["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["xnli"][language] = entry
    result["host_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    a = result["alignment"]
    blocks, hidden = SHAPES[args.shape][:2]
    print(f"model: {args.shape} ({blocks} blocks, hidden {hidden}), NF4, {args.device}")
    gpu = f"; peak GPU {a['peak_gpu_gib']:.2f} GiB" if "peak_gpu_gib" in a else ""
    print(
        f"  alignment scan: {a['words']} words, {a['pairs']} pairs, {a['layers']} layers: {a['seconds']:.1f} s; "
        f"word vectors {a['word_vectors_host_gib']:.2f} GiB on the host{gpu}"
    )
    for language, entry in result["xnli"].items():
        gpu = f"; peak GPU {entry['peak_gpu_gib']:.2f} GiB" if "peak_gpu_gib" in entry else ""
        print(
            f"  XNLI {language}: {entry['examples']} examples, {entry['candidate_tokens']} candidate tokens: "
            f"{entry['seconds']:.1f} s, {entry['candidate_tokens_per_s']:.0f} tokens/s{gpu}"
        )
    both = sum(e["seconds"] for e in result["xnli"].values())
    print(f"  XNLI sw+en: {both:.1f} s; host peak RSS {result['host_peak_rss_gib']:.1f} GiB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
