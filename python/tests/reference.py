"""Float64 numpy references written from the formulas (SPEC §1-§3, docs/conventions.md), with no
code shared with polyattn: the token-by-token recurrence, materialised softmax, the direct
convolution sum."""

import numpy as np


def rrmse(x, y):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.sqrt(np.mean((x - y) ** 2)) / np.sqrt(np.mean(y**2)))


def f64(x):
    return np.asarray(x).astype(np.float64)


def l2n(x):
    return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-6)


def linear_recurrence(q, k, v, g=None, gk=None, g_gamma=None, beta=None, scale=None, h0=None,
                      l2=False, normalize_eps=None, z0=None, cu=None):
    """S <- decay(S); u = v (additive) or beta (v - S^T k) (delta); S += k u^T;
    o = S^T (scale q) [/ (scale q . z + eps)]. Returns (o, S_final [N,HV,K,V], z [N,HV,K])."""
    q, k, v = f64(q), f64(k), f64(v)
    B, T, H, K = q.shape
    HV, V = v.shape[2:]
    G = HV // H
    scale = K**-0.5 if scale is None else scale
    seqs = [(b, 0, T) for b in range(B)] if cu is None else [
        (0, int(cu[n]), int(cu[n + 1])) for n in range(len(cu) - 1)]
    o = np.zeros((B, T, HV, V))
    N = len(seqs)
    S_out = np.zeros((N, HV, K, V))
    z_out = np.zeros((N, HV, K))
    for n, (b, t0, t1) in enumerate(seqs):
        for hv in range(HV):
            h = hv // G
            S = np.zeros((K, V)) if h0 is None else f64(h0)[n, hv].copy()
            z = np.zeros(K) if z0 is None else f64(z0)[n, hv].copy()
            for t in range(t0, t1):
                qt, kt = q[b, t, h], k[b, t, h]
                if l2:
                    qt, kt = l2n(qt), l2n(kt)
                if g is not None:
                    S *= np.exp(f64(g)[b, t, hv])
                if gk is not None:
                    S *= np.exp(f64(gk)[b, t, hv])[:, None]
                if g_gamma is not None:
                    S *= np.exp(f64(g_gamma)[hv])
                if beta is not None:
                    u = f64(beta)[b, t, hv] * (v[b, t, hv] - S.T @ kt)
                else:
                    u = v[b, t, hv]
                S += np.outer(kt, u)
                z += kt
                ot = S.T @ (scale * qt)
                if normalize_eps is not None:
                    ot = ot / ((scale * qt) @ z + normalize_eps)
                o[b, t, hv] = ot
            S_out[n, hv] = S
            z_out[n, hv] = z
    return o, S_out, z_out


def based(q, k, v, scale=None, use_norm=True):
    """fla's parallel_based: scores 1 + s + s^2/2, s = (scale q) . k, causal; / (sum + 1e-6)."""
    q, k, v = f64(q), f64(k), f64(v)
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    o = np.zeros(v.shape)
    mask = np.tril(np.ones((T, T)))
    for b in range(B):
        for h in range(H):
            s = (scale * q[b, :, h]) @ k[b, :, h].T
            a = (1 + s + 0.5 * s * s) * mask
            ot = a @ v[b, :, h]
            if use_norm:
                ot = ot / (a.sum(-1, keepdims=True) + 1e-6)
            o[b, :, h] = ot
    return o


