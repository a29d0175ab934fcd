#!/usr/bin/python3
"""PyTorch oracle for the aigc Llama parity tests.

Usage:
    torch_llama_oracle.py IN.safetensors OUT.safetensors [--dtype float64|float32]
    torch_llama_oracle.py --selftest [--keep DIR]

The model is a from-scratch twin of Hugging Face's LlamaForCausalLM (RMSNorm,
rotary embeddings in the "rotate_half" layout, grouped-query attention, SwiGLU
MLP, no biases but Qwen2's on q, k and v with "qkv_bias").  The oracle runs
one forward pass, the mean cross-entropy loss, the backward pass and exactly
one AdamW step (weight decay only on parameters with ndim >= 2), and writes
the logits, the loss, every gradient and every updated parameter.

Input file
    metadata "config": JSON {"arch": "llama" (optional), "n_layer", "n_head",
        "n_kv_head", "n_embd", "head_dim" (optional; 0 or absent: n_embd //
        n_head), "n_hidden", "block_size", "vocab_size", "tie_embeddings",
        "ln_eps" (RMSNorm epsilon), "rope_theta", "qkv_bias" (optional, default
        false: Qwen2's biased q, k and v projections), "rope_scaling" (optional,
        default none): {"type": "none"} | {"type": "linear", "factor"} |
        {"type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
        "original_max_position_embeddings"}}.  Other keys are ignored.
    metadata "optim": JSON {"lr", "beta1", "beta2", "eps", "weight_decay"}
    tensors: "idx" I32 (B,T), "targets" I32 (B,T) and the parameters (F32),
        named as Hugging Face's state-dict keys (parameter_shapes() below):
        model.embed_tokens.weight (V,C); per layer i, model.layers.{i}.
        self_attn.{q,k,v,o}_proj.weight (NH*HD,C) (NKV*HD,C) (NKV*HD,C)
        (C,NH*HD), mlp.{gate,up,down}_proj.weight (H,C) (H,C) (C,H),
        input_layernorm.weight (C), post_attention_layernorm.weight (C);
        model.norm.weight (C); lm_head.weight (V,C) only when not tied (tied:
        logits = x @ embed_tokens.weight^T).

Output file (all F32, converted from the compute dtype)
    "logits" (B,T,V), "loss" [1], "grad.<name>" and "param.<name>" (after the
    AdamW step) for every parameter, in parameter_shapes() order (HF's
    state-dict order); metadata "torch_version", "compute_dtype".

Numerics
  * inv_freq, the rotary angles position * inv_freq and their cos/sin are
    computed in float32 exactly as HF does, and only cos/sin are cast to the
    compute dtype (llama_inv_freq(cfg) returns that float32 inv_freq).
  * Everything else runs in the compute dtype (float64 by default).  HF's
    float32 upcasts in RMSNorm and softmax are no-ops in float32 and are not
    applied in float64.
  * loss = mean cross entropy of logits[b, t] against targets[b, t]: the
    targets are given per position (no shift as with HF's labels), and there
    is no ignore index; targets must lie in [0, vocab_size).
  * torch runs on one CPU thread unless AIGC_ORACLE_THREADS gives another count.

Safetensors files are read and written by safetensors_io.py beside this file.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from safetensors_io import read_safetensors, write_safetensors


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

_INT_KEYS = ("n_layer", "n_head", "n_kv_head", "n_embd", "n_hidden", "block_size",
             "vocab_size")
_CFG_KEYS = _INT_KEYS + ("tie_embeddings", "ln_eps", "rope_theta")
_OPT_KEYS = ("lr", "beta1", "beta2", "eps", "weight_decay")
_ROPE_KEYS = {"none": (), "linear": ("factor",),
              "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                         "original_max_position_embeddings")}


def _normalize_config(cfg):
    """Validate a config dict (or JSON string); return a clean copy with defaults filled in."""
    cfg = json.loads(cfg) if isinstance(cfg, str) else cfg
    if not isinstance(cfg, dict):
        raise ValueError("config must be a JSON object")
    if cfg.get("arch", "llama") != "llama":
        raise ValueError("config arch must be 'llama', got %r" % (cfg["arch"],))
    for k in _CFG_KEYS:
        if k not in cfg:
            raise ValueError("config is missing %r" % k)
    out = {"arch": "llama", "tie_embeddings": bool(cfg["tie_embeddings"]),
           "ln_eps": float(cfg["ln_eps"]), "rope_theta": float(cfg["rope_theta"]),
           "qkv_bias": bool(cfg.get("qkv_bias", False))}
    for k in _INT_KEYS:
        out[k] = int(cfg[k])
        if out[k] < 1:
            raise ValueError("config %s must be >= 1, got %r" % (k, cfg[k]))
    if not out["rope_theta"] > 0:
        raise ValueError("config rope_theta must be > 0, got %r" % cfg["rope_theta"])
    nh, nkv, C = out["n_head"], out["n_kv_head"], out["n_embd"]
    if nh % nkv != 0:
        raise ValueError("n_head %d is not divisible by n_kv_head %d" % (nh, nkv))
    hd = int(cfg.get("head_dim") or 0)
    if hd == 0 and C % nh != 0:
        raise ValueError("head_dim is not given and n_embd %d is not divisible by n_head %d"
                         % (C, nh))
    hd = hd or C // nh
    if hd < 0 or hd % 2 != 0:
        raise ValueError("head_dim %d must be positive and even (rotary embeddings)" % hd)
    out["head_dim"] = hd

    rs = cfg.get("rope_scaling") or {"type": "none"}
    if not isinstance(rs, dict):
        raise ValueError("config rope_scaling must be an object, got %r" % (rs,))
    typ = rs.get("type", rs.get("rope_type", "none"))   # HF also spells it rope_type
    typ = "none" if typ == "default" else typ
    if typ not in _ROPE_KEYS:
        raise ValueError("unknown rope_scaling type %r (expected 'none', 'linear' or "
                         "'llama3')" % (typ,))
    out["rope_scaling"] = {"type": typ}
    for k in _ROPE_KEYS[typ]:
        if k not in rs:
            raise ValueError("rope_scaling %r is missing %r" % (typ, k))
        out["rope_scaling"][k] = (int if k.startswith("original") else float)(rs[k])
    if typ != "none" and not out["rope_scaling"]["factor"] > 0:
        raise ValueError("rope_scaling factor must be > 0")
    if typ == "llama3" and not rs["high_freq_factor"] > rs["low_freq_factor"]:
        raise ValueError("rope_scaling 'llama3' needs high_freq_factor > low_freq_factor")
    return out


def _parse_meta(metadata):
    if "config" not in metadata or "optim" not in metadata:
        raise ValueError("input metadata must contain 'config' and 'optim'")
    cfg = _normalize_config(json.loads(metadata["config"]))
    opt = json.loads(metadata["optim"])
    for k in _OPT_KEYS:
        if k not in opt:
            raise ValueError("optim is missing %r" % k)
    return cfg, {k: float(opt[k]) for k in _OPT_KEYS}


# ---------------------------------------------------------------------------
# Rotary embedding (float32, as Hugging Face computes it)
# ---------------------------------------------------------------------------

def _inv_freq_torch(cfg):
    """float32 torch tensor (HD/2) with the same ops, in the same order, as HF."""
    cfg = _normalize_config(cfg)
    dim, base = cfg["head_dim"], cfg["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = cfg["rope_scaling"]
    if rs["type"] == "linear":
        inv_freq = inv_freq / rs["factor"]
    elif rs["type"] == "llama3":
        factor, low_freq_factor, high_freq_factor, old_context_len = (
            rs[k] for k in _ROPE_KEYS["llama3"])
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = ((old_context_len / wavelen - low_freq_factor)
                         / (high_freq_factor - low_freq_factor))
        smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        inv_freq = torch.where(is_medium, smoothed, inv_freq_llama)
    assert inv_freq.dtype == torch.float32
    return inv_freq


def llama_inv_freq(cfg):
    """The rotary inv_freq (HD/2,) as a float32 numpy array, computed as HF does.

    cfg: a config dict (or its JSON string) with the keys of the input file's
    "config" metadata; head_dim and rope_scaling may be absent."""
    return _inv_freq_torch(cfg).numpy().copy()


def rope_cos_sin(cfg, T, dtype):
    """cos, sin (T, HD): float32 angles position * inv_freq, cast to dtype at the end."""
    inv_freq = _inv_freq_torch(cfg)
    pos = torch.arange(T, dtype=torch.int64).float()
    freqs = pos[:, None] * inv_freq[None, :]            # float32 (T, HD/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


# ---------------------------------------------------------------------------
# Model (twin of HF LlamaForCausalLM; module names give HF's state-dict keys)
# ---------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, hd = cfg["n_embd"], cfg["head_dim"]
        self.nh, self.nkv, self.hd = cfg["n_head"], cfg["n_kv_head"], hd
        b = cfg["qkv_bias"]  # Qwen2: biased q, k and v projections
        self.q_proj = nn.Linear(C, self.nh * hd, bias=b)
        self.k_proj = nn.Linear(C, self.nkv * hd, bias=b)
        self.v_proj = nn.Linear(C, self.nkv * hd, bias=b)
        self.o_proj = nn.Linear(self.nh * hd, C, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        nh, nkv, hd = self.nh, self.nkv, self.hd
        q = self.q_proj(x).view(B, T, nh, hd).transpose(1, 2)    # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, nkv, hd).transpose(1, 2)   # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv                                           # head h uses kv h // rep
        k = k[:, :, None].expand(B, nkv, rep, T, hd).reshape(B, nh, T, hd)
        v = v[:, :, None].expand(B, nkv, rep, T, hd).reshape(B, nh, T, hd)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, H = cfg["n_embd"], cfg["n_hidden"]
        self.gate_proj = nn.Linear(C, H, bias=False)
        self.up_proj = nn.Linear(C, H, bias=False)
        self.down_proj = nn.Linear(H, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg["n_embd"], cfg["ln_eps"])
        self.post_attention_layernorm = RMSNorm(cfg["n_embd"], cfg["ln_eps"])

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["n_embd"])
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg["n_layer"])])
        self.norm = RMSNorm(cfg["n_embd"], cfg["ln_eps"])


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = LlamaModel(cfg)
        self.tied = cfg["tie_embeddings"]
        self.lm_head = None if self.tied else nn.Linear(cfg["n_embd"], cfg["vocab_size"],
                                                        bias=False)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.model.embed_tokens(idx)
        cos, sin = rope_cos_sin(self.cfg, T, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        x = self.model.norm(x)
        logits = x @ self.model.embed_tokens.weight.t() if self.tied else self.lm_head(x)
        loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return logits, loss


def parameter_shapes(cfg):
    """Ordered dict name -> shape of the parameters the input must contain (HF order)."""
    cfg = _normalize_config(cfg)
    C, V, H = cfg["n_embd"], cfg["vocab_size"], cfg["n_hidden"]
    qd, kvd = cfg["n_head"] * cfg["head_dim"], cfg["n_kv_head"] * cfg["head_dim"]
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(cfg["n_layer"]):
        p = "model.layers.%d." % i
        for n, shape in (("self_attn.q_proj", (qd, C)), ("self_attn.k_proj", (kvd, C)),
                         ("self_attn.v_proj", (kvd, C)), ("self_attn.o_proj", (C, qd)),
                         ("mlp.gate_proj", (H, C)), ("mlp.up_proj", (H, C)),
                         ("mlp.down_proj", (C, H)), ("input_layernorm", (C,)),
                         ("post_attention_layernorm", (C,))):
            shapes[p + n + ".weight"] = shape
            if cfg["qkv_bias"] and n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                shapes[p + n + ".bias"] = shape[:1]
    shapes["model.norm.weight"] = (C,)
    if not cfg["tie_embeddings"]:
        shapes["lm_head.weight"] = (V, C)
    return shapes


# ---------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------

def _build_model(cfg, tensors, dtype):
    """Model in dtype with every parameter taken from tensors (validated)."""
    shapes = parameter_shapes(cfg)
    torch.manual_seed(0)  # parameters are all overwritten below; this only fixes init
    model = LlamaForCausalLM(cfg)
    params = dict(model.named_parameters())
    if list(params) != list(shapes):
        raise AssertionError("internal: model parameters %s != expected %s"
                             % (list(params), list(shapes)))
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
    return model, params


def run_oracle(tensors, metadata, dtype=torch.float64):
    """Compute the oracle outputs; returns an ordered dict name -> np.float32 array."""
    cfg, opt = _parse_meta(metadata)
    shapes = parameter_shapes(cfg)
    for k in ("idx", "targets"):
        if k not in tensors:
            raise ValueError("input is missing tensor %r" % k)
    idx_np, tgt_np = tensors["idx"], tensors["targets"]
    if idx_np.ndim != 2 or tgt_np.shape != idx_np.shape:
        raise ValueError("idx must be (B,T) and targets the same shape; got %r and %r"
                         % (idx_np.shape, tgt_np.shape))
    T, V = idx_np.shape[1], cfg["vocab_size"]
    if T < 1 or T > cfg["block_size"]:
        raise ValueError("T=%d must be in [1, block_size=%d]" % (T, cfg["block_size"]))
    for k, a in (("idx", idx_np), ("targets", tgt_np)):
        if a.size and (a.min() < 0 or a.max() >= V):
            raise ValueError("%s has values outside [0, %d)" % (k, V))
    extra = sorted(set(tensors) - set(shapes) - {"idx", "targets"})
    if extra:
        raise ValueError("input has unexpected tensors: %s" % ", ".join(extra))

    model, params = _build_model(cfg, tensors, dtype)
    model.train()  # no dropout anywhere, so train/eval are identical
    logits, loss = model(torch.from_numpy(idx_np.astype(np.int64)),
                         torch.from_numpy(tgt_np.astype(np.int64)))
    loss.backward()

    names = list(shapes)
    grads = {n: torch.zeros_like(params[n]) if params[n].grad is None
             else params[n].grad.detach().clone() for n in names}

    groups = [{"params": [params[n] for n in names if params[n].dim() >= 2],
               "weight_decay": opt["weight_decay"]},
              {"params": [params[n] for n in names if params[n].dim() < 2],
               "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]),
                                  eps=opt["eps"], weight_decay=opt["weight_decay"])
    optimizer.step()

    def f32(t):
        return t.detach().to(torch.float64).cpu().numpy().astype(np.float32)

    out = {"logits": f32(logits), "loss": f32(loss.reshape(1))}
    out.update(("grad." + n, f32(grads[n])) for n in names)
    out.update(("param." + n, f32(params[n])) for n in names)
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
    V = cfg["vocab_size"]
    tensors = {"idx": rng.integers(0, V, size=(B, T)).astype(np.int32),
               "targets": rng.integers(0, V, size=(B, T)).astype(np.int32)}
    for name, shape in parameter_shapes(cfg).items():
        norm = name.endswith("norm.weight")
        a = (1.0 if norm else 0.0) + (0.1 if norm else 0.3) * rng.standard_normal(shape)
        tensors[name] = a.astype(np.float32)
    # the C++ side may add keys the oracle ignores
    meta_cfg = dict(cfg, norm="rms", activation="swiglu", dropout=0.0, lm_head_bias=False)
    return tensors, {"config": json.dumps(meta_cfg), "optim": json.dumps(opt)}


def _numpy_inv_freq(cfg):
    """Independent float32 numpy inv_freq (numpy's powf may differ from torch's by an ulp)."""
    f32 = np.float32
    hd = cfg.get("head_dim") or cfg["n_embd"] // cfg["n_head"]
    inv = f32(1.0) / (f32(cfg["rope_theta"]) ** (np.arange(0, hd, 2).astype(f32) / f32(hd)))
    rs = cfg.get("rope_scaling") or {"type": "none"}
    if rs["type"] == "linear":
        inv = inv / f32(rs["factor"])
    elif rs["type"] == "llama3":
        fac, lo, hi = f32(rs["factor"]), f32(rs["low_freq_factor"]), f32(rs["high_freq_factor"])
        ctx = f32(rs["original_max_position_embeddings"])
        out = np.empty_like(inv)
        for j in range(inv.size):
            wl = f32(2 * math.pi) / inv[j]
            if wl < ctx / hi:                          # high frequency: unchanged
                out[j] = inv[j]
            elif wl > ctx / lo:                        # low frequency: scaled down
                out[j] = inv[j] / fac
            else:                                      # medium: interpolated
                s = (ctx / wl - lo) / (hi - lo)
                out[j] = (f32(1) - s) * inv[j] / fac + s * inv[j]
        inv = out
    assert inv.dtype == np.float32
    return inv


def _numpy_logits(tensors, cfg):
    """Independent float64 forward pass written with explicit loops (for checking)."""
    C, nh, nkv = cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"]
    hd = cfg.get("head_dim") or C // nh
    half, eps = hd // 2, cfg["ln_eps"]
    P = {k: v.astype(np.float64) for k, v in tensors.items() if k not in ("idx", "targets")}
    idx = tensors["idx"]
    B, T = idx.shape
    inv = _numpy_inv_freq(cfg)
    ang = [np.float32(t) * inv for t in range(T)]    # float32 angles, cos/sin then widened
    cos = np.array([np.cos(a) for a in ang], dtype=np.float64)
    sin = np.array([np.sin(a) for a in ang], dtype=np.float64)

    def rms(x, w):
        return w * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)

    def rope(vec, t):                                # rotates the pairs (j, j + half)
        out = np.empty(hd)
        for j in range(half):
            a, b = vec[j], vec[j + half]
            out[j] = a * cos[t, j] - b * sin[t, j]
            out[j + half] = b * cos[t, j] + a * sin[t, j]
        return out

    head = P["model.embed_tokens.weight"] if cfg["tie_embeddings"] else P["lm_head.weight"]
    out = np.zeros((B, T, cfg["vocab_size"]))
    for b in range(B):
        x = P["model.embed_tokens.weight"][idx[b]]
        for i in range(cfg["n_layer"]):
            p = "model.layers.%d." % i
            h = rms(x, P[p + "input_layernorm.weight"])
            q = (h @ P[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd)
            k = (h @ P[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd)
            v = (h @ P[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
            y = np.zeros((T, nh * hd))
            for hh in range(nh):
                g = hh // (nh // nkv)
                kr = [rope(k[s, g], s) for s in range(T)]
                for t in range(T):
                    qr = rope(q[t, hh], t)
                    sc = np.array([qr @ kr[s] for s in range(t + 1)]) / math.sqrt(hd)
                    sc = np.exp(sc - sc.max())
                    y[t, hh * hd:(hh + 1) * hd] = (sc / sc.sum()) @ v[:t + 1, g]
            x = x + y @ P[p + "self_attn.o_proj.weight"].T
            h = rms(x, P[p + "post_attention_layernorm.weight"])
            gate = h @ P[p + "mlp.gate_proj.weight"].T
            up = h @ P[p + "mlp.up_proj.weight"].T
            x = x + (gate / (1.0 + np.exp(-gate)) * up) @ P[p + "mlp.down_proj.weight"].T
        out[b] = rms(x, P["model.norm.weight"]) @ head.T
    return out


def _maxrel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max(), 1e-30) if b.size else 1.0
    return float(np.abs(a - b).max() / scale) if a.size else 0.0


def _check_variant(check, rng, cfg, opt, B, T, workdir, vi):
    hd = cfg.get("head_dim") or cfg["n_embd"] // cfg["n_head"]
    tag = "[nh=%d nkv=%d hd=%d tied=%d rope=%s]" % (
        cfg["n_head"], cfg["n_kv_head"], hd, cfg["tie_embeddings"], cfg["rope_scaling"]["type"])
    tensors, meta = _random_input(rng, cfg, opt, B, T)
    in_path = os.path.join(workdir, "in%d.safetensors" % vi)
    write_safetensors(in_path, tensors, meta)

    outs = {}
    for dt in ("float64", "float32"):
        out_path = os.path.join(workdir, "out%d_%s.safetensors" % (vi, dt))
        r = subprocess.run([sys.executable, os.path.abspath(__file__), in_path, out_path,
                            "--dtype", dt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        check(r.returncode == 0, tag + " CLI --dtype %s exits 0" % dt)
        if r.returncode != 0:
            sys.stdout.write(r.stdout.decode(errors="replace"))
            return
        outs[dt], m = read_safetensors(out_path)
        check(m.get("torch_version") == torch.__version__ and m.get("compute_dtype") == dt,
              tag + " output metadata (%s)" % dt)
    o64, o32 = outs["float64"], outs["float32"]

    names = list(parameter_shapes(cfg))
    expected = ["logits", "loss"] + ["grad." + n for n in names] + ["param." + n for n in names]
    check(list(o64) == expected and list(o32) == expected, tag + " output tensor names/order")
    check(o64["logits"].shape == (B, T, cfg["vocab_size"]) and o64["loss"].shape == (1,)
          and all(o64[k].dtype == np.float32 for k in o64)
          and all(o64[p + n].shape == tensors[n].shape for n in names for p in ("grad.", "param.")),
          tag + " output shapes/dtypes")

    # float64 vs float32 (param.* only where |g| is well above AdamW's eps)
    worst = max((_maxrel(o32[k], o64[k]), k) for k in o64 if not k.startswith("param."))
    for n in names:
        mask = np.abs(o64["grad." + n].astype(np.float64)) > 1e-5
        worst = max(worst, (_maxrel(o32["param." + n][mask], o64["param." + n][mask]),
                            "param." + n))
    check(worst[0] < 1e-5, tag + " float32 vs float64 agree (worst rel %.2e at %s)" % worst)

    # independent numpy forward and loss
    ref = _numpy_logits(tensors, cfg)
    e = _maxrel(o64["logits"], ref)
    check(e < 1e-6, tag + " logits match loop-based numpy forward (rel %.2e)" % e)
    logp = ref - ref.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    ref_loss = -np.mean(np.take_along_axis(logp, tensors["targets"].astype(np.int64)[..., None],
                                           -1))
    e = abs(float(o64["loss"][0]) - ref_loss) / abs(ref_loss)
    check(e < 1e-6, tag + " loss matches numpy cross-entropy (rel %.2e)" % e)

    # AdamW step 1 in closed form: p*(1 - lr*wd) - lr * g / (|g| + eps)
    worst = 0.0
    for n in names:
        p0, g = tensors[n].astype(np.float64), o64["grad." + n].astype(np.float64)
        wd = opt["weight_decay"] if p0.ndim >= 2 else 0.0
        exp = p0 * (1.0 - opt["lr"] * wd) - opt["lr"] * g / (np.abs(g) + opt["eps"])
        mask = (np.abs(g) > 1e-4) | (g == 0)   # g was rounded to f32 on output
        worst = max(worst, float(np.abs(o64["param." + n][mask] - exp[mask]).max()))
    check(worst < 1e-6, tag + " AdamW step matches closed form, decay only ndim>=2 "
          "(max abs %.2e)" % worst)

    # finite-difference gradient check (float64, central differences)
    pcfg, _ = _parse_meta(meta)
    t64 = {k: v.astype(np.float64) for k, v in tensors.items() if k not in ("idx", "targets")}
    idx_t = torch.from_numpy(tensors["idx"].astype(np.int64))
    tgt_t = torch.from_numpy(tensors["targets"].astype(np.int64))

    def loss64():
        with torch.no_grad():
            return float(_build_model(pcfg, t64, torch.float64)[0](idx_t, tgt_t)[1])

    fd_worst, h = 0.0, 1e-6
    for n in names:
        flat = t64[n].reshape(-1)
        for j in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            old = flat[j]
            flat[j] = old + h
            lp = loss64()
            flat[j] = old - h
            lm = loss64()
            flat[j] = old
            fd = (lp - lm) / (2 * h)
            g = float(o64["grad." + n].reshape(-1)[j])
            fd_worst = max(fd_worst, abs(fd - g) / max(abs(fd), 1e-3))
    check(fd_worst < 1e-4, tag + " gradients match finite differences (rel %.2e)" % fd_worst)

    def logits_with(idx):
        return run_oracle(dict(tensors, idx=idx), meta, torch.float64)["logits"]

    # causality: changing idx at position t leaves logits at positions < t unchanged
    causal_ok = True
    for t in range(T):
        idx = tensors["idx"].copy()
        idx[:, t] = (idx[:, t] + 1 + t) % cfg["vocab_size"]
        lg = logits_with(idx)
        causal_ok &= bool(np.array_equal(lg[:, :t], o64["logits"][:, :t])
                          and np.abs(lg[:, t] - o64["logits"][:, t]).max() > 1e-6)
    check(causal_ok, tag + " causality (positions < t unaffected by idx[:, t])")

    # batch independence: changing row b leaves every other row unchanged
    indep_ok = True
    for b in range(B):
        idx = tensors["idx"].copy()
        idx[b] = rng.integers(0, cfg["vocab_size"], size=T)
        others = [r for r in range(B) if r != b]
        indep_ok &= bool(np.array_equal(logits_with(idx)[others], o64["logits"][others]))
    check(indep_ok, tag + " batch rows independent")


def selftest(keep_dir=None):
    failures = []

    def check(ok, msg):
        print(("ok    " if ok else "FAIL  ") + msg)
        if not ok:
            failures.append(msg)

    base = {"arch": "llama", "n_layer": 2, "n_embd": 16, "n_hidden": 24, "block_size": 16,
            "vocab_size": 11, "ln_eps": 1e-5}
    llama3 = {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
    variants = [
        dict(base, n_head=4, n_kv_head=4, head_dim=0, tie_embeddings=True,
             rope_theta=100.0, rope_scaling={"type": "none"}),
        dict(base, n_head=4, n_kv_head=2, tie_embeddings=False, rope_theta=100.0,
             rope_scaling={"type": "linear", "factor": 2.0}),
        dict(base, n_head=4, n_kv_head=1, head_dim=4, tie_embeddings=True, rope_theta=10000.0,
             rope_scaling=dict(llama3, original_max_position_embeddings=16)),
        dict(base, n_head=2, n_kv_head=1, head_dim=12, tie_embeddings=False,
             rope_theta=10000.0, rope_scaling=llama3),
    ]
    opt = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}
    B, T = 2, 6
    rng = np.random.default_rng(1234)
    workdir = keep_dir or tempfile.mkdtemp(prefix="torch_llama_oracle_")
    os.makedirs(workdir, exist_ok=True)

    # rotary inv_freq: HF's float32 computation vs the numpy one, and the llama3 regions
    for cfg in variants:
        inv = llama_inv_freq(cfg)
        e = _maxrel(inv, _numpy_inv_freq(cfg))
        check(inv.dtype == np.float32 and e < 1e-6, "inv_freq %s hd=%s matches numpy float32 "
              "(rel %.1e)" % (cfg["rope_scaling"]["type"], cfg.get("head_dim"), e))
    plain = llama_inv_freq(dict(variants[3], rope_scaling={"type": "none"}))
    scaled = llama_inv_freq(variants[3])
    wl = 2 * math.pi / plain
    hi, mid, lo = wl < 64, (wl >= 64) & (wl <= 256), wl > 256   # ctx/high_ff, ctx/low_ff
    check(hi.any() and mid.any() and lo.any() and np.array_equal(scaled[hi], plain[hi])
          and np.array_equal(scaled[lo], plain[lo] / np.float32(8))
          and np.all(scaled[mid] < plain[mid]) and np.all(scaled[mid] > plain[mid] / 8),
          "llama3 scaling: high freq kept, low freq / factor, medium in between")
    check(np.array_equal(llama_inv_freq(variants[1]),
                         llama_inv_freq(dict(variants[1], rope_scaling=None)) / np.float32(2)),
          "linear scaling divides inv_freq by factor")

    for vi, cfg in enumerate(variants):
        _check_variant(check, rng, cfg, opt, B, T, workdir, vi)

    # head_dim 0, absent and explicit n_embd // n_head are the same model
    tensors, meta = _random_input(rng, variants[0], opt, B, T)

    def with_cfg(drop=None, **kw):
        c2 = dict(json.loads(meta["config"]), **kw)
        c2.pop(drop, None)
        return dict(meta, config=json.dumps(c2))

    ref = run_oracle(tensors, meta, torch.float64)
    same = all(np.array_equal(run_oracle(tensors, m, torch.float64)[k], ref[k])
               for m in (with_cfg(drop="head_dim"), with_cfg(head_dim=4)) for k in ref)
    check(same, "head_dim 0 / absent / n_embd // n_head give identical outputs")

    # bad input is rejected
    k0 = "model.layers.0.self_attn.k_proj.weight"
    bad = [
        ("missing parameter", {"model.layers.1.mlp.up_proj.weight": None}, meta),
        ("unexpected tensor (lm_head when tied)",
         {"lm_head.weight": tensors["model.embed_tokens.weight"]}, meta),
        ("wrong shape", {k0: tensors[k0][:8]}, meta),
        ("idx out of range", {"idx": tensors["idx"] + 100}, meta),
        ("n_head not divisible by n_kv_head", {}, with_cfg(n_kv_head=3)),
        ("unknown rope_scaling type", {}, with_cfg(rope_scaling={"type": "yarn"})),
        ("llama3 rope_scaling missing a field", {},
         with_cfg(rope_scaling={"type": "llama3", "factor": 8.0})),
        ("odd head_dim", {}, with_cfg(head_dim=5)),
        ("missing config key", {}, with_cfg(drop="rope_theta")),
        ("wrong arch", {}, with_cfg(arch="gpt")),
    ]
    for desc, change, m in bad:
        ts = {k: v for k, v in dict(tensors, **change).items() if v is not None}
        try:
            run_oracle(ts, m, torch.float64)
            check(False, "rejects " + desc)
        except ValueError as e:
            check(True, "rejects %s (%s)" % (desc, e))

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
        print("torch_llama_oracle: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
