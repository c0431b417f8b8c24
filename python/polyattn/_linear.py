"""The linear-attention family with flash-linear-attention's names, argument order, defaults and
return values (fla/ops/<op>/chunk.py and fused_recurrent.py). Inputs [B, T, H, K] (q, k),
[B, T, HV, V] (v, HV = G·H grouped value heads); states fp32 [N, HV, K, V] (or [N, HV, V, K]
with ``state_v_first=True``); ``cu_seqlens`` packs N sequences along T with B == 1.

Forward only (no autograd): torch tensors are read through DLPack without their graph.
polyattn's own keyword arguments, after fla's: ``threads`` (default: every CPU) and, on the
gated delta rule and KDA functions, ``state_indices`` (an int64 [N] vector: ``initial_state`` is
then a float32 state pool [slots, HV, K, V] that sequence n reads from and writes back to, slot
``state_indices[n]``, in place; the pool is returned as the final state).

Raw gates (Gated DeltaNet, KDA): with ``use_gate_in_kernel=True`` and
``use_beta_sigmoid_in_kernel=True`` (and A_log, dt_bias given, allow_neg_eigval off) the gate and
beta are computed in the kernel by the fused C++ policies (policies/fused_gates.hpp), nothing
materialised; the other combinations compute g / beta here (``_gdn_gate``, ``_kda_gate``,
``_beta``) with the same functions, so both paths agree within fp32 rounding.
"""

from __future__ import annotations

import math

import numpy as np

from . import _arrays as A
from ._arrays import _C


def _head_first(kw):
    if kw.get("head_first", False):
        raise DeprecationWarning(
            "head_first is deprecated (as in fla): pass [B, T, H, D] tensors; head-first memory "
            "is fine as a transposed view, x.transpose(1, 2), without a copy"
        )


def _run(
    kind,
    recurrent,
    q,
    k,
    v,
    *,
    g=None,
    gk=None,
    g_gamma=None,
    beta=None,
    scale=None,
    initial_state=None,
    output_final_state=False,
    qk_l2norm=False,
    state_v_first=False,
    cu_seqlens=None,
    state_indices=None,
    threads=None,
    z=False,
    initial_z=None,
    a=None,
    graw=None,
    b=None,
    A_log=None,
    dt_bias=None,
    lower_bound=None,
):
    fw = A.framework("q", q)
    A.check_act("q", q)
    A.check_act("k", k, fw)
    A.check_act("v", v, fw)
    A.same_dtype(("q", "k", "v"), (q, k, v))
    A.check_ndim("q", q, 4, "[B, T, H, K]")
    A.check_ndim("k", k, 4, "[B, T, H, K]")
    A.check_ndim("v", v, 4, "[B, T, HV, V]")
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    cu = A.int64("cu_seqlens", cu_seqlens, fw)
    N = A.nseq(B, cu, "q", q)
    idx = A.int64("state_indices", state_indices, fw)
    h0 = initial_state
    if h0 is not None:
        if idx is not None and A.dtype_name(h0) != "float32":
            raise TypeError(
                "polyattn: argument 'initial_state': a state pool (state_indices) is updated "
                "in place and must be float32"
            )
        h0 = A.f32("initial_state", h0, fw)
        if state_v_first:
            h0 = A.swap_last(h0)
    o = A.empty(fw, (B, T, HV, V), A.dtype_name(q))
    ht = None
    if idx is not None:
        if h0 is None:
            raise ValueError(
                "polyattn: argument 'state_indices': needs initial_state, the state pool "
                "[slots, HV, K, V] it indexes"
            )
        ht = h0  # the pool, updated in place
    elif output_final_state:
        ht = A.empty(fw, (N, HV, V, K) if state_v_first else (N, HV, K, V), "float32")
    ht_view = A.swap_last(ht) if (state_v_first and idx is None and ht is not None) else ht
    zt = A.empty(fw, (N, HV, K), "float32") if z else None
    _C.linear(
        kind,
        recurrent,
        A.raw(q),
        A.raw(k),
        A.raw(v),
        g,
        gk,
        g_gamma,
        beta,
        h0,
        initial_z,
        cu,
        idx,
        a,
        graw,
        b,
        A_log,
        dt_bias,
        A.raw(o),
        ht_view,
        zt,
        None if scale is None else float(scale),
        bool(qk_l2norm),
        None if lower_bound is None else float(lower_bound),
        A.threads_arg(threads),
    )
    if idx is not None:
        ht = initial_state
    return o, ht, zt


