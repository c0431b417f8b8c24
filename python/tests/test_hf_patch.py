"""polyattn.torch.patch_transformers() on tiny randomly initialised transformers models (no
download): patched and unpatched logits agree (prefill and cached decode), greedy tokens are
the same, and the patched functions were actually called. Skipped without torch/transformers."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import polyattn.torch as pt  # noqa: E402


def tiny_qwen3_next():
    cfg = transformers.Qwen3NextConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=37, head_dim=16,
        layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=2,
        linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
        linear_num_value_heads=4, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=12,
        shared_expert_intermediate_size=36, hidden_act="silu")
    return transformers.Qwen3NextForCausalLM(cfg).eval()


def tiny_kimi_linear():
    cfg = transformers.KimiLinearConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=37,
        linear_attn_config={"head_dim": 16, "num_heads": 4, "short_conv_kernel_size": 2,
                            "full_attn_layers": [2], "kda_layers": [1]},
        mlp_layer_types=["dense", "sparse"], kv_lora_rank=16, qk_nope_head_dim=32,
        qk_rope_head_dim=16, v_head_dim=32, q_lora_rank=None, n_routed_experts=8,
        n_shared_experts=1, num_experts_per_tok=2, n_group=1, topk_group=1,
        moe_intermediate_size=16, num_local_experts=8,
        # the defaults (163839, 163584, 163586) are Kimi's real vocabulary's; the embedding
        # asserts that padding_idx < vocab_size
        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return transformers.KimiLinearForCausalLM(cfg).eval()


def tiny_mamba2():
    cfg = transformers.Mamba2Config(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_heads=8, head_dim=8, expand=2,
        n_groups=2, state_size=16, conv_kernel=4, chunk_size=8)
    return transformers.Mamba2ForCausalLM(cfg).eval()


def rel(a, b):
    return float((a - b).float().norm() / b.float().norm())


@pytest.mark.parametrize("build", [tiny_qwen3_next, tiny_kimi_linear, tiny_mamba2])
def test_patched_model_matches(build):
    torch.manual_seed(0)
    try:
        model = build()
    except AttributeError as e:  # the model class is not in this transformers version
        pytest.skip(str(e))
    ids = torch.randint(0, 99, (2, 70))
    with torch.no_grad():
        want = model(ids).logits
        want_gen = model.generate(ids[:, :20], max_new_tokens=8, do_sample=False)
        with pt.patch_transformers(model) as handle:
            got = model(ids).logits
            got_gen = model.generate(ids[:, :20], max_new_tokens=8, do_sample=False)
            calls = dict(handle.calls)
    assert rel(got, want) < 1e-4, calls
    assert torch.equal(got_gen, want_gen)
    assert sum(v for k, v in calls.items() if "conv" not in k) > 0, calls
