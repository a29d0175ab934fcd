#!/usr/bin/python3
"""PyTorch peer of aigc's DDPM trainer and samplers, for bench/diffusion_run: the same U-Net (reference/torch/torch_unet.py),
linear schedule (T = 1000), L_simple loss, Adam (lr 2e-4, linear warmup), gradient clipping at norm 1, EMA of the
weights (decay min(d, (1 + step) / (10 + step))), batch and epoch-shuffled Fashion-MNIST; samplers with the same
formulas as aigc's (x0 clipped to [-1, 1]).

Usage: torch_diffusion_bench.py THREADS STEPS [options]
  --config JSON          U-Net config as aigc writes it (default: aigc's defaults)
  --batch B --lr LR --ema-decay D --seed S
  --time-sampling N      after training, time DDIM-50 sampling of N images (images/s)
  --save-samples DIR N SAMPLER STEPS   (repeatable) sample N images with the EMA weights (SAMPLER ddim with
                         STEPS steps, or ddpm; labels cycling 0-9 for conditional models) as an IDX test split in DIR,
                         for `aigc fid --fake DIR`
  --grid PNG             an 8x8 DDIM-50 grid
  --save-model PATH      the trained weights (model and EMA) as an aigc diffusion checkpoint, so that aigc's samplers
                         and `aigc fid` can score this model too (in aigc's parameter order, which the U-Net parity
                         test checks against reference/torch/torch_unet.py's UNet.aigc_parameters())
  --minutes M1,M2,... --mark-dir DIR
                         train by the clock up to the last mark (STEPS is then an upper bound): when the training
                         time (whole iterations, batch drawing included; the clock stops while writing) passes each
                         mark, the weights go to DIR/<M>min.safetensors as with --save-model; the JSON line
                         carries the steps reached at each mark
  --classes JSON         the class names a conditional model's checkpoint records (aigc's "aigc.classes")
  --streams FILE         train on the random streams of an aigc run (written by aigc_diffusion_streams): its initial
                         weights, batches, timesteps, noise and labels, and its dropout masks (recomputed here from
                         the same hash), instead of this script's own draws; only the arithmetic differs then
Prints one JSON line: median training images/s over the steps after the first 3, losses, sampling images/s."""
import json
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_dcgan_bench import batches, load, write_png  # noqa: E402
from torch_unet import UNet  # noqa: E402

from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

M64 = (1 << 64) - 1


def signed64(v):
    """A uint64 constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    v &= M64
    return v - (1 << 64) if v >> 63 else v


def shr(z, k):
    """Logical right shift of int64 bits."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix64(z):
    """aigc's splitmix64 finalizer (src/backend/cpu/elementwise.cpp) on an int64 tensor; int64 multiplication and
    addition wrap like uint64."""
    z = z + signed64(0x9E3779B97F4A7C15)
    z = (z ^ shr(z, 30)) * signed64(0xBF58476D1CE4E5B9)
    z = (z ^ shr(z, 27)) * signed64(0x94D049BB133111EB)
    return z ^ shr(z, 31)


class AigcDropout:
    """aigc's dropout masks: at step s the k-th residual block in forward order (k from 1) drops element i when
    (mix64(mix64(s * 1000003 + k) ^ i) >> 11) / 2^53 < p, and scales the kept ones by 1 / (1 - p) in float32
    (UNet::forward and CpuBackend::dropout_forward)."""

    def __init__(self, p):
        self.p = float(np.float32(p))
        self.keep = float(np.float32(1) / (np.float32(1) - np.float32(p)))
        self.seed = 0

    def start(self, step):
        self.seed = step * 1000003

    def __call__(self, x):
        self.seed += 1
        i = torch.arange(x.numel(), dtype=torch.int64)
        u = shr(mix64(i ^ mix64(torch.tensor(self.seed, dtype=torch.int64))), 11).to(torch.float64) * 2.0 ** -53
        return x * torch.where(u < self.p, 0.0, self.keep).to(torch.float32).view_as(x)


def linear_schedule(T=1000):
    k = 1000.0 / T
    beta = torch.tensor([k * (1e-4 + (0.02 - 1e-4) * i / (T - 1)) for i in range(T)], dtype=torch.float64)
    return beta, torch.cumprod(1 - beta, 0)


