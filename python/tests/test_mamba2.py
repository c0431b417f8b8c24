"""Mamba2 (mamba_chunk_scan_combined, selective_state_update) against the float64 SSD recurrence
in reference.py (Mamba2's own [H, P, N] state layout), at SPEC §8's tolerances: relative RMSE
< 1e-5 (fp32), < 8e-3 (bf16 out), on the rounded inputs."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402

import polyattn as pa  # noqa: E402

FP32 = 1e-5
LIMIT = (0.05, 2.0)  # clamps some of the time steps below


def inputs(seed, B, T, H, P, G, N):
    r = np.random.default_rng(seed)

    def randn(*shape, s=1.0):
        return (r.standard_normal(shape) * s).astype(np.float32)

    return dict(
        x=randn(B, T, H, P), dt=randn(B, T, H), A=-np.exp(randn(H, s=0.5)),
        B=randn(B, T, G, N, s=0.5), C=randn(B, T, G, N, s=0.5), D=randn(H), z=randn(B, T, H, P),
        dt_bias=randn(H, s=0.5), h0=randn(B, H, P, N, s=0.3))


@pytest.mark.parametrize("T", [1, 70])
@pytest.mark.parametrize("d_per_channel", [False, True])
def test_chunk_scan_against_recurrence(T, d_per_channel):
    B, H, P, G, N = 2, 4, 8, 2, 16
    a = inputs(T, B, T, H, P, G, N)
    D = np.random.default_rng(9).standard_normal((H, P)).astype(np.float32) \
        if d_per_channel else a["D"]
    want_y, want_h = ref.mamba2_ssd(a["x"], a["dt"], a["A"], a["B"], a["C"], D=D, z=a["z"],
                                    dt_bias=a["dt_bias"], softplus=True, dt_limit=LIMIT,
                                    h0=a["h0"])
    y, h = pa.mamba_chunk_scan_combined(
        a["x"], a["dt"], a["A"], a["B"], a["C"], 64, D=D, z=a["z"], dt_bias=a["dt_bias"],
        initial_states=a["h0"], dt_softplus=True, dt_limit=LIMIT, return_final_states=True)
    assert y.dtype == np.float32 and h.dtype == np.float32 and h.shape == (B, H, P, N)
    assert ref.rrmse(y, want_y) < FP32
    assert ref.rrmse(h, want_h) < FP32
    # the defaults: no softplus, no clamp, no D, z, bias or initial state; y alone
    want_y, _ = ref.mamba2_ssd(a["x"], np.abs(a["dt"]), a["A"], a["B"], a["C"])
    y = pa.mamba_chunk_scan_combined(a["x"], np.abs(a["dt"]), a["A"], a["B"], a["C"])
    assert isinstance(y, np.ndarray) and ref.rrmse(y, want_y) < FP32


def test_bf16_inputs():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = inputs(3, 1, 33, 2, 8, 1, 16)
    bf = {n: a[n].astype(ml_dtypes.bfloat16) for n in ("x", "B", "C", "z")}
    want, _ = ref.mamba2_ssd(bf["x"], a["dt"], a["A"], bf["B"], bf["C"], D=a["D"], z=bf["z"],
                             dt_bias=a["dt_bias"], softplus=True)
    y = pa.mamba_chunk_scan_combined(bf["x"], a["dt"], a["A"], bf["B"], bf["C"], D=a["D"],
                                     z=bf["z"], dt_bias=a["dt_bias"], dt_softplus=True)
    assert y.dtype == ml_dtypes.bfloat16
    assert ref.rrmse(y, want) < 8e-3


def test_state_update_chained_equals_prefill():
    """Token by token with mamba_ssm's tied (stride-0) shapes, as transformers passes them."""
    B, T, H, P, G, N = 2, 9, 4, 8, 2, 16
    a = inputs(5, B, T, H, P, G, N)
    y_pre, h_pre = pa.mamba_chunk_scan_combined(
        a["x"], a["dt"], a["A"], a["B"], a["C"], D=a["D"], z=a["z"], dt_bias=a["dt_bias"],
        initial_states=a["h0"], dt_softplus=True, return_final_states=True)
    state = a["h0"].copy()
    A_tied = np.broadcast_to(a["A"][:, None, None], (H, P, N))
    D_tied = np.broadcast_to(a["D"][:, None], (H, P))
    bias_tied = np.broadcast_to(a["dt_bias"][:, None], (H, P))
    for t in range(T):
        dt_tied = np.broadcast_to(a["dt"][:, t, :, None], (B, H, P))
        out = pa.selective_state_update(state, a["x"][:, t], dt_tied, A_tied, a["B"][:, t],
                                        a["C"][:, t], D=D_tied, z=a["z"][:, t],
                                        dt_bias=bias_tied, dt_softplus=True)
        assert out.shape == (B, H, P) and out.dtype == np.float32
        assert ref.rrmse(out, y_pre[:, t]) < FP32
    assert ref.rrmse(state, h_pre) < FP32
    # per-head forms ([B, H] dt, [H] A / D / dt_bias) on a copy of the first state
    s1 = a["h0"].copy()
    s2 = a["h0"].copy()
    o1 = pa.selective_state_update(s1, a["x"][:, 0], a["dt"][:, 0], a["A"], a["B"][:, 0],
                                   a["C"][:, 0], D=a["D"], dt_bias=a["dt_bias"], dt_softplus=True)
    o2 = pa.selective_state_update(s2, a["x"][:, 0], np.ascontiguousarray(
        np.broadcast_to(a["dt"][:, 0, :, None], (B, H, P))), A_tied, a["B"][:, 0], a["C"][:, 0],
        D=D_tied, dt_bias=bias_tied, dt_softplus=True)
    assert np.array_equal(o1, o2) and np.array_equal(s1, s2)


