#!/usr/bin/python3
"""PyTorch peer of aigc's DCGAN trainer, for bench/gan_run: the same conditional DCGAN (28x28, 1 channel), the
same Adam settings, batch and step structure (one D update on a real and a generated batch, one G update with the
non-saturating loss), on Fashion-MNIST read from Debian's dataset-fashion-mnist. Prints one JSON line with the
median images/s over the timed steps.
Usage: torch_dcgan_bench.py THREADS STEPS WARMUP [BATCH NZ NGF NDF] [--save-samples DIR N] [--grid PNG] [--seed S]
                            [--streams FILE] [--channels-last] [--minutes M1,M2,... --mark-dir DIR N]
Configured for speed: torch.set_num_threads(THREADS) (the caller sets OMP_NUM_THREADS and OPENBLAS_NUM_THREADS to
THREADS too, so no pool oversubscribes), oneDNN (mkldnn) on, sampling under torch.inference_mode(), and with
--channels-last both networks and the images in the channels-last memory format. The JSON line also carries
"train_flop_per_image": the multiply-adds of the convolutions and embeddings one training step spends per image,
times 2 (D runs forward 3 times and backward 3 times, G forward twice and backward once; a backward costs two
forwards), counted with forward hooks.
--streams trains on the initial weights, batches and noise of an aigc run (written by aigc_gan_streams) instead of
its own random draws; the JSON line then also carries the first step's losses, to check against aigc's.
--save-samples writes N generated images (labels cycling 0-9) after training as an IDX test split in DIR
(t10k-images-idx3-ubyte + labels), which `aigc fid --fake DIR` scores with the same FID-FMNIST as aigc's models.
--minutes trains by the clock instead, up to the last mark (STEPS is then only an upper bound): when the training
time (every step's whole iteration, batch drawing included; the clock stops while samples are written) passes each
mark, N samples go to DIR/<M>min as with --save-samples and a grid to DIR/<M>min.png; the JSON line carries the
steps reached at each mark.
--grid writes an 8x8 sample grid (classes cycling 0-9, as aigc's grids) as a grayscale PNG.
Like aigc: every weight (label embeddings included) starts N(0, 0.02), BatchNorm scales N(1, 0.02), and batches
walk a fresh shuffle of the training set each epoch."""
import gzip
import json
import os
import statistics
import struct
import sys
import time
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from safetensors_io import read_safetensors  # noqa: E402

ROOT = "/usr/share/datasets/fashion-mnist/"


def load():
    with gzip.open(ROOT + "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(ROOT + "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0), torch.from_numpy(y.astype(np.int64))


def batches(x_all, y_all, B):
    """Endless minibatches walking a fresh shuffle of the training set each epoch (as aigc's loader)."""
    order, pos = torch.randperm(x_all.shape[0]), 0
    while True:
        if pos + B > order.numel():
            order, pos = torch.randperm(x_all.shape[0]), 0
        idx = order[pos:pos + B]
        pos += B
        yield x_all[idx], y_all[idx]


class G(nn.Module):
    def __init__(self, nz, ngf, n_classes=10):
        super().__init__()
        self.emb = nn.Embedding(n_classes, nz)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * nz, 2 * ngf, 7, 1, 0, bias=False), nn.BatchNorm2d(2 * ngf), nn.ReLU(True),
            nn.ConvTranspose2d(2 * ngf, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z, y):
        return self.net(torch.cat([z, self.emb(y)], 1)[:, :, None, None])


class D(nn.Module):
    def __init__(self, ndf, n_classes=10, bn=True):
        super().__init__()
        self.emb = nn.Embedding(n_classes, 28 * 28)
        self.net = nn.Sequential(
            nn.Conv2d(2, ndf, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, 2 * ndf, 4, 2, 1, bias=not bn), nn.BatchNorm2d(2 * ndf) if bn else nn.Identity(),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * ndf, 1, 7, 1, 0))

    def forward(self, x, y):
        return self.net(torch.cat([x, self.emb(y).view(-1, 1, 28, 28)], 1)).view(-1)


