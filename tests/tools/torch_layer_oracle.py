#!/usr/bin/python3
"""PyTorch oracle for single-layer parity tests (float64).

Usage: torch_layer_oracle.py IN.safetensors OUT.safetensors [IN2 OUT2 ...]   (one torch start for many cases)

IN carries metadata "layer" (conv2d | conv_transpose2d) and "options" (JSON: stride, padding, dilation, groups,
output_padding), and tensors "x", "w", "b" and "dout" (the gradient flowing into the layer's output). OUT
receives "out", "dx", "dw" and "db": the layer's output and the gradients of sum(out * dout), all F32.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt_oracle import read_safetensors, write_safetensors  # noqa: E402


def run_case(in_path, out_path):
    tensors, meta = read_safetensors(in_path)
    layer, opt = meta["layer"], json.loads(meta["options"])
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=k != "dout") for k, v in tensors.items()}
    common = dict(stride=opt["stride"], padding=opt["padding"], dilation=opt["dilation"], groups=opt["groups"])
    if layer == "conv2d":
        out = F.conv2d(t["x"], t["w"], t["b"], **common)
    elif layer == "conv_transpose2d":
        out = F.conv_transpose2d(t["x"], t["w"], t["b"], output_padding=opt["output_padding"], **common)
    else:
        sys.exit("unknown layer " + layer)
    (out * t["dout"]).sum().backward()
    res = {"out": out, "dx": t["x"].grad, "dw": t["w"].grad, "db": t["b"].grad}
    write_safetensors(out_path, {k: v.detach().numpy().astype("float32") for k, v in res.items()},
                      {"torch_version": torch.__version__})


def main():
    torch.set_num_threads(1)
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit(__doc__)
    for i in range(0, len(args), 2):
        run_case(args[i], args[i + 1])


if __name__ == "__main__":
    main()
