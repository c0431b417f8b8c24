"""polyattn with torch CPU tensors and the polyattn.torch custom ops: same float64 references as
the numpy suite, bf16 through DLPack, requires_grad inputs, torch.library.opcheck. Skipped when
torch is not installed."""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402

import polyattn as pa  # noqa: E402
import polyattn.torch as pt  # noqa: E402

FP32 = 1e-5


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def data(seed=0, B=2, T=37, H=2, HV=4, K=16, V=16):
    r = np.random.default_rng(seed)
    q = r.standard_normal((B, T, H, K)).astype(np.float32)
    k = r.standard_normal((B, T, H, K)).astype(np.float32)
    v = r.standard_normal((B, T, HV, V)).astype(np.float32)
    g = (-np.abs(r.standard_normal((B, T, HV))) * 0.2).astype(np.float32)
    beta = r.random((B, T, HV)).astype(np.float32)
    h0 = (r.standard_normal((B, HV, K, V)) * 0.1).astype(np.float32)
    return q, k, v, g, beta, h0


def test_torch_in_torch_out_and_bf16():
    q, k, v, g, beta, h0 = data()
    want, want_h, _ = ref.linear_recurrence(q, k, v, g=g, beta=beta, h0=h0, l2=True)
    o, h = pa.chunk_gated_delta_rule(t(q), t(k), t(v), t(g), t(beta), initial_state=t(h0),
                                     output_final_state=True, use_qk_l2norm_in_kernel=True)
    assert isinstance(o, torch.Tensor) and o.dtype == torch.float32 and h.dtype == torch.float32
    assert ref.rrmse(o.numpy(), want) < FP32 and ref.rrmse(h.numpy(), want_h) < FP32
    qb, kb, vb = (t(x).to(torch.bfloat16) for x in (q, k, v))
    f = [x.float().numpy() for x in (qb, kb, vb)]
    want, _, _ = ref.linear_recurrence(*f, g=g, beta=beta, l2=True)
    o, _ = pa.chunk_gated_delta_rule(qb, kb, vb, t(g), t(beta),
                                     use_qk_l2norm_in_kernel=True)
    assert o.dtype == torch.bfloat16
    assert ref.rrmse(o.float().numpy(), want) < 8e-3


def test_requires_grad_inputs_and_head_first_views():
    q, k, v, g, beta, _ = data(1)
    qt = t(q).requires_grad_()
    want, _, _ = ref.linear_recurrence(q, k, v, g=g, beta=beta)
    o, _ = pa.chunk_gated_delta_rule(qt, t(k), t(v), t(g), t(beta))
    assert ref.rrmse(o.numpy(), want) < FP32
    # head-first memory [B, H, T, D] passed as a transposed view (no copy)
    kh = t(k).transpose(1, 2).contiguous().transpose(1, 2)
    assert not kh.is_contiguous()
    o2, _ = pa.chunk_gated_delta_rule(t(q), kh, t(v), t(g), t(beta))
    assert torch.equal(o, o2)


def test_ops_match_references():
    q, k, v, g, beta, h0 = data(2)
    want, want_h, _ = ref.linear_recurrence(q, k, v, g=g, beta=beta, h0=h0, l2=True)
    for fn in (pt.chunk_gated_delta_rule, pt.fused_recurrent_gated_delta_rule):
        o, h = fn(t(q), t(k), t(v), g=t(g), beta=t(beta), initial_state=t(h0),
                  output_final_state=True, use_qk_l2norm_in_kernel=True)
        assert ref.rrmse(o.numpy(), want) < FP32 and ref.rrmse(h.numpy(), want_h) < FP32
    o, h = pt.chunk_gated_delta_rule(t(q), t(k), t(v), t(g), t(beta))
    assert h is None
    r = np.random.default_rng(3)
    B, T, HV, K = v.shape[0], v.shape[1], v.shape[2], q.shape[3]
    gk = (-np.abs(r.standard_normal((B, T, HV, K))) * 0.2).astype(np.float32)
    want, _, _ = ref.linear_recurrence(q, k, v, gk=gk, beta=beta)
    assert ref.rrmse(pt.chunk_kda(t(q), t(k), t(v), t(gk), t(beta))[0].numpy(), want) < FP32
    x = r.standard_normal((2, 24, 9)).astype(np.float32)
    w = r.standard_normal((24, 4)).astype(np.float32)
    want, _ = ref.short_conv(np.swapaxes(x, 1, 2), w, silu=True)
    y = pt.causal_conv1d_fn(t(x), t(w), activation="silu")
    assert ref.rrmse(y.transpose(1, 2).numpy(), want) < FP32
    qs, ks, vs = (r.standard_normal((1, 20, 4, 16)).astype(np.float32) for _ in range(3))
    want, _ = ref.softmax_attention(qs, ks, vs, causal=True)
    assert ref.rrmse(pt.flash_attn_func(t(qs), t(ks), t(vs), causal=True).numpy(), want) < FP32


