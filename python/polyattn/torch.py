"""polyattn for PyTorch: the package's functions as torch custom ops (CPU kernels plus fake-tensor
implementations, so torch.compile and torch.library.opcheck see them), fla-named wrappers over
those ops, and ``patch_transformers()``, which makes Hugging Face transformers' Qwen3-Next /
Qwen3.5 (Gated DeltaNet) and Kimi Linear (KDA) layers use polyattn on CPU instead of their
plain-PyTorch fallbacks, and Mamba2's mixers run their SSD scan on polyattn. Needs torch >= 2.4
(torch.library.custom_op).

Ops (namespace ``polyattn``, all CPU, forward only): chunk_gated_delta_rule,
fused_recurrent_gated_delta_rule, chunk_kda, fused_recurrent_kda, chunk_gla, chunk_simple_gla,
chunk_delta_rule, chunk_linear_attn, parallel_based, mamba_chunk_scan_combined,
selective_state_update (mutates state), flash_attn, causal_conv1d, causal_conv1d_update (mutates
conv_state). Custom ops cannot return None, so the ops return an
empty float32 tensor where fla returns None; the wrappers here map it back.

The wrappers go through the registered op only where its machinery is needed (torch.compile /
export tracing, tensor subclasses such as fake tensors, inputs that require grad); plain eager
calls on CPU tensors run the op's implementation directly. The dispatcher's checks cost ~75 us
per call on a 16-core Xeon, as much as a whole GDN decode step (32 value heads of 128).
"""

# (no "from __future__ import annotations": torch.library.custom_op reads the annotations)
from typing import Optional

import torch

import polyattn as _pa
from polyattn import _arrays as _A

Tensor = torch.Tensor
_NS = "polyattn"


_IMPLS = {}

# Kernels run on torch's own OpenMP worker threads rather than on polyattn's pool: inside a model
# the two sets of workers would compete for the cores (polyattn.set_thread_runtime). A torch
# without a loaded OpenMP runtime keeps the pool.
try:
    _pa.set_thread_runtime("openmp")
except RuntimeError:
    pass


def _custom_op(name, **kwargs):
    """torch.library.custom_op(polyattn::name), keeping the plain function for _call."""
    def register(fn):
        _IMPLS[name] = fn
        return torch.library.custom_op(f"{_NS}::{name}", device_types="cpu", **kwargs)(fn)
    return register


def _direct(args) -> bool:
    """True when a call may skip the op's dispatcher: eager (not compiling or exporting), every
    tensor a plain CPU tensor, none needing a gradient (the ops have no autograd formula)."""
    if torch.compiler.is_compiling():
        return False
    grad = torch.is_grad_enabled()
    for t in args:
        if isinstance(t, Tensor) and (type(t) is not Tensor or t.device.type != "cpu"
                                      or (grad and t.requires_grad)):
            return False
    return True


def _call(name, *args):
    """The op `name` on args: its implementation directly where _direct allows, else the op."""
    if _direct(args):
        return _IMPLS[name](*args)
    return getattr(torch.ops.polyattn, name)(*args)


def _none_state(t: Tensor) -> Tensor:
    return t.new_empty((0,), dtype=torch.float32)


def _state_or_empty(ht, like):
    return _none_state(like) if ht is None else ht


def _nseq(q: Tensor, cu_seqlens: Optional[Tensor]) -> int:
    return q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1


def _fake_linear(q, v, cu_seqlens, output_final_state, K=None):
    B, T, H, Kq = q.shape
    HV, V = v.shape[2], v.shape[3]
    K = Kq if K is None else K
    o = q.new_empty((B, T, HV, V))
    if output_final_state:
        return o, q.new_empty((_nseq(q, cu_seqlens), HV, K, V), dtype=torch.float32)
    return o, _none_state(q)


# ---- linear family ----------------------------------------------------------------------------


@_custom_op("chunk_gated_delta_rule", mutates_args=())
def _op_chunk_gdn(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                  scale: Optional[float], initial_state: Optional[Tensor],
                  output_final_state: bool, use_qk_l2norm_in_kernel: bool,
                  cu_seqlens: Optional[Tensor], threads: int) -> tuple[Tensor, Tensor]:
    o, ht = _pa.chunk_gated_delta_rule(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                                       output_final_state=output_final_state,
                                       use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                                       cu_seqlens=cu_seqlens, threads=threads or None)
    return o, _state_or_empty(ht, q)


@_op_chunk_gdn.register_fake
def _(q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
      cu_seqlens, threads):
    return _fake_linear(q, v, cu_seqlens, output_final_state)


@_custom_op("fused_recurrent_gated_delta_rule", mutates_args=())
def _op_recurrent_gdn(q: Tensor, k: Tensor, v: Tensor, g: Optional[Tensor], gk: Optional[Tensor],
                      beta: Optional[Tensor], scale: Optional[float],
                      initial_state: Optional[Tensor], output_final_state: bool,
                      use_qk_l2norm_in_kernel: bool, cu_seqlens: Optional[Tensor],
                      threads: int) -> tuple[Tensor, Tensor]:
    o, ht = _pa.fused_recurrent_gated_delta_rule(
        q, k, v, g=g, gk=gk, beta=beta, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        cu_seqlens=cu_seqlens, threads=threads or None)
    return o, _state_or_empty(ht, q)


@_op_recurrent_gdn.register_fake
def _(q, k, v, g, gk, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
      cu_seqlens, threads):
    return _fake_linear(q, v, cu_seqlens, output_final_state)


