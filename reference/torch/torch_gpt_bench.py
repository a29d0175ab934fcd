#!/usr/bin/python3
"""PyTorch peer for bench/run: the same GPT (pre-LN, GELU tanh, tied embeddings, AdamW) measured the way
aigc_bench measures it, one mode per process, printing one JSON line (median of the repetitions).
Usage: torch_gpt_bench.py THREADS train L H C V B T STEPS WARMUP | prefill L H C V T REPS |
                                  decode L H C V N | eval L H C V T REPS"""
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.n_head = H
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def attn(self, x, cache):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:  # KV cache: a list [k, v] of (B, H, past, HS) tensors, extended in place
            if cache[0] is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[0], cache[1] = k, v
        S = k.size(2)
        att = (q @ k.transpose(-2, -1)) / (k.size(-1) ** 0.5)
        mask = torch.ones(T, S, dtype=torch.bool).triu(S - T + 1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        return self.c_proj((att @ v).transpose(1, 2).reshape(B, T, C))

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, H, C, V, T):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(C, H) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)

    def forward(self, idx, caches=None, pos0=0, last_only=False):
        x = self.wte(idx) + self.wpe(torch.arange(pos0, pos0 + idx.size(1)))
        for i, b in enumerate(self.h):
            x = b(x, None if caches is None else caches[i])
        x = self.ln_f(x)
        if last_only:
            x = x[:, -1:, :]
        return x @ self.wte.weight.t()


def report(mode, seconds, tokens):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"mode": mode, "seconds": seconds, "tokens_per_s": tokens / seconds, "max_rss_mb": rss,
                      "torch": torch.__version__}))


def main():
    threads, mode = int(sys.argv[1]), sys.argv[2]
    a = [int(x) for x in sys.argv[3:]]
    L, H, C, V = a[:4]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    times = []
    if mode == "train":
        B, T, steps, warmup = a[4:8]
        model = GPT(L, H, C, V, T)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for i in range(warmup + steps):
            idx, tgt = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
            t0 = time.perf_counter()
            logits = model(idx)
            loss = F.cross_entropy(logits.view(-1, V), tgt.view(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        report(mode, statistics.median(times), B * T)
        return
    with torch.no_grad():
        if mode == "prefill":
            T, reps = a[4:6]
            model = GPT(L, H, C, V, max(T, 1024))
            for i in range(reps + 1):
                idx = torch.randint(0, V, (1, T))
                t0 = time.perf_counter()
                model(idx, [[None, None] for _ in range(L)], 0, last_only=True)
                if i > 0:
                    times.append(time.perf_counter() - t0)
            report(mode, statistics.median(times), T)
        elif mode == "decode":
            n, prompt = a[4], 16
            model = GPT(L, H, C, V, max(prompt + n, 1024))
            caches = [[None, None] for _ in range(L)]
            model(torch.randint(0, V, (1, prompt)), caches, 0, last_only=True)
            for i in range(n):
                idx = torch.randint(0, V, (1, 1))
                t0 = time.perf_counter()
                model(idx, caches, prompt + i, last_only=True)
                times.append(time.perf_counter() - t0)
            report(mode, statistics.median(times), 1)
        elif mode == "eval":
            T, reps = a[4:6]
            model = GPT(L, H, C, V, T)
            for i in range(reps + 1):
                idx, tgt = torch.randint(0, V, (1, T)), torch.randint(0, V, (1, T))
                t0 = time.perf_counter()
                F.cross_entropy(model(idx).view(-1, V), tgt.view(-1)).item()
                if i > 0:
                    times.append(time.perf_counter() - t0)
            report(mode, statistics.median(times), T)
        else:
            sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
