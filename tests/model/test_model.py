"""Whole-model behaviour: packed documents, dtypes, torch.compile, config round trips, sampling."""

import pytest
import torch

from moecoder.errors import UserError
from moecoder.model import ModelConfig, Transformer


def tiny(model_type="deepseek_v3", **changes) -> ModelConfig:
    base = dict(model_type=model_type, vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, kv_lora_rank=16, qk_nope_head_dim=8,
                qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2,
                moe_intermediate_size=16, first_k_dense_replace=1)
    return ModelConfig(**{**base, **changes})


@pytest.mark.parametrize("model_type", ["deepseek_v3", "llama"])
def test_packed_documents_do_not_see_each_other(model_type):
    torch.manual_seed(0)
    model = Transformer(tiny(model_type)).eval()
    a, b = torch.randint(0, 64, (1, 5)), torch.randint(0, 64, (1, 7))
    packed = torch.cat((a, b), dim=1)
    documents = torch.tensor([[0] * 5 + [1] * 7])
    positions = torch.cat((torch.arange(5), torch.arange(7)))[None]
    with torch.no_grad():
        out = model(packed, positions, documents)
        torch.testing.assert_close(out[:, :5], model(a), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[:, 5:], model(b), rtol=1e-5, atol=1e-5)


def test_bf16_forward_and_backward_run():
    torch.manual_seed(0)
    model = Transformer(tiny()).to(torch.bfloat16)
    logits = model(torch.randint(0, 64, (2, 8)))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_torch_compile_captures_one_graph_on_cpu():
    """fullgraph=True: dynamo and AOT autograd trace the whole model, MoE dispatch included, with no graph
    break. (The aot_eager backend skips inductor's C++ build, which alone takes a minute here; inductor
    itself also compiles it, see benchmarks/model.md.)"""
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    ids = torch.randint(0, 64, (2, 8))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids), model(ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model_type", ["deepseek_v2", "deepseek_v3", "llama"])
def test_config_round_trips_through_hf_dict(model_type):
    config = tiny(model_type, rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})
    again = ModelConfig.from_hf(config.to_hf())
    assert again.to_hf() == config.to_hf()
    assert config.to_hf()["architectures"] == [{"llama": "LlamaForCausalLM", "deepseek_v2": "DeepseekV2ForCausalLM",
                                                "deepseek_v3": "DeepseekV3ForCausalLM"}[model_type]]


def test_bad_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="model_type"):
        ModelConfig.from_hf({"model_type": "gpt2"})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        ModelConfig.from_hf(tmp_path)


def test_sampling_is_seeded_and_top_p_restricts_choices():
    torch.manual_seed(0)
    model = Transformer(tiny())
    prompt = torch.randint(0, 64, (3, 4))
    run = lambda seed, **kw: model.generate(prompt, 6, temperature=1.0,  # noqa: E731
                                            generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
    # top_p tiny -> only the most likely token survives: sampling equals greedy.
    assert torch.equal(run(3, top_p=1e-6), model.generate(prompt, 6))


def test_compiled_decoding_step_gives_the_same_tokens():
    """generate(compile=...) traces the decoding step (static cache, dynamic length) without breaking it."""
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    prompt = torch.randint(0, 64, (2, 5))
    want = model.generate(prompt, 6)
    assert torch.equal(model.generate(prompt, 6, compile="aot_eager"), want)
