"""Softmax attention in the FlashAttention style (flash_attn's flash_attn_func and
flash_attn_varlen_func: names, argument order, defaults, returns), a KV cache with decode, and
sparse attention through polyattn's block selectors. Layout [B, T, HQ, D] (q) and
[B, S, HKV, D] (k, v), GQA when HQ % HKV == 0; forward only.

Where polyattn differs from flash_attn: dropout_p must be 0 (inference), window_size must be
(-1, -1) or (left, 0) (a causal window of left + 1 keys), and the varlen form needs
cu_seqlens_q == cu_seqlens_k (self-attention: keys packed with their queries). polyattn's own
keyword arguments come after flash_attn's: ``sink_tokens`` (the first n keys stay visible
through the window, StreamingLLM), ``sinks`` (a per-head sink logit [HQ] added to the
denominator only, GPT-OSS) and ``threads``.
"""

from __future__ import annotations

import numpy as np

from . import _arrays as A
from ._arrays import _C


def _window(window_size, causal):
    left, right = (int(window_size[0]), int(window_size[1]))
    if left < 0 and right < 0:
        return causal, 0
    if right > 0 or (right < 0 and left >= 0 and not causal):
        raise ValueError(
            "polyattn: argument 'window_size': only (-1, -1) and causal windows (left, 0) are "
            f"supported, got {tuple(window_size)}"
        )
    if left < 0:  # (-1, 0): causal, no window
        return True, 0
    return True, left + 1


def _check_qkv(q, k, v):
    fw = A.framework("q", q)
    A.check_act("q", q)
    A.check_act("k", k, fw)
    A.check_act("v", v, fw)
    A.same_dtype(("q", "k", "v"), (q, k, v))
    return fw


def _flash(q, k, v, cu, softmax_scale, causal, window_size, softcap, alibi_slopes, dropout_p,
           return_attn_probs, sink_tokens, sinks, threads):
    if dropout_p:
        raise ValueError("polyattn: argument 'dropout_p': must be 0 (inference kernels)")
    fw = _check_qkv(q, k, v)
    A.check_ndim("q", q, 4, "[B, T, HQ, D]")
    A.check_ndim("v", v, 4, "[B, S, HKV, Dv]")
    causal, window = _window(window_size, causal)
    B, T, HQ = q.shape[0], q.shape[1], q.shape[2]
    out = A.empty(fw, (B, T, HQ, v.shape[3]), A.dtype_name(q))
    lse = A.empty(fw, (B, T, HQ), "float32") if return_attn_probs else None
    _C.flash(
        A.raw(q),
        A.raw(k),
        A.raw(v),
        cu,
        A.f32("alibi_slopes", alibi_slopes, fw),
        A.f32("sinks", sinks, fw),
        A.raw(out),
        lse,
        None if softmax_scale is None else float(softmax_scale),
        bool(causal),
        window,
        int(sink_tokens),
        float(softcap),
        A.threads_arg(threads),
    )
    return out, lse


def flash_attn_func(
    q,
    k,
    v,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
    *,
    sink_tokens=0,
    sinks=None,
    threads=None,
):
    """softmax(scale·q·kᵀ [+ masks, modifiers]) v over [B, T, HQ, D] / [B, S, HKV, D]; causal is
    bottom-right aligned when T != S. Returns out, or (out, softmax_lse [B, HQ, T], None) with
    return_attn_probs=True (flash_attn's lse layout)."""
    out, lse = _flash(q, k, v, None, softmax_scale, causal, window_size, softcap, alibi_slopes,
                      dropout_p, return_attn_probs, sink_tokens, sinks, threads)
    if return_attn_probs:
        return out, lse.transpose(0, 2, 1) if not A.is_torch(lse) else lse.permute(0, 2, 1), None
    return out


def flash_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q=None,
    max_seqlen_k=None,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
    block_table=None,
    *,
    sink_tokens=0,
    sinks=None,
    threads=None,
):
    """The packed form: q [total, HQ, D], k, v [total, HKV, D], sequences delimited by
    cu_seqlens (int [N + 1]); returns out [total, HQ, Dv] (and softmax_lse [HQ, total], None)."""
    if block_table is not None:
        raise ValueError("polyattn: argument 'block_table': use polyattn.KVCache for paged keys")
    fw = _check_qkv(q, k, v)
    for name, x in (("q", q), ("k", k), ("v", v)):
        A.check_ndim(name, x, 3, "[total, heads, dim]")
    cq = A.int64("cu_seqlens_q", cu_seqlens_q, fw)
    ck = A.int64("cu_seqlens_k", cu_seqlens_k, fw)
    if cq.shape != ck.shape or not bool((cq == ck).all()):
        raise ValueError(
            "polyattn: argument 'cu_seqlens_k': must equal cu_seqlens_q (keys packed with their "
            "queries)"
        )
    out, lse = _flash(q[None], k[None], v[None], cq, softmax_scale, causal, window_size, softcap,
                      alibi_slopes, dropout_p, return_attn_probs, sink_tokens, sinks, threads)
    if return_attn_probs:
        return out[0], lse[0].T if not A.is_torch(lse) else lse[0].t(), None
    return out[0]