@_custom_op("chunk_kda", mutates_args=())
def _op_chunk_kda(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                  scale: Optional[float], initial_state: Optional[Tensor],
                  output_final_state: bool, use_qk_l2norm_in_kernel: bool,
                  cu_seqlens: Optional[Tensor], recurrent: bool,
                  threads: int) -> tuple[Tensor, Tensor]:
    fn = _pa.fused_recurrent_kda if recurrent else _pa.chunk_kda
    o, ht = fn(q, k, v, g, beta, scale=scale, initial_state=initial_state,
               output_final_state=output_final_state,
               use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, cu_seqlens=cu_seqlens,
               threads=threads or None)
    return o, _state_or_empty(ht, q)


@_op_chunk_kda.register_fake
def _(q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
      cu_seqlens, recurrent, threads):
    return _fake_linear(q, v, cu_seqlens, output_final_state)


@_custom_op("chunk_gla", mutates_args=())
def _op_chunk_gla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: Optional[float],
                  initial_state: Optional[Tensor], output_final_state: bool,
                  cu_seqlens: Optional[Tensor], threads: int) -> tuple[Tensor, Tensor]:
    o, ht = _pa.chunk_gla(q, k, v, g, scale=scale, initial_state=initial_state,
                          output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                          threads=threads or None)
    return o, _state_or_empty(ht, q)


@_op_chunk_gla.register_fake
def _(q, k, v, g, scale, initial_state, output_final_state, cu_seqlens, threads):
    return _fake_linear(q, v, cu_seqlens, output_final_state)


@_custom_op("chunk_simple_gla", mutates_args=())
def _op_chunk_simple_gla(q: Tensor, k: Tensor, v: Tensor, g: Optional[Tensor],
                         g_gamma: Optional[Tensor], scale: Optional[float],
                         initial_state: Optional[Tensor], output_final_state: bool,
                         cu_seqlens: Optional[Tensor], threads: int) -> tuple[Tensor, Tensor]:
    o, ht = _pa.chunk_simple_gla(q, k, v, g=g, g_gamma=g_gamma, scale=scale,
                                 initial_state=initial_state,
                                 output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                                 threads=threads or None)
    return o, _state_or_empty(ht, q)


@_op_chunk_simple_gla.register_fake
def _(q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens, threads):
    return _fake_linear(q, v, cu_seqlens, output_final_state)


@_custom_op("chunk_delta_rule", mutates_args=())
def _op_chunk_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: Optional[float],
                         initial_state: Optional[Tensor], output_final_state: bool,
                         use_qk_l2norm_in_kernel: bool, cu_seqlens: Optional[Tensor],
                         threads: int) -> tuple[Tensor, Tensor]:
    o, ht = _pa.chunk_delta_rule(q, k, v, beta, scale=scale, initial_state=initial_state,
                                 output_final_state=output_final_state,
                                 use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                                 cu_seqlens=cu_seqlens, threads=threads or None)
    return o, _state_or_empty(ht, q)


@_op_chunk_delta_rule.register_fake
def _(q, k, v, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
      cu_seqlens, threads):
    return _fake_linear(q, v, cu_seqlens, output_final_state)


@_custom_op("chunk_linear_attn", mutates_args=())
def _op_chunk_linear_attn(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float],
                          initial_state: Optional[Tensor], output_final_state: bool,
                          normalize: bool, cu_seqlens: Optional[Tensor],
                          threads: int) -> tuple[Tensor, Tensor, Tensor]:
    o, st = _pa.chunk_linear_attn(q, k, v, scale=scale, initial_state=initial_state,
                                  output_final_state=output_final_state, normalize=normalize,
                                  cu_seqlens=cu_seqlens, threads=threads or None)
    if normalize:
        ht, z = st
        return o, _state_or_empty(ht, q), z
    return o, _state_or_empty(st, q), _none_state(q)


@_op_chunk_linear_attn.register_fake
def _(q, k, v, scale, initial_state, output_final_state, normalize, cu_seqlens, threads):
    o, ht = _fake_linear(q, v, cu_seqlens, output_final_state)
    N, HV, K = _nseq(q, cu_seqlens), v.shape[2], q.shape[3]
    z = q.new_empty((N, 1, HV, K), dtype=torch.float32) if normalize else _none_state(q)
    return o, ht, z


@_custom_op("parallel_based", mutates_args=())
def _op_parallel_based(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float], use_norm: bool,
                       threads: int) -> Tensor:
    return _pa.parallel_based(q, k, v, scale=scale, use_norm=use_norm, threads=threads or None)


@_op_parallel_based.register_fake
def _(q, k, v, scale, use_norm, threads):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2], v.shape[3]))


# ---- Mamba2 -----------------------------------------------------------------------------------


@_custom_op("mamba_chunk_scan_combined", mutates_args=())
def _op_mamba_chunk_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         D: Optional[Tensor], z: Optional[Tensor], dt_bias: Optional[Tensor],
                         initial_states: Optional[Tensor], cu_seqlens: Optional[Tensor],
                         dt_softplus: bool, dt_min: float, dt_max: float, return_states: bool,
                         threads: int) -> tuple[Tensor, Tensor]:
    """y [B, T, H, P] (x's type) and every sequence's final state [N, H, P, N_state] (empty
    without return_states)."""
    varlen = cu_seqlens is not None
    out = _pa.mamba_chunk_scan_combined(
        x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states,
        cu_seqlens=cu_seqlens, dt_softplus=dt_softplus, dt_limit=(dt_min, dt_max),
        return_final_states=return_states and not varlen,
        return_varlen_states=return_states and varlen, threads=threads or None)
    return out if return_states else (out, _none_state(x))