# aigc's names -> the PyTorch modules' state_dict names.
G_NAMES = {"label_emb": "emb.weight", "g.0.weight": "net.0.weight", "g.0.bn": "net.1", "g.1.weight": "net.3.weight",
           "g.1.bn": "net.4", "g.2.weight": "net.6.weight", "g.2.bias": "net.6.bias"}
D_NAMES = {"label_emb": "emb.weight", "d.0.weight": "net.0.weight", "d.0.bias": "net.0.bias",
           "d.1.weight": "net.2.weight", "d.1.bias": "net.2.bias", "d.1.bn": "net.3", "d.2.weight": "net.5.weight", "d.2.bias": "net.5.bias"}


def torch_name(table, name):
    for a, t in table.items():
        if name == a:
            return t
        if name.startswith(a + "."):  # BatchNorm: weight, bias, running_mean, running_var
            return t + name[len(a):]
    sys.exit("no PyTorch counterpart for " + name)


def load_aigc_weights(g, d, tensors):
    """Copy aigc's G.* / D.* tensors (parameters and BatchNorm buffers) into the PyTorch twins."""
    for prefix, net, table in (("G.", g, G_NAMES), ("D.", d, D_NAMES)):
        sd = net.state_dict()
        names = [n for n in tensors if n.startswith(prefix)]
        for n in names:
            key = torch_name(table, n[len(prefix):])
            sd[key].copy_(torch.tensor(tensors[n], dtype=sd[key].dtype).reshape(sd[key].shape))
        if len(names) != len([k for k in sd if not k.endswith("num_batches_tracked")]):
            sys.exit("tensor counts differ for " + prefix)


def forward_macs(net, *inputs):
    """Multiply-adds per sample of one forward pass through net's convolutions and linear layers."""
    macs, hooks = [0], []

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            macs[0] += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.ConvTranspose2d):
            macs[0] += inp[0].numel() * m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            macs[0] += out.numel() * m.in_features

    for m in net.modules():
        hooks.append(m.register_forward_hook(hook))
    with torch.inference_mode():
        net(*inputs)
    for h in hooks:
        h.remove()
    return macs[0] / inputs[0].shape[0]