def test_many_calls_and_core_errors_in_one_process():
    """torch tensors through DLPack, again and again, with C++ core errors in between
    (regression: the device's process died at a flash_attn_func call after a few op calls)."""
    q, k, v, g, beta, h0 = data(6)
    r = np.random.default_rng(7)
    qs, ks, vs = (t(r.standard_normal((1, 20, 4, 16)).astype(np.float32)) for _ in range(3))
    want = pt.flash_attn_func(qs, ks, vs, causal=True)
    want_o = pt.chunk_gated_delta_rule(t(q), t(k), t(v), t(g), t(beta))[0]
    for i in range(30):
        assert torch.equal(pt.flash_attn_func(qs, ks, vs, causal=True), want)
        with pytest.raises(ValueError, match="'beta'"):
            pa.chunk_gated_delta_rule(t(q), t(k), t(v), t(g), t(beta)[:, :4])
        assert torch.equal(pt.chunk_gated_delta_rule(t(q), t(k), t(v), t(g), t(beta))[0], want_o)
        with pytest.raises(ValueError, match="'v'"):
            pa.flash_attn_func(qs, ks, vs[:, :5])


def test_eager_route_skips_the_dispatcher_with_the_same_results():
    """Plain eager CPU calls run the op's implementation directly (pt._direct); inputs that need
    a gradient, or tensor subclasses, go through the registered op. Both give the same bits."""
    q, k, v, g, beta, h0 = data(8)
    args = (t(q), t(k), t(v))
    gates = dict(g=t(g), beta=t(beta))
    assert pt._direct(args)
    with torch.no_grad():
        assert pt._direct((args[0].clone().requires_grad_(),))
    assert not pt._direct((args[0].clone().requires_grad_(),))
    direct = [pt.fused_recurrent_gated_delta_rule(*args, **gates, initial_state=t(h0),
                                                  output_final_state=True),
              pt.chunk_gated_delta_rule(*args, **gates, output_final_state=True)]
    q_grad = t(q).requires_grad_()
    via_op = [pt.fused_recurrent_gated_delta_rule(q_grad, *args[1:], **gates, initial_state=t(h0),
                                                  output_final_state=True),
              pt.chunk_gated_delta_rule(q_grad, *args[1:], **gates, output_final_state=True)]
    for (o1, h1), (o2, h2) in zip(direct, via_op):
        assert torch.equal(o1, o2.detach()) and torch.equal(h1, h2)
    # which route ran: the direct route calls pt._IMPLS[name], the op its own registered copy
    calls = []
    impl = pt._IMPLS["chunk_gated_delta_rule"]
    pt._IMPLS["chunk_gated_delta_rule"] = lambda *a: calls.append(1) or impl(*a)
    try:
        pt.chunk_gated_delta_rule(*args, **gates)
        assert calls == [1]
        pt.chunk_gated_delta_rule(q_grad, *args[1:], **gates)
        assert calls == [1]
    finally:
        pt._IMPLS["chunk_gated_delta_rule"] = impl


def _opcheck(op, args):
    torch.library.opcheck(op, args)