@_op_mamba_chunk_scan.register_fake
def _(x, dt, A, B, C, D, z, dt_bias, initial_states, cu_seqlens, dt_softplus, dt_min, dt_max,
      return_states, threads):
    if not return_states:
        return x.new_empty(x.shape), _none_state(x)
    N = _nseq(x, cu_seqlens)
    return x.new_empty(x.shape), x.new_empty((N, x.shape[2], x.shape[3], B.shape[3]),
                                             dtype=torch.float32)


@_custom_op("selective_state_update", mutates_args=("state",))
def _op_selective_state_update(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor,
                               C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
                               dt_bias: Optional[Tensor], dt_softplus: bool,
                               state_batch_indices: Optional[Tensor], threads: int) -> Tensor:
    """state float32 [B, H, P, N] (or a pool with state_batch_indices) updated in place; out
    [B, H, P] in x's type."""
    out = _pa.selective_state_update(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias,
                                     dt_softplus=dt_softplus,
                                     state_batch_indices=state_batch_indices,
                                     threads=threads or None)
    return out.contiguous()


@_op_selective_state_update.register_fake
def _(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices, threads):
    return x.new_empty(x.shape)


# ---- softmax and short convolution ------------------------------------------------------------


@_custom_op("flash_attn", mutates_args=())
def _op_flash_attn(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Optional[Tensor],
                   softmax_scale: Optional[float], causal: bool, window_left: int,
                   softcap: float, alibi_slopes: Optional[Tensor], sinks: Optional[Tensor],
                   sink_tokens: int, threads: int) -> tuple[Tensor, Tensor]:
    from polyattn._softmax import _flash

    cu = None if cu_seqlens is None else _A.int64("cu_seqlens", cu_seqlens, "torch")
    out, lse = _flash(q, k, v, cu, softmax_scale, causal, (window_left, 0 if window_left >= 0
                      else -1), softcap, alibi_slopes, 0.0, True, sink_tokens, sinks,
                      threads or None)
    return out, lse


@_op_flash_attn.register_fake
def _(q, k, v, cu_seqlens, softmax_scale, causal, window_left, softcap, alibi_slopes, sinks,
      sink_tokens, threads):
    B, T, HQ = q.shape[:3]
    return q.new_empty((B, T, HQ, v.shape[3])), q.new_empty((B, T, HQ), dtype=torch.float32)


@_custom_op("causal_conv1d", mutates_args=())
def _op_causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                      initial_states: Optional[Tensor], silu: bool,
                      cu_seqlens: Optional[Tensor], threads: int) -> tuple[Tensor, Tensor]:
    """x [B, D, T] -> (y [B, D, T] contiguous, final states [N, D, W - 1])."""
    y, ht = _pa.short_conv(x.transpose(1, 2), weight, bias, initial_states, True,
                           "silu" if silu else None, cu_seqlens, threads=threads or None)
    return y.transpose(1, 2).contiguous(), ht


@_op_causal_conv1d.register_fake
def _(x, weight, bias, initial_states, silu, cu_seqlens, threads):
    N = x.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
    return x.new_empty(x.shape), x.new_empty((N, x.shape[1], weight.shape[-1] - 1),
                                             dtype=torch.float32)


@_custom_op("causal_conv1d_update", mutates_args=("conv_state",))
def _op_causal_conv1d_update(x: Tensor, conv_state: Tensor, weight: Tensor,
                             bias: Optional[Tensor], silu: bool, threads: int) -> Tensor:
    """x [B, D, T] new inputs, conv_state [B, D, L >= W - 1] updated in place; y [B, D, T]."""
    y = _pa.causal_conv1d_update(x, conv_state, weight, bias, "silu" if silu else None,
                                 threads=threads or None)
    return y.contiguous()


@_op_causal_conv1d_update.register_fake
def _(x, conv_state, weight, bias, silu, threads):
    return x.new_empty(x.shape)


# ---- fla-named wrappers over the ops ----------------------------------------------------------


def _opt_state(ht: Tensor):
    return None if ht.numel() == 0 else ht


def _threads(threads):
    return 0 if threads is None else int(threads)


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None,
                           output_final_state=False, use_qk_l2norm_in_kernel=False,
                           use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                           state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None,
                           chunk_indices=None, cp_context=None, *, threads=None, **kwargs):
    """fla's chunk_gated_delta_rule through the custom op (gate options computed in torch)."""
    if kwargs.get("use_gate_in_kernel", False):
        g = _pa._linear._gdn_gate(g, kwargs.get("A_log"), kwargs.get("dt_bias"), "torch")
    beta = _pa._linear._beta(beta, "torch", use_beta_sigmoid_in_kernel, allow_neg_eigval)
    if state_v_first and initial_state is not None:
        initial_state = initial_state.transpose(-1, -2)
    o, ht = _call(
        "chunk_gated_delta_rule", q, k, v, g.float(), beta, scale, initial_state,
        output_final_state, use_qk_l2norm_in_kernel, cu_seqlens, _threads(threads))
    ht = _opt_state(ht)
    if state_v_first and ht is not None:
        ht = ht.transpose(-1, -2).contiguous()
    return o, ht


def fused_recurrent_gated_delta_rule(q, k, v, g=None, gk=None, gv=None, beta=None, scale=None,
                                     initial_state=None, output_final_state=False,
                                     use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                                     A_log=None, dt_bias=None, use_beta_sigmoid_in_kernel=False,
                                     allow_neg_eigval=False, state_v_first=False,
                                     cu_seqlens=None, *, threads=None, **kwargs):
    if gv is not None:
        raise ValueError("polyattn: argument 'gv': per-value-channel gates are not supported")
    if use_gate_in_kernel:
        g = _pa._linear._gdn_gate(g, A_log, dt_bias, "torch")
    if beta is not None:
        beta = _pa._linear._beta(beta, "torch", use_beta_sigmoid_in_kernel, allow_neg_eigval)
    if state_v_first and initial_state is not None:
        initial_state = initial_state.transpose(-1, -2)
    o, ht = _call(
        "fused_recurrent_gated_delta_rule", q, k, v, None if g is None else g.float(),
        None if gk is None else gk.float(), beta, scale, initial_state, output_final_state,
        use_qk_l2norm_in_kernel, cu_seqlens, _threads(threads))
    ht = _opt_state(ht)
    if state_v_first and ht is not None:
        ht = ht.transpose(-1, -2).contiguous()
    return o, ht


