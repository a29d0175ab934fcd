#!/usr/bin/env bash
# The CLI reads like its help: every command's --help has an example, `aigc train` lists its presets, the family
# is positional with --model as an alias, and contradictions or unknown names fail with a message naming them.
set -uo pipefail
aigc="$1"
fails=0
check() {  # description, command...; the command must succeed
  local what="$1"; shift
  if ! "$@" >/dev/null 2>&1; then echo "FAIL: $what"; fails=$((fails + 1)); fi
}
for c in train generate eval sample fid serve tokenize "tokenizer train" convert quantize; do
  # shellcheck disable=SC2086
  check "aigc $c --help shows an example" bash -c "'$aigc' $c --help | grep -q 'aigc $c'"
done
check "train --help lists the presets" bash -c "'$aigc' train --help | grep -q 'gpt2-124m'"
check "train names its families" bash -c "'$aigc' train --help | grep -q 'gpt | llama | dcgan | ddpm | classifier'"
out=$("$aigc" train ddpm --model gpt --steps 1 2>&1) && { echo "FAIL: two families accepted"; fails=$((fails + 1)); }
grep -q "give the family once" <<<"$out" || { echo "FAIL: two families: $out"; fails=$((fails + 1)); }
out=$("$aigc" train vae 2>&1) && { echo "FAIL: an unknown family accepted"; fails=$((fails + 1)); }
grep -q "vae" <<<"$out" || { echo "FAIL: unknown family: $out"; fails=$((fails + 1)); }
out=$("$aigc" train gpt --preset huge --steps 1 2>&1) && { echo "FAIL: an unknown preset accepted"; fails=$((fails + 1)); }
grep -q 'unknown --preset "huge" (tiny, small' <<<"$out" || { echo "FAIL: unknown preset: $out"; fails=$((fails + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check "train gpt (positional) runs" "$aigc" train gpt --preset tiny --steps 2 --out "$tmp/a" -t 1
check "train --model gpt (alias) runs" "$aigc" train --model gpt --preset tiny --steps 2 --out "$tmp/b" -t 1
cmp -s "$tmp/a/ckpt.safetensors" "$tmp/b/ckpt.safetensors" || { echo "FAIL: alias trains differently"; fails=$((fails + 1)); }
for f in ckpt.safetensors metrics.jsonl config.json; do
  [ -s "$tmp/a/$f" ] || { echo "FAIL: the run folder lacks $f"; fails=$((fails + 1)); }
done
# A GGUF of a trained model generates what its checkpoint does (f32: the same weights), and quantized ones run.
check "train gpt (bytes) runs" "$aigc" train gpt --preset tiny --tokenizer bytes --steps 20 --out "$tmp/c" -t 1
check "convert writes a GGUF" "$aigc" convert --ckpt "$tmp/c/ckpt.safetensors" --out "$tmp/c.gguf"
check "quantize writes a q4_0 GGUF" "$aigc" quantize --model "$tmp/c.gguf" --type q4_0 --out "$tmp/c-q4.gguf"
a=$("$aigc" generate --ckpt "$tmp/c/ckpt.safetensors" -p "The " -n 24 --temp 0 -t 1 2>/dev/null)
b=$("$aigc" generate --model "$tmp/c.gguf" -p "The " -n 24 --temp 0 -t 1 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ] || { echo "FAIL: the GGUF generates differently: '$a' vs '$b'"; fails=$((fails + 1)); }
check "generate runs a q4_0 GGUF" "$aigc" generate -m "$tmp/c-q4.gguf" -p "The " -n 8 -t 1
check "train llama runs" "$aigc" train llama --preset llama-tiny --tokenizer bytes --steps 5 --out "$tmp/l" -t 1
check "convert writes a llama q8_0 GGUF" "$aigc" convert -m "$tmp/l/ckpt.safetensors" --type q8_0 --out "$tmp/l.gguf"
check "generate runs a llama GGUF" "$aigc" generate -m "$tmp/l.gguf" -p "The " -n 8 -t 1
out=$("$aigc" train llama --preset small --steps 1 2>&1) && { echo "FAIL: a GPT preset taken for llama"; fails=$((fails + 1)); }
check "train llama names the Llama presets" grep -q "llama-tiny, llama-small" <<< "$out"
out=$("$aigc" convert --ckpt "$tmp/c.gguf" --type q3 --out "$tmp/x.gguf" 2>&1) && { echo "FAIL: --type q3 accepted"; fails=$((fails + 1)); }
grep -q 'got "q3"' <<<"$out" || { echo "FAIL: bad --type: $out"; fails=$((fails + 1)); }
[ "$fails" = 0 ] && echo "PASS" || exit 1