class KVCache:
    """Keys and values of ``batch`` sequences for decode: append prefill or new tokens, then
    attend one query per sequence to everything cached (split-KV flash decoding).

    dtype: element type of the stored rows, 'float32', 'bfloat16', 'float16' or 'int8'
    (quantised per token and kv head on append). page_size > 0: pages allocated as the
    sequences grow (capacity 0 = no limit); page_size 0: one contiguous buffer of ``capacity``
    tokens per sequence. Not for concurrent use from several Python threads."""

    def __init__(self, batch, kv_heads, head_dim, value_dim=None, *, capacity=0, page_size=256,
                 dtype="float32"):
        self._c = _C.KVCacheCore(int(batch), int(kv_heads), int(head_dim),
                                 int(head_dim if value_dim is None else value_dim), int(capacity),
                                 int(page_size), str(dtype))

    @property
    def batch(self):
        return self._c.batch

    def lengths(self):
        return [self._c.length(b) for b in range(self._c.batch)]

    def append(self, k, v):
        """k [B, T, HKV, D], v [B, T, HKV, Dv] (fp32 / bf16 / fp16) appended to every sequence."""
        fw = A.framework("k", k)
        A.check_act("k", k)
        A.check_act("v", v, fw)
        self._c.append(A.raw(k), A.raw(v))

    def decode(self, q, softmax_scale=None, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
               return_softmax_lse=False, *, sink_tokens=0, sinks=None, threads=None):
        """q [B, T, HQ, D]: the last T tokens of each sequence, whose keys and values were
        appended already (T = 1: decode; T > 1: speculative verify, or a chunk's prefill against
        the cached context); query t sits at key position length - T + t. Returns out
        [B, T, HQ, Dv] in q's framework and type (and lse [B, T, HQ] with
        return_softmax_lse=True)."""
        fw = A.framework("q", q)
        A.check_act("q", q)
        A.check_ndim("q", q, 4, "[B, T, HQ, D]")
        _, window = _window(window_size, True)
        B, T, HQ = q.shape[0], q.shape[1], q.shape[2]
        out = A.empty(fw, (B, T, HQ, self._c.value_dim), A.dtype_name(q))
        lse = A.empty(fw, (B, T, HQ), "float32") if return_softmax_lse else None
        self._c.decode(A.raw(q), A.f32("alibi_slopes", alibi_slopes, fw), A.f32("sinks", sinks, fw),
                       A.raw(out), lse, None if softmax_scale is None else float(softmax_scale),
                       window, int(sink_tokens), float(softcap), A.threads_arg(threads))
        return (out, lse) if return_softmax_lse else out

    def clear(self):
        self._c.clear()

    def drop_before(self, b, j):
        """Frees the pages of sequence b that only hold positions < j (sliding windows)."""
        self._c.drop_before(int(b), int(j))


def sparse_attention(
    q,
    k,
    v,
    selector="topk",
    block_size=64,
    top_k=8,
    gamma=0.9,
    max_distance=0,
    causal=True,
    softmax_scale=None,
    diagonal=True,
    sink_blocks=None,
    local_blocks=None,
    cu_seqlens=None,
    *,
    threads=None,
):
    """Block-sparse softmax attention (float32): a selector picks, per head and query block,
    the key blocks to attend to, then the flash kernel skips the rest.

    selector: 'window_sink' (StreamingLLM: sink and local blocks), 'topk' (MoBA-style top-k by
    mean-pooled q·k block scores), 'power' (PowerAttention, distances 2^i up to max_distance
    blocks), 'mass' (FlexPrefill's query-aware cumulative mass gamma), 'linear_topk' (SEA:
    linear-attention estimate, then top-k). diagonal / sink_blocks / local_blocks: blocks always
    kept (window_sink defaults to 1 sink and 4 local blocks, the others to 0)."""
    fw = _check_qkv(q, k, v)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if A.dtype_name(x) != "float32":
            raise TypeError(f"polyattn: argument '{name}': sparse_attention takes float32")
    A.check_ndim("q", q, 4, "[B, T, HQ, D]")
    A.check_ndim("v", v, 4, "[B, S, HKV, Dv]")
    ws = selector == "window_sink"
    out = A.empty(fw, (q.shape[0], q.shape[1], q.shape[2], v.shape[3]), "float32")
    _C.sparse_attention(
        str(selector), A.raw(q), A.raw(k), A.raw(v), A.int64("cu_seqlens", cu_seqlens, fw),
        A.raw(out), None if softmax_scale is None else float(softmax_scale), bool(causal),
        int(block_size), int(top_k), float(gamma), int(max_distance), bool(diagonal),
        int((1 if ws else 0) if sink_blocks is None else sink_blocks),
        int((4 if ws else 0) if local_blocks is None else local_blocks), A.threads_arg(threads))
    return out


del np