def _kda(recurrent, q, k, v, g, beta, scale, initial_state, output_final_state,
         use_qk_l2norm_in_kernel, use_gate_in_kernel, use_beta_sigmoid_in_kernel,
         allow_neg_eigval, lower_bound, state_v_first, cu_seqlens, A_log, dt_bias, threads):
    if use_gate_in_kernel:
        g = _pa._linear._kda_gate(g, A_log, dt_bias, lower_bound, "torch")
    beta = _pa._linear._beta(beta, "torch", use_beta_sigmoid_in_kernel, allow_neg_eigval)
    if state_v_first and initial_state is not None:
        initial_state = initial_state.transpose(-1, -2)
    o, ht = _call("chunk_kda", q, k, v, g.float(), beta, scale, initial_state,
                  output_final_state, use_qk_l2norm_in_kernel, cu_seqlens,
                  recurrent, _threads(threads))
    ht = _opt_state(ht)
    if state_v_first and ht is not None:
        ht = ht.transpose(-1, -2).contiguous()
    return o, ht


def chunk_kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
              use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
              use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False, safe_gate=False,
              lower_bound=None, disable_recompute=False, return_intermediate_states=False,
              state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None, cp_context=None, *,
              threads=None, **kwargs):
    if return_intermediate_states:
        raise ValueError("polyattn: argument 'return_intermediate_states': is not supported")
    return _kda(False, q, k, v, g, beta, scale, initial_state, output_final_state,
                use_qk_l2norm_in_kernel, use_gate_in_kernel, use_beta_sigmoid_in_kernel,
                allow_neg_eigval, lower_bound, state_v_first, cu_seqlens, kwargs.get("A_log"),
                kwargs.get("dt_bias"), threads)


def fused_recurrent_kda(q, k, v, g, beta, A_log=None, dt_bias=None, scale=None,
                        initial_state=None, output_final_state=False,
                        use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                        use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                        lower_bound=None, state_v_first=False, cu_seqlens=None, *, threads=None,
                        **kwargs):
    return _kda(True, q, k, v, g, beta, scale, initial_state, output_final_state,
                use_qk_l2norm_in_kernel, use_gate_in_kernel, use_beta_sigmoid_in_kernel,
                allow_neg_eigval, lower_bound, state_v_first, cu_seqlens, A_log, dt_bias, threads)


def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
              state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None, *, threads=None):
    if state_v_first and initial_state is not None:
        initial_state = initial_state.transpose(-1, -2)
    o, ht = _call("chunk_gla", q, k, v, g.float(), scale, initial_state,
                  output_final_state, cu_seqlens, _threads(threads))
    ht = _opt_state(ht)
    if state_v_first and ht is not None:
        ht = ht.transpose(-1, -2).contiguous()
    return o, ht


def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                     output_final_state=False, state_v_first=False, cu_seqlens=None,
                     cu_seqlens_cpu=None, *, threads=None, **kwargs):
    if state_v_first and initial_state is not None:
        initial_state = initial_state.transpose(-1, -2)
    o, ht = _call(
        "chunk_simple_gla", q, k, v, None if g is None else g.float(),
        None if g_gamma is None else g_gamma.float(), scale, initial_state, output_final_state,
        cu_seqlens, _threads(threads))
    ht = _opt_state(ht)
    if state_v_first and ht is not None:
        ht = ht.transpose(-1, -2).contiguous()
    return o, ht


def chunk_retention(q, k, v, scale=None, initial_state=None, output_final_state=False,
                    cu_seqlens=None, *, threads=None, **kwargs):
    gamma = torch.from_numpy(_pa.retention_g_gamma(v.shape[2]))
    return chunk_simple_gla(q, k, v, g_gamma=gamma, scale=scale, initial_state=initial_state,
                            output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                            threads=threads)


def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                     use_qk_l2norm_in_kernel=False, cu_seqlens=None, cu_seqlens_cpu=None, *,
                     threads=None, **kwargs):
    o, ht = _call("chunk_delta_rule", q, k, v, beta.float(), scale, initial_state,
                  output_final_state, use_qk_l2norm_in_kernel,
                  cu_seqlens, _threads(threads))
    return o, _opt_state(ht)


def chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                      normalize=True, cu_seqlens=None, *, threads=None):
    if isinstance(initial_state, (tuple, list)):
        raise ValueError("polyattn: argument 'initial_state': the (kv, z) tuple form is only "
                         "taken by polyattn.chunk_linear_attn, not the op")
    o, ht, z = _call("chunk_linear_attn", q, k, v, scale, initial_state,
                     output_final_state, normalize, cu_seqlens,
                     _threads(threads))
    if normalize:
        return o, (_opt_state(ht), z)
    return o, _opt_state(ht)


fused_chunk_linear_attn = chunk_linear_attn


