"""Parameter, FLOP and KV-cache accounting straight from a ModelConfig (no model is built; no torch import).

Conventions (stated so numbers can be compared):
- total params: every weight, embeddings and LM head included (the router's correction bias is a buffer, not
  counted, as in transformers);
- active params per token: routed experts counted k of E, the input embedding table not counted (a lookup, as
  DeepSeek counts it); the LM head is counted;
- FLOPs per token: 2 x active matmul weights, plus attention scores and values, 2 * heads * (d_qk + d_v) * ctx
  per layer with ctx = seq_len (the PaLM MFU convention, no causal halving); training = 3 x forward;
- KV cache: GQA keeps k and v per kv head; MLA (absorbed) keeps the latent plus the rotary key.
"""

from __future__ import annotations

from moecoder.model.config import ModelConfig

GPU_PEAK_FLOPS = {"h800": 989.5e12, "h100": 989.5e12, "a100": 312e12}  # dense BF16 tensor-core peaks
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float8": 1}


def attention_params(c: ModelConfig) -> int:
    """Weights of one attention block (projections, their biases and MLA's inner norms)."""
    h = c.hidden_size
    if not c.uses_mla:
        q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        return h * (q + 2 * kv) + q * h + (q + 2 * kv + h) * c.attention_bias
    heads, rank, rope = c.num_attention_heads, c.kv_lora_rank, c.qk_rope_head_dim
    if c.q_lora_rank is None:
        query = h * heads * c.qk_head_dim
    else:
        q_rank = c.q_lora_rank
        query = h * q_rank + q_rank * c.attention_bias + q_rank + q_rank * heads * c.qk_head_dim  # a, norm, b
    kv = h * (rank + rope) + (rank + rope) * c.attention_bias + rank  # kv_a_proj_with_mqa, kv_a_layernorm
    kv += rank * heads * (c.qk_nope_head_dim + c.v_head_dim)  # kv_b_proj
    return query + kv + heads * c.v_head_dim * h + h * c.attention_bias


def mlp_params(hidden: int, intermediate: int, bias: bool = False) -> int:
    return 3 * hidden * intermediate + (2 * intermediate + hidden) * bias


def expert_params(c: ModelConfig) -> int:
    """One routed expert."""
    return mlp_params(c.hidden_size, c.moe_intermediate_size)


def layer_params(c: ModelConfig, layer: int, active: bool = False) -> int:
    """One decoder layer; with active=True only k of its E routed experts count."""
    norms = 2 * c.hidden_size
    if not c.is_moe_layer(layer):
        return attention_params(c) + mlp_params(c.hidden_size, c.intermediate_size, c.mlp_bias) + norms
    routed = (c.num_experts_per_tok if active else c.n_routed_experts) * expert_params(c)
    shared = mlp_params(c.hidden_size, c.moe_intermediate_size * (c.n_shared_experts or 0))
    return attention_params(c) + c.n_routed_experts * c.hidden_size + routed + shared + norms


def total_params(c: ModelConfig) -> int:
    embeddings = c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2)
    return embeddings + c.hidden_size + sum(layer_params(c, i) for i in range(c.num_hidden_layers))


def active_params(c: ModelConfig) -> int:
    head = c.vocab_size * c.hidden_size  # the LM head; the input table is a lookup (it *is* the head when tied)
    return head + c.hidden_size + sum(layer_params(c, i, active=True) for i in range(c.num_hidden_layers))


def attention_flops_per_token(c: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs of q.k scores and probs.v for one token attending to seq_len positions, all layers."""
    qk, v = (c.qk_head_dim, c.v_head_dim) if c.uses_mla else (c.head_dim, c.head_dim)
    return 2.0 * c.num_hidden_layers * c.num_attention_heads * (qk + v) * seq_len


def flops_per_token(c: ModelConfig, seq_len: int, training: bool = True) -> float:
    forward = 2.0 * active_params(c) + attention_flops_per_token(c, seq_len)
    return 3.0 * forward if training else forward


def kv_cache_bytes_per_token(c: ModelConfig, dtype: str = "bfloat16") -> int:
    per_layer = c.kv_lora_rank + c.qk_rope_head_dim if c.uses_mla else 2 * c.num_key_value_heads * c.head_dim
    return c.num_hidden_layers * per_layer * DTYPE_BYTES[dtype]


def gpu_hours(c: ModelConfig, tokens: float, gpu: str, mfu: float, seq_len: int) -> float:
    """GPU-hours to train on `tokens` at model-FLOPs utilisation `mfu` of the GPU's dense BF16 peak."""
    return tokens * flops_per_token(c, seq_len, training=True) / (GPU_PEAK_FLOPS[gpu] * mfu) / 3600.0


def implied_mfu(c: ModelConfig, tokens: float, gpu: str, hours: float, seq_len: int) -> float:
    """The MFU that a reported GPU-hour figure implies under this accounting."""
    return tokens * flops_per_token(c, seq_len, training=True) / (GPU_PEAK_FLOPS[gpu] * hours * 3600.0)


def stats(c: ModelConfig, seq_len: int, dtype: str = "bfloat16") -> dict:
    """The numbers `moecoder stats` prints."""
    return {
        "total_params": total_params(c),
        "active_params": active_params(c),
        "train_flops_per_token": flops_per_token(c, seq_len, training=True),
        "infer_flops_per_token": flops_per_token(c, seq_len, training=False),
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(c, dtype),
    }