def _beta(beta, fw, sigmoid, neg):
    beta = A.f32("beta", beta, fw)
    if sigmoid:
        beta = A.sigmoid(beta)
    if neg:
        beta = beta * 2.0
    return beta


def _gdn_gate(g, A_log, dt_bias, fw):
    """Gated DeltaNet's in-kernel gate: g = -exp(A_log[h]) * softplus(g + dt_bias[h]) (fp32)."""
    if A_log is None:
        raise ValueError("polyattn: argument 'A_log': is required with use_gate_in_kernel=True")
    g = A.f32("g", g, fw)
    a = A.f32("A_log", A_log, fw).reshape(-1)
    if dt_bias is not None:
        g = g + A.f32("dt_bias", dt_bias, fw).reshape(-1)
    return -A.exp(a) * A.softplus(g)


def _kda_gate(g, A_log, dt_bias, lower_bound, fw):
    """KDA's in-kernel gate per key channel (fla kda/gate.py): -exp(A_log[h]) * softplus(g +
    dt_bias[h, k]), or lower_bound * sigmoid(exp(A_log[h]) * (g + dt_bias[h, k]))."""
    if A_log is None:
        raise ValueError("polyattn: argument 'A_log': is required with use_gate_in_kernel=True")
    g = A.f32("g", g, fw)
    HV, K = g.shape[-2], g.shape[-1]
    a = A.f32("A_log", A_log, fw).reshape(HV, 1)
    if dt_bias is not None:
        g = g + A.f32("dt_bias", dt_bias, fw).reshape(HV, K)
    if lower_bound is None:
        return -A.exp(a) * A.softplus(g)
    return float(lower_bound) * A.sigmoid(A.exp(a) * g)


def _fused(use_gate, use_beta_sigmoid, allow_neg_eigval, A_log, dt_bias, fw, *others):
    """The raw gate and beta's sigmoid both requested in-kernel, with what the fused C++
    policies read (A_log, dt_bias; no extra gate): the kwargs of _run that make the kernel
    compute g and beta itself (policies/fused_gates.hpp), nothing materialised. None: compute
    them here (_gdn_gate / _kda_gate / _beta) and pass them materialised."""
    if not (use_gate and use_beta_sigmoid) or allow_neg_eigval or A_log is None \
            or dt_bias is None or any(o is not None for o in others):
        return None
    return {"A_log": A.f32("A_log", A_log, fw).reshape(-1),
            "dt_bias": A.f32("dt_bias", dt_bias, fw).reshape(-1)}


def _state_out(ht, output_final_state, state_indices):
    return ht if (output_final_state or state_indices is not None) else None


def chunk_gated_delta_rule(
    q,
    k,
    v,
    g,
    beta,
    scale=None,
    initial_state=None,
    output_final_state=False,
    use_qk_l2norm_in_kernel=False,
    use_beta_sigmoid_in_kernel=False,
    allow_neg_eigval=False,
    state_v_first=False,
    cu_seqlens=None,
    cu_seqlens_cpu=None,
    chunk_indices=None,
    cp_context=None,
    *,
    threads=None,
    state_indices=None,
    **kwargs,
):
    """Gated DeltaNet (Qwen3-Next, Qwen3.5): returns (o, final_state or None).

    g [B, T, HV] log-space decay (with ``use_gate_in_kernel=True`` and ``A_log`` / ``dt_bias``
    in kwargs, the raw gate a: g = -exp(A_log) * softplus(a + dt_bias)); beta [B, T, HV]."""
    _head_first(kwargs)
    if cp_context is not None:
        raise ValueError("polyattn: argument 'cp_context': context parallelism is not supported")
    fw = A.framework("q", q)
    use_gate = kwargs.get("use_gate_in_kernel", False)
    fused = _fused(use_gate, use_beta_sigmoid_in_kernel, allow_neg_eigval, kwargs.get("A_log"),
                   kwargs.get("dt_bias"), fw)
    if fused is not None:
        o, ht, _ = _run(
            "gated_delta_rule_fused", False, q, k, v, a=A.f32("g", g, fw),
            b=A.f32("beta", beta, fw), scale=scale, initial_state=initial_state,
            output_final_state=output_final_state, qk_l2norm=use_qk_l2norm_in_kernel,
            state_v_first=state_v_first, cu_seqlens=cu_seqlens, state_indices=state_indices,
            threads=threads, **fused)
        return o, _state_out(ht, output_final_state, state_indices)
    if use_gate:
        g = _gdn_gate(g, kwargs.get("A_log"), kwargs.get("dt_bias"), fw)
    o, ht, _ = _run(
        "gated_delta_rule",
        False,
        q,
        k,
        v,
        g=A.f32("g", g, fw),
        beta=_beta(beta, fw, use_beta_sigmoid_in_kernel, allow_neg_eigval),
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        qk_l2norm=use_qk_l2norm_in_kernel,
        state_v_first=state_v_first,
        cu_seqlens=cu_seqlens,
        state_indices=state_indices,
        threads=threads,
    )
    return o, _state_out(ht, output_final_state, state_indices)


