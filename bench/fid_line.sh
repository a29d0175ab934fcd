# shellcheck shell=bash
# Reading back the line `aigc fid` prints, for the bench scripts (source this file):
#   FID-FMNIST 141.162 (1000 real vs 1000 generated; floor, real test vs real train: 37.853)
# fid_value TEXT -> 141.162, fid_floor TEXT -> 37.853; nothing when TEXT holds no such line.
fid_value() { sed -nE 's/^FID-FMNIST ([0-9.]+) .*/\1/p' <<<"$1"; }
fid_floor() { sed -nE 's/^FID-FMNIST .*real train: ([0-9.]+)\)$/\1/p' <<<"$1"; }