def softmax_attention(q, k, v, scale=None, causal=False, window=0, softcap=0.0, sinks=None):
    """Materialised softmax; query i sits at key position p = i + S - T; window w keeps keys
    (p - w, p]; sinks: a per-head logit added to the denominator. Returns (o, lse [B,T,HQ])."""
    q, k, v = f64(q), f64(k), f64(v)
    B, T, HQ, D = q.shape
    S, HKV = k.shape[1], k.shape[2]
    G = HQ // HKV
    scale = D**-0.5 if scale is None else scale
    o = np.zeros((B, T, HQ, v.shape[3]))
    lse = np.zeros((B, T, HQ))
    p = np.arange(T)[:, None] + S - T
    j = np.arange(S)[None, :]
    vis = np.ones((T, S), bool)
    if causal or window:
        vis &= j <= p
    if window:
        vis &= j > p - window
    for b in range(B):
        for h in range(HQ):
            s = scale * q[b, :, h] @ k[b, :, h // G].T
            if softcap:
                s = softcap * np.tanh(s / softcap)
            s = np.where(vis, s, -np.inf)
            m = s.max(-1, keepdims=True)
            if sinks is not None:
                m = np.maximum(m, f64(sinks)[h])
            e = np.exp(s - m)
            den = e.sum(-1, keepdims=True)
            if sinks is not None:
                den = den + np.exp(f64(sinks)[h] - m)
            o[b, :, h] = (e / den) @ v[b, :, h // G]
            lse[b, :, h] = (np.log(den) + m)[:, 0]
    return o, lse


def short_conv(x, w, bias=None, h0=None, silu=False):
    """x [B,T,D], w [D,W]: y[t,d] = act(bias[d] + sum_i w[d,i] x[t-W+1+i,d]), history from h0
    [B,D,W-1] (zeros without). Returns (y, last W-1 inputs [B,D,W-1])."""
    x, w = f64(x), f64(w)
    B, T, D = x.shape
    W = w.shape[1]
    hist = np.zeros((B, W - 1, D)) if h0 is None else np.swapaxes(f64(h0), 1, 2)
    xx = np.concatenate([hist, x], 1)
    y = np.zeros((B, T, D))
    for t in range(T):
        y[:, t] = (xx[:, t:t + W] * w.T[None]).sum(1)
    if bias is not None:
        y += f64(bias)
    if silu:
        y = y / (1 + np.exp(-y))
    return y, np.swapaxes(xx[:, T:], 1, 2) if W > 1 else np.zeros((B, D, 0))


def mamba2_ssd(x, dt, A, B, C, D=None, z=None, dt_bias=None, softplus=False,
               dt_limit=(0.0, np.inf), h0=None, cu=None):
    """Mamba2's SSD token by token in its own layout, state h [H, P, N] per sequence:
    d = clamp(softplus(dt + dt_bias), dt_limit); h = exp(d A) h + d x B^T; y = h C + D x;
    y *= silu(z). x [B,T,H,P], dt [B,T,H], A [H], B and C [B,T,G,N], D [H] or [H,P].
    Returns (y, final states [Nseq,H,P,N])."""
    x, dt, A, B, C = f64(x), f64(dt), f64(A), f64(B), f64(C)
    Bsz, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    grp = np.arange(H) // (H // G)
    Dm = None if D is None else np.broadcast_to(f64(D).reshape(H, -1), (H, P))
    seqs = [(b, 0, T) for b in range(Bsz)] if cu is None else [
        (0, int(cu[n]), int(cu[n + 1])) for n in range(len(cu) - 1)]
    y = np.zeros((Bsz, T, H, P))
    h_out = np.zeros((len(seqs), H, P, N))
    for n, (b, t0, t1) in enumerate(seqs):
        h = np.zeros((H, P, N)) if h0 is None else f64(h0)[n].copy()
        for t in range(t0, t1):
            d = dt[b, t] + (0 if dt_bias is None else f64(dt_bias))
            if softplus:
                d = np.where(d > 20, d, np.log1p(np.exp(np.minimum(d, 20))))
            d = np.clip(d, dt_limit[0], dt_limit[1])
            Bt, Ct = B[b, t][grp], C[b, t][grp]  # [H, N]
            h = np.exp(d * A)[:, None, None] * h + (d[:, None] * x[b, t])[:, :, None] * Bt[:, None, :]
            yt = np.einsum("hpn,hn->hp", h, Ct)
            if Dm is not None:
                yt = yt + Dm * x[b, t]
            if z is not None:
                zt = f64(z)[b, t]
                yt = yt * zt / (1 + np.exp(-zt))
            y[b, t] = yt
        h_out[n] = h
    return y, h_out