def parallel_based(q, k, v, scale=None, use_norm=True, *, threads=None, **kwargs):
    return _call("parallel_based", q, k, v, scale, use_norm, _threads(threads))


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                    return_attn_probs=False, *, sink_tokens=0, sinks=None, threads=None):
    if dropout_p:
        raise ValueError("polyattn: argument 'dropout_p': must be 0 (inference kernels)")
    from polyattn._softmax import _window

    causal, window = _window(window_size, causal)
    out, lse = _call("flash_attn", q, k, v, None, softmax_scale, causal, window - 1,
                     float(softcap), alibi_slopes, sinks,
                     int(sink_tokens), _threads(threads))
    if return_attn_probs:
        return out, lse.permute(0, 2, 1), None
    return out


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None,
                     return_final_states=False, final_states_out=None, activation=None, *,
                     cu_seqlens=None, threads=None, **kwargs):
    if seq_idx is not None:
        raise ValueError("polyattn: argument 'seq_idx': not supported; pass cu_seqlens")
    y, ht = _call("causal_conv1d", x, weight, bias, initial_states,
                  _pa._conv._silu(activation), cu_seqlens,
                  _threads(threads))
    if not return_final_states:
        return y
    if final_states_out is not None:
        final_states_out.copy_(ht)
        ht = final_states_out
    return y, ht


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None,
                         conv_state_indices=None, *, threads=None, **kwargs):
    if cache_seqlens is not None or conv_state_indices is not None:
        raise ValueError("polyattn: argument 'cache_seqlens' / 'conv_state_indices': use "
                         "polyattn.causal_conv1d_update (not the op) for these")
    squeeze = x.dim() == 2
    y = _call("causal_conv1d_update", x.unsqueeze(-1) if squeeze else x, conv_state,
              weight, bias, _pa._conv._silu(activation),
              _threads(threads))
    return y.squeeze(-1) if squeeze else y


def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size=None, D=None, z=None, dt_bias=None,
                              initial_states=None, seq_idx=None, cu_seqlens=None,
                              dt_softplus=False, dt_limit=(0.0, float("inf")),
                              return_final_states=False, return_varlen_states=False, *,
                              threads=None):
    """mamba_ssm's mamba_chunk_scan_combined through the custom op (polyattn's docstring);
    seq_idx is mapped onto cu_seqlens here (it reads seq_idx's values)."""
    cu, h0 = _pa._mamba2._packed(seq_idx, cu_seqlens, initial_states, x.shape[0], x.shape[1],
                                 "torch", return_varlen_states)
    y, ht = _call("mamba_chunk_scan_combined", x, dt, A, B, C, D, z, dt_bias, h0, cu,
                  bool(dt_softplus), float(dt_limit[0]), float(dt_limit[1]),
                  bool(return_final_states or return_varlen_states), _threads(threads))
    out = (y,)
    if return_final_states:
        out += (ht if cu is None else ht[-1:],)
    if return_varlen_states:
        out += (ht,)
    return out[0] if len(out) == 1 else out


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False, state_batch_indices=None, *, threads=None):
    """mamba_ssm's selective_state_update (Mamba2's tied shapes) through the custom op: state
    float32, updated in place; returns out [B, H, P]."""
    return _call("selective_state_update", state, x, dt, A, B, C, D, z, dt_bias,
                 bool(dt_softplus), state_batch_indices, _threads(threads))


# ---- transformers ---------------------------------------------------------------------------


class PatchHandle:
    """What patch_transformers() replaced; ``undo()`` restores it. ``calls`` counts the calls
    that went to polyattn per replaced function (a patch that is never called shows 0)."""

    _ABSENT = object()

    def __init__(self):
        self.replaced = []  # (owner, attribute name or dict key, previous value, kind)
        self.calls = {}

    def _set(self, owner, name, value):
        self.replaced.append((owner, name, getattr(owner, name), "attr"))
        setattr(owner, name, value)

    def _set_instance(self, module, name, value):
        """An instance attribute (shadowing a class attribute or __getattr__ lookup)."""
        old = vars(module).get(name, self._ABSENT)
        self.replaced.append((module, name, old, "instance"))
        object.__setattr__(module, name, value)

    def _set_item(self, mapping, key, value):
        self.replaced.append((mapping, key, mapping[key], "item"))
        mapping[key] = value

    def names(self):
        out = []
        for owner, name, _, kind in self.replaced:
            if kind == "item":
                out.append(f"_hidden_kernels[{name!r}]")
            else:
                label = getattr(owner, "__name__", type(owner).__name__)
                out.append(f"{label}.{name}")
        return out

    def undo(self):
        for owner, name, old, kind in reversed(self.replaced):
            if kind == "item":
                owner[name] = old
            elif kind == "instance" and old is self._ABSENT:
                vars(owner).pop(name, None)
            elif kind == "instance":
                object.__setattr__(owner, name, old)
            else:
                setattr(owner, name, old)
        self.replaced.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.undo()


def _all_cpu(*ts):
    return all(t is None or not isinstance(t, torch.Tensor) or t.device.type == "cpu" for t in ts)


class _Unsupported(Exception):
    """A call the replacement does not cover (e.g. causal-conv1d's seq_idx): the original runs."""


def _counted(handle, key, fn, fallback):
    def wrapper(*args, **kwargs):
        if fallback is not None and not _all_cpu(*args, *kwargs.values()):
            return fallback(*args, **kwargs)
        try:
            out = fn(*args, **kwargs)
        except _Unsupported:
            if fallback is None:
                raise
            return fallback(*args, **kwargs)
        handle.calls[key] = handle.calls.get(key, 0) + 1
        return out

    wrapper.__name__ = getattr(fn, "__name__", key)
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped_polyattn__ = True
    return wrapper


def _cu(kwargs):
    cu = kwargs.get("cu_seqlens")
    if cu is None:
        cu = kwargs.get("cu_seq_lens_q")
    return cu


