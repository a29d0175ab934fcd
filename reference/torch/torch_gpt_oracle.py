#!/usr/bin/python3
"""PyTorch oracle for the aigc GPT parity tests.

Usage:
    torch_gpt_oracle.py IN.safetensors OUT.safetensors [--dtype float64|float32]
    torch_gpt_oracle.py --selftest [--keep DIR]

The input file carries a model configuration, AdamW settings, a batch of token
ids with targets and every model parameter.  The oracle runs one forward pass,
the mean cross-entropy loss, the backward pass and exactly one AdamW step, and
writes the logits, the loss, every gradient and every updated parameter.

Input file
    metadata "config": JSON {"n_layer", "n_head", "n_embd", "block_size",
        "vocab_size", "norm": "pre"|"post", "activation": "gelu"|"relu",
        "tie_embeddings": bool, "lm_head_bias": bool, "ln_eps": float}
    metadata "optim": JSON {"lr", "beta1", "beta2", "eps", "weight_decay"}
    tensors: "idx" I32 (B,T), "targets" I32 (B,T) and the parameters (F32),
        named as in parameter_shapes() below; Linear weights are stored in the
        nn.Linear layout (out_features, in_features).

Output file (all F32, converted from the compute dtype)
    "logits" (B,T,V), "loss" [1], "grad.<name>" and "param.<name>" (after the
    AdamW step) for every parameter; metadata "torch_version",
    "compute_dtype".

By default the computation runs in float64 so that fp32 results from the C++
engine can be compared at tight tolerance.  torch runs on one CPU thread unless
the environment variable AIGC_ORACLE_THREADS gives another count.

Safetensors files are read and written by safetensors_io.py beside this file.

Notes for comparing against this oracle
  * AdamW's first step moves each element by about lr * g / (|g| + eps), so
    wherever |g| is not well above eps the updated parameter follows the
    rounding noise of g.  The key third of every attn.c_attn.bias,
    [C, 2C), is the standing case: its gradient is zero in exact arithmetic
    (softmax ignores a shift shared by all keys), ~1e-17 here but ~1e-8 in
    fp32, so the fp32 update there can be anything in [-lr, lr].  Compare
    "param.*" only where |grad| >> eps, or choose eps well above fp32 noise.
  * A bias on a tied head is outside the spec; if config says tie_embeddings
    and lm_head_bias and the file holds "lm_head.bias" (V), it is used.
  * Targets must lie in [0, vocab_size); there is no ignore index.
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from safetensors_io import read_safetensors, write_safetensors


# ---------------------------------------------------------------------------
# Model (nanoGPT style)
# ---------------------------------------------------------------------------

class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        self.n_head = cfg["n_head"]
        self.n_embd = C
        self.c_attn = nn.Linear(C, 3 * C, bias=True)
        self.c_proj = nn.Linear(C, C, bias=True)

    def forward(self, x):
        B, T, C = x.shape
        nh = self.n_head
        hs = C // nh
        q, k, v = self.c_attn(x).split(C, dim=2)             # each (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)              # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)
        v = v.view(B, T, nh, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v                                           # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)      # merge heads
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        self.c_fc = nn.Linear(C, 4 * C, bias=True)
        self.c_proj = nn.Linear(4 * C, C, bias=True)
        self.activation = cfg["activation"]

    def forward(self, x):
        h = self.c_fc(x)
        if self.activation == "gelu":
            h = F.gelu(h, approximate="tanh")
        else:
            h = F.relu(h)
        return self.c_proj(h)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        eps = cfg["ln_eps"]
        self.norm = cfg["norm"]
        self.ln_1 = nn.LayerNorm(C, eps=eps)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(C, eps=eps)
        self.mlp = MLP(cfg)

    def forward(self, x):
        if self.norm == "pre":
            x = x + self.attn(self.ln_1(x))
            x = x + self.mlp(self.ln_2(x))
        else:
            x = self.ln_1(x + self.attn(x))
            x = self.ln_2(x + self.mlp(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, V = cfg["n_embd"], cfg["vocab_size"]
        self.cfg = cfg
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(cfg["block_size"], C)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg["n_layer"])])
        self.ln_f = nn.LayerNorm(C, eps=cfg["ln_eps"])
        self.tied = bool(cfg["tie_embeddings"])
        if self.tied:
            self.lm_head = None
            self.lm_head_bias = (nn.Parameter(torch.zeros(V))
                                 if cfg.get("_tied_head_bias", False) else None)
        else:
            self.lm_head = nn.Linear(C, V, bias=bool(cfg["lm_head_bias"]))
            self.lm_head_bias = None

    def forward(self, idx, targets):
        B, T = idx.shape
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)[None, :, :]
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        if self.tied:
            logits = x @ self.wte.weight.t()
            if self.lm_head_bias is not None:
                logits = logits + self.lm_head_bias
        else:
            logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))
        return logits, loss


def _named_params(model):
    """Parameter name (file naming) -> nn.Parameter."""
    out = {}
    for name, p in model.named_parameters():
        if name == "lm_head_bias":
            name = "lm_head.bias"
        out[name] = p
    return out


def parameter_shapes(cfg, tied_head_bias=False):
    """Ordered dict name -> shape of the parameters the input must contain."""
    C, V, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_layer"]
    shapes = {"wte.weight": (V, C), "wpe.weight": (cfg["block_size"], C)}
    for i in range(L):
        p = "h.%d." % i
        shapes[p + "ln_1.weight"] = (C,)
        shapes[p + "ln_1.bias"] = (C,)
        shapes[p + "attn.c_attn.weight"] = (3 * C, C)
        shapes[p + "attn.c_attn.bias"] = (3 * C,)
        shapes[p + "attn.c_proj.weight"] = (C, C)
        shapes[p + "attn.c_proj.bias"] = (C,)
        shapes[p + "ln_2.weight"] = (C,)
        shapes[p + "ln_2.bias"] = (C,)
        shapes[p + "mlp.c_fc.weight"] = (4 * C, C)
        shapes[p + "mlp.c_fc.bias"] = (4 * C,)
        shapes[p + "mlp.c_proj.weight"] = (C, 4 * C)
        shapes[p + "mlp.c_proj.bias"] = (C,)
    shapes["ln_f.weight"] = (C,)
    shapes["ln_f.bias"] = (C,)
    if not cfg["tie_embeddings"]:
        shapes["lm_head.weight"] = (V, C)
        if cfg["lm_head_bias"]:
            shapes["lm_head.bias"] = (V,)
    elif tied_head_bias:
        shapes["lm_head.bias"] = (V,)
    return shapes


# ---------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------

_CFG_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "norm",
             "activation", "tie_embeddings", "lm_head_bias", "ln_eps")
_OPT_KEYS = ("lr", "beta1", "beta2", "eps", "weight_decay")


def _parse_meta(metadata):
    if "config" not in metadata or "optim" not in metadata:
        raise ValueError("input metadata must contain 'config' and 'optim'")
    cfg = json.loads(metadata["config"])
    opt = json.loads(metadata["optim"])
    for k in _CFG_KEYS:
        if k not in cfg:
            raise ValueError("config is missing %r" % k)
    for k in _OPT_KEYS:
        if k not in opt:
            raise ValueError("optim is missing %r" % k)
    for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        cfg[k] = int(cfg[k])
    cfg["ln_eps"] = float(cfg["ln_eps"])
    cfg["tie_embeddings"] = bool(cfg["tie_embeddings"])
    cfg["lm_head_bias"] = bool(cfg["lm_head_bias"])
    if cfg["norm"] not in ("pre", "post"):
        raise ValueError("config norm must be 'pre' or 'post', got %r" % cfg["norm"])
    if cfg["activation"] not in ("gelu", "relu"):
        raise ValueError("config activation must be 'gelu' or 'relu', got %r"
                         % cfg["activation"])
    if cfg["n_embd"] % cfg["n_head"] != 0:
        raise ValueError("n_embd %d is not divisible by n_head %d"
                         % (cfg["n_embd"], cfg["n_head"]))
    opt = {k: float(opt[k]) for k in _OPT_KEYS}
    return cfg, opt


def run_oracle(tensors, metadata, dtype=torch.float64):
    """Compute the oracle outputs; returns an ordered dict name -> np.float32 array."""
    cfg, opt = _parse_meta(metadata)
    # A bias on a tied head is outside the spec; accept it if it is supplied.
    tied_head_bias = cfg["tie_embeddings"] and cfg["lm_head_bias"] and "lm_head.bias" in tensors
    cfg["_tied_head_bias"] = tied_head_bias
    shapes = parameter_shapes(cfg, tied_head_bias)

    for k in ("idx", "targets"):
        if k not in tensors:
            raise ValueError("input is missing tensor %r" % k)
    idx_np, tgt_np = tensors["idx"], tensors["targets"]
    if idx_np.ndim != 2 or tgt_np.shape != idx_np.shape:
        raise ValueError("idx must be (B,T) and targets the same shape; got %r and %r"
                         % (idx_np.shape, tgt_np.shape))
    B, T = idx_np.shape
    V = cfg["vocab_size"]
    if T < 1 or T > cfg["block_size"]:
        raise ValueError("T=%d must be in [1, block_size=%d]" % (T, cfg["block_size"]))
    for k, a in (("idx", idx_np), ("targets", tgt_np)):
        if a.size and (a.min() < 0 or a.max() >= V):
            raise ValueError("%s has values outside [0, %d)" % (k, V))

    extra = sorted(set(tensors) - set(shapes) - {"idx", "targets"})
    if extra:
        raise ValueError("input has unexpected tensors: %s" % ", ".join(extra))

    torch.manual_seed(0)  # parameters are all overwritten below; this only fixes init
    model = GPT(cfg)
    params = _named_params(model)
    if set(params) != set(shapes):
        raise AssertionError("internal: model parameters %s != expected %s"
                             % (sorted(params), sorted(shapes)))
    with torch.no_grad():
        for name, shape in shapes.items():
            if name not in tensors:
                raise ValueError("input is missing parameter %r" % name)
            a = tensors[name]
            if tuple(a.shape) != tuple(shape):
                raise ValueError("parameter %r has shape %r, expected %r"
                                 % (name, tuple(a.shape), tuple(shape)))
            params[name].data = torch.from_numpy(np.array(a, dtype=np.float64)).to(dtype)
    model.to(dtype)
    model.train()  # no dropout anywhere, so train/eval are identical

    idx = torch.from_numpy(idx_np.astype(np.int64))
    targets = torch.from_numpy(tgt_np.astype(np.int64))

    logits, loss = model(idx, targets)
    loss.backward()

    names = list(shapes)
    grads = {}
    for n in names:
        g = params[n].grad
        grads[n] = torch.zeros_like(params[n]) if g is None else g.detach().clone()

    decay = [params[n] for n in names if params[n].dim() >= 2]
    no_decay = [params[n] for n in names if params[n].dim() < 2]
    groups = [{"params": decay, "weight_decay": opt["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]),
                                  eps=opt["eps"], weight_decay=opt["weight_decay"])
    optimizer.step()

    def f32(t):
        return t.detach().to(torch.float64).cpu().numpy().astype(np.float32)

    out = {"logits": f32(logits), "loss": f32(loss.reshape(1))}
    for n in names:
        out["grad." + n] = f32(grads[n])
    for n in names:
        out["param." + n] = f32(params[n])
    return out


def _setup_torch():
    threads = os.environ.get("AIGC_ORACLE_THREADS")
    torch.set_num_threads(int(threads) if threads else 1)
    torch.use_deterministic_algorithms(True)


def oracle_file(in_path, out_path, dtype_name="float64"):
    dtype = {"float64": torch.float64, "float32": torch.float32}[dtype_name]
    tensors, metadata = read_safetensors(in_path)
    out = run_oracle(tensors, metadata, dtype)
    write_safetensors(out_path, out, {"torch_version": torch.__version__,
                                      "compute_dtype": dtype_name})


# ---------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------

def _random_input(rng, cfg, opt, B, T):
    shapes = parameter_shapes(cfg)
    tensors = {
        "idx": rng.integers(0, cfg["vocab_size"], size=(B, T)).astype(np.int32),
        "targets": rng.integers(0, cfg["vocab_size"], size=(B, T)).astype(np.int32),
    }
    for name, shape in shapes.items():
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            a = 0.1 * rng.standard_normal(shape)
        else:
            a = 0.3 * rng.standard_normal(shape)
        tensors[name] = a.astype(np.float32)
    meta = {"config": json.dumps({k: cfg[k] for k in _CFG_KEYS}), "optim": json.dumps(opt)}
    return tensors, meta


def _numpy_logits(tensors, cfg):
    """Independent float64 forward pass written with explicit loops (for checking)."""
    C, nh = cfg["n_embd"], cfg["n_head"]
    hs = C // nh
    eps = cfg["ln_eps"]
    P = {k: v.astype(np.float64) for k, v in tensors.items() if k not in ("idx", "targets")}
    idx = tensors["idx"]
    B, T = idx.shape

    def ln(x, w, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w + b

    def lin(x, w, b):
        return x @ w.T + b

    def act(x):
        if cfg["activation"] == "relu":
            return np.maximum(x, 0.0)
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))

    out = np.zeros((B, T, cfg["vocab_size"]))
    for b in range(B):
        x = P["wte.weight"][idx[b]] + P["wpe.weight"][:T]
        for i in range(cfg["n_layer"]):
            p = "h.%d." % i

            def attn(z):
                qkv = lin(z, P[p + "attn.c_attn.weight"], P[p + "attn.c_attn.bias"])
                q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
                y = np.zeros((T, C))
                for h in range(nh):
                    sl = slice(h * hs, (h + 1) * hs)
                    for t in range(T):
                        s = q[t, sl] @ k[:t + 1, sl].T / math.sqrt(hs)
                        s = np.exp(s - s.max())
                        s /= s.sum()
                        y[t, sl] = s @ v[:t + 1, sl]
                return lin(y, P[p + "attn.c_proj.weight"], P[p + "attn.c_proj.bias"])

            def mlp(z):
                hdn = act(lin(z, P[p + "mlp.c_fc.weight"], P[p + "mlp.c_fc.bias"]))
                return lin(hdn, P[p + "mlp.c_proj.weight"], P[p + "mlp.c_proj.bias"])

            l1 = (P[p + "ln_1.weight"], P[p + "ln_1.bias"])
            l2 = (P[p + "ln_2.weight"], P[p + "ln_2.bias"])
            if cfg["norm"] == "pre":
                x = x + attn(ln(x, *l1))
                x = x + mlp(ln(x, *l2))
            else:
                x = ln(x + attn(x), *l1)
                x = ln(x + mlp(x), *l2)
        x = ln(x, P["ln_f.weight"], P["ln_f.bias"])
        if cfg["tie_embeddings"]:
            out[b] = x @ P["wte.weight"].T
        else:
            out[b] = x @ P["lm_head.weight"].T
            if cfg["lm_head_bias"]:
                out[b] += P["lm_head.bias"]
    return out


def _maxrel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max(), 1e-30) if b.size else 1.0
    return float(np.abs(a - b).max() / scale) if a.size else 0.0


def selftest(keep_dir=None):
    failures = []

    def check(ok, msg):
        print(("ok    " if ok else "FAIL  ") + msg)
        if not ok:
            failures.append(msg)

    base = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16, "vocab_size": 11,
            "ln_eps": 1e-5}
    variants = [
        dict(base, norm="pre", activation="gelu", tie_embeddings=True, lm_head_bias=False),
        dict(base, norm="post", activation="relu", tie_embeddings=False, lm_head_bias=True),
        dict(base, norm="pre", activation="relu", tie_embeddings=False, lm_head_bias=False),
        dict(base, norm="post", activation="gelu", tie_embeddings=True, lm_head_bias=False),
    ]
    opt = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}
    B, T = 2, 5
    rng = np.random.default_rng(1234)
    workdir = keep_dir or tempfile.mkdtemp(prefix="torch_gpt_oracle_")
    os.makedirs(workdir, exist_ok=True)
    script = os.path.abspath(__file__)

    for vi, cfg in enumerate(variants):
        tag = "[%s/%s tied=%d bias=%d]" % (cfg["norm"], cfg["activation"],
                                          cfg["tie_embeddings"], cfg["lm_head_bias"])
        tensors, meta = _random_input(rng, cfg, opt, B, T)
        in_path = os.path.join(workdir, "in%d.safetensors" % vi)
        write_safetensors(in_path, tensors, meta)

        # safetensors round trip
        rt, rt_meta = read_safetensors(in_path)
        check(set(rt) == set(tensors) and all(
            rt[k].dtype == tensors[k].dtype and np.array_equal(rt[k], tensors[k]) for k in rt)
            and rt_meta == meta, tag + " safetensors round trip")
        with open(in_path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
        check(n % 8 == 0, tag + " header length %d is a multiple of 8" % n)

        # CLI runs in both precisions
        outs = {}
        for dt in ("float64", "float32"):
            out_path = os.path.join(workdir, "out%d_%s.safetensors" % (vi, dt))
            r = subprocess.run([sys.executable, script, in_path, out_path, "--dtype", dt],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            check(r.returncode == 0, tag + " CLI --dtype %s exits 0" % dt)
            if r.returncode != 0:
                sys.stdout.write(r.stdout.decode(errors="replace"))
                continue
            outs[dt], m = read_safetensors(out_path)
            check(m.get("torch_version") == torch.__version__,
                  tag + " output metadata torch_version")
        if len(outs) != 2:
            continue
        o64, o32 = outs["float64"], outs["float32"]

        names = list(parameter_shapes(cfg))
        C = cfg["n_embd"]
        expected = (["logits", "loss"] + ["grad." + n for n in names]
                    + ["param." + n for n in names])
        check(list(o64) == expected, tag + " output tensor names/order")
        check(o64["logits"].shape == (B, T, cfg["vocab_size"]) and o64["loss"].shape == (1,)
              and all(o64[k].dtype == np.float32 for k in o64), tag + " output shapes/dtypes")
        check(all(o64["grad." + n].shape == tensors[n].shape
                  and o64["param." + n].shape == tensors[n].shape for n in names),
              tag + " grad/param shapes")

        # float64 vs float32.  AdamW's first step moves each element by about
        # lr * g / (|g| + eps), so where |g| is near eps the update follows the
        # rounding noise of g; those elements are left out of the param.* check.
        # The key part of c_attn.bias is the standing example: its gradient is
        # zero in exact arithmetic (softmax ignores a shift shared by all keys).
        worst = max((_maxrel(o32[k], o64[k]), k) for k in o64 if not k.startswith("param."))
        for n in names:
            g = o64["grad." + n]
            mask = np.abs(g.astype(np.float64)) > 1e-5
            e = _maxrel(o32["param." + n][mask], o64["param." + n][mask])
            worst = max(worst, (e, "param." + n))
        check(worst[0] < 1e-5, tag + " float32 vs float64 agree (worst rel %.2e at %s)" % worst)
        kb = max(float(np.abs(o64["grad.h.%d.attn.c_attn.bias" % i][C:2 * C]).max())
                 for i in range(cfg["n_layer"]))
        check(kb < 1e-12, tag + " key-bias gradient is ~0 in float64 (max %.1e)" % kb)

        # independent numpy forward
        ref = _numpy_logits(tensors, cfg)
        e = _maxrel(o64["logits"], ref)
        check(e < 1e-6, tag + " logits match loop-based numpy forward (rel %.2e)" % e)
        logp = ref - ref.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        ref_loss = -np.mean(np.take_along_axis(
            logp, tensors["targets"].astype(np.int64)[..., None], -1))
        e = abs(float(o64["loss"][0]) - ref_loss) / abs(ref_loss)
        check(e < 1e-6, tag + " loss matches numpy cross-entropy (rel %.2e)" % e)

        # AdamW step 1 in closed form: p*(1 - lr*wd) - lr * g / (|g| + eps)
        worst = 0.0
        for n in names:
            p0 = tensors[n].astype(np.float64)
            g = o64["grad." + n].astype(np.float64)
            wd = opt["weight_decay"] if p0.ndim >= 2 else 0.0
            exp = p0 * (1.0 - opt["lr"] * wd) - opt["lr"] * g / (np.abs(g) + opt["eps"])
            # g was rounded to f32 on output; only compare where |g| >> eps
            mask = np.abs(g) > 1e-4
            if mask.any():
                worst = max(worst, float(np.abs(o64["param." + n][mask] - exp[mask]).max()))
        check(worst < 1e-6, tag + " AdamW step matches closed form, decay only ndim>=2 "
              "(max abs %.2e)" % worst)

        # finite-difference gradient check (float64, central differences)
        t64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v)
               for k, v in tensors.items()}

        def loss64(ts):
            # float64 loss without the f32 rounding of the output file
            cfg2, _ = _parse_meta(meta)
            cfg2["_tied_head_bias"] = False
            model = GPT(cfg2).to(torch.float64)
            prm = _named_params(model)
            with torch.no_grad():
                for nm in prm:
                    prm[nm].copy_(torch.from_numpy(ts[nm]))
            _, l = model(torch.from_numpy(ts["idx"].astype(np.int64)),
                         torch.from_numpy(ts["targets"].astype(np.int64)))
            return float(l)

        fd_worst = 0.0
        h = 1e-6
        for n in names:
            flat = t64[n].reshape(-1)
            for j in rng.choice(flat.size, size=min(3, flat.size), replace=False):
                old = flat[j]
                flat[j] = old + h
                lp = loss64(t64)
                flat[j] = old - h
                lm = loss64(t64)
                flat[j] = old
                fd = (lp - lm) / (2 * h)
                g = float(o64["grad." + n].reshape(-1)[j])
                fd_worst = max(fd_worst, abs(fd - g) / max(abs(fd), 1e-3))
        check(fd_worst < 1e-4, tag + " gradients match finite differences (rel %.2e)"
              % fd_worst)

        # causality: changing idx at position t leaves logits at positions < t unchanged
        causal_ok = True
        for t in range(T):
            pert = dict(tensors)
            pert["idx"] = tensors["idx"].copy()
            pert["idx"][:, t] = (pert["idx"][:, t] + 1 + t) % cfg["vocab_size"]
            lg = run_oracle(pert, meta, torch.float64)["logits"]
            if not np.array_equal(lg[:, :t], o64["logits"][:, :t]):
                causal_ok = False
            if not np.abs(lg[:, t] - o64["logits"][:, t]).max() > 1e-6:
                causal_ok = False  # the perturbation must actually reach position t
        check(causal_ok, tag + " causality (positions < t unaffected by idx[:, t])")

        # batch independence: changing row b leaves every other row unchanged
        indep_ok = True
        for b in range(B):
            pert = dict(tensors)
            pert["idx"] = tensors["idx"].copy()
            pert["idx"][b] = rng.integers(0, cfg["vocab_size"], size=T)
            lg = run_oracle(pert, meta, torch.float64)["logits"]
            others = [r for r in range(B) if r != b]
            if not np.array_equal(lg[others], o64["logits"][others]):
                indep_ok = False
        check(indep_ok, tag + " batch rows independent")

    # bad input is rejected
    cfg = variants[0]
    tensors, meta = _random_input(rng, cfg, opt, B, T)
    for desc, mutate in [
        ("missing parameter", lambda ts: ts.pop("h.1.mlp.c_fc.bias")),
        ("unexpected tensor", lambda ts: ts.__setitem__("lm_head.weight", ts["wte.weight"])),
        ("wrong shape", lambda ts: ts.__setitem__("wpe.weight", ts["wpe.weight"][:4])),
        ("idx out of range", lambda ts: ts.__setitem__("idx", ts["idx"] + 100)),
    ]:
        ts = dict(tensors)
        mutate(ts)
        try:
            run_oracle(ts, meta, torch.float64)
            check(False, "rejects " + desc)
        except ValueError:
            check(True, "rejects " + desc)

    if keep_dir is None:
        for f in os.listdir(workdir):
            os.remove(os.path.join(workdir, f))
        os.rmdir(workdir)
    if failures:
        print("selftest FAILED: %d check(s)" % len(failures))
        return 1
    print("selftest passed")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", nargs="?", help="input .safetensors")
    ap.add_argument("output", nargs="?", help="output .safetensors")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                    help="compute dtype (default float64)")
    ap.add_argument("--selftest", action="store_true", help="run the self-check and exit")
    ap.add_argument("--keep", metavar="DIR", help="with --selftest: keep the files in DIR")
    args = ap.parse_args(argv)
    _setup_torch()
    if args.selftest:
        return selftest(args.keep)
    if not args.input or not args.output:
        ap.error("IN.safetensors and OUT.safetensors are required")
    try:
        oracle_file(args.input, args.output, args.dtype)
    except (ValueError, OSError) as e:
        print("torch_gpt_oracle: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
