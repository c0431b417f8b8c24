"""polyattn's numpy path against the float64 references in reference.py, at SPEC §8's
tolerances: relative RMSE < 1e-5 (fp32), < 2e-3 (fp16 out), < 8e-3 (bf16 out), on the rounded
inputs."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402

import polyattn as pa  # noqa: E402

FP32 = 1e-5
TOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 8e-3}


def rng(seed=0):
    return np.random.default_rng(seed)


def randn(r, *shape):
    return r.standard_normal(shape).astype(np.float32)


def log_gate(r, *shape, strength=1.0):
    return (-np.abs(r.standard_normal(shape)) * 0.2 * strength).astype(np.float32)


def cast(x, dtype):
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return x.astype(ml_dtypes.bfloat16)
    return x.astype(dtype)


def qkv(r, B, T, H, K, HV, V):
    return randn(r, B, T, H, K), randn(r, B, T, H, K), randn(r, B, T, HV, V)


# ---- the linear family ---------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 63, 65])
def test_gated_delta_rule_gva_state(T):
    r = rng(T)
    B, H, HV, K, V = 2, 2, 4, 16, 24
    q, k, v = qkv(r, B, T, H, K, HV, V)
    g = log_gate(r, B, T, HV)
    beta = r.random((B, T, HV)).astype(np.float32)
    h0 = randn(r, B, HV, K, V) * 0.1
    want_o, want_h, _ = ref.linear_recurrence(q, k, v, g=g, beta=beta, h0=h0, l2=True)
    for fn in (pa.chunk_gated_delta_rule, pa.fused_recurrent_gated_delta_rule):
        o, h = fn(q, k, v, g=g, beta=beta, initial_state=h0, output_final_state=True,
                  use_qk_l2norm_in_kernel=True)
        assert o.dtype == np.float32 and h.dtype == np.float32
        assert ref.rrmse(o, want_o) < FP32
        assert ref.rrmse(h, want_h) < FP32
    o, h = pa.chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True,
                                     initial_state=h0)
    assert h is None


def test_gated_delta_rule_gate_in_kernel_and_beta_sigmoid():
    r = rng(1)
    B, T, H, K, V = 1, 40, 2, 16, 16
    q, k, v = qkv(r, B, T, H, K, H, V)
    a = randn(r, B, T, H) * 3
    b = randn(r, B, T, H)
    A_log = randn(r, H) * 0.5
    dt_bias = randn(r, H)
    x = ref.f64(a) + ref.f64(dt_bias)
    g = -np.exp(ref.f64(A_log)) * np.where(x > 20, x, np.log1p(np.exp(x)))
    beta = 1 / (1 + np.exp(-ref.f64(b)))
    want, _, _ = ref.linear_recurrence(q, k, v, g=g, beta=beta)
    o, _ = pa.chunk_gated_delta_rule(q, k, v, a, b, use_beta_sigmoid_in_kernel=True,
                                     use_gate_in_kernel=True, A_log=A_log, dt_bias=dt_bias)
    assert ref.rrmse(o, want) < FP32


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_inputs(dtype):
    r = rng(2)
    B, T, H, K, V = 1, 65, 2, 32, 32
    q, k, v = (cast(x, dtype) for x in qkv(r, B, T, H, K, H, V))
    g = log_gate(r, B, T, H)
    beta = r.random((B, T, H)).astype(np.float32)
    want, want_h, _ = ref.linear_recurrence(q, k, v, g=g, beta=beta, l2=True)
    o, h = pa.chunk_gated_delta_rule(q, k, v, g, beta, output_final_state=True,
                                     use_qk_l2norm_in_kernel=True)
    assert o.dtype == q.dtype
    assert ref.rrmse(o, want) < TOL[dtype]
    assert ref.rrmse(h, want_h) < FP32  # fp32 state from the same rounded inputs


def test_kda_and_gate_in_kernel():
    r = rng(3)
    B, T, H, K, V = 1, 70, 2, 16, 16
    q, k, v = qkv(r, B, T, H, K, H, V)
    graw = randn(r, B, T, H, K)
    A_log = randn(r, H) * 0.3
    dt_bias = randn(r, H * K)
    beta = r.random((B, T, H)).astype(np.float32)
    x = ref.f64(graw) + ref.f64(dt_bias).reshape(H, K)
    gk = -np.exp(ref.f64(A_log))[:, None] * np.where(x > 20, x, np.log1p(np.exp(x)))
    want, want_h, _ = ref.linear_recurrence(q, k, v, gk=gk, beta=beta, l2=True)
    o, h = pa.chunk_kda(q, k, v, graw, beta, use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True,
                        output_final_state=True, A_log=A_log, dt_bias=dt_bias)
    assert ref.rrmse(o, want) < FP32 and ref.rrmse(h, want_h) < FP32
    o2, h2 = pa.fused_recurrent_kda(q, k, v, gk.astype(np.float32), beta,
                                    use_qk_l2norm_in_kernel=True, output_final_state=True)
    assert ref.rrmse(o2, want) < FP32 and ref.rrmse(h2, want_h) < FP32
    # bounded gate: lower_bound * sigmoid(exp(A_log) * (g + dt_bias))
    gb = -5.0 / (1 + np.exp(-np.exp(ref.f64(A_log))[:, None] * x))
    want_b, _, _ = ref.linear_recurrence(q, k, v, gk=gb, beta=beta)
    ob, _ = pa.chunk_kda(q, k, v, graw, beta, use_gate_in_kernel=True, lower_bound=-5.0,
                         A_log=A_log, dt_bias=dt_bias)
    assert ref.rrmse(ob, want_b) < FP32


@pytest.mark.parametrize("lower_bound", [None, -5.0])
@pytest.mark.parametrize("recurrent", [False, True])
def test_fused_gates_equal_the_python_gates(recurrent, lower_bound):
    """use_gate_in_kernel with use_beta_sigmoid_in_kernel runs the fused C++ policies (g and beta
    computed in the kernel from a / graw, A_log, dt_bias, b); the same call with beta's sigmoid
    taken outside runs the Python-computed gates. Same numbers within fp32 rounding."""
    r = rng(17)
    B, T, H, HV, K, V = 2, 70, 2, 4, 16, 16
    q, k, v = qkv(r, B, T, H, K, HV, V)
    b = randn(r, B, T, HV)
    beta = (1 / (1 + np.exp(-b))).astype(np.float32)
    A_log = randn(r, HV) * 0.5
    h0 = randn(r, B, HV, K, V) * 0.1
    kw = dict(initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True,
              use_gate_in_kernel=True, A_log=A_log)
    cases = []
    if lower_bound is None:  # Gated DeltaNet (no bounded form)
        fn = pa.fused_recurrent_gated_delta_rule if recurrent else pa.chunk_gated_delta_rule
        cases.append((fn, randn(r, B, T, HV) * 3, randn(r, HV)))
    fn = pa.fused_recurrent_kda if recurrent else pa.chunk_kda
    cases.append((fn, randn(r, B, T, HV, K) * 2, randn(r, HV * K)))
    for fn, graw, dt_bias in cases:
        lb = {} if fn in (pa.chunk_gated_delta_rule, pa.fused_recurrent_gated_delta_rule) \
            else {"lower_bound": lower_bound}
        o1, h1 = fn(q, k, v, g=graw, beta=b, use_beta_sigmoid_in_kernel=True, dt_bias=dt_bias,
                    **lb, **kw)
        o2, h2 = fn(q, k, v, g=graw, beta=beta, dt_bias=dt_bias, **lb, **kw)
        assert ref.rrmse(o1, o2) < 1e-6 and ref.rrmse(h1, h2) < 1e-6, fn.__name__
    # state pools go through the fused path too (updated in place)
    pool = np.concatenate([h0, h0 + 1]).astype(np.float32)
    idx = np.array([2, 1])
    start = pool[idx]  # a copy: the pool is updated in place
    fn, graw, dt_bias = cases[-1]
    o3, p3 = fn(q, k, v, g=graw, beta=b, use_beta_sigmoid_in_kernel=True, dt_bias=dt_bias,
                lower_bound=lower_bound, state_indices=idx,
                **{**kw, "initial_state": pool})
    want, want_h = fn(q, k, v, g=graw, beta=beta, dt_bias=dt_bias, lower_bound=lower_bound,
                      **{**kw, "initial_state": start})
    assert p3 is pool and ref.rrmse(o3, want) < 1e-6 and ref.rrmse(pool[idx], want_h) < 1e-6
    with pytest.raises(ValueError, match="'A_log'"):
        fn(q, k, v, g=graw, beta=b, use_beta_sigmoid_in_kernel=True, dt_bias=dt_bias,
           **{**kw, "A_log": A_log[:1]})
    with pytest.raises(ValueError, match="'lower_bound'"):
        pa.chunk_kda(q, k, v, g=cases[-1][1], beta=b, use_beta_sigmoid_in_kernel=True,
                     dt_bias=cases[-1][2], lower_bound=1.0, **kw)


def test_gla_simple_gla_retention_delta():
    r = rng(4)
    B, T, H, K, V = 2, 64, 3, 16, 20
    q, k, v = qkv(r, B, T, H, K, H, V)
    h0 = randn(r, B, H, K, V) * 0.1
    gk = log_gate(r, B, T, H, K)
    want, want_h, _ = ref.linear_recurrence(q, k, v, gk=gk, h0=h0)
    o, h = pa.chunk_gla(q, k, v, gk, initial_state=h0, output_final_state=True)
    assert ref.rrmse(o, want) < FP32 and ref.rrmse(h, want_h) < FP32
    g = log_gate(r, B, T, H)
    want, _, _ = ref.linear_recurrence(q, k, v, g=g, scale=0.3)
    assert ref.rrmse(pa.chunk_simple_gla(q, k, v, g=g, scale=0.3)[0], want) < FP32
    gamma = np.log1p(-np.exp2(-5.0 - np.arange(H)))
    want, _, _ = ref.linear_recurrence(q, k, v, g_gamma=gamma)
    assert ref.rrmse(pa.chunk_retention(q, k, v)[0], want) < FP32
    assert ref.rrmse(pa.chunk_simple_gla(q, k, v, g_gamma=gamma.astype(np.float32))[0], want) < FP32
    beta = r.random((B, T, H)).astype(np.float32)
    want, _, _ = ref.linear_recurrence(q, k, v, beta=beta, l2=True)
    o, _ = pa.chunk_delta_rule(q, k, v, beta, use_qk_l2norm_in_kernel=True)
    assert ref.rrmse(o, want) < FP32


def test_linear_attn_and_based():
    r = rng(5)
    B, T, H, K, V = 1, 50, 2, 16, 16
    q, k, v = qkv(r, B, T, H, K, H, V)
    want, want_h, _ = ref.linear_recurrence(q, k, v)
    o, h = pa.chunk_linear_attn(q, k, v, normalize=False, output_final_state=True)
    assert ref.rrmse(o, want) < FP32 and ref.rrmse(h, want_h) < FP32
    qp, kp = np.abs(q), np.abs(k)  # positive features keep the normaliser away from zero
    want, _, want_z = ref.linear_recurrence(qp, kp, v, normalize_eps=1e-10)
    o, (h, z) = pa.chunk_linear_attn(qp, kp, v)
    assert h is None and z.shape == (B, 1, H, K)
    assert ref.rrmse(o, want) < FP32 and ref.rrmse(z[:, 0], want_z) < FP32
    for scale in (None, 0.1):
        want = ref.based(q, k, v, scale=scale)
        assert ref.rrmse(pa.parallel_based(q, k, v, scale=scale), want) < FP32
    want = ref.based(q, k, v, use_norm=False)
    assert ref.rrmse(pa.parallel_based(q, k, v, use_norm=False), want) < FP32


def test_strided_views_and_state_v_first():
    r = rng(6)
    B, T, H, K, V = 2, 33, 2, 16, 16
    qh, kh, vh = (randn(r, B, H, T, d) for d in (K, K, V))  # head-first memory
    q, k, v = (np.swapaxes(x, 1, 2) for x in (qh, kh, vh))  # [B,T,H,D] views, no copy
    assert not q.flags.c_contiguous
    g = log_gate(r, B, T, H)
    beta = r.random((B, T, H)).astype(np.float32)
    h0 = randn(r, B, H, K, V) * 0.1
    want, want_h, _ = ref.linear_recurrence(q, k, v, g=g, beta=beta, h0=h0)
    o, h = pa.chunk_gated_delta_rule(q, k, v, g, beta, initial_state=np.swapaxes(h0, -1, -2).copy(),
                                     output_final_state=True, state_v_first=True)
    assert h.shape == (B, H, V, K)
    assert ref.rrmse(o, want) < FP32
    assert ref.rrmse(np.swapaxes(h, -1, -2), want_h) < FP32


def test_varlen_equals_separate_calls():
    r = rng(7)
    H, K, V = 2, 16, 16
    lens = [5, 64, 1, 30]
    cu = np.cumsum([0] + lens)
    T = int(cu[-1])
    q, k, v = qkv(r, 1, T, H, K, H, V)
    g = log_gate(r, 1, T, H)
    beta = r.random((1, T, H)).astype(np.float32)
    h0 = randn(r, len(lens), H, K, V) * 0.1
    want, want_h, _ = ref.linear_recurrence(q, k, v, g=g, beta=beta, h0=h0, cu=cu)
    o, h = pa.chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True,
                                     cu_seqlens=cu)
    assert h.shape == (len(lens), H, K, V)
    assert ref.rrmse(o, want) < FP32 and ref.rrmse(h, want_h) < FP32
    with pytest.raises(ValueError, match="cu_seqlens"):
        pa.chunk_gated_delta_rule(np.concatenate([q, q]), np.concatenate([k, k]),
                                  np.concatenate([v, v]), np.concatenate([g, g]),
                                  np.concatenate([beta, beta]), cu_seqlens=cu)


def test_state_pool_in_place_and_decode():
    r = rng(8)
    B, T, H, K, V = 2, 3, 2, 16, 16
    q, k, v = qkv(r, B, T, H, K, H, V)
    g = log_gate(r, B, T, H)
    beta = r.random((B, T, H)).astype(np.float32)
    pool = randn(r, 5, H, K, V) * 0.1
    idx = np.array([3, 1])
    want, want_h, _ = ref.linear_recurrence(q, k, v, g=g, beta=beta, h0=pool[idx])
    untouched = pool[[0, 2, 4]].copy()
    o, h = pa.fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, initial_state=pool,
                                               state_indices=idx)
    assert h is pool
    assert ref.rrmse(o, want) < FP32 and ref.rrmse(pool[idx], want_h) < FP32
    assert np.array_equal(pool[[0, 2, 4]], untouched)
    before = pool.copy()
    with pytest.raises(ValueError, match="state_indices"):
        pa.fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, initial_state=pool,
                                            state_indices=np.array([1, 9]))
    assert np.array_equal(pool, before)  # nothing written on error


def test_errors_name_the_argument():
    r = rng(9)
    q, k, v = qkv(r, 1, 8, 2, 16, 2, 16)
    g = log_gate(r, 1, 8, 2)
    beta = r.random((1, 8, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="'v'"):
        pa.chunk_gated_delta_rule(q, k, v[:, :, :1].repeat(3, 2), g, beta)  # 3 % 2 != 0
    with pytest.raises(ValueError, match="'beta'"):
        pa.chunk_gated_delta_rule(q, k, v, g, beta[:, :4])
    with pytest.raises(TypeError, match="'k'"):
        pa.chunk_gated_delta_rule(q, k.astype(np.float16), v, g, beta)
    with pytest.raises(TypeError, match="'q'"):
        pa.chunk_gated_delta_rule(q.astype(np.float64), k, v, g, beta)
    with pytest.raises(ValueError, match="'q'"):
        pa.chunk_gated_delta_rule(q[0], k, v, g, beta)
    with pytest.raises(TypeError, match="'q'"):
        pa.chunk_gated_delta_rule(q.tolist(), k, v, g, beta)
    with pytest.raises(ValueError, match="cu_seqlens"):
        pa.chunk_gated_delta_rule(q, k, v, g, beta, cu_seqlens=np.array([0, 9, 8]))
    with pytest.raises(ValueError, match="threads"):
        pa.chunk_gla(q, k, v, log_gate(r, 1, 8, 2, 16), threads=0)
    with pytest.raises(DeprecationWarning):
        pa.chunk_gated_delta_rule(q, k, v, g, beta, head_first=True)


def test_many_core_errors_between_successful_calls():
    """Errors thrown by the C++ core (while the GIL is released) again and again in one process,
    interleaved with successful calls of each module function, on the default thread pool and
    on a 1-thread one (regression: the device's process died on the second such error)."""
    r = rng(11)
    q, k, v = qkv(r, 1, 8, 2, 16, 2, 16)
    g = log_gate(r, 1, 8, 2)
    beta = r.random((1, 8, 2)).astype(np.float32)
    x, w = randn(r, 2, 6, 9), randn(r, 6, 3)
    want = pa.chunk_gated_delta_rule(q, k, v, g, beta)[0]
    want_rec = pa.fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta)[0]
    want_flash = pa.flash_attn_func(q, k, v, causal=True)
    want_conv = pa.causal_conv1d_fn(x, w, activation="silu")
    for i in range(40):
        threads = None if i % 2 == 0 else 1
        with pytest.raises(ValueError, match="'beta'"):
            pa.chunk_gated_delta_rule(q, k, v, g, beta[:, :4], threads=threads)
        with pytest.raises(ValueError, match="'beta'"):
            pa.fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta[:, :4], threads=threads)
        assert np.array_equal(pa.chunk_gated_delta_rule(q, k, v, g, beta, threads=threads)[0],
                              want)
        with pytest.raises(ValueError, match="'v'"):
            pa.flash_attn_func(q, k, v[:, :5], threads=threads)
        assert np.array_equal(pa.flash_attn_func(q, k, v, causal=True, threads=threads),
                              want_flash)
        with pytest.raises(ValueError, match="'weight'"):
            pa.causal_conv1d_fn(x, w[:5], threads=threads)
        assert np.array_equal(pa.causal_conv1d_fn(x, w, activation="silu", threads=threads),
                              want_conv)
        with pytest.raises(ValueError, match="capacity"):
            pa.KVCache(1, 2, 16, 16, capacity=4).append(q, k)
        assert np.array_equal(
            pa.fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, threads=threads)[0],
            want_rec)