def _hf_chunk_gdn(query, key, value, g, beta, chunk_size=64, initial_state=None,
                  output_final_state=False, use_qk_l2norm_in_kernel=False, **kwargs):
    """transformers' torch_chunk_gated_delta_rule, on polyattn: (o [B,T,HV,V] in q's dtype,
    fp32 state or None)."""
    return chunk_gated_delta_rule(query, key, value, g, beta, initial_state=initial_state,
                                  output_final_state=output_final_state,
                                  use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                                  cu_seqlens=_cu(kwargs))


def _hf_recurrent_gdn(query, key, value, g, beta, initial_state=None, output_final_state=False,
                      use_qk_l2norm_in_kernel=False, **kwargs):
    return fused_recurrent_gated_delta_rule(query, key, value, g=g, beta=beta,
                                            initial_state=initial_state,
                                            output_final_state=output_final_state,
                                            use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                                            cu_seqlens=_cu(kwargs))


def _hf_chunk_kda(query, key, value, g, beta, chunk_size=64, initial_state=None,
                  output_final_state=False, use_qk_l2norm_in_kernel=False, **kwargs):
    return chunk_kda(query, key, value, g, beta, initial_state=initial_state,
                     output_final_state=output_final_state,
                     use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, cu_seqlens=_cu(kwargs))


def _hf_recurrent_kda(query, key, value, g, beta, initial_state=None, output_final_state=False,
                      use_qk_l2norm_in_kernel=False, **kwargs):
    return fused_recurrent_kda(query, key, value, g, beta, initial_state=initial_state,
                               output_final_state=output_final_state,
                               use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                               cu_seqlens=_cu(kwargs))


def _hf_conv_fn(x=None, weight=None, bias=None, activation=None, seq_idx=None, **kwargs):
    """transformers' causal_conv1d_fn: x (or hidden_states) [B, C, T] -> y [B, C, T]."""
    if x is None:
        x = kwargs.pop("hidden_states")
    if seq_idx is not None or kwargs.get("initial_states") is not None:
        raise _Unsupported
    return causal_conv1d_fn(x, weight, bias, activation=activation)


def _hf_conv_update(x=None, conv_state=None, weight=None, bias=None, activation=None, **kwargs):
    """transformers' causal_conv1d_update: updates conv_state [B, C, W] in place."""
    if x is None:
        x = kwargs.pop("hidden_states")
    if any(kwargs.get(n) is not None for n in ("cache_seqlens", "conv_state_indices")):
        raise _Unsupported
    if conv_state.dtype != torch.float32:  # the op updates fp32 states; round-trip others
        st = conv_state.float()
        y = causal_conv1d_update(x, st, weight, bias, activation)
        conv_state.copy_(st)
        return y
    return causal_conv1d_update(x, conv_state, weight, bias, activation)


def _per_head(t, axes):
    """t with the given axes dropped, when t is constant along them (transformers passes Mamba2's
    per-head dt, A, D and dt_bias expanded over head_dim / state_size); else _Unsupported."""
    idx = [slice(None)] * t.dim()
    for a in axes:
        idx[a] = slice(0, 1)
    first = t[tuple(idx)]
    if not all(t.shape[a] == 1 or t.stride(a) == 0 for a in axes) and \
            not torch.equal(t, first.expand_as(t)):
        raise _Unsupported  # really per head_dim / state channel: not a scalar gate
    return first.reshape([n for i, n in enumerate(t.shape) if i not in axes])


def _hf_mamba2_chunk_scan(hidden_states, dt, A, B, C, chunk_size=None, D=None, dt_bias=None,
                          initial_states=None, dt_softplus=False,
                          dt_limit=(0.0, float("inf")), return_final_states=False, z=None,
                          seq_idx=None, cu_seqlens=None, **kwargs):
    """transformers' mamba2_chunk_scan (mamba_ssm's mamba_chunk_scan_combined) on polyattn's
    Mamba2 op: x [B, T, H, P], dt [B, T, H] raw (dt_bias, softplus and dt_limit applied in the
    kernel), A [H], B and C [B, T, G, N], D [H] or [H, P], z, states [B, H, P, N]. Returns fp32,
    as the torch reference does. seq_idx needs batch 1 (packed sequences); cu_seqlens without
    seq_idx (mamba_ssm then only uses it for the varlen states) goes to the original."""
    if A.dim() != 1 or dt.dim() != 3 or hidden_states.dim() != 4 or \
            (seq_idx is not None and hidden_states.shape[0] != 1) or \
            (cu_seqlens is not None and seq_idx is None):
        raise _Unsupported
    return mamba_chunk_scan_combined(
        hidden_states.float(), dt, A, B, C, D=D, z=z, dt_bias=dt_bias,
        initial_states=initial_states, seq_idx=seq_idx, cu_seqlens=cu_seqlens,
        dt_softplus=dt_softplus, dt_limit=dt_limit, return_final_states=return_final_states,
        return_varlen_states=bool(kwargs.get("return_varlen_states", False)))


def _hf_mamba2_state_update(state, hidden_states, dt, A, B, C, D=None, dt_bias=None,
                            dt_softplus=False, z=None, state_batch_indices=None, **kwargs):
    """transformers' mamba2_selective_state_update (mamba_ssm's selective_state_update), one
    decode step on polyattn's Mamba2 op: state [B, H, P, N] updated in place (a pool with
    state_batch_indices), x [B, H, P], dt [B, H, P] and A [H, P, N] per head (expanded), D and
    dt_bias [H, P], B and C [B, G, N]; optional gate z (out·silu(z)). The time step is computed
    in the kernel. Per-channel dt / A (not tied) go to the original."""
    if hidden_states.dim() != 3 or B.dim() != 3 or state.dim() != 4:
        raise _Unsupported
    dt = _per_head(dt, (2,)) if dt.dim() == 3 else dt
    A = _per_head(A, (1, 2)) if A.dim() == 3 else A
    if dt_bias is not None and dt_bias.dim() == 2:
        dt_bias = _per_head(dt_bias, (1,))
    st = state if state.dtype == torch.float32 else state.float()  # the op updates fp32 states
    out = selective_state_update(st, hidden_states, dt, A, B, C, D=D, z=z, dt_bias=dt_bias,
                                 dt_softplus=dt_softplus, state_batch_indices=state_batch_indices)
    if st is not state:
        state.copy_(st)
    return out


