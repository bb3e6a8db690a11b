#!/usr/bin/env bash
# TensorBoard at a real model's depth, as a reader sees it: a 2-epoch run of a 32-block tiny Llama (33 hidden_states
# layers), TensorBoard on 127.0.0.1 only, and headless-browser screenshots of its tabs.
#   bash benchmarks/tensorboard_33_layers.sh /tmp/tb33        (needs Debian's `chromium`: apt-get install chromium)
# Writes <dir>/shots/{scalars,custom_scalars,images,hparams}.png.
set -euo pipefail
out=$(realpath -m "${1:-/tmp/tb33}")
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out/shots"
python "$repo/tools/deep_tiny_model.py" "$out/deep_tiny" > /dev/null
cd "$out"
python -m tli_lightning fit --model.model_name_or_path "$out/deep_tiny" --trainer.max_epochs 2 \
    --trainer.limit_train_batches 5 --data.reasoning_limit 6 --trainer.logger.name deep --trainer.enable_progress_bar false
port=6123
tensorboard --logdir logs --host 127.0.0.1 --port "$port" > tensorboard.log 2>&1 &
board=$!
trap 'kill "$board"; wait "$board" 2> /dev/null || true' EXIT
sleep 8
for tab in scalars custom_scalars images hparams; do
    timeout 90 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,3000 \
        --virtual-time-budget=15000 --screenshot="shots/$tab.png" "http://127.0.0.1:$port/#$tab" > /dev/null 2>&1
done
ls -l shots
