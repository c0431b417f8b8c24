"""Mamba2 (SSD) with mamba_ssm's names, argument order, defaults and return values
(mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined and
mamba_ssm.ops.triton.selective_state_update.selective_state_update), on polyattn::Mamba2:

    dt_t = clamp(softplus(dt_t + dt_bias[h]), dt_limit)   (softplus when dt_softplus)
    h_t  = exp(dt_t A[h]) h_{t-1} + dt_t x_t B_t^T        state [B, H, P, N] per head
    y_t  = (h_t C_t + D x_t) * silu(z_t)

x [B, T, H, P], dt [B, T, H], A [H], B and C [B, T, G, N] (G groups of H / G heads), D [H] or
[H, P], z like x. The time step is computed in the kernel (no dt tensor is materialised); D and
z are one pass over y after the scan. Activations may be float32, bfloat16 or float16 (the
kernel reads float32: others are converted, a copy); states are float32. Forward only.
"""

from __future__ import annotations

import numpy as np

from . import _arrays as _A
from ._arrays import _C
from ._conv import _cast_back


def _act32(name, x, fw):
    _A.check_act(name, x, fw)
    return _A.f32(name, x, fw)


def _tied(name, t, axes, layout):
    """t with the given axes dropped, where t is constant along them: mamba_ssm's tied forms
    (transformers passes Mamba2's per-head dt, A, D and dt_bias expanded with stride 0)."""
    keep = tuple(slice(0, 1) if i in axes else slice(None) for i in range(t.ndim))
    first = t[keep]
    strides = t.stride() if _A.is_torch(t) else tuple(s // t.itemsize for s in t.strides)
    if not all(t.shape[a] == 1 or strides[a] == 0 for a in axes) and not bool((t == first).all()):
        raise ValueError(
            f"polyattn: argument '{name}': varies along the broadcast axes of {layout}; "
            "Mamba2 takes one value per head"
        )
    return first.reshape([n for i, n in enumerate(t.shape) if i not in axes])


def _seq_idx_to_cu(seq_idx, B, T, fw):
    """mamba_ssm's seq_idx [1, T] (sequence number per token, non-decreasing) as cu_seqlens."""
    s = seq_idx.detach().cpu().numpy() if _A.is_torch(seq_idx) else np.asarray(seq_idx)
    if B != 1 or s.shape != (1, T):
        raise ValueError(
            f"polyattn: argument 'seq_idx': needs batch size 1 and shape [1, T] = [1, {T}] "
            f"(sequences packed along T), got {list(s.shape)} with x's batch {B}; or pass "
            "cu_seqlens"
        )
    step = np.diff(s[0].astype(np.int64))
    if (step < 0).any():
        raise ValueError("polyattn: argument 'seq_idx': must be non-decreasing")
    cu = np.concatenate([[0], np.flatnonzero(step) + 1, [T]]).astype(np.int64)
    return _A.as_tensor_like(cu, fw)


def _packed(seq_idx, cu_seqlens, initial_states, B, T, fw, varlen_states=False):
    """(cu_seqlens as int64 or None, initial states) from cu_seqlens and / or seq_idx; with
    seq_idx, a [1, ...] initial state is the first sequence's and the others start from zeros
    (mamba_ssm). varlen_states (return_varlen_states) needs one of them."""
    cu = _A.int64("cu_seqlens", cu_seqlens, fw)
    if varlen_states and cu is None and seq_idx is None:
        raise ValueError(
            "polyattn: argument 'return_varlen_states': needs cu_seqlens (packed sequences)"
        )
    if seq_idx is None:
        return cu, initial_states
    from_idx = _seq_idx_to_cu(seq_idx, B, T, fw)
    if cu is None:
        cu = from_idx
    elif not np.array_equal(np.asarray(cu), np.asarray(from_idx)):
        raise ValueError("polyattn: argument 'seq_idx': describes other sequences than cu_seqlens")
    N = int(cu.shape[0]) - 1
    h0 = initial_states
    if h0 is not None and h0.ndim == 4 and h0.shape[0] == 1 and N > 1:
        first = _A.f32("initial_states", h0, fw)
        h0 = _A.zeros(fw, (N,) + tuple(h0.shape[1:]))
        h0[:1] = first
    return cu, h0


def mamba_chunk_scan_combined(
    x,
    dt,
    A,
    B,
    C,
    chunk_size=None,
    D=None,
    z=None,
    dt_bias=None,
    initial_states=None,
    seq_idx=None,
    cu_seqlens=None,
    dt_softplus=False,
    dt_limit=(0.0, float("inf")),
    return_final_states=False,
    return_varlen_states=False,
    *,
    threads=None,
):
    """Mamba2's prefill: returns y [B, T, H, P] (x's type), or (y, final_states) with
    return_final_states, (y, varlen_states) with return_varlen_states, (y, final_states,
    varlen_states) with both. States float32 [., H, P, N].

    chunk_size is accepted and not needed (Chunked<64> gives the recurrence's numbers up to fp32
    rounding). Packed sequences (batch 1): cu_seqlens [N + 1] separates them (seq_idx [1, T],
    mamba_ssm's per-token sequence number, is mapped onto it); initial_states is then
    [N, H, P, N_state], one per sequence (with seq_idx only, a [1, ...] initial state is the first
    sequence's, as in mamba_ssm), final_states the last sequence's [1, H, P, N_state] and
    varlen_states every sequence's [N, H, P, N_state]."""
    fw = _A.framework("x", x)
    _A.check_ndim("x", x, 4, "[B, T, H, P]")
    _A.check_ndim("dt", dt, 3, "[B, T, H]")
    _A.check_ndim("A", A, 1, "[H]")
    _A.check_ndim("B", B, 4, "[B, T, G, N]")
    _A.check_ndim("C", C, 4, "[B, T, G, N]")
    Bsz, T, H, P = x.shape
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape[:2]) != (Bsz, T) or tuple(t.shape) != tuple(B.shape):
            raise ValueError(
                f"polyattn: argument '{name}': expected shape [B, T, G, N] with B, T of x "
                f"{list(x.shape)} (B and C alike), got {list(t.shape)}"
            )
    cu, h0 = _packed(seq_idx, cu_seqlens, initial_states, Bsz, T, fw, return_varlen_states)
    N = _A.nseq(Bsz, cu, "x", x)
    h0 = _A.f32("initial_states", h0, fw)
    lo, hi = dt_limit
    ht = None
    if return_final_states or return_varlen_states:
        ht = _A.empty(fw, (N, H, P, B.shape[3]), "float32")
    y = _A.empty(fw, (Bsz, T, H, P), "float32")
    _C.mamba2(
        _act32("x", x, fw),
        _A.f32("dt", dt, fw),
        _A.f32("A", A, fw),
        _act32("B", B, fw),
        _act32("C", C, fw),
        _A.f32("D", D, fw),
        None if z is None else _act32("z", z, fw),
        _A.f32("dt_bias", dt_bias, fw),
        h0,
        cu,
        None,
        y,
        ht,
        False,
        bool(dt_softplus),
        float(lo),
        float(hi),
        _A.threads_arg(threads),
    )
    y = _cast_back(y, _A.dtype_name(x), fw)
    out = (y,)
    if return_final_states:
        out += (ht if cu is None else ht[N - 1:],)
    if return_varlen_states:
        out += (ht,)
    return out[0] if len(out) == 1 else out