def fused_recurrent_gated_delta_rule(
    q,
    k,
    v,
    g=None,
    gk=None,
    gv=None,
    beta=None,
    scale=None,
    initial_state=None,
    output_final_state=False,
    use_qk_l2norm_in_kernel=False,
    use_gate_in_kernel=False,
    A_log=None,
    dt_bias=None,
    use_beta_sigmoid_in_kernel=False,
    allow_neg_eigval=False,
    state_v_first=False,
    cu_seqlens=None,
    *,
    threads=None,
    state_indices=None,
    **kwargs,
):
    """The token-by-token form (decode): returns (o, final_state or None). g [B, T, HV] scalar
    and/or gk [B, T, HV, K] per-key-channel log decays; beta=None means ones."""
    _head_first(kwargs)
    fw = A.framework("q", q)
    if gv is not None:
        raise ValueError("polyattn: argument 'gv': per-value-channel gates are not supported")
    if use_gate_in_kernel:
        if g is None:
            raise ValueError("polyattn: argument 'g': is required with use_gate_in_kernel=True")
        fused = _fused(True, use_beta_sigmoid_in_kernel and beta is not None, allow_neg_eigval,
                       A_log, dt_bias, fw, gk)
        if fused is not None:
            o, ht, _ = _run(
                "gated_delta_rule_fused", True, q, k, v, a=A.f32("g", g, fw),
                b=A.f32("beta", beta, fw), scale=scale, initial_state=initial_state,
                output_final_state=output_final_state, qk_l2norm=use_qk_l2norm_in_kernel,
                state_v_first=state_v_first, cu_seqlens=cu_seqlens,
                state_indices=state_indices, threads=threads, **fused)
            return o, _state_out(ht, output_final_state, state_indices)
        g = _gdn_gate(g, A_log, dt_bias, fw)
    if beta is None:
        beta = A.zeros(fw, v.shape[:3]) + 1.0
    g = A.f32("g", g, fw)
    gk = A.f32("gk", gk, fw)
    if g is not None and gk is not None:
        gk, g = gk + g[..., None], None
    kind = "gated_delta_rule" if g is not None else ("kda" if gk is not None else "delta_rule")
    o, ht, _ = _run(
        kind,
        True,
        q,
        k,
        v,
        g=g,
        gk=gk,
        beta=_beta(beta, fw, use_beta_sigmoid_in_kernel, allow_neg_eigval),
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        qk_l2norm=use_qk_l2norm_in_kernel,
        state_v_first=state_v_first,
        cu_seqlens=cu_seqlens,
        state_indices=state_indices,
        threads=threads,
    )
    return o, _state_out(ht, output_final_state, state_indices)


def _kda_fused(recurrent, q, k, v, g, beta, fused, lower_bound, scale, initial_state,
               output_final_state, qk_l2norm, state_v_first, cu_seqlens, state_indices,
               threads, fw):
    """KDA with the gate (plain, or bounded with lower_bound) and beta's sigmoid in-kernel."""
    o, ht, _ = _run(
        "kda_fused", recurrent, q, k, v, graw=A.f32("g", g, fw), b=A.f32("beta", beta, fw),
        scale=scale, initial_state=initial_state, output_final_state=output_final_state,
        qk_l2norm=qk_l2norm, state_v_first=state_v_first, cu_seqlens=cu_seqlens,
        state_indices=state_indices, threads=threads, lower_bound=lower_bound, **fused)
    return o, _state_out(ht, output_final_state, state_indices)


