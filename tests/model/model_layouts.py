"""Tiny random checkpoints of the three layouts, written by transformers (the reference implementation).

A module of its own (not conftest.py) so that tests import it by a name no other test folder uses.
"""

import pytest
import torch

YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "mscale": 0.707,
        "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1, "rope_theta": 10000.0}
MLA = dict(vocab_size=128, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
           num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16,
           v_head_dim=16, max_position_embeddings=256, first_k_dense_replace=1, n_routed_experts=8,
           num_experts_per_tok=3)

LAYOUTS = {
    # V3: sigmoid, bias-corrected group-limited top-k, q_lora, YaRN with mscale_all_dim, interleaved rope.
    "v3": ("DeepseekV3ForCausalLM", "DeepseekV3Config",
           dict(MLA, n_group=4, topk_group=2, q_lora_rank=24, rope_parameters=YARN, n_shared_experts=1)),
    # V3 without q_lora, half-split rope, no normalisation.
    "v3-plain": ("DeepseekV3ForCausalLM", "DeepseekV3Config",
                 dict(MLA, n_group=2, topk_group=1, q_lora_rank=None, rope_interleave=False, norm_topk_prob=False,
                      routed_scaling_factor=1.0, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    # V2: softmax, group-limited greedy, no q_lora, YaRN, 2 shared experts, routed scaling.
    "v2": ("DeepseekV2ForCausalLM", "DeepseekV2Config",
           dict(MLA, n_group=4, topk_group=2, topk_method="group_limited_greedy", q_lora_rank=None,
                rope_parameters=YARN, n_shared_experts=2, routed_scaling_factor=1.5)),
    # V2-Lite-like: greedy top-k with q_lora.
    "v2-greedy": ("DeepseekV2ForCausalLM", "DeepseekV2Config",
                  dict(MLA, q_lora_rank=24, rope_parameters=YARN, n_shared_experts=2)),
    # DeepSeek-Coder v1: LLaMA with GQA and linear RoPE scaling x4, theta 100000.
    "llama": ("LlamaForCausalLM", "LlamaConfig",
              dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2,
                   rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0})),
}


def build_reference(layout: str):
    """A transformers model of the layout with random weights (and a non-zero V3 correction bias)."""
    transformers = pytest.importorskip("transformers")
    model_class, config_class, kwargs = LAYOUTS[layout]
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**kwargs)).eval()
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "e_score_correction_bias", None) is not None:
                module.e_score_correction_bias.normal_(0, 0.2)
    return model


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()
