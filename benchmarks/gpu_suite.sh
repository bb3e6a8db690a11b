#!/usr/bin/env bash
# Run: bash benchmarks/gpu_suite.sh OUT_DIR           on one GPU (about 6 minutes on an H100)
#      bash benchmarks/gpu_suite.sh --tiny OUT_DIR    the same steps at a tiny shape on a CPU: a check of the script
#
# Every GPU figure of benchmarks/RESULTS.md, as JSON in OUT_DIR: the TLI training step against the paper's
# (bench_train_step.py), one end-of-epoch evaluation (bench_eval.py: the layer scan and XNLI sw+en), and the
# full fine-tuning arms (bench_full_arms.py), and the weight-update spectrum's SVDs (bench_why.py; GPU only).
# The Llama-3.1-8B-shaped model is built here with random weights
# (no hub). Real data: TLI_BENCH_DATA (default ../shared/data; copy it into the repository's ignored
# .bench_data/ to take it to a machine without it). Needs bitsandbytes: wheels in the repository's ignored .whl/
# are installed first (pip download bitsandbytes==0.50.2 --no-deps -d .whl). datasets is not needed: the package
# imports it only to read XNLI from the hub, and the suite reads local files.
set -euo pipefail
shape=llama8b device=cuda
if [ "${1:-}" = "--tiny" ]; then shape=tiny device=cpu; shift; fi
out=$(realpath -m "${1:?usage: gpu_suite.sh [--tiny] OUT_DIR}")
mkdir -p "$out"
cd "$(dirname "$0")"
if compgen -G "../.whl/*.whl" >/dev/null; then pip install -q --no-deps ../.whl/*.whl; fi
data=$(realpath -m "${TLI_BENCH_DATA:-../../shared/data}")
if [ -f "$data/lexicon_sw_en.tsv" ]; then
    data_args=(--lexicon "$data/lexicon_sw_en.tsv"
               --xnli "$data/xnli_{lang}_validation.jsonl")
else
    echo "no real data in $data: the bundled demo data instead" >&2
    data_args=()
fi
export PYTHONPATH="$PWD/../src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
model="$out/model_$shape"
if [ ! -f "$model/config.json" ]; then
    python -c "from bench_train_step import build_model_dir as b; b('$shape', '$device', '$model')"
fi
start=$SECONDS
python bench_train_step.py --shape "$shape" --device "$device" --model-dir "$model" --json "$out/train_step.json"
python bench_eval.py --shape "$shape" --device "$device" --model-dir "$model" "${data_args[@]}" --json "$out/eval.json"
python bench_full_arms.py --shape "$shape" --device "$device" --model-dir "$model" --json "$out/full_arms.json"
# The weight-update spectrum's SVDs at 8B shapes (minutes on a CPU: GPU only).
if [ "$shape" = llama8b ]; then python bench_why.py svd --device cuda > "$out/why_svd.json"; fi
rm -rf "$model"
echo "gpu suite: $((SECONDS - start)) s after the model was built; JSON in $out"
