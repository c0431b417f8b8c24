"""The short causal depthwise convolution before Gated DeltaNet / KDA / Mamba2 blocks:

    y[t, d] = act(bias[d] + sum_{i<W} weight[d, i] * x[t - W + 1 + i, d]),  act: None or SiLU

``short_conv`` takes [B, T, D] (fla's ShortConvolution layout); ``causal_conv1d_fn`` and
``causal_conv1d_update`` take the causal-conv1d package's [B, D, T] layout (a transposed view
for the kernel, no copy). The kernel computes in float32; bf16 / fp16 x is converted (a copy)
and y returned in x's type. States are float32 [N, D, W - 1] (the last inputs, oldest first).
"""

from __future__ import annotations

from . import _arrays as A
from ._arrays import _C


def _silu(activation):
    if activation in (None, "identity"):
        return False
    if activation in ("silu", "swish", True):
        return True
    raise ValueError(f"polyattn: argument 'activation': must be None, 'silu' or 'swish', got {activation!r}")


def _f32_act(name, x, fw):
    A.check_act(name, x, fw)
    return A.f32(name, x, fw)


def _cast_back(y, dtype, fw):
    if dtype == "float32":
        return y
    if fw == "torch":
        return y.to(getattr(A._torch(), dtype))
    if dtype == "bfloat16":
        import ml_dtypes

        return y.astype(ml_dtypes.bfloat16)
    return y.astype(dtype)


def _btd(x):
    """A [B, T, D] view of [B, D, T] memory."""
    return A.swap_last(x)


def short_conv(x, weight, bias=None, initial_state=None, output_final_state=False,
               activation=None, cu_seqlens=None, *, state_indices=None, threads=None):
    """x [B, T, D], weight [D, W]: returns (y [B, T, D], final_state [N, D, W - 1] or None).
    With state_indices [N], initial_state is a float32 pool [slots, D, W - 1] updated in place
    (and returned)."""
    fw = A.framework("x", x)
    A.check_ndim("x", x, 3, "[B, T, D]")
    dt = A.dtype_name(x)
    x32 = _f32_act("x", x, fw)
    w = A.f32("weight", weight, fw)
    A.check_ndim("weight", w, 2, "[D, W]")
    B, T, D = x.shape
    W = w.shape[1]
    cu = A.int64("cu_seqlens", cu_seqlens, fw)
    idx = A.int64("state_indices", state_indices, fw)
    N = A.nseq(B, cu)
    h0 = A.f32("initial_state", initial_state, fw)
    if idx is not None:
        if initial_state is None or A.dtype_name(initial_state) != "float32":
            raise TypeError("polyattn: argument 'initial_state': a state pool (state_indices) is "
                            "required and must be float32")
        ht = h0
    else:
        ht = A.empty(fw, (N, D, W - 1), "float32") if output_final_state else None
    y = A.empty(fw, (B, T, D), "float32")
    _C.short_conv(x32, w, A.f32("bias", bias, fw), h0, cu, idx, y, ht, _silu(activation),
                  A.threads_arg(threads))
    if idx is not None:
        ht = initial_state
    return _cast_back(y, dt, fw), ht


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None,
                     return_final_states=False, final_states_out=None, activation=None, *,
                     cu_seqlens=None, threads=None, **kwargs):
    """causal-conv1d's prefill: x [B, D, T] -> y [B, D, T] (and final_states [B, D, W - 1]
    with return_final_states=True). seq_idx is not supported: pass cu_seqlens (B == 1)."""
    if seq_idx is not None:
        raise ValueError("polyattn: argument 'seq_idx': not supported; pass cu_seqlens")
    A.framework("x", x)
    A.check_ndim("x", x, 3, "[B, D, T]")
    h0 = initial_states
    y, ht = short_conv(_btd(x), weight, bias, h0, return_final_states, activation, cu_seqlens,
                       threads=threads)
    y = _btd(y)
    if not return_final_states:
        return y
    if final_states_out is not None:
        final_states_out[...] = ht
        ht = final_states_out
    return y, ht


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None,
                         conv_state_indices=None, *, threads=None, **kwargs):
    """causal-conv1d's decode: x [B, D] or [B, D, T] new inputs, conv_state [B, D, L]
    (L >= W - 1, the last L inputs, oldest first) updated in place; returns y like x."""
    if cache_seqlens is not None:
        raise ValueError("polyattn: argument 'cache_seqlens': circular conv states are not supported")
    fw = A.framework("x", x)
    if A.framework("conv_state", conv_state) != fw or A.dtype_name(conv_state) != "float32":
        raise TypeError("polyattn: argument 'conv_state': must be a float32 array of x's "
                        "framework (updated in place)")
    squeeze = x.ndim == 2
    x3 = x[..., None] if squeeze else x
    A.check_ndim("x", x3, 3, "[B, D] or [B, D, T]")
    w = A.f32("weight", weight, fw)
    W, T, L = w.shape[-1], x3.shape[-1], conv_state.shape[-1]
    if L < W - 1:
        raise ValueError(f"polyattn: argument 'conv_state': needs at least W - 1 = {W - 1} "
                         f"columns, got shape {list(conv_state.shape)}")
    older = L - (W - 1)  # columns the kernel does not keep: shifted here
    keep = None
    if older > 0:
        if T + older <= L:  # all kept columns are in the state (decode, T = 1): no concatenation
            src = conv_state[..., T:T + older]
        else:
            cat = (A._torch().cat if fw == "torch" else __import__("numpy").concatenate)
            src = cat([conv_state, A.f32("x", x3, fw)], -1)[..., T:T + older]
        keep = src.copy() if fw == "numpy" else src.clone()
    dt = A.dtype_name(x3)
    x32 = _f32_act("x", x3, fw)
    y = A.empty(fw, (x3.shape[0], T, x3.shape[1]), "float32")
    idx = A.int64("conv_state_indices", conv_state_indices, fw)
    _C.short_conv_step(_btd(x32), w, A.f32("bias", bias, fw), idx,
                       conv_state[..., older:], y, _silu(activation), A.threads_arg(threads))
    if keep is not None:
        conv_state[..., :older] = keep
    y = _cast_back(_btd(y), dt, fw)
    return y[..., 0] if squeeze else y
