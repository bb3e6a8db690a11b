"""The end-of-epoch evaluation at 8B scale, computed where no GPU measured it: tokens counted, then priced.

    python benchmarks/eval_cost_8b.py --tokenizer PATH \
        --lexicon ../shared/data/lexicon_sw_en.tsv --xnli '../shared/data/xnli_{lang}_validation.jsonl'

PATH is the model's tokenizer: a Hugging Face directory or hub id (Lugha-Llama/Lugha-Llama-8B-wura), or the
Llama-3 ``tokenizer.model`` file (tiktoken format; Lugha-Llama keeps Llama-3.1's tokenizer), e.g. from the
``llama-models`` wheel on PyPI (``llama_models/llama3/tokenizer.model``; reading it needs ``pip install
tiktoken``). No model weights are needed.

It counts, with the real tokenizer and the package's own scoring plan (each premise once, then the three
candidates on its cache; length-sorted batches), the tokens one XNLI evaluation runs through the model and
the positions where the LM head is read, and the tokens of the layer scan. Time = tokens / a measured rate:
``--tokens-per-second`` defaults to 30,000, the rate ../shared/DESIGN.md section 5 measured for XNLI-style
scoring of a Llama-3.1-8B-shaped NF4 model on one H100. Memory = the 4-bit model (5.7 GiB, measured there)
plus the largest batch's KV cache and LM-head logits, computed from the counted lengths.
"""

from __future__ import annotations

import argparse
import json

# Llama-3.1-8B (and Lugha-Llama-8B-wura, its continued pre-training).
BLOCKS, HIDDEN, KV_HEADS, HEAD_DIM, VOCAB = 32, 4096, 8, 128, 128256
PARAMETERS = 8.03e9
MODEL_GIB = 5.7  # the NF4 model on an H100, ../shared/DESIGN.md section 5
H100_BF16_DENSE_FLOPS = 989e12
GIB = 2**30


def load_tokenizer(path: str):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not path.endswith(".model"):
        return AutoTokenizer.from_pretrained(path)
    from tokenizers.processors import TemplateProcessing
    from transformers.convert_slow_tokenizer import TikTokenConverter

    # The converter's default split pattern is Llama-3's; the special tokens follow the 128000 BPE ranks, and
    # BOS is prepended as in the hub's Llama-3 tokenizer.
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    backend = TikTokenConverter(vocab_file=path, extra_special_tokens=[bos, eos]).converted()
    backend.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, backend.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos)


