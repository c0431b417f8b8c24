#!/usr/bin/env python3
"""examples/port_check.py — checking a C++ port against the PyTorch model with polyattn-run.

The workflow (docs/conventions.md §11): dump one attention layer's inputs from the PyTorch model as float32
.npy files in the fla / transformers layout ([B, T, H, D], gates in log space), run the same
layer through polyattn-run, and compare polyattn's outputs with the model's.

    python3 port_check.py --polyattn-run build/release/examples/polyattn-run

For each op below the script writes random inputs, gets the "model" outputs, runs
`polyattn-run OP --in DIR --out DIR`, and prints the relative RMSE of o (and of the final state
ht for the recurrent op). The model side is flash-linear-attention / PyTorch when they are
installed (fla.ops.gated_delta_rule.chunk_gated_delta_rule and
torch.nn.functional.scaled_dot_product_attention); otherwise a direct NumPy transcription of the
same formulas stands in for it — replace `model_*` with your own layer's forward to check a port.
Exit status 0 when every comparison is below the docs/conventions.md §9 bound (1e-5).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

BOUND = 1e-5


def rel_rmse(x, y):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return float(np.sqrt(np.mean((x - y) ** 2)) / np.sqrt(np.mean(y ** 2)))


def l2norm(x):
    return x / np.sqrt((x.astype(np.float64) ** 2).sum(-1, keepdims=True) + 1e-6)


# ---- the "model" side: fla / PyTorch if present, else the formulas in NumPy -------------------

def model_gated_delta_rule(q, k, v, g, beta):
    """o, ht of gated DeltaNet with in-kernel q/k L2 norm, scale K^-0.5 (fla conventions)."""
    try:
        import torch
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
        t = lambda a: torch.from_numpy(a)
        o, ht = chunk_gated_delta_rule(t(q), t(k), t(v), t(g), t(beta), output_final_state=True,
                                       use_qk_l2norm_in_kernel=True)
        return o.float().numpy(), ht.float().numpy(), "fla"
    except ImportError:
        pass
    B, T, H, K = q.shape
    V = v.shape[-1]
    qn, kn = l2norm(q) * K ** -0.5, l2norm(k)
    o = np.zeros((B, T, H, V))
    S = np.zeros((B, H, K, V))
    for t in range(T):
        S *= np.exp(g[:, t])[:, :, None, None].astype(np.float64)          # decay
        kt = kn[:, t]                                                      # [B, H, K]
        pred = np.einsum("bhk,bhkv->bhv", kt, S)                           # S^T k
        u = beta[:, t][:, :, None] * (v[:, t] - pred)                      # delta
        S += np.einsum("bhk,bhv->bhkv", kt, u)                             # rank-1 update
        o[:, t] = np.einsum("bhk,bhkv->bhv", qn[:, t], S)                  # S^T (scale q)
    return o, S, "numpy"


def model_softmax(q, k, v):
    """Causal softmax attention with GQA, scale D^-0.5 (transformers' sdpa with enable_gqa)."""
    try:
        import torch
        import torch.nn.functional as F
        tq, tk, tv = (torch.from_numpy(a).transpose(1, 2) for a in (q, k, v))
        o = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True, enable_gqa=True)
        return o.transpose(1, 2).float().numpy(), "torch"
    except (ImportError, TypeError):
        pass
    B, T, HQ, D = q.shape
    G = HQ // k.shape[2]
    o = np.zeros(q.shape[:3] + (v.shape[-1],))
    for h in range(HQ):
        s = np.einsum("btd,bsd->bts", q[:, :, h], k[:, :, h // G]).astype(np.float64) * D ** -0.5
        s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        o[:, :, h] = np.einsum("bts,bsd->btd", p / p.sum(-1, keepdims=True), v[:, :, h // G])
    return o, "numpy"


# ---- polyattn side -----------------------------------------------------------------------------

def run_polyattn(exe, op, inputs, flags=()):
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in"), os.path.join(d, "out")
        os.mkdir(src)
        for name, a in inputs.items():
            np.save(os.path.join(src, name + ".npy"), np.ascontiguousarray(a, np.float32))
        cmd = [exe, op, "--in", src, "--out", dst, *flags]
        subprocess.run(cmd, check=True)
        return {f[:-4]: np.load(os.path.join(dst, f)) for f in os.listdir(dst)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--polyattn-run", required=True, help="path of the polyattn-run binary")
    ap.add_argument("--T", type=int, default=100)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    ok = True

    B, T, H, K, V = 2, a.T, 4, 32, 32
    q, k, v = f32(B, T, H, K), f32(B, T, H, K), f32(B, T, H, V)
    g = (-0.1 * rng.random((B, T, H))).astype(np.float32)
    beta = rng.random((B, T, H)).astype(np.float32)
    o_ref, ht_ref, side = model_gated_delta_rule(q, k, v, g, beta)
    out = run_polyattn(a.polyattn_run, "gated_delta_rule",
                       dict(q=q, k=k, v=v, g=g, beta=beta), ["--qk-l2norm"])
    e_o, e_h = rel_rmse(out["o"], o_ref), rel_rmse(out["ht"], ht_ref)
    ok &= e_o < BOUND and e_h < BOUND
    print(f"gated_delta_rule vs {side}: o {e_o:.2e}, ht {e_h:.2e}")

    HQ, HKV, D = 8, 2, 64
    q, k, v = f32(B, T, HQ, D), f32(B, T, HKV, D), f32(B, T, HKV, D)
    o_ref, side = model_softmax(q, k, v)
    out = run_polyattn(a.polyattn_run, "softmax", dict(q=q, k=k, v=v), ["--threads", "2"])
    e_o = rel_rmse(out["o"], o_ref)
    ok &= e_o < BOUND
    print(f"softmax (causal, GQA {HQ}/{HKV}) vs {side}: o {e_o:.2e}")

    print("port check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
