"""A randomly initialised Qwen3-Next (Gated DeltaNet + full-attention hybrid) built from a config,
no download: generate with transformers' CPU fallbacks and with polyattn patched in, check that
the logits agree, and print the prefill and decode speedups.

    python3 examples/python/qwen3_next_cpu.py [--prefill 2048] [--decode 32] [--threads N]
    python3 examples/python/qwen3_next_cpu.py --small      # a quick check (seconds)

Needs torch (>= 2.4) and transformers with Qwen3-Next, and polyattn installed (pip install .).
"""

import argparse
import time

import torch
import transformers

import polyattn
import polyattn.torch as pt


def build(small: bool):
    if small:
        kw = dict(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, head_dim=32, intermediate_size=64,
                  layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4,
                  linear_key_head_dim=32, linear_value_head_dim=32, linear_num_key_heads=2,
                  linear_num_value_heads=4, num_experts=4, num_experts_per_tok=2,
                  moe_intermediate_size=32, shared_expert_intermediate_size=64)
    else:  # Qwen3-Next's head geometry (16 key heads / 32 value heads of 128), fewer layers
        kw = dict(vocab_size=1024, hidden_size=1024, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=128, intermediate_size=1024,
                  layer_types=["linear_attention"] * 3 + ["full_attention"],
                  linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_value_head_dim=128,
                  linear_num_key_heads=16, linear_num_value_heads=32, num_experts=8,
                  num_experts_per_tok=2, moe_intermediate_size=256,
                  shared_expert_intermediate_size=512)
    cfg = transformers.Qwen3NextConfig(hidden_act="silu", **kw)
    torch.manual_seed(0)
    return transformers.Qwen3NextForCausalLM(cfg).eval()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def decode_steps(model, ids, steps):
    """Median time of one greedy decode step after a prefill of ids (each step timed alone, so
    the prefill's own variation does not leak into the figure)."""
    out = model(ids, use_cache=True)
    cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    times = []
    for _ in range(steps):
        out, dt = timed(lambda: model(tok, past_key_values=cache, use_cache=True))
        cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        times.append(dt)
    return sorted(times)[len(times) // 2]


def run(model, ids, decode):
    """Prefill logits, prefill time, greedy tokens and the median decode step time."""
    logits, t_prefill = timed(lambda: model(ids).logits)
    gen = model.generate(ids, max_new_tokens=decode, do_sample=False, min_new_tokens=decode)
    return logits, t_prefill, gen, decode_steps(model, ids, decode)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefill", type=int, default=2048)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch and polyattn threads")
    ap.add_argument("--small", action="store_true", help="a tiny model and short sequences")
    a = ap.parse_args()
    if a.small:
        a.prefill, a.decode = min(a.prefill, 96), min(a.decode, 8)
    if a.threads:
        torch.set_num_threads(a.threads)
        polyattn.set_num_threads(a.threads)
    print(f"polyattn {polyattn.__version__} ({polyattn.isa()}), torch {torch.__version__}, "
          f"transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    model = build(a.small)
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.prefill))
    with torch.no_grad():
        run(model, ids[:, :16], 2)  # warm-up
        ref_logits, ref_prefill, ref_gen, ref_decode = run(model, ids, a.decode)
        with pt.patch_transformers(model) as handle:
            run(model, ids[:, :16], 2)
            logits, prefill, gen, decode = run(model, ids, a.decode)
            calls = dict(handle.calls)
    err = float((logits - ref_logits).norm() / ref_logits.norm())
    same = bool(torch.equal(gen, ref_gen))
    print(f"replaced: {', '.join(sorted(calls))}")
    print(f"prefill logits relative error {err:.2e}; greedy tokens identical: {same}")
    print(f"prefill B{a.batch} T{a.prefill}: transformers {ref_prefill * 1e3:.1f} ms, "
          f"polyattn {prefill * 1e3:.1f} ms, speedup {ref_prefill / prefill:.2f}x")
    print(f"decode step (median of {a.decode}): transformers {ref_decode * 1e3:.2f} ms, "
          f"polyattn {decode * 1e3:.2f} ms, speedup {ref_decode / decode:.2f}x")
    if err > 1e-3 or not any(calls.values()):
        raise SystemExit("FAILED: logits disagree or polyattn was not called")


if __name__ == "__main__":
    main()
