#!/usr/bin/python3
"""PyTorch oracle for single-layer parity tests (float64).

Usage: torch_layer_oracle.py IN.safetensors OUT.safetensors [IN2 OUT2 ...]   (one torch start for many cases)

IN carries metadata "layer" and "options" (JSON) and the tensors the layer takes: "x", and as the layer needs
"w", "b", "running_mean", "running_var" (batch_norm2d), "y" (bce_with_logits targets); plus "dout", the gradient
flowing into the layer's output. OUT receives "out" and the gradients of sum(out * dout) ("dx", "dw", "db"),
and for batch_norm2d the running statistics after the call; all F32.
  conv2d, conv_transpose2d    options: stride, padding, dilation, groups, output_padding
  leaky_relu                  options: slope
  tanh, sigmoid
  batch_norm2d                options: training, momentum, eps
  bce_with_logits             (mean reduction; out has one element)
  silu
  group_norm                  options: groups, eps
  upsample_nearest            options: factor
  attention                   x = qkv (B, T, 3C); options: n_head, causal
  add_channelwise             x (B, C, H, W) + v (B, C); gradients dx, dv
  timestep_embedding          x = timesteps (B); options: dim, max_period (no gradient)
  mse_loss                    x = prediction, y = target; gradients dx, dy
  spectral_normalize          x = weight, u, v: x / (u . (X v)); gradient dx
  critic_penalty              a small critic (concat, conv2d, leaky_relu, conv_transpose2d, linear, combine, add) on
                              x (N, 2, 8, 8) with a constant "plane" (N, 1, 8, 8), weights w1, b1, w2, w3, lw, lb;
                              g = autograd.grad(critic, x, "seed", create_graph=True); out = mean over samples of
                              (|g[n]| - center)^2, options: center, slope. OUT: "out", "g" and the gradients of out
                              ("dw1", ...: second derivatives through the backward pass)
"""
import json
import sys

import torch
import torch.nn.functional as F

from safetensors_io import read_safetensors, write_safetensors  # noqa: E402


def critic_penalty(t, opt):
    """The gradient penalty of a small critic: a loss on the critic's input gradient, differentiated again."""
    a = opt["slope"]
    h = F.leaky_relu(F.conv2d(torch.cat([t["x"], t["plane"]], 1), t["w1"], t["b1"], stride=2, padding=1), a)
    h = F.leaky_relu(F.conv_transpose2d(h, t["w2"], None, stride=2, padding=1), a)
    h = F.leaky_relu(F.conv2d(h, t["w3"], None, stride=2, padding=1), a)
    o = F.linear(h.reshape(h.shape[0], -1), t["lw"], t["lb"])
    o = o + 0.5 * o
    g, = torch.autograd.grad(o, t["x"], t["seed"], create_graph=True)
    return ((g.flatten(1).norm(dim=1) - opt["center"]) ** 2).mean().reshape(1), g


def run_case(in_path, out_path):
    tensors, meta = read_safetensors(in_path)
    layer, opt = meta["layer"], json.loads(meta["options"])
    grads = {"add_channelwise": ("x", "v"), "mse_loss": ("x", "y"), "timestep_embedding": (),
             "spectral_normalize": ("x",),
             "critic_penalty": ("x", "w1", "b1", "w2", "w3", "lw", "lb")}.get(layer, ("x", "w", "b"))
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=k in grads) for k, v in tensors.items()}
    res = {}
    if layer in ("conv2d", "conv_transpose2d"):
        common = dict(stride=opt["stride"], padding=opt["padding"], dilation=opt["dilation"], groups=opt["groups"])
        if layer == "conv2d":
            out = F.conv2d(t["x"], t["w"], t["b"], **common)
        else:
            out = F.conv_transpose2d(t["x"], t["w"], t["b"], output_padding=opt["output_padding"], **common)
    elif layer == "leaky_relu":
        out = F.leaky_relu(t["x"], opt["slope"])
    elif layer == "tanh":
        out = torch.tanh(t["x"])
    elif layer == "sigmoid":
        out = torch.sigmoid(t["x"])
    elif layer == "batch_norm2d":
        rm, rv = t["running_mean"].clone(), t["running_var"].clone()
        out = F.batch_norm(t["x"], rm, rv, t["w"], t["b"], training=opt["training"], momentum=opt["momentum"],
                           eps=opt["eps"])
        res["running_mean"], res["running_var"] = rm, rv
    elif layer == "bce_with_logits":
        out = F.binary_cross_entropy_with_logits(t["x"], t["y"]).reshape(1)
    elif layer == "silu":
        out = F.silu(t["x"])
    elif layer == "group_norm":
        out = F.group_norm(t["x"], opt["groups"], t["w"], t["b"], eps=opt["eps"])
    elif layer == "upsample_nearest":
        out = F.interpolate(t["x"], scale_factor=opt["factor"], mode="nearest")
    elif layer == "attention":
        B, T, C3 = t["x"].shape
        nh, C = opt["n_head"], C3 // 3
        q, k, v = (z.reshape(B, T, nh, C // nh).transpose(1, 2) for z in t["x"].split(C, dim=2))
        s = q @ k.transpose(-1, -2) / (C // nh) ** 0.5
        if opt["causal"]:
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        out = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    elif layer == "add_channelwise":
        out = t["x"] + t["v"][:, :, None, None]
    elif layer == "timestep_embedding":  # Ho et al.'s get_timestep_embedding, in float64
        half = opt["dim"] // 2
        freqs = torch.exp(-torch.log(torch.tensor(float(opt["max_period"]), dtype=torch.float64))
                          * torch.arange(half, dtype=torch.float64) / (half - 1))
        arg = t["x"][:, None] * freqs[None]
        out = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    elif layer == "mse_loss":
        out = F.mse_loss(t["x"], t["y"]).reshape(1)
    elif layer == "spectral_normalize":
        out = t["x"] / torch.dot(t["u"], torch.mv(t["x"].reshape(t["x"].shape[0], -1), t["v"]))
    elif layer == "critic_penalty":
        out, res["g"] = critic_penalty(t, opt)
    else:
        sys.exit("unknown layer " + layer)
    if grads:
        (out * t["dout"]).sum().backward()
    res["out"] = out
    for k in grads:
        if k in t:
            res["d" + k] = t[k].grad if t[k].grad is not None else torch.zeros_like(t[k])  # no path: zero
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