@torch.inference_mode()
def sample(model, n, labels, beta, abar, sampler="ddim", steps=50, eta=0.0):
    T = beta.numel()
    ts = list(range(T - 1, -1, -1)) if sampler == "ddpm" else [k * T // steps for k in range(steps - 1, -1, -1)]
    x = torch.randn(n, 1, 28, 28)
    for k, i in enumerate(ts):
        prev = ts[k + 1] if k + 1 < len(ts) else -1
        ab, ab_prev = abar[i].item(), (abar[prev].item() if prev >= 0 else 1.0)
        eps = model(x, torch.full((n,), float(i)), labels)
        x0 = ((x - (1 - ab) ** 0.5 * eps) / ab ** 0.5).clamp(-1, 1)
        if sampler == "ddpm":
            b = beta[i].item()
            x = (ab_prev ** 0.5 * b / (1 - ab)) * x0 + ((1 - b) ** 0.5 * (1 - ab_prev) / (1 - ab)) * x
            sigma = (b * (1 - ab_prev) / (1 - ab)) ** 0.5 if i > 0 else 0.0
        else:
            eps = (x - ab ** 0.5 * x0) / (1 - ab) ** 0.5
            sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
            x = ab_prev ** 0.5 * x0 + max(0.0, 1 - ab_prev - sigma ** 2) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * torch.randn_like(x)
    return x


def forward_macs(net, n_classes):
    """Multiply-adds per image of one U-Net forward through its convolutions and linear layers (attention's two
    matrix products are left out: at 7x7 they are under 1% of the total)."""
    macs, hooks = [0], []

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            macs[0] += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            macs[0] += out.numel() * m.in_features

    for m in net.modules():
        hooks.append(m.register_forward_hook(hook))
    with torch.inference_mode():
        net(torch.zeros(2, 1, 28, 28), torch.zeros(2), torch.zeros(2, dtype=torch.long) if n_classes else None)
    for h in hooks:
        h.remove()
    return macs[0] / 2


def option(args, name, default, cast=str, count=1):
    if name not in args:
        return default
    i = args.index(name)
    vals = [cast(v) for v in args[i + 1:i + 1 + count]]
    del args[i:i + 1 + count]
    return vals[0] if count == 1 else vals


def main():
    args = sys.argv[1:]
    cfg = json.loads(option(args, "--config", "{}"))
    B, lr = option(args, "--batch", 64, int), option(args, "--lr", 2e-4, float)
    ema_decay, seed = option(args, "--ema-decay", 0.999, float), option(args, "--seed", 1, int)
    time_n = option(args, "--time-sampling", 0, int)
    saves = []
    while "--save-samples" in args:
        saves.append(option(args, "--save-samples", None, str, 4))
    grid = option(args, "--grid", None)
    marks = sorted(float(m) for m in option(args, "--minutes", "").split(",") if m)
    mark_dir = option(args, "--mark-dir", None)
    if marks and not (mark_dir and cfg):
        sys.exit("--minutes needs --mark-dir and --config")
    save_model = option(args, "--save-model", None)
    classes = json.loads(option(args, "--classes", "[]"))
    streams = option(args, "--streams", None)
    if (save_model or streams) and not cfg:
        sys.exit("--save-model and --streams need --config (aigc's U-Net config JSON) to describe the model")
    channels_last = "--channels-last" in args
    if channels_last:
        args.remove("--channels-last")
    threads, steps = int(args[0]), int(args[1])
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = True
    torch.manual_seed(seed)
    keys = ("image_size", "channels", "ch", "ch_mult", "num_res_blocks", "attn_resolutions", "groups", "n_head",
            "dropout", "n_classes")
    model = UNet(**{k: (tuple(cfg[k]) if isinstance(cfg[k], list) else cfg[k]) for k in keys if k in cfg})
    ema = UNet(**{k: (tuple(cfg[k]) if isinstance(cfg[k], list) else cfg[k]) for k in keys if k in cfg})
    if streams:  # aigc's initial weights, and its dropout masks
        st, st_meta = read_safetensors(streams)
        if json.loads(st_meta["aigc.config"]) != cfg:
            sys.exit("%s was written for another U-Net config than --config" % streams)
        if st["t"].shape[0] < steps or st["t"].shape[1] != B:
            sys.exit("%s holds %d steps of batch %d; this run needs %d of batch %d"
                     % (streams, st["t"].shape[0], st["t"].shape[1], steps, B))
        flat, at = torch.from_numpy(st["init"]), 0
        with torch.no_grad():
            for _, p in model.aigc_parameters():
                p.copy_(flat[at:at + p.numel()].view_as(p))
                at += p.numel()
        if at != flat.numel():
            sys.exit("%s: %d initial weights, the model has %d" % (streams, flat.numel(), at))
        drop = AigcDropout(cfg.get("dropout", 0.1))
        drop.start(12345)
        drop(torch.ones(3, 5, 7, 11))
        if not torch.equal(drop(torch.ones(3, 5, 7, 11)), torch.from_numpy(st["dropout_probe"])):
            sys.exit("%s: aigc's dropout probe differs from this script's copy of its mask hash" % streams)
        for m in model.modules():
            if hasattr(m, "dropout_fn"):
                m.dropout_fn = drop
    ema.load_state_dict(model.state_dict())
    ema.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model, ema = model.to(memory_format=fmt), ema.to(memory_format=fmt)
    n_classes = cfg.get("n_classes", 0)
    beta, abar = linear_schedule()
    x_all, y_all = load()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    times, losses = [], []
    data = batches(x_all, y_all, B)

    def write_model(path):
        flat = {k: torch.cat([p.detach().reshape(-1) for _, p in m.aigc_parameters()]).numpy()
                for k, m in (("model", model), ("ema", ema))}
        meta = {"format": "aigc-ddpm-1", "aigc.config": json.dumps(cfg),
                "aigc.schedule": json.dumps({"kind": "linear", "T": 1000}),
                "aigc.classes": json.dumps(classes if n_classes else []),
                "aigc.trained_by": "PyTorch " + torch.__version__ + " (reference/torch/torch_diffusion_bench.py)"}
        write_safetensors(path, flat, meta)  # atomic: a temp file renamed into place

    clock, reached = 0.0, {}  # training seconds, for --minutes
    model.train()
    for step in range(steps):
        t_iter = time.perf_counter()
        if streams:
            x0 = torch.from_numpy(st["real"][step].astype(np.float32) / 127.5 - 1.0)
            t, eps = torch.from_numpy(st["t"][step].astype(np.int64)), torch.from_numpy(st["eps"][step])
            y = torch.from_numpy(st["labels"][step].astype(np.int64)) if n_classes else None
            drop.start(step)
        else:
            x0, y = next(data)
        t0 = time.perf_counter()
        if not streams:
            t = torch.randint(0, 1000, (B,))
            eps = torch.randn_like(x0)
        ab = abar[t].float()[:, None, None, None]
        xt = (ab.sqrt() * x0 + (1 - ab).sqrt() * eps).contiguous(memory_format=fmt)
        if n_classes and not streams:
            y = torch.where(torch.rand(B) < 0.1, torch.full_like(y, n_classes), y)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 200)
        loss = F.mse_loss(model(xt, t.float(), y if n_classes else None), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        d = min(ema_decay, (2 + step) / (11 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(d).add_(pm, alpha=1 - d)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        clock += time.perf_counter() - t_iter
        if marks and clock >= marks[0] * 60:
            m = marks.pop(0)
            write_model(os.path.join(mark_dir, "%gmin.safetensors" % m))
            reached["%g" % m] = {"steps": step + 1, "seconds": clock}
            if not marks:
                break
    res = {"images_per_s": B / statistics.median(times[3:] or times), "first_loss": losses[0], "marks": reached,
           "last_loss": statistics.mean(losses[-20:]), "first_losses": losses[:10], "torch": torch.__version__,
           "forward_flop_per_image": 2 * forward_macs(ema, n_classes), "channels_last": channels_last,
           "threads": torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.is_available()}
    if time_n:
        labels = torch.arange(time_n) % 10 if n_classes else None
        t0 = time.perf_counter()
        sample(ema, time_n, labels, beta, abar, "ddim", 50)
        res["ddim50_images_per_s"] = time_n / (time.perf_counter() - t0)
    for out_dir, n, sampler, sample_steps in saves:
        n, sample_steps = int(n), int(sample_steps)
        os.makedirs(out_dir, exist_ok=True)
        t0 = time.perf_counter()
        y = torch.arange(n) % 10
        xs = [sample(ema, min(250, n - i), y[i:i + 250] if n_classes else None, beta, abar, sampler, sample_steps)
              for i in range(0, n, 250)]
        pix = ((torch.cat(xs).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy().reshape(n, 28, 28)
        with open(os.path.join(out_dir, "t10k-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + pix.tobytes())
        with open(os.path.join(out_dir, "t10k-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + y.to(torch.uint8).numpy().tobytes())
        res["sampled_%s%d_images_per_s" % (sampler, sample_steps)] = n / (time.perf_counter() - t0)
    if grid:
        x = sample(ema, 64, torch.arange(64) % 10 if n_classes else None, beta, abar, "ddim", 50)
        pix = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy().reshape(8, 8, 28, 28)
        pad = np.zeros((8, 8, 30, 30), np.uint8)
        pad[:, :, 1:29, 1:29] = pix
        write_png(grid, pad.transpose(0, 2, 1, 3).reshape(240, 240))
    if save_model:
        write_model(save_model)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
