#!/usr/bin/python3
"""PyTorch oracle for whole DCGAN training steps (float64), on reference/torch/torch_dcgan_bench.py's G and D.

Usage: torch_dcgan_oracle.py IN.safetensors OUT.safetensors
IN: metadata "nz", "ngf", "ndf", "lr", "loss" (nonsaturating | minimax | hinge | lsgan | wgan-gp), and optionally
"d_norm" (batch | none), "spectral_norm" (0 | 1), "gp_lambda", "r1" (gamma), "n_critic"; tensors: aigc's G.* and
D.* parameters and buffers (BatchNorm statistics, spectral norm's D.d.<i>.sn.u / .v; conditional 28x28, 10
classes), and per batch "real" (B, 1, 28, 28), "labels" (B, as floats), "z_d", "z_g", "eps" (wgan-gp).
A step is n_critic D updates, each on its own batch, then one G update on the last batch's z_g; with metadata
"steps" = K, K steps. With more than one batch in all, batch k's tensors are suffixed ".k" (k = 0, 1, ...).
OUT: every G.* / D.* tensor after the steps, "grad.G.<name>" / "grad.D.<name>" (each network's gradient from its
last update), "loss_d" (the mean over the last step's D updates, without the penalty), "penalty" (weighted, the
same mean), "loss_g"; all F32."""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_dcgan_bench import D, D_NAMES, G, G_NAMES, load_aigc_weights, torch_name  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402


class SpectralNorm:
    """Miyato et al.'s spectral normalization of D's convolutions, as aigc runs it: one power iteration per D
    update (power_iteration), and W / (u . W v) in every forward, with u and v constants."""

    def __init__(self, d, t):
        self.convs = [i for i, m in enumerate(d.net) if isinstance(m, nn.Conv2d)]
        self.uv = {i: [torch.tensor(t["D.d.%d.sn.%s" % (k, s)], dtype=torch.float64) for s in "uv"]
                   for k, i in enumerate(self.convs)}

    def power_iteration(self, d):
        with torch.no_grad():
            for i in self.convs:
                w = d.net[i].weight.reshape(d.net[i].weight.shape[0], -1)
                u, _ = self.uv[i]
                v = F.normalize(w.t() @ u, dim=0, eps=1e-12)
                self.uv[i] = [F.normalize(w @ v, dim=0, eps=1e-12), v]

    def forward(self, d, x, y):
        h = torch.cat([x, d.emb(y).view(-1, 1, 28, 28)], 1)
        for i, m in enumerate(d.net):
            if i in self.uv:
                u, v = self.uv[i]
                sigma = torch.dot(u, torch.mv(m.weight.reshape(m.weight.shape[0], -1), v))
                h = F.conv2d(h, m.weight / sigma, m.bias, m.stride, m.padding)
            else:
                h = m(h)
        return h.view(-1)

    def outputs(self):
        return {"D.d.%d.sn.%s" % (k, s): self.uv[i]["uv".index(s)] for k, i in enumerate(self.convs) for s in "uv"}


def input_gradient_penalty(score, x, center):
    """mean over the batch of (|d score / d x| - center)^2, differentiable (create_graph)."""
    g, = torch.autograd.grad(score(x), x, torch.ones(x.shape[0], dtype=x.dtype), create_graph=True)
    return ((g.flatten(1).norm(dim=1) - center) ** 2).mean()


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    t, meta = read_safetensors(sys.argv[1])
    loss = meta["loss"]
    n_critic, lam, r1 = int(meta.get("n_critic", "1")), float(meta.get("gp_lambda", "10")), float(meta.get("r1", "0"))
    g = G(int(meta["nz"]), int(meta["ngf"])).double()
    d = D(int(meta["ndf"]), bn=meta.get("d_norm", "batch") == "batch").double()
    sn = SpectralNorm(d, t) if meta.get("spectral_norm", "0") == "1" else None
    load_aigc_weights(g, d, {k: v for k, v in t.items() if ".sn." not in k})
    d_of = (lambda x, y: sn.forward(d, x, y)) if sn else d
    T = lambda k: torch.tensor(t[k], dtype=torch.float64)
    lr = float(meta["lr"])
    og = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    g.train(), d.train()
    steps = int(meta.get("steps", "1"))
    sfx = lambda k: "" if steps * n_critic == 1 else "." + str(k)
    for s in range(steps):
        loss_d = penalty = 0.0
        for j in range(n_critic):
            k = sfx(s * n_critic + j)
            real, z_d, y = T("real" + k), T("z_d" + k), torch.tensor(t["labels" + k]).long()
            B = real.shape[0]
            ones, zeros = torch.ones(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
            if sn:
                sn.power_iteration(d)
            with torch.no_grad():
                fake = g(z_d, y)
            od.zero_grad()
            lr_, lf = d_of(real, y), d_of(fake, y)
            if loss == "hinge":
                ld = F.relu(1 - lr_).mean() + F.relu(1 + lf).mean()
            elif loss == "lsgan":
                ld = 0.5 * ((lr_ - 1) ** 2).mean() + 0.5 * (lf ** 2).mean()
            elif loss == "wgan-gp":
                ld = lf.mean() - lr_.mean()
            else:
                ld = F.binary_cross_entropy_with_logits(lr_, ones) + F.binary_cross_entropy_with_logits(lf, zeros)
            pen = torch.zeros((), dtype=torch.float64)
            if loss == "wgan-gp":
                e = T("eps" + k)[:, None, None, None]
                mixed = (e * real + (1 - e) * fake).requires_grad_(True)
                pen = pen + lam * input_gradient_penalty(lambda x: d_of(x, y), mixed, 1.0)
            if r1 > 0:
                pen = pen + 0.5 * r1 * input_gradient_penalty(lambda x: d_of(x, y), real.clone().requires_grad_(True),
                                                              0.0)
            (ld + pen).backward()
            loss_d, penalty = loss_d + ld.item() / n_critic, penalty + pen.item() / n_critic
            d_grads = {n: p.grad.clone() for n, p in d.named_parameters()}
            od.step()
        og.zero_grad()
        logits = d_of(g(T("z_g" + k), y), y)
        if loss == "minimax":
            loss_g = -F.binary_cross_entropy_with_logits(logits, zeros)
        elif loss in ("hinge", "wgan-gp"):
            loss_g = -logits.mean()
        elif loss == "lsgan":
            loss_g = 0.5 * ((logits - 1) ** 2).mean()
        else:
            loss_g = F.binary_cross_entropy_with_logits(logits, ones)
        loss_g.backward()
        og.step()
    out = {"loss_d": torch.tensor([loss_d]), "penalty": torch.tensor([penalty]), "loss_g": loss_g.reshape(1)}
    for prefix, net, table in (("G.", g, G_NAMES), ("D.", d, D_NAMES)):
        sd = net.state_dict()
        pgrads = d_grads if prefix == "D." else {n: p.grad for n, p in net.named_parameters()}
        for n in [n for n in t if n.startswith(prefix) and ".sn." not in n]:
            key = torch_name(table, n[len(prefix):])
            out[n] = sd[key]
            if key in pgrads:
                out["grad." + n] = pgrads[key]
    if sn:
        out.update(sn.outputs())
    write_safetensors(sys.argv[2], {k: v.detach().numpy().astype("float32") for k, v in out.items()},
                      {"torch_version": torch.__version__})


if __name__ == "__main__":
    main()