def test_opcheck():
    q, k, v, g, beta, h0 = data(4, B=1, T=9, H=2, HV=2, K=8, V=8)
    Q, K_, V_, G, Bt, H0 = (t(x) for x in (q, k, v, g, beta, h0))
    ops = torch.ops.polyattn
    _opcheck(ops.chunk_gated_delta_rule.default, (Q, K_, V_, G, Bt, None, H0, True, True, None, 1))
    _opcheck(ops.chunk_gated_delta_rule.default, (Q, K_, V_, G, Bt, 0.5, None, False, False, None,
                                                  1))
    _opcheck(ops.fused_recurrent_gated_delta_rule.default,
             (Q, K_, V_, G, None, Bt, None, H0, True, False, None, 1))
    GK = t(np.repeat(g[..., None], 8, -1))
    _opcheck(ops.chunk_kda.default, (Q, K_, V_, GK, Bt, None, H0, True, True, None, False, 1))
    _opcheck(ops.chunk_gla.default, (Q, K_, V_, GK, None, H0, True, None, 1))
    _opcheck(ops.chunk_simple_gla.default, (Q, K_, V_, G, None, None, None, True, None, 1))
    _opcheck(ops.chunk_delta_rule.default, (Q, K_, V_, Bt, None, None, True, True, None, 1))
    _opcheck(ops.chunk_linear_attn.default, (Q.abs(), K_.abs(), V_, None, None, True, True, None,
                                             1))
    _opcheck(ops.parallel_based.default, (Q, K_, V_, None, True, 1))
    _opcheck(ops.flash_attn.default, (Q, K_, V_, None, None, True, -1, 0.0, None, None, 0, 1))
    cu = torch.tensor([0, 4, 9], dtype=torch.int64)
    _opcheck(ops.flash_attn.default, (Q, K_, V_, cu, None, True, 3, 0.0, None, None, 0, 1))
    x = torch.randn(2, 12, 7)
    w = torch.randn(12, 4)
    _opcheck(ops.causal_conv1d.default, (x, w, torch.randn(12), None, True, None, 1))
    _opcheck(ops.causal_conv1d_update.default, (x[..., :1].contiguous(), torch.randn(2, 12, 4),
                                                w, None, True, 1))
    X, DT, A_ = torch.randn(1, 9, 2, 4), torch.randn(1, 9, 2), -torch.rand(2) - 0.1
    BB, CC = torch.randn(1, 9, 1, 8), torch.randn(1, 9, 1, 8)
    _opcheck(ops.mamba_chunk_scan_combined.default,
             (X, DT, A_, BB, CC, torch.randn(2), torch.randn(1, 9, 2, 4), torch.randn(2),
              torch.randn(1, 2, 4, 8), None, True, 0.0, float("inf"), True, 1))
    _opcheck(ops.mamba_chunk_scan_combined.default,
             (X, DT, A_, BB, CC, None, None, None, None, torch.tensor([0, 4, 9]), False, 0.0, 1.0,
              False, 1))
    _opcheck(ops.selective_state_update.default,
             (torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4), torch.randn(2, 2), A_,
              torch.randn(2, 1, 8), torch.randn(2, 1, 8), torch.randn(2), None, torch.randn(2),
              True, None, 1))