def test_varlen_and_seq_idx():
    cu = np.array([0, 20, 45, 90], np.int64)
    H, P, G, N = 4, 8, 1, 16
    a = inputs(7, 1, 90, H, P, G, N)
    h0 = np.random.default_rng(1).standard_normal((3, H, P, N)).astype(np.float32) * 0.3
    kw = dict(D=a["D"], z=a["z"], dt_bias=a["dt_bias"], dt_softplus=True, dt_limit=LIMIT)
    want_y, want_h = ref.mamba2_ssd(a["x"], a["dt"], a["A"], a["B"], a["C"], softplus=True,
                                    dt_limit=LIMIT, h0=h0, cu=cu,
                                    **{k: kw[k] for k in ("D", "z", "dt_bias")})
    y, last, states = pa.mamba_chunk_scan_combined(
        a["x"], a["dt"], a["A"], a["B"], a["C"], initial_states=h0, cu_seqlens=cu,
        return_final_states=True, return_varlen_states=True, **kw)
    assert ref.rrmse(y, want_y) < FP32
    assert states.shape == (3, H, P, N) and ref.rrmse(states, want_h) < FP32
    assert last.shape == (1, H, P, N) and np.array_equal(last, states[2:])
    # seq_idx (mamba_ssm's per-token sequence number) gives the same sequences
    seq_idx = np.repeat(np.arange(3, dtype=np.int32), np.diff(cu))[None]
    y2, s2 = pa.mamba_chunk_scan_combined(a["x"], a["dt"], a["A"], a["B"], a["C"],
                                          initial_states=h0, seq_idx=seq_idx,
                                          cu_seqlens=cu, return_varlen_states=True, **kw)
    assert np.array_equal(y, y2) and np.array_equal(states, s2)
    # seq_idx alone: a [1, ...] initial state is the first sequence's (mamba_ssm)
    y3 = pa.mamba_chunk_scan_combined(a["x"], a["dt"], a["A"], a["B"], a["C"],
                                      initial_states=h0[:1], seq_idx=seq_idx, **kw)
    h0_first = h0.copy()
    h0_first[1:] = 0
    want3, _ = ref.mamba2_ssd(a["x"], a["dt"], a["A"], a["B"], a["C"], softplus=True,
                              dt_limit=LIMIT, h0=h0_first, cu=cu,
                              **{k: kw[k] for k in ("D", "z", "dt_bias")})
    assert ref.rrmse(y3, want3) < FP32