def chunk_kda(
    q,
    k,
    v,
    g,
    beta,
    scale=None,
    initial_state=None,
    output_final_state=False,
    use_qk_l2norm_in_kernel=False,
    use_gate_in_kernel=False,
    use_beta_sigmoid_in_kernel=False,
    allow_neg_eigval=False,
    safe_gate=False,
    lower_bound=None,
    disable_recompute=False,
    return_intermediate_states=False,
    state_v_first=False,
    cu_seqlens=None,
    cu_seqlens_cpu=None,
    cp_context=None,
    *,
    threads=None,
    state_indices=None,
    **kwargs,
):
    """Kimi Delta Attention: returns (o, final_state or None). g [B, T, HV, K] per key channel
    (raw with ``use_gate_in_kernel=True`` and ``A_log`` [HV], ``dt_bias`` [HV*K] in kwargs)."""
    _head_first(kwargs)
    if return_intermediate_states:
        raise ValueError(
            "polyattn: argument 'return_intermediate_states': is not supported (inference only)"
        )
    if cp_context is not None:
        raise ValueError("polyattn: argument 'cp_context': context parallelism is not supported")
    fw = A.framework("q", q)
    fused = _fused(use_gate_in_kernel, use_beta_sigmoid_in_kernel, allow_neg_eigval,
                   kwargs.get("A_log"), kwargs.get("dt_bias"), fw)
    if fused is not None:
        return _kda_fused(False, q, k, v, g, beta, fused, lower_bound, scale, initial_state,
                          output_final_state, use_qk_l2norm_in_kernel, state_v_first,
                          cu_seqlens, state_indices, threads, fw)
    if use_gate_in_kernel:
        g = _kda_gate(g, kwargs.get("A_log"), kwargs.get("dt_bias"), lower_bound, fw)
    o, ht, _ = _run(
        "kda",
        False,
        q,
        k,
        v,
        gk=A.f32("g", g, fw),
        beta=_beta(beta, fw, use_beta_sigmoid_in_kernel, allow_neg_eigval),
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        qk_l2norm=use_qk_l2norm_in_kernel,
        state_v_first=state_v_first,
        cu_seqlens=cu_seqlens,
        state_indices=state_indices,
        threads=threads,
    )
    return o, _state_out(ht, output_final_state, state_indices)


def fused_recurrent_kda(
    q,
    k,
    v,
    g,
    beta,
    A_log=None,
    dt_bias=None,
    scale=None,
    initial_state=None,
    output_final_state=False,
    use_qk_l2norm_in_kernel=False,
    use_gate_in_kernel=False,
    use_beta_sigmoid_in_kernel=False,
    allow_neg_eigval=False,
    lower_bound=None,
    state_v_first=False,
    cu_seqlens=None,
    *,
    threads=None,
    state_indices=None,
    **kwargs,
):
    """KDA token by token (decode): returns (o, final_state or None)."""
    _head_first(kwargs)
    fw = A.framework("q", q)
    fused = _fused(use_gate_in_kernel, use_beta_sigmoid_in_kernel, allow_neg_eigval, A_log,
                   dt_bias, fw)
    if fused is not None:
        return _kda_fused(True, q, k, v, g, beta, fused, lower_bound, scale, initial_state,
                          output_final_state, use_qk_l2norm_in_kernel, state_v_first,
                          cu_seqlens, state_indices, threads, fw)
    if use_gate_in_kernel:
        g = _kda_gate(g, A_log, dt_bias, lower_bound, fw)
    o, ht, _ = _run(
        "kda",
        True,
        q,
        k,
        v,
        gk=A.f32("g", g, fw),
        beta=_beta(beta, fw, use_beta_sigmoid_in_kernel, allow_neg_eigval),
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        qk_l2norm=use_qk_l2norm_in_kernel,
        state_v_first=state_v_first,
        cu_seqlens=cu_seqlens,
        state_indices=state_indices,
        threads=threads,
    )
    return o, _state_out(ht, output_final_state, state_indices)


def chunk_gla(
    q,
    k,
    v,
    g,
    scale=None,
    initial_state=None,
    output_final_state=False,
    state_v_first=False,
    cu_seqlens=None,
    cu_seqlens_cpu=None,
    *,
    threads=None,
):
    """Gated linear attention: g [B, T, HV, K] log decays per key channel; (o, state or None)."""
    fw = A.framework("q", q)
    o, ht, _ = _run(
        "gla",
        False,
        q,
        k,
        v,
        gk=A.f32("g", g, fw),
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        state_v_first=state_v_first,
        cu_seqlens=cu_seqlens,
        threads=threads,
    )
    return o, ht


def chunk_simple_gla(
    q,
    k,
    v,
    g=None,
    g_gamma=None,
    scale=None,
    initial_state=None,
    output_final_state=False,
    state_v_first=False,
    cu_seqlens=None,
    cu_seqlens_cpu=None,
    *,
    threads=None,
    **kwargs,
):
    """Scalar-gated linear attention (also Mamba2's SSD): g [B, T, HV] or g_gamma [HV]."""
    _head_first(kwargs)
    fw = A.framework("q", q)
    if (g is None) == (g_gamma is None):
        raise ValueError(
            "polyattn: argument 'g': exactly one of g [B, T, HV] and g_gamma [HV] is required"
        )
    o, ht, _ = _run(
        "simple_gla" if g is not None else "constant",
        False,
        q,
        k,
        v,
        g=A.f32("g", g, fw),
        g_gamma=A.f32("g_gamma", g_gamma, fw),
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        state_v_first=state_v_first,
        cu_seqlens=cu_seqlens,
        threads=threads,
    )
    return o, ht