def selective_state_update(
    state,
    x,
    dt,
    A,
    B,
    C,
    D=None,
    z=None,
    dt_bias=None,
    dt_softplus=False,
    state_batch_indices=None,
    *,
    threads=None,
):
    """Mamba2's decode step (mamba_ssm's selective_state_update, Mamba2's tied shapes): state
    float32 [B, H, P, N] updated in place (with state_batch_indices [B], a pool
    [slots, H, P, N], sequence b at slot state_batch_indices[b]); x [B, H, P]; dt [B, H] or
    [B, H, P] constant along P; A [H] or [H, P, N] constant along P, N; dt_bias and D [H] or
    [H, P] (dt_bias constant along P); B and C [B, G, N]; z like x. Returns out [B, H, P] in x's
    type. Values that vary along the tied axes (Mamba1's per-channel dt / A) raise ValueError."""
    fw = _A.framework("x", x)
    if _A.framework("state", state) != fw or _A.dtype_name(state) != "float32":
        raise TypeError(
            "polyattn: argument 'state': must be a float32 array of x's framework (updated "
            "in place)"
        )
    _A.check_ndim("state", state, 4, "[B, H, P, N] (Mamba2's; the Mamba1 form is not supported)")
    _A.check_ndim("x", x, 3, "[B, H, P]")
    _A.check_ndim("B", B, 3, "[B, G, N]")
    _A.check_ndim("C", C, 3, "[B, G, N]")
    if dt.ndim == 3:
        dt = _tied("dt", dt, (2,), "[B, H, P]")
    _A.check_ndim("dt", dt, 2, "[B, H] or [B, H, P]")
    if A.ndim == 3:
        A = _tied("A", A, (1, 2), "[H, P, N]")
    _A.check_ndim("A", A, 1, "[H] or [H, P, N]")
    if dt_bias is not None and dt_bias.ndim == 2:
        dt_bias = _tied("dt_bias", dt_bias, (1,), "[H, P]")
    if z is not None:
        _A.check_ndim("z", z, 3, "[B, H, P]")
    Bsz, H, P = x.shape
    idx = _A.int64("state_batch_indices", state_batch_indices, fw)
    y = _A.empty(fw, (Bsz, 1, H, P), "float32")
    _C.mamba2(
        _act32("x", x, fw)[:, None],
        _A.f32("dt", dt, fw)[:, None],
        _A.f32("A", A, fw),
        _act32("B", B, fw)[:, None],
        _act32("C", C, fw)[:, None],
        _A.f32("D", D, fw),
        None if z is None else _act32("z", z, fw)[:, None],
        _A.f32("dt_bias", dt_bias, fw),
        None,
        None,
        idx,
        y,
        state,
        True,
        bool(dt_softplus),
        0.0,
        float("inf"),
        _A.threads_arg(threads),
    )
    return _cast_back(y[:, 0], _A.dtype_name(x), fw)