def test_state_pool_update():
    B, H, P, G, N = 2, 4, 8, 2, 16
    a = inputs(11, B, 1, H, P, G, N)
    pool = np.random.default_rng(2).standard_normal((5, H, P, N)).astype(np.float32)
    before = pool.copy()
    idx = np.array([3, 0], np.int32)
    want_y, want_h = ref.mamba2_ssd(a["x"], a["dt"], a["A"], a["B"], a["C"], D=a["D"],
                                    dt_bias=a["dt_bias"], softplus=True, h0=before[[3, 0]])
    out = pa.selective_state_update(pool, a["x"][:, 0], a["dt"][:, 0], a["A"], a["B"][:, 0],
                                    a["C"][:, 0], D=a["D"], dt_bias=a["dt_bias"],
                                    dt_softplus=True, state_batch_indices=idx)
    assert ref.rrmse(out, want_y[:, 0]) < FP32
    assert ref.rrmse(pool[[3, 0]], want_h) < FP32
    assert np.array_equal(pool[[1, 2, 4]], before[[1, 2, 4]])


def test_errors_name_the_argument_and_write_nothing():
    B, H, P, G, N = 2, 4, 8, 2, 16
    a = inputs(13, B, 6, H, P, G, N)
    x, dt, A, Bm, C = a["x"], a["dt"], a["A"], a["B"], a["C"]
    scan = pa.mamba_chunk_scan_combined
    with pytest.raises(ValueError, match="'dt'"):
        scan(x, dt[:, :, :2], A, Bm, C)
    with pytest.raises(ValueError, match="'A'"):
        scan(x, dt, A[:2], Bm, C)
    with pytest.raises(ValueError, match="'C'"):
        scan(x, dt, A, Bm, C[:, :, :1])
    with pytest.raises(ValueError, match="'D'"):
        scan(x, dt, A, Bm, C, D=np.ones((H, P + 1), np.float32))
    with pytest.raises(ValueError, match="'z'"):
        scan(x, dt, A, Bm, C, z=x[:, :, :2])
    with pytest.raises(ValueError, match="'dt_limit'"):
        scan(x, dt, A, Bm, C, dt_limit=(1.0, 0.5))
    with pytest.raises(ValueError, match="'seq_idx'"):
        scan(x, dt, A, Bm, C, seq_idx=np.zeros((B, 6), np.int32))
    with pytest.raises(ValueError, match="'return_varlen_states'"):
        scan(x, dt, A, Bm, C, return_varlen_states=True)
    with pytest.raises(ValueError, match="'initial_state"):
        scan(x, dt, A, Bm, C, initial_states=a["h0"][:1])
    with pytest.raises(TypeError, match="'x'"):
        scan(x.astype(np.float64), dt, A, Bm, C)
    state = a["h0"].copy()
    step = pa.selective_state_update
    args = (x[:, 0], dt[:, 0], A, Bm[:, 0], C[:, 0])
    with pytest.raises(TypeError, match="'state'"):
        step(state.astype(np.float64), *args)
    varying = np.broadcast_to(dt[:, 0, :, None], (B, H, P)).copy()
    varying[0, 0, 1] += 1
    with pytest.raises(ValueError, match="'dt'"):
        step(state, args[0], varying, *args[2:])
    with pytest.raises(ValueError, match="'A'"):
        step(state, args[0], args[1], np.ones((H, P, N), np.float32) * np.arange(N), *args[3:])
    with pytest.raises(ValueError, match="'z'"):
        step(state, *args, z=x[:, 0, :2])
    with pytest.raises(ValueError, match="'D'"):
        step(state, *args, D=np.ones(H + 1, np.float32))
    with pytest.raises(ValueError, match="state_indices"):
        step(state, *args, state_batch_indices=np.array([0, 9]))
    with pytest.raises(ValueError, match="'state'"):
        step(state[:1], *args)
    assert np.array_equal(state, a["h0"])  # nothing written
