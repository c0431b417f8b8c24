"""polyattn against transformers' plain-PyTorch CPU fallbacks of Gated DeltaNet (Qwen3-Next) and
KDA (Kimi Linear), on the same inputs: prefill (chunked) and decode (one token), fp32 (or
--dtype bfloat16), 1 thread and all threads. Prints a markdown table and the agreement.

    python3 examples/python/bench_vs_transformers.py [--T 4096] [--heads 16] [--dim 128]
"""

import argparse
import importlib
import time

import torch

import polyattn


def best_of(fn, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def hf(module, *names):
    """The first of `names` that the modeling module defines (transformers renames them: Kimi
    Linear's torch_chunk_kda became chunk_kimi_delta_attention in ~5.16)."""
    mod = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    for name in names:
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"{mod.__name__} has none of {names}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    B, T, H, D = 1, a.T, a.heads, a.dim
    dt = getattr(torch, a.dtype)
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D).to(dt) for _ in range(3))
    beta = torch.rand(B, T, H).to(dt)
    g = -torch.rand(B, T, H) * 0.1
    gk = -torch.rand(B, T, H, D) * 0.1
    cases = [
        ("gated_delta_rule", hf("qwen3_next", "torch_chunk_gated_delta_rule"),
         hf("qwen3_next", "torch_recurrent_gated_delta_rule"), g,
         polyattn.chunk_gated_delta_rule, polyattn.fused_recurrent_gated_delta_rule),
        ("kda", hf("kimi_linear", "chunk_kimi_delta_attention", "torch_chunk_kda"),
         hf("kimi_linear", "recurrent_kimi_delta_attention", "torch_recurrent_kda"), gk,
         polyattn.chunk_kda, polyattn.fused_recurrent_kda),
    ]
    all_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, polyattn {polyattn.isa()}, B{B} H{H} T{T} K=V={D} "
          f"{a.dtype}")
    print("| op | threads | transformers prefill | polyattn prefill | speedup | "
          "transformers decode | polyattn decode | speedup | rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for name, hf_chunk, hf_rec, gate, pa_chunk, pa_rec in cases:
            for threads in sorted({1, all_threads}):
                torch.set_num_threads(threads)
                reps = 1 if (threads == 1 and name == "kda") else a.reps
                (ho, hs), t_hf = best_of(lambda: hf_chunk(q, k, v, gate, beta,
                                                          output_final_state=True,
                                                          use_qk_l2norm_in_kernel=True), reps)
                (po, ps), t_pa = best_of(lambda: pa_chunk(q, k, v, gate, beta,
                                                          output_final_state=True,
                                                          use_qk_l2norm_in_kernel=True,
                                                          threads=threads), a.reps)
                diff = float((po.float() - ho.float()).norm() / ho.float().norm())
                q1, k1, v1 = q[:, -1:], k[:, -1:], v[:, -1:]
                g1, b1 = gate[:, -1:], beta[:, -1:]
                _, d_hf = best_of(lambda: hf_rec(q1, k1, v1, g1, b1, initial_state=hs,
                                                 output_final_state=True,
                                                 use_qk_l2norm_in_kernel=True), 20)
                if name == "kda":
                    dec = lambda: pa_rec(q1, k1, v1, g1, b1, initial_state=ps,  # noqa: E731
                                         output_final_state=True, use_qk_l2norm_in_kernel=True,
                                         threads=threads)
                else:
                    dec = lambda: pa_rec(q1, k1, v1, g=g1, beta=b1,  # noqa: E731
                                         initial_state=ps, output_final_state=True,
                                         use_qk_l2norm_in_kernel=True, threads=threads)
                _, d_pa = best_of(dec, 20)
                print(f"| {name} | {threads} | {t_hf * 1e3:.1f} ms | {t_pa * 1e3:.1f} ms | "
                      f"{t_hf / t_pa:.1f}x | {d_hf * 1e3:.3f} ms | {d_pa * 1e3:.3f} ms | "
                      f"{d_hf / d_pa:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
