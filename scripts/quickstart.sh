#!/usr/bin/env bash
# The main job, from a fresh clone: install dependencies, build, train a small GPT for about two minutes on the
# built-in corpus (Debian's English fortune cookies, 2.5 MB, character tokenizer), save a checkpoint, and
# generate text with it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build aigc_cli
./build/aigc train --data fortunes --preset small --n-embd 192 --n-head 6 --block-size 128 --batch 16 \
  --steps 1200 --lr 2e-3 --warmup 30 --eval-interval 200 --out runs/fortunes
./build/aigc generate --ckpt runs/fortunes/ckpt.safetensors --prompt "Q: What" --max-tokens 300 \
  --temperature 0.8 --seed 1