_GLOBALS = {
    # module -> {global name: (replacement, key)}
    "qwen3_next": {
        "torch_chunk_gated_delta_rule": _hf_chunk_gdn,
        "torch_recurrent_gated_delta_rule": _hf_recurrent_gdn,
        "chunk_gated_delta_rule": chunk_gated_delta_rule,
        "fused_recurrent_gated_delta_rule": fused_recurrent_gated_delta_rule,
        "causal_conv1d_fn": _hf_conv_fn,
        "causal_conv1d_update": _hf_conv_update,
    },
    "kimi_linear": {
        "torch_chunk_kda": _hf_chunk_kda,
        "torch_recurrent_kda": _hf_recurrent_kda,
        # transformers >= ~5.16 names its decorated torch references after the layer
        "chunk_kimi_delta_attention": _hf_chunk_kda,
        "recurrent_kimi_delta_attention": _hf_recurrent_kda,
        "chunk_kda": chunk_kda,
        "fused_recurrent_kda": fused_recurrent_kda,
        "causal_conv1d_fn": _hf_conv_fn,
        "causal_conv1d_update": _hf_conv_update,
    },
}
_GLOBALS["qwen3_5"] = _GLOBALS["qwen3_next"]
_GLOBALS["qwen3_5_moe"] = _GLOBALS["qwen3_next"]
# Mamba2 and the hybrids sharing its SSD functions (transformers >= ~5.16: decorated module
# globals that the mixers' forward looks up at call time; the bodies are identical copies).
_MAMBA2_GLOBALS = {
    "mamba2_chunk_scan": _hf_mamba2_chunk_scan,
    "mamba2_selective_state_update": _hf_mamba2_state_update,
    "causal_conv1d_fn": _hf_conv_fn,
    "causal_conv1d_update": _hf_conv_update,
}
for _m in ("mamba2", "bamba", "falcon_h1", "granitemoehybrid", "nemotron_h", "zamba2"):
    _GLOBALS[_m] = _MAMBA2_GLOBALS

# Layer attributes holding these functions: instance attributes set by __init__ (transformers
# before ~5.15), or attributes the forward reads (self.chunk_kda, ...) in later versions.
_ATTRS = {
    "chunk_gated_delta_rule": chunk_gated_delta_rule,
    "recurrent_gated_delta_rule": fused_recurrent_gated_delta_rule,
    "chunk_kda": chunk_kda,
    "recurrent_kda": fused_recurrent_kda,
    "causal_conv1d_fn": _hf_conv_fn,
    "causal_conv1d_update": _hf_conv_update,
}


def _make_mamba2_forward(mod, original, handle):
    """Mamba2Mixer.torch_forward on polyattn: the in_proj split, the depthwise conv (SiLU) with
    its cache, then the SSD scan on polyattn's Mamba2 op (the time step softplus(dt + dt_bias)
    clamped to time_step_limit, and the D skip, in the kernel; the cache's [B, H, head_dim,
    state] state is Mamba2's own layout), the gated norm and out_proj. Activations other than
    SiLU go to the original."""
    F = torch.nn.functional
    mask_padding = getattr(mod, "apply_mask_to_padding_states", None)

    def torch_forward(self, hidden_states, cache_params=None, attention_mask=None, **kwargs):
        if self.activation not in ("silu", "swish") or mask_padding is None:
            raise _Unsupported
        if cache_params is not None and not all(
                hasattr(cache_params, a) for a in ("has_previous_state", "layers",
                                                   "update_conv_state", "update_recurrent_state")):
            raise _Unsupported  # an older cache protocol
        Bsz, T, _ = hidden_states.shape
        dtype = hidden_states.dtype
        I, G, N, H, P = (self.intermediate_size, self.n_groups, self.ssm_state_size,
                         self.num_heads, self.head_dim)
        proj = self.in_proj(mask_padding(hidden_states, attention_mask))
        d_mlp = (proj.shape[-1] - 2 * I - 2 * G * N - H) // 2
        _, _, gate, xbc, dt = proj.split([d_mlp, d_mlp, I, self.conv_dim, H], dim=-1)
        xbc = xbc.transpose(1, 2)  # [B, C, T]
        w = self.conv1d.weight.squeeze(1)  # [C, W]
        W = w.shape[-1]
        layer = self.layer_idx
        cached = cache_params is not None and cache_params.has_previous_state(layer)
        if cached and T == 1:
            window = cache_params.update_conv_state(xbc, layer_idx=layer)  # [B, C, W]
            y = (window * w).sum(-1)
            if self.conv1d.bias is not None:
                y = y + self.conv1d.bias
            xbc = F.silu(y)[:, None, :]
        else:
            h0 = None
            if cached:
                prev = cache_params.layers[layer].conv_states  # [B, C, W]
                h0 = prev[..., prev.shape[-1] - (W - 1):].float()
                full = torch.cat([prev, xbc], dim=-1)
            else:
                full = xbc
            if cache_params is not None:
                cache_params.update_conv_state(F.pad(full, (W - full.shape[-1], 0)),
                                               layer_idx=layer)
            xbc = causal_conv1d_fn(xbc, w, self.conv1d.bias, initial_states=h0,
                                   activation="silu").transpose(1, 2)
        xbc = mask_padding(xbc, attention_mask)
        x, Bm, Cm = torch.split(xbc, [I, G * N, G * N], dim=-1)
        h0 = cache_params.layers[layer].recurrent_states.float() if cached else None
        lo, hi = self.time_step_limit
        y = mamba_chunk_scan_combined(
            x.reshape(Bsz, T, H, P).float(), dt, -torch.exp(self.A_log.float()),
            Bm.reshape(Bsz, T, G, N), Cm.reshape(Bsz, T, G, N), D=self.D, dt_bias=self.dt_bias,
            initial_states=h0, dt_softplus=True, dt_limit=(float(lo), float(hi)),
            return_final_states=cache_params is not None)
        if cache_params is not None:
            y, ssm_state = y
            cache_params.update_recurrent_state(ssm_state, layer_idx=layer)
        y = self.norm(y.reshape(Bsz, T, H * P), gate)
        return self.out_proj(y.to(dtype))

    key = "mamba2.Mamba2Mixer.torch_forward"

    def wrapper(self, *args, **kwargs):
        if self.in_proj.weight.device.type != "cpu":
            return original(self, *args, **kwargs)
        try:
            out = torch_forward(self, *args, **kwargs)
        except _Unsupported:
            return original(self, *args, **kwargs)
        handle.calls[key] = handle.calls.get(key, 0) + 1
        return out

    wrapper.__wrapped_polyattn__ = True
    return wrapper