def test_mamba2_ops_and_tied_decode():
    """Mamba2 through polyattn (torch in, torch out) and the custom ops; decode with the
    expanded (stride-0) dt / A / dt_bias transformers passes, chained, equals the prefill."""
    r = np.random.default_rng(12)
    B, T, H, P, G, N = 2, 11, 4, 8, 2, 16

    def f(*shape, s=1.0):
        return (r.standard_normal(shape) * s).astype(np.float32)

    x, dt, A, Bm, C, z = f(B, T, H, P), f(B, T, H), -np.exp(f(H, s=0.5)), f(B, T, G, N, s=0.5), \
        f(B, T, G, N, s=0.5), f(B, T, H, P)
    D, bias, h0 = f(H), f(H, s=0.5), f(B, H, P, N, s=0.3)
    want_y, want_h = ref.mamba2_ssd(x, dt, A, Bm, C, D=D, z=z, dt_bias=bias, softplus=True, h0=h0)
    for fn in (pa.mamba_chunk_scan_combined, pt.mamba_chunk_scan_combined):
        y, h = fn(t(x), t(dt), t(A), t(Bm), t(C), D=t(D), z=t(z), dt_bias=t(bias),
                  initial_states=t(h0), dt_softplus=True, return_final_states=True)
        assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
        assert ref.rrmse(y.numpy(), want_y) < FP32 and ref.rrmse(h.numpy(), want_h) < FP32
    state = t(h0).clone()
    A_tied = t(A)[:, None, None].expand(-1, P, N)
    bias_tied = t(bias)[:, None].expand(-1, P)
    for i in range(T):
        dt_tied = t(dt[:, i])[:, :, None].expand(-1, -1, P)
        out = pt.selective_state_update(state, t(x[:, i]), dt_tied, A_tied, t(Bm[:, i]),
                                        t(C[:, i]), D=t(D), z=t(z[:, i]), dt_bias=bias_tied,
                                        dt_softplus=True)
        assert ref.rrmse(out.numpy(), want_y[:, i]) < FP32
    assert ref.rrmse(state.numpy(), want_h) < FP32
    # the transformers replacements: fp32 out, bf16 states round-tripped
    y = pt._hf_mamba2_chunk_scan(t(x), t(dt), t(A), t(Bm), t(C), D=t(D), dt_bias=t(bias),
                                 dt_softplus=True)
    want_y, _ = ref.mamba2_ssd(x, dt, A, Bm, C, D=D, dt_bias=bias, softplus=True)
    assert y.dtype == torch.float32 and ref.rrmse(y.numpy(), want_y) < FP32
    st = t(h0).to(torch.bfloat16)
    want_y, want_h = ref.mamba2_ssd(x[:, :1], dt[:, :1], A, Bm[:, :1], C[:, :1], D=D,
                                    dt_bias=bias, softplus=True, h0=st.float().numpy())
    out = pt._hf_mamba2_state_update(st, t(x[:, 0]), t(dt[:, 0])[:, :, None].expand(-1, -1, P),
                                     A_tied, t(Bm[:, 0]), t(C[:, 0]), t(D)[:, None].expand(-1, P),
                                     dt_bias=bias_tied, dt_softplus=True)
    assert ref.rrmse(out.numpy(), want_y[:, 0]) < FP32
    assert ref.rrmse(st.float().numpy(), want_h) < 8e-3


def test_conv_update_matches_prefill_in_place():
    r = np.random.default_rng(5)
    x = t(r.standard_normal((2, 16, 10)).astype(np.float32))
    w = t(r.standard_normal((16, 3)).astype(np.float32))
    full = pt.causal_conv1d_fn(x, w, activation="silu")
    state = torch.zeros(2, 16, 3)
    ys = [pt.causal_conv1d_update(x[:, :, i], state, w, None, "silu") for i in range(10)]
    assert ref.rrmse(torch.stack(ys, -1).numpy(), full.numpy()) < FP32
    assert torch.equal(state, x[:, :, -3:])


def test_kernels_run_on_torchs_openmp_threads():
    """polyattn.torch selects the OpenMP runtime torch loaded (where it has one), with torch's
    thread count as the default, and gives the pool's bits."""
    if pa.get_thread_runtime() != "openmp":
        pytest.skip("this torch build has no OpenMP runtime loaded")
    q, k, v, g, beta, _ = data(4, T=70)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert pa.get_num_threads() == 3
        o = pt.chunk_gated_delta_rule(t(q), t(k), t(v), t(g), t(beta))[0]
        pa.set_thread_runtime("pool")
        want = pt.chunk_gated_delta_rule(t(q), t(k), t(v), t(g), t(beta), threads=3)[0]
        assert torch.equal(o, want)
    finally:
        pa.set_thread_runtime("openmp")
        torch.set_num_threads(old)
