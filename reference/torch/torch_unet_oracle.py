#!/usr/bin/python3
"""PyTorch oracle for aigc's DDPM U-Net (float64), on reference/torch/torch_unet.py's model.

Usage: torch_unet_oracle.py IN.safetensors OUT.safetensors
IN: metadata "config" (aigc's UNetConfig JSON) and "order" (aigc's parameter names in order, which must equal
UNet.aigc_parameters()); tensors: every U-Net parameter by aigc's name, "x" (B, C, S, S), "t" (B)
timesteps, "y" (B) labels as floats (conditional models), "dout" (the gradient flowing into the output).
OUT: "out", "dx", and "grad.<name>" for every parameter: gradients of sum(out * dout); all F32."""
import json
import sys

import torch

from safetensors_io import read_safetensors, write_safetensors  # noqa: E402
from torch_unet import UNet  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    tensors, meta = read_safetensors(sys.argv[1])
    c = json.loads(meta["config"])
    model = UNet(c["image_size"], c["channels"], c["ch"], tuple(c["ch_mult"]), c["num_res_blocks"],
                 tuple(c["attn_resolutions"]), c["groups"], c["n_head"], c["dropout"], c["n_classes"]).double()
    model.eval()  # dropout off: masks cannot match across frameworks
    names = dict(model.named_parameters())
    if "order" in meta and json.loads(meta["order"]) != [n for n, _ in model.aigc_parameters()]:
        sys.exit("the PyTorch U-Net registers its parameters in another order than aigc's")
    with torch.no_grad():
        for name, p in names.items():
            if name not in tensors:
                sys.exit("aigc's U-Net lacks parameter " + name)
            p.copy_(torch.tensor(tensors[name], dtype=torch.float64).reshape(p.shape))
    extra = set(tensors) - set(names) - {"x", "t", "y", "dout"}
    if extra:
        sys.exit("parameters unknown to the PyTorch U-Net: " + ", ".join(sorted(extra)))
    x = torch.tensor(tensors["x"], dtype=torch.float64, requires_grad=True)
    t = torch.tensor(tensors["t"], dtype=torch.float64)
    y = torch.tensor(tensors["y"]).long() if "y" in tensors else None
    out = model(x, t, y)
    (out * torch.tensor(tensors["dout"], dtype=torch.float64)).sum().backward()
    res = {"out": out, "dx": x.grad}
    res.update({"grad." + n: p.grad for n, p in names.items()})
    write_safetensors(sys.argv[2], {k: v.detach().numpy().astype("float32") for k, v in res.items()},
                      {"torch_version": torch.__version__})


if __name__ == "__main__":
    main()