def patch_transformers(*models, conv=True):
    """Make transformers' Qwen3-Next / Qwen3.5 (Gated DeltaNet) and Kimi Linear (KDA) layers run
    their linear attention (and, with conv=True, their short convolution) on polyattn when on
    CPU. Replaces the modeling modules' globals (their torch fallbacks and fla / causal-conv1d
    hooks; layers look them up at call time, so models already built are patched too) and, for
    each model passed, the layers' instance attributes of older transformers versions. Tensors
    on other devices go to the original function. Mamba2 and the hybrids sharing its functions
    (bamba, falcon_h1, granitemoehybrid, nemotron_h, zamba2): the module globals
    ``mamba2_chunk_scan`` and ``mamba2_selective_state_update`` (transformers >= 5.16) run the
    SSD scan as simple_gla on polyattn; in older versions ``Mamba2Mixer.torch_forward`` (the
    method its forward takes off CUDA) is replaced by one that runs the convolution and the scan
    on polyattn and keeps transformers' cache protocol.

    Returns a PatchHandle: ``.undo()`` (or ``with patch_transformers(): ...``) restores
    everything; ``.names()`` lists what was replaced, ``.calls`` counts polyattn calls."""
    import importlib

    handle = PatchHandle()
    for mod_name, table in _GLOBALS.items():
        full = f"transformers.models.{mod_name}.modeling_{mod_name}"
        try:
            mod = importlib.import_module(full)
        except Exception:  # not in this transformers version
            continue
        for name, fn in table.items():
            if not conv and "conv" in name:
                continue
            old = getattr(mod, name, None)
            if getattr(old, "__wrapped_polyattn__", False):
                continue
            fallback = old if callable(old) else None
            if hasattr(mod, name):
                handle._set(mod, name, _counted(handle, f"{mod_name}.{name}", fn, fallback))
    try:
        m2 = importlib.import_module("transformers.models.mamba2.modeling_mamba2")
        mixer = getattr(m2, "Mamba2Mixer", None)
        old = getattr(mixer, "torch_forward", None)
        if old is not None and not getattr(old, "__wrapped_polyattn__", False):
            handle._set(mixer, "torch_forward", _make_mamba2_forward(m2, old, handle))
    except ImportError:
        pass
    for model in models:
        for sub in model.modules():
            hidden = vars(sub).get("_hidden_kernels")
            for name, fn in _ATTRS.items():
                if not conv and "conv" in name:
                    continue
                # an instance attribute (older transformers), a class attribute or one resolved
                # through __getattr__ (kernel registrations): shadow it on the instance
                try:
                    old = getattr(sub, name)
                except AttributeError:
                    continue
                if getattr(old, "__wrapped_polyattn__", False):
                    continue
                key = f"{type(sub).__name__}.{name}"
                handle._set_instance(sub, name, _counted(handle, key, fn,
                                                         old if callable(old) else None))
            if isinstance(hidden, dict):  # kernelize()'s registry of the layer's functions
                for name, old in list(hidden.items()):
                    base = name.replace("torch_", "").replace("fused_", "")
                    fn = _GLOBALS["qwen3_next"].get(name) or _GLOBALS["kimi_linear"].get(name) \
                        or _MAMBA2_GLOBALS.get(name) or _ATTRS.get(base)
                    if fn is None or (not conv and "conv" in name):
                        continue
                    if getattr(old, "__wrapped_polyattn__", False):
                        continue
                    handle._set_item(hidden, name, _counted(
                        handle, f"{type(sub).__name__}._hidden_kernels.{name}", fn,
                        old if callable(old) else None))
    return handle


__all__ = [
    "PatchHandle",
    "causal_conv1d_fn",
    "causal_conv1d_update",
    "chunk_delta_rule",
    "chunk_gated_delta_rule",
    "chunk_gla",
    "chunk_kda",
    "chunk_linear_attn",
    "chunk_retention",
    "chunk_simple_gla",
    "flash_attn_func",
    "fused_chunk_linear_attn",
    "fused_recurrent_gated_delta_rule",
    "fused_recurrent_kda",
    "mamba_chunk_scan_combined",
    "parallel_based",
    "patch_transformers",
    "selective_state_update",
]