def retention_g_gamma(heads: int):
    """RetNet's per-head log decays log(1 - 2^(-5-h)), float32 [heads]."""
    return np.log1p(-np.exp2(-5.0 - np.arange(heads, dtype=np.float64))).astype(np.float32)


def chunk_retention(
    q,
    k,
    v,
    scale=None,
    initial_state=None,
    output_final_state=False,
    cu_seqlens=None,
    *,
    threads=None,
    **kwargs,
):
    """RetNet: simple_gla with g_gamma = log(1 - 2^(-5-h)); returns (o, final_state or None)."""
    _head_first(kwargs)
    fw = A.framework("q", q)
    A.check_ndim("v", v, 4, "[B, T, HV, V]")
    gamma = A.as_tensor_like(retention_g_gamma(v.shape[2]), fw)
    o, ht, _ = _run(
        "constant",
        False,
        q,
        k,
        v,
        g_gamma=gamma,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        threads=threads,
    )
    return o, ht


def chunk_delta_rule(
    q,
    k,
    v,
    beta,
    scale=None,
    initial_state=None,
    output_final_state=False,
    use_qk_l2norm_in_kernel=False,
    cu_seqlens=None,
    cu_seqlens_cpu=None,
    *,
    threads=None,
    **kwargs,
):
    """DeltaNet: beta [B, T, HV]; returns (o, final_state or None)."""
    _head_first(kwargs)
    fw = A.framework("q", q)
    o, ht, _ = _run(
        "delta_rule",
        False,
        q,
        k,
        v,
        beta=A.f32("beta", beta, fw),
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        qk_l2norm=use_qk_l2norm_in_kernel,
        cu_seqlens=cu_seqlens,
        threads=threads,
    )
    return o, ht


def chunk_linear_attn(
    q,
    k,
    v,
    scale=None,
    initial_state=None,
    output_final_state=False,
    normalize=True,
    cu_seqlens=None,
    *,
    threads=None,
):
    """Linear attention. normalize=False: (o, final_state or None). normalize=True (fla's
    default): o / ((scale·q)·z_t + 1e-10) with z_t the running sum of k, and the state is the
    tuple (kv or None, z [N, 1, HV, K]), returned even without output_final_state;
    ``initial_state`` may then be such a tuple too."""
    fw = A.framework("q", q)
    h0, z0 = initial_state, None
    if isinstance(initial_state, (tuple, list)):
        h0, z0 = initial_state
    if z0 is not None:
        z0 = A.f32("initial_state", z0, fw)
        z0 = z0.reshape(z0.shape[0], z0.shape[-2], z0.shape[-1])
        if not normalize:
            raise ValueError("polyattn: argument 'initial_state': z given but normalize=False")
    o, ht, zt = _run(
        "linear_attn_normalized" if normalize else "linear_attn",
        False,
        q,
        k,
        v,
        scale=scale,
        initial_state=h0,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        threads=threads,
        z=normalize,
        initial_z=z0,
    )
    if normalize:
        return o, (ht, zt.reshape(zt.shape[0], 1, zt.shape[1], zt.shape[2]))
    return o, ht


fused_chunk_linear_attn = chunk_linear_attn


def parallel_based(q, k, v, scale=None, use_norm=True, *, threads=None, **kwargs):
    """Based (Taylor-2 linear attention, fla's parallel_based): returns o only.
    Scores 1 + s + s²/2 with s = scale·q·k (scale default K^-0.5); use_norm divides by their
    running sum + 1e-6."""
    _head_first(kwargs)
    A.check_ndim("q", q, 4, "[B, T, H, K]")
    K = q.shape[-1]
    if scale is not None and not math.isclose(float(scale), K**-0.5, rel_tol=0, abs_tol=0):
        # the kernel's map carries K^-0.5 itself: fold the ratio into q (a copy)
        q = q * float(scale) * math.sqrt(K)
    o, _, _ = _run(
        "based" if use_norm else "based_unnormalized",
        False,
        q,
        k,
        v,
        threads=threads,
    )
    return o


# fla's short aliases
chunk_gdn = chunk_gated_delta_rule
fused_recurrent_gdn = fused_recurrent_gated_delta_rule
