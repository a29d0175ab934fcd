#!/usr/bin/python3
"""PyTorch oracle for whole DCGAN training steps (float64), on reference/torch/torch_dcgan_bench.py's G and D.

Usage: torch_dcgan_oracle.py IN.safetensors OUT.safetensors
IN: metadata "nz", "ngf", "ndf", "lr", "loss" (nonsaturating | minimax | hinge | lsgan); tensors: aigc's G.* and
D.* parameters and BatchNorm buffers (conditional 28x28, 10 classes), "real" (B, 1, 28, 28), "labels" (B, as
floats), "z_d", "z_g";
with metadata "steps" = K > 1, K batches: "real.k", "labels.k", "z_d.k", "z_g.k" for k = 0..K-1, one step each.
OUT: every G.* / D.* tensor after the step, "grad.G.<name>" / "grad.D.<name>" (each network's gradient from its own
update), "loss_d", "loss_g"; all F32."""
import sys

import torch
import torch.nn.functional as F

from torch_dcgan_bench import D, D_NAMES, G, G_NAMES, load_aigc_weights, torch_name  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    t, meta = read_safetensors(sys.argv[1])
    g, d = G(int(meta["nz"]), int(meta["ngf"])).double(), D(int(meta["ndf"])).double()
    load_aigc_weights(g, d, t)
    T = lambda k: torch.tensor(t[k], dtype=torch.float64)
    lr = float(meta["lr"])
    og = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    g.train(), d.train()
    steps = int(meta.get("steps", "1"))
    for k in range(steps):
        sfx = "" if steps == 1 else "." + str(k)
        real, z_d, z_g, y = T("real" + sfx), T("z_d" + sfx), T("z_g" + sfx), torch.tensor(t["labels" + sfx]).long()
        B = real.shape[0]
        ones, zeros = torch.ones(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
        with torch.no_grad():
            fake = g(z_d, y)
        od.zero_grad()
        lr_, lf = d(real, y), d(fake, y)
        if meta["loss"] == "hinge":
            loss_d = F.relu(1 - lr_).mean() + F.relu(1 + lf).mean()
        elif meta["loss"] == "lsgan":
            loss_d = 0.5 * ((lr_ - 1) ** 2).mean() + 0.5 * (lf ** 2).mean()
        else:
            loss_d = (F.binary_cross_entropy_with_logits(lr_, ones)
                      + F.binary_cross_entropy_with_logits(lf, zeros))
        loss_d.backward()
        d_grads = {n: p.grad.clone() for n, p in d.named_parameters()}
        od.step()
        og.zero_grad()
        logits = d(g(z_g, y), y)
        if meta["loss"] == "minimax":
            loss_g = -F.binary_cross_entropy_with_logits(logits, zeros)
        elif meta["loss"] == "hinge":
            loss_g = -logits.mean()
        elif meta["loss"] == "lsgan":
            loss_g = 0.5 * ((logits - 1) ** 2).mean()
        else:
            loss_g = F.binary_cross_entropy_with_logits(logits, ones)
        loss_g.backward()
        og.step()
    out = {"loss_d": loss_d.reshape(1), "loss_g": loss_g.reshape(1)}
    for prefix, net, table in (("G.", g, G_NAMES), ("D.", d, D_NAMES)):
        sd = net.state_dict()
        pgrads = d_grads if prefix == "D." else {n: p.grad for n, p in net.named_parameters()}
        for n in [n for n in t if n.startswith(prefix)]:
            key = torch_name(table, n[len(prefix):])
            out[n] = sd[key]
            if key in pgrads:
                out["grad." + n] = pgrads[key]
    write_safetensors(sys.argv[2], {k: v.detach().numpy().astype("float32") for k, v in out.items()},
                      {"torch_version": torch.__version__})


if __name__ == "__main__":
    main()