def test_threads_give_identical_bits():
    r = rng(10)
    q, k, v = qkv(r, 2, 130, 4, 32, 4, 32)
    g = log_gate(r, 2, 130, 4)
    beta = r.random((2, 130, 4)).astype(np.float32)
    a = pa.chunk_gated_delta_rule(q, k, v, g, beta, threads=1)[0]
    b = pa.chunk_gated_delta_rule(q, k, v, g, beta, threads=3)[0]
    assert np.array_equal(a, b)


def test_openmp_runtime_gives_the_pools_bits():
    """set_thread_runtime("openmp") runs the kernels on an OpenMP runtime already in the process
    (torch's libgomp in practice; here the system's, loaded through ctypes, unless torch's is)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("gomp")
    if name is None:
        pytest.skip("no libgomp on this machine")
    ctypes.CDLL(name)
    before = pa.get_thread_runtime()  # polyattn.torch, imported by other tests, selects openmp
    r = rng(12)
    q, k, v = qkv(r, 2, 130, 4, 32, 4, 32)
    g = log_gate(r, 2, 130, 4)
    beta = r.random((2, 130, 4)).astype(np.float32)
    x, w = randn(r, 2, 24, 40), randn(r, 24, 4)  # causal-conv1d's [B, D, T]
    with pytest.raises(ValueError, match="runtime"):
        pa.set_thread_runtime("tbb")
    try:
        assert pa.set_thread_runtime("pool") == ""
        assert pa.get_thread_runtime() == "pool"
        want = pa.chunk_gated_delta_rule(q, k, v, g, beta, threads=3)[0]
        want_conv = pa.causal_conv1d_fn(x, w, activation="silu", threads=3)
        library = pa.set_thread_runtime("openmp")
        assert "omp" in library and pa.get_thread_runtime() == "openmp"
        ctypes.CDLL(library).omp_set_num_threads(3)  # the runtime found (maybe torch's)
        assert pa.get_num_threads() == 3  # the runtime's count is the default
        for threads in (None, 1, 2, 5):
            assert np.array_equal(
                pa.chunk_gated_delta_rule(q, k, v, g, beta, threads=threads)[0], want)
            assert np.array_equal(
                pa.causal_conv1d_fn(x, w, activation="silu", threads=threads), want_conv)
        with pytest.raises(ValueError, match="beta"):  # errors still come before any work
            pa.chunk_gated_delta_rule(q, k, v, g, beta[:, :7], threads=3)
    finally:
        pa.set_thread_runtime(before)


# ---- softmax, KV cache, sparse --------------------------------------------------------------


@pytest.mark.parametrize("causal,window,softcap", [(False, 0, 0.0), (True, 0, 0.0), (True, 17, 0.0),
                                                   (True, 0, 5.0)])
def test_flash_attn_func(causal, window, softcap):
    r = rng(11)
    B, T, S, HQ, HKV, D = 2, 45, 70, 4, 2, 32
    q, k, v = randn(r, B, T, HQ, D), randn(r, B, S, HKV, D), randn(r, B, S, HKV, D)
    want, want_lse = ref.softmax_attention(q, k, v, causal=causal, window=window, softcap=softcap)
    out, lse, _ = pa.flash_attn_func(q, k, v, causal=causal, window_size=(window - 1, 0) if window
                                     else (-1, -1), softcap=softcap, return_attn_probs=True)
    assert ref.rrmse(out, want) < FP32
    assert lse.shape == (B, HQ, T)
    assert ref.rrmse(np.swapaxes(lse, 1, 2), want_lse) < FP32


def test_flash_attn_sinks_bf16_and_varlen():
    r = rng(12)
    T, HQ, HKV, D = 40, 4, 4, 16
    q, k, v = randn(r, 1, T, HQ, D), randn(r, 1, T, HKV, D), randn(r, 1, T, HKV, D)
    sinks = randn(r, HQ)
    want, _ = ref.softmax_attention(q, k, v, causal=True, sinks=sinks)
    assert ref.rrmse(pa.flash_attn_func(q, k, v, causal=True, sinks=sinks), want) < FP32
    qb, kb, vb = (cast(x, "bfloat16") for x in (q, k, v))
    want, _ = ref.softmax_attention(qb, kb, vb, causal=True)
    out = pa.flash_attn_func(qb, kb, vb, causal=True)
    assert out.dtype == qb.dtype and ref.rrmse(out, want) < TOL["bfloat16"]
    cu = np.array([0, 7, 7, 40])
    out = pa.flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, 33, 33, causal=True)
    for a, b in zip(cu[:-1], cu[1:]):
        if b > a:
            want, _ = ref.softmax_attention(q[:, a:b], k[:, a:b], v[:, a:b], causal=True)
            assert ref.rrmse(out[a:b], want[0]) < FP32


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_kv_cache_decode(dtype):
    r = rng(13)
    B, T, HQ, HKV, D = 2, 50, 4, 2, 32
    q, k, v = randn(r, B, T, HQ, D), randn(r, B, T, HKV, D), randn(r, B, T, HKV, D)
    cache = pa.KVCache(B, HKV, D, page_size=16, dtype=dtype)
    cache.append(k[:, :-1], v[:, :-1])
    cache.append(k[:, -1:], v[:, -1:])
    assert cache.lengths() == [T, T]
    want, _ = ref.softmax_attention(q, k, v, causal=True)
    out = cache.decode(q[:, -1:])
    assert out.shape == (B, 1, HQ, D)
    assert ref.rrmse(out, want[:, -1:]) < (FP32 if dtype == "float32" else 3e-2)
    out5 = cache.decode(q[:, -5:])  # the last five tokens at once (speculative verify)
    assert out5.shape == (B, 5, HQ, D)
    assert ref.rrmse(out5, want[:, -5:]) < (FP32 if dtype == "float32" else 3e-2)
    with pytest.raises(ValueError, match="cache"):
        cache.decode(np.zeros((B, T + 1, HQ, D), np.float32))  # more queries than cached tokens


def test_sparse_attention_full_selection_is_dense():
    r = rng(14)
    B, T, H, D = 1, 128, 2, 16
    q, k, v = randn(r, B, T, H, D), randn(r, B, T, H, D), randn(r, B, T, H, D)
    want, _ = ref.softmax_attention(q, k, v, causal=True)
    out = pa.sparse_attention(q, k, v, selector="topk", block_size=16, top_k=8)
    assert ref.rrmse(out, want) < FP32
    out = pa.sparse_attention(q, k, v, selector="window_sink", block_size=16, local_blocks=8)
    assert ref.rrmse(out, want) < FP32
    out = pa.sparse_attention(q, k, v, selector="window_sink", block_size=16, local_blocks=1,
                              sink_blocks=0)
    assert ref.rrmse(out, want) > 1e-2  # a real selection changes the result
    with pytest.raises(ValueError, match="selector"):
        pa.sparse_attention(q, k, v, selector="nope")


# ---- short convolution ----------------------------------------------------------------------


def test_short_conv_prefill_and_update():
    r = rng(15)
    B, T, D, W = 2, 20, 48, 4
    x, w, bias = randn(r, B, T, D), randn(r, D, W), randn(r, D)
    h0 = randn(r, B, D, W - 1)
    want, want_h = ref.short_conv(x, w, bias, h0, silu=True)
    y, h = pa.short_conv(x, w, bias, h0, output_final_state=True, activation="silu")
    assert ref.rrmse(y, want) < FP32 and ref.rrmse(h, want_h) < FP32
    # causal-conv1d layout [B, D, T] (a transposed view of x, no copy)
    y2 = pa.causal_conv1d_fn(np.swapaxes(x, 1, 2), w, bias, initial_states=h0, activation="silu")
    assert ref.rrmse(np.swapaxes(y2, 1, 2), want) < FP32
    # decode through a conv state of W columns (transformers' cache), one token at a time
    state = np.zeros((B, D, W), np.float32)
    outs = [pa.causal_conv1d_update(x[:, t], state, w, bias, "silu") for t in range(T)]
    want0, _ = ref.short_conv(x, w, bias, None, silu=True)
    assert ref.rrmse(np.stack(outs, 1), want0) < FP32
    assert np.array_equal(state, np.swapaxes(x[:, -W:], 1, 2))
    # several tokens per update: the kept column from the state (T = 2) or from x (T = 4)
    for step in (2, 4):
        state = np.zeros((B, D, W), np.float32)
        outs = [pa.causal_conv1d_update(np.swapaxes(x[:, t:t + step], 1, 2), state, w, bias,
                                        "silu") for t in range(0, T, step)]
        assert ref.rrmse(np.swapaxes(np.concatenate(outs, -1), 1, 2), want0) < FP32
        assert np.array_equal(state, np.swapaxes(x[:, -W:], 1, 2))
    before = state.copy()
    with pytest.raises(ValueError, match="weight"):
        pa.causal_conv1d_update(x[:, 0], state, w[:-1], bias, "silu")
    assert np.array_equal(state, before)
