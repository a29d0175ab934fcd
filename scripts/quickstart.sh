#!/usr/bin/env bash
# The main job, from a fresh clone: install dependencies, build, train a small GPT for about two minutes on the
# built-in corpus (Tang poems and Song lyrics from Debian's fortunes-zh, character tokenizer), save a
# checkpoint, and generate a poem with it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build aigc_cli
./build/aigc train --preset small --n-embd 192 --n-head 6 --block-size 64 --batch 16 --steps 600 --lr 2e-3 \
  --warmup 30 --eval-interval 100 --out runs/tang
./build/aigc generate --ckpt runs/tang/ckpt.safetensors --prompt "春风" --max-tokens 120 --temperature 0.8 --seed 1
