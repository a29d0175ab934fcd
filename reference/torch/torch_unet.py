"""The PyTorch twin of aigc's DDPM U-Net (include/aigc/models/unet.h): same blocks, same order, same parameter
names, same init distributions. reference/torch/torch_diffusion_bench.py trains it as aigc's peer, and
reference/torch/torch_unet_oracle.py checks aigc's U-Net against it (forward and gradients, float64)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim, max_period=10000.0):
    """sin(t w_i) | cos(t w_i), w_i = max_period^(-i / (half - 1)) (Ho et al.)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / (half - 1))
    arg = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1).to(t.dtype if t.is_floating_point() else torch.float32)


class Attn(nn.Module):
    def __init__(self, c, groups, n_head):
        super().__init__()
        self.norm, self.n_head = nn.GroupNorm(groups, c), n_head
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)

    def forward(self, x):
        B, C, H, W = x.shape
        nh, hs = self.n_head, C // self.n_head
        h = self.norm(x).reshape(B, C, H * W).transpose(1, 2)
        q, k, v = (z.reshape(B, H * W, nh, hs).transpose(1, 2) for z in self.qkv(h).split(C, dim=2))
        a = ((q @ k.transpose(-1, -2)) / math.sqrt(hs)).softmax(-1) @ v
        h = self.proj(a.transpose(1, 2).reshape(B, H * W, C))
        return x + h.transpose(1, 2).reshape(B, C, H, W)


class Stage(nn.Module):
    """A residual block with the time embedding added, optionally followed by self-attention."""

    def __init__(self, cin, cout, temb_dim, groups, n_head, dropout, attn):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb_dim, cout)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = dropout
        self.dropout_fn = None  # replaces F.dropout when set (torch_diffusion_bench.py --streams: aigc's masks)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.attn = Attn(cout, groups, n_head) if attn else None

    def forward(self, x, temb_act):
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(temb_act)[:, :, None, None]
        h = F.silu(self.norm2(h))
        if self.training and self.dropout > 0:
            h = self.dropout_fn(h) if self.dropout_fn else F.dropout(h, self.dropout)
        h = self.conv2(h)
        h = (self.skip(x) if self.skip is not None else x) + h
        return self.attn(h) if self.attn is not None else h


class UNet(nn.Module):
    def __init__(self, image_size=28, channels=1, ch=32, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(7,),
                 groups=8, n_head=1, dropout=0.1, n_classes=0):
        super().__init__()
        ed = 4 * ch
        self.ch, self.n_classes = ch, n_classes
        self.temb = nn.ModuleList([nn.Linear(ch, ed), nn.Linear(ed, ed)])
        if n_classes:
            self.class_emb = nn.Parameter(torch.randn(n_classes + 1, ed))
        self.conv_in = nn.Conv2d(channels, ch, 3, padding=1)
        stage = lambda cin, cout, res: Stage(cin, cout, ed, groups, n_head, dropout, res in attn_resolutions)
        skips, cur, res = [ch], ch, image_size
        self.down = nn.ModuleList()
        for i, m in enumerate(ch_mult):
            level = nn.ModuleDict()
            for r in range(num_res_blocks):
                level[str(r)] = stage(cur, ch * m, res)
                cur = ch * m
                skips.append(cur)
            if i + 1 < len(ch_mult):
                level["downsample"] = nn.Conv2d(cur, cur, 3, stride=2, padding=1)
                skips.append(cur)
                res //= 2
            self.down.append(level)
        # The middle: attention after its first block, whatever the resolution.
        self.mid = nn.ModuleList([Stage(cur, cur, ed, groups, n_head, dropout, True),
                                  Stage(cur, cur, ed, groups, n_head, dropout, False)])
        self.up = nn.ModuleDict()
        for i in reversed(range(len(ch_mult))):
            level = nn.ModuleDict()
            for r in range(num_res_blocks + 1):
                level[str(r)] = stage(cur + skips.pop(), ch * ch_mult[i], res)
                cur = ch * ch_mult[i]
            if i > 0:
                level["upsample"] = nn.Conv2d(cur, cur, 3, padding=1)
                res *= 2
            self.up[str(i)] = level
        self.norm_out, self.conv_out = nn.GroupNorm(groups, cur), nn.Conv2d(cur, channels, 3, padding=1)
        self.groups = groups
        # Zero starts, as in aigc: each residual branch's last conv, attention projections, the output conv.
        for name, p in self.named_parameters():
            if ".conv2." in name or ".attn.proj." in name or name.startswith("conv_out."):
                nn.init.zeros_(p)

    def aigc_parameters(self):
        """(name, parameter) in aigc's order, the layout of its flat checkpoints: PyTorch lists the module's own
        class_emb first, aigc registers it after the time MLP."""
        ps = [(n, p) for n, p in self.named_parameters() if n != "class_emb"]
        at = sum(1 for n, _ in ps if n.startswith("temb."))
        return ps[:at] + ([("class_emb", self.class_emb)] if self.n_classes else []) + ps[at:]

    def forward(self, x, t, y=None):
        temb = self.temb[1](F.silu(self.temb[0](timestep_embedding(t, self.ch).to(x.dtype))))
        if self.n_classes:
            temb = temb + self.class_emb[y]
        ea = F.silu(temb)
        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for key, mod in level.items():
                h = mod(h) if key == "downsample" else mod(h, ea)
                hs.append(h)
        h = self.mid[1](self.mid[0](h, ea), ea)
        for level in self.up.values():
            for key, mod in level.items():
                h = mod(F.interpolate(h, scale_factor=2, mode="nearest")) if key == "upsample" else \
                    mod(torch.cat([h, hs.pop()], 1), ea)
        return self.conv_out(F.silu(self.norm_out(h)))