def save_samples(g, nz, out_dir, n):
    os.makedirs(out_dir, exist_ok=True)
    g.eval()
    with torch.inference_mode():
        y = torch.arange(n) % 10
        x = torch.cat([g(torch.randn(min(500, n - i), nz), y[i:i + 500]) for i in range(0, n, 500)])
    pix = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy().reshape(n, 28, 28)
    with open(os.path.join(out_dir, "t10k-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + pix.tobytes())
    with open(os.path.join(out_dir, "t10k-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + y.to(torch.uint8).numpy().tobytes())


def write_png(path, pix):
    """pix: (H, W) uint8. A minimal grayscale PNG (no PIL in Debian's torch environment)."""
    h, w = pix.shape
    raw = b"".join(b"\0" + pix[r].tobytes() for r in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def save_grid(g, nz, path):
    g.eval()
    with torch.inference_mode():
        x = g(torch.randn(64, nz), torch.arange(64) % 10)
    pix = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy().reshape(8, 8, 28, 28)
    pad = np.zeros((8, 8, 30, 30), np.uint8)  # a 2-pixel black border between cells
    pad[:, :, 1:29, 1:29] = pix
    write_png(path, pad.transpose(0, 2, 1, 3).reshape(240, 240))


def main():
    args = sys.argv[1:]
    save, grid, seed, streams = None, None, 0, None
    channels_last = "--channels-last" in args
    if channels_last:
        args.remove("--channels-last")
    if "--streams" in args:
        i = args.index("--streams")
        streams = args[i + 1]
        del args[i:i + 2]
    if "--seed" in args:
        i = args.index("--seed")
        seed = int(args[i + 1])
        del args[i:i + 2]
    if "--grid" in args:
        i = args.index("--grid")
        grid = args[i + 1]
        del args[i:i + 2]
    if "--save-samples" in args:
        i = args.index("--save-samples")
        save = (args[i + 1], int(args[i + 2]))
        del args[i:i + 3]
    marks, mark_dir, mark_n, reached = [], None, 0, {}
    if "--minutes" in args:
        i = args.index("--minutes")
        marks = sorted(float(m) for m in args[i + 1].split(","))
        del args[i:i + 2]
        i = args.index("--mark-dir")
        mark_dir, mark_n = args[i + 1], int(args[i + 2])
        del args[i:i + 3]
    threads, steps, warmup = (int(a) for a in args[0:3])
    B, nz, ngf, ndf = (int(a) for a in (args[3:7] if len(args) > 3 else (64, 64, 64, 64)))
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = True
    torch.manual_seed(seed)
    x_all, y_all = load()
    g, d = G(nz, ngf), D(ndf)
    for m in list(g.modules()) + list(d.modules()):  # the DCGAN init, as aigc uses
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    if streams:  # aigc's initial weights, batches and noise instead of our own draws
        st, _ = read_safetensors(streams)
        load_aigc_weights(g, d, st)
        if st["real"].shape[0] < warmup + steps or st["real"].shape[1] != B:
            sys.exit("%s holds %d steps of batch %d; this run needs %d of batch %d"
                     % (streams, st["real"].shape[0], st["real"].shape[1], warmup + steps, B))
    y0 = torch.arange(2) % 10
    flop = 2 * (9 * forward_macs(d, torch.zeros(2, 1, 28, 28), y0) + 4 * forward_macs(g, torch.zeros(2, nz), y0))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g, d = g.to(memory_format=fmt), d.to(memory_format=fmt)
    og = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ones, zeros = torch.ones(B), torch.zeros(B)
    times = []
    data = batches(x_all, y_all, B)
    first = None
    clock = 0.0  # training seconds, for --minutes
    for i in range(warmup + steps):
        t_iter = time.perf_counter()
        if streams:
            real = torch.from_numpy(st["real"][i].astype(np.float32) / 127.5 - 1.0)
            y = torch.from_numpy(st["labels"][i].astype(np.int64))
            z_d, z_g = torch.from_numpy(st["z_d"][i]), torch.from_numpy(st["z_g"][i])
        else:
            real, y = next(data)
            z_d, z_g = torch.randn(B, nz), torch.randn(B, nz)
        real = real.contiguous(memory_format=fmt)
        t0 = time.perf_counter()
        with torch.no_grad():  # not inference_mode: D's backward reads fake
            fake = g(z_d, y)
        od.zero_grad(set_to_none=True)
        loss_d = (F.binary_cross_entropy_with_logits(d(real, y), ones)
                  + F.binary_cross_entropy_with_logits(d(fake, y), zeros))
        loss_d.backward()
        od.step()
        og.zero_grad(set_to_none=True)
        loss_g = F.binary_cross_entropy_with_logits(d(g(z_g, y), y), ones)
        loss_g.backward()
        og.step()
        if first is None:
            first = (loss_d.item(), loss_g.item())
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        clock += time.perf_counter() - t_iter
        if marks and clock >= marks[0] * 60:
            m = marks.pop(0)
            name = os.path.join(mark_dir, "%gmin" % m)
            save_samples(g, nz, name, mark_n)
            save_grid(g, nz, name + ".png")
            g.train()
            reached["%g" % m] = {"steps": i + 1, "seconds": clock}
            if not marks:
                break
    med = statistics.median(times)
    if save:
        save_samples(g, nz, *save)
    if grid:
        save_grid(g, nz, grid)
    print(json.dumps({"images_per_s": B / med, "step_s": med, "loss_d": loss_d.item(), "loss_g": loss_g.item(),
                      "first_loss_d": first[0], "first_loss_g": first[1], "torch": torch.__version__,
                      "train_flop_per_image": flop, "channels_last": channels_last,
                      "threads": torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.is_available(),
                      "marks": reached}))


if __name__ == "__main__":
    main()