def xnli_cost(tokenizer, examples, language: str, batch_size: int) -> dict:
    from tli_lightning.xnli import candidate_templates, candidates
    from tli_lightning.zeroshot import LOGITS_PER_CHUNK, context_token_id, shared_prefix_plan

    templates = candidate_templates(language)
    texts = [" " + c for e in examples for c in candidates(e, templates)]
    flat = tokenizer(texts, add_special_tokens=False)["input_ids"]
    start = context_token_id(tokenizer)
    grouped = [[[start, *ids] for ids in flat[g * 3 : (g + 1) * 3]] for g in range(len(examples))]
    prefixes, order = shared_prefix_plan(grouped, batch_size)
    # The plan before: sorted by prefix length alone (a window of one batch changes no batch's members).
    _, prefix_order = shared_prefix_plan(grouped, batch_size, window=1)
    # Model inputs: every candidate alone (lm-eval's way) = all tokens but the last; shared = prefix + own parts.
    alone = sum(len(s) - 1 for members in grouped for s in members)
    shared = sum(p + sum(len(s) - p - 1 for s in members) for members, p in zip(grouped, prefixes))

    def padded_tokens(order: list[int]) -> int:
        total = 0
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            own = max(len(s) - prefixes[g] - 1 for g in batch for s in grouped[g])
            total += len(batch) * max(prefixes[g] for g in batch) + 3 * len(batch) * own
        return total

    padded, peak = padded_tokens(order), {"kv_cache_gib": 0.0, "logits_gib": 0.0, "logits_unchunked_gib": 0.0}
    for i in range(0, len(order), batch_size):
        batch = order[i : i + batch_size]
        prefix_len = max(prefixes[g] for g in batch)
        rest_len = max(len(s) - prefixes[g] - 1 for g in batch for s in grouped[g])
        # The cache repeated for the three candidates, grown by their own tokens (bf16 keys and values).
        cache_tokens = 3 * len(batch) * (prefix_len + rest_len)
        kv = cache_tokens * BLOCKS * 2 * KV_HEADS * HEAD_DIM * 2 / GIB
        # LM head at the scored positions, a chunk at a time: bf16 logits, their float32 copy, float32 log-softmax.
        scored = max(sum(prefixes[g] for g in batch), sum(len(s) - prefixes[g] for g in batch for s in grouped[g]))
        logits = min(scored, LOGITS_PER_CHUNK // VOCAB) * VOCAB * (2 + 4 + 4) / GIB
        peak = {
            "kv_cache_gib": max(peak["kv_cache_gib"], kv),
            "logits_gib": max(peak["logits_gib"], logits),
            "logits_unchunked_gib": max(peak["logits_unchunked_gib"], scored * VOCAB * (2 + 4 + 4) / GIB),
        }
    return {
        "examples": len(examples),
        "tokens_each_candidate_alone": alone,
        "tokens_shared_prefix": shared,
        "tokens_shared_prefix_padded": padded,
        "tokens_shared_prefix_padded_prefix_order": padded_tokens(prefix_order),
        "tokens_per_example": shared / len(examples),
        **peak,
    }


def main() -> None:
    from tli_lightning.alignment import words_of
    from tli_lightning.lexicon import read_lexicon
    from tli_lightning.representations import tokenize_words
    from tli_lightning.xnli import read_xnli_file

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", required=True, help="HF tokenizer directory or hub id, or a Llama-3 .model")
    parser.add_argument("--lexicon", required=True, help="the lexicon whose words the layer scan embeds")
    parser.add_argument("--xnli", required=True, help="XNLI file pattern with {lang}")
    parser.add_argument("--languages", nargs="+", default=["sw", "en"])
    parser.add_argument("--batch-size", type=int, default=32, help="XNLI examples per batch (default: 32)")
    parser.add_argument("--scan-batch-size", type=int, default=256, help="words per scan batch (default: 256)")
    parser.add_argument("--tokens-per-second", type=float, default=30_000, help="scoring rate (default: 30000)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.tokenizer)
    rate = args.tokens_per_second
    result: dict = {"tokenizer": args.tokenizer, "tokens_per_second": rate, "xnli": {}}
    for language in args.languages:
        examples = read_xnli_file(args.xnli.format(lang=language))
        result["xnli"][language] = xnli_cost(tokenizer, examples, language, args.batch_size)

    words = words_of({"all": read_lexicon(args.lexicon).pairs})
    lengths = [int(m.sum()) for m in tokenize_words(tokenizer, words).attention_mask]
    longest_batch = max(
        len(lengths[i : i + args.scan_batch_size]) * max(lengths[i : i + args.scan_batch_size])
        for i in range(0, len(words), args.scan_batch_size)
    )
    result["scan"] = {
        "words": len(words),
        "tokens": sum(lengths),
        # Every hidden state of the largest batch, bf16, before pooling.
        "hidden_states_gib": (BLOCKS + 1) * longest_batch * HIDDEN * 2 / GIB,
        # The pooled vectors of every word at every layer, float32, on the host.
        "word_vectors_host_gib": len(words) * (BLOCKS + 1) * HIDDEN * 4 / GIB,
    }

    print(f"tokenizer: {args.tokenizer}; time = tokens / {rate:,.0f} tokens/s (H100, NF4 8B, ../shared/DESIGN.md)")
    total = 0.0
    for language, cost in result["xnli"].items():
        padded = cost["tokens_shared_prefix_padded"]
        seconds = padded / rate
        total += seconds
        print(
            f"  XNLI {language}: {cost['examples']} examples, {cost['tokens_per_example']:.1f} tokens each; "
            f"{cost['tokens_each_candidate_alone']:,} tokens scoring each candidate alone, "
            f"{cost['tokens_shared_prefix']:,} with the premise shared "
            f"({cost['tokens_shared_prefix_padded']:,} with padding): {seconds:.1f} s"
        )
        before = cost["tokens_shared_prefix_padded_prefix_order"]
        print(
            f"      padding: {padded / cost['tokens_shared_prefix'] - 1:.0%} of the tokens "
            f"(sorted by prefix length alone: {before:,} tokens, {before / cost['tokens_shared_prefix'] - 1:.0%}; "
            f"{before / padded:.2f}x this plan's)"
        )
        print(
            f"      largest batch of {args.batch_size}: KV cache {cost['kv_cache_gib']:.2f} GiB, LM-head logits "
            f"{cost['logits_gib']:.2f} GiB in chunks ({cost['logits_unchunked_gib']:.2f} GiB at once)"
        )
    scan = result["scan"]
    scan_seconds = scan["tokens"] / rate
    print(
        f"  layer scan: {scan['words']} words, {scan['tokens']:,} tokens: {scan_seconds:.1f} s; largest batch's "
        f"hidden states {scan['hidden_states_gib']:.2f} GiB; word vectors on the host "
        f"{scan['word_vectors_host_gib']:.2f} GiB"
    )
    peak = MODEL_GIB + max(
        max(c["kv_cache_gib"] + c["logits_gib"] for c in result["xnli"].values()), scan["hidden_states_gib"]
    )
    tokens = sum(c["tokens_shared_prefix_padded"] for c in result["xnli"].values())
    flops_share = 2 * PARAMETERS * rate / H100_BF16_DENSE_FLOPS
    result.update(xnli_seconds=total, scan_seconds=scan_seconds, peak_gib=peak, mfu_at_rate=flops_share)
    languages = " + ".join(args.languages)
    print(f"XNLI {languages}: {tokens:,} tokens, {total:.1f} s; the whole evaluation {total + scan_seconds:.1f} s")
    print(f"peak GPU memory: {peak:.1f} GiB (model {MODEL_GIB} GiB + the largest batch)")
    print(f"(the rate is {flops_share:.0%} of an H100's dense bf16 peak at 2 x 8.03e9 FLOPs per token)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
