"""Parameter, FLOP and KV-cache accounting straight from a ModelConfig (no model is built; no torch import,
except inside `measured_activation_bytes`, the measurement the activation formula is checked against).

Conventions (stated so numbers can be compared):
- total params: every weight, embeddings and LM head included (the router's correction bias is a buffer, not
  counted, as in transformers);
- active params per token: routed experts counted k of E, the input embedding table not counted (a lookup, as
  DeepSeek counts it); the LM head is counted;
- FLOPs per token: 2 x active matmul weights, plus attention scores and values, 2 * heads * (d_qk + d_v) * ctx
  per layer with ctx = seq_len (the PaLM MFU convention, no causal halving); training = 3 x forward;
- KV cache: GQA keeps k and v per kv head; MLA (absorbed) keeps the latent plus the rotary key;
- training memory per GPU (`memory_per_gpu`): float32 weights and gradients and AdamW's two float32 moments
  (16 bytes per parameter, as `moecoder train` keeps them under bf16 autocast), divided as the parallel layout
  divides them, plus the activations autograd saves for one micro-batch (`activation_bytes_per_token`).
"""

from __future__ import annotations

from moecoder.model.config import ModelConfig

GPU_PEAK_FLOPS = {"h800": 989.5e12, "h100": 989.5e12, "a100": 312e12}  # dense BF16 tensor-core peaks
GPU_MEMORY_BYTES = {"h800": 80e9, "h100": 80e9, "a100": 80e9}
TRAIN_BYTES_PER_PARAM = {"weights": 4, "gradients": 4, "adamw": 8}  # float32 master weights, grads, 2 moments
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


# --- training memory per GPU ---------------------------------------------------------------------
def routed_expert_params(c: ModelConfig) -> int:
    """All routed experts of all MoE layers (what expert parallelism splits)."""
    return len(c.moe_layers) * (c.n_routed_experts or 0) * expert_params(c)


def activation_elements_per_token(c: ModelConfig, seq_len: int, attention: str = "efficient") -> dict[str, float]:
    """Elements autograd keeps per token for the backward of our model plus its loss, by kind:
    {"float": computed in the activation dtype, "fp32": always float32 (norm statistics, router, loss),
    "int64": indices}.

    Counted tensor by tensor from what moecoder's modules save (checked against a measured run in float32,
    tests/model/test_accounting.py, for micro-batches of 2 or more sequences). attention: for MLA, whose query
    and value head dims differ, "efficient" (CUDA's fused kernels keep output and log-sum-exp; not measured
    here) or "math" (PyTorch's kernel on CPU keeps the [T, T] probabilities); GQA always uses a fused kernel.
    Routed tokens are counted at the balanced average (k per token); with expert parallelism a rank's experts
    work on tokens of other ranks, the same number on average.
    """
    h, heads = c.hidden_size, c.num_attention_heads
    norm = (2 * h + 1, h)  # (fp32: input and normalised copy + rstd, float: the weighted output the next op saves)
    fp32, flt, ints = 0.0, 0.0, 0.0
    for layer in range(c.num_hidden_layers):
        fp32, flt = fp32 + 2 * norm[0], flt + 2 * norm[1]
        if c.uses_mla:
            qk, v = c.qk_head_dim, c.v_head_dim
            if c.q_lora_rank is not None:
                fp32, flt = fp32 + 2 * c.q_lora_rank + 1, flt + c.q_lora_rank
            fp32, flt = fp32 + 2 * c.kv_lora_rank + c.qk_rope_head_dim + 1, flt + c.kv_lora_rank
            flt += heads * (2 * qk + 2 * v)  # q and k rebuilt per head, v, the output reshaped for o_proj
            if attention == "math":  # no fused kernel takes qk and v head dims that differ on CPU
                flt += heads * seq_len  # the [T, T] probabilities
            else:  # the fused kernel's output and log-sum-exp; v is kept as kv_b_proj's output (k_nope too)
                flt, fp32 = flt + heads * (v + c.qk_nope_head_dim), fp32 + heads
        else:  # q, k, v and the fused (flash) kernel's output, which o_proj reads in place; log-sum-exp
            flt += 2 * (heads + c.num_key_value_heads) * c.head_dim
            fp32 += heads
        if not c.is_moe_layer(layer):
            flt += 4 * c.intermediate_size  # gate, up, silu(gate), their product
            continue
        k, inter = c.num_experts_per_tok, c.moe_intermediate_size
        fp32 += c.n_routed_experts + (k + 1) * c.norm_topk_prob  # scores; chosen weights and their sum
        ints += 3 * k  # chosen ids, flat ids, sort order
        flt += k * (3 * h + 4 * inter + 1)  # gathered rows, gate|up, silu, product, outputs twice, weights
        flt += 4 * inter * (c.n_shared_experts or 0)
    fp32 += norm[0] + c.vocab_size  # final norm; log-softmax of the logits for the loss
    flt += norm[1] + c.rope_dim  # LM-head input; rotary cos and sin
    ints += 1  # input ids
    return {"float": flt, "fp32": fp32, "int64": ints}


def activation_bytes_per_token(c: ModelConfig, seq_len: int, dtype: str = "bfloat16",
                               attention: str = "efficient") -> float:
    """Bytes of saved activations per token of a micro-batch (see activation_elements_per_token)."""
    e = activation_elements_per_token(c, seq_len, attention)
    return e["float"] * DTYPE_BYTES[dtype] + 4 * e["fp32"] + 8 * e["int64"]


def measured_activation_bytes(model, ids) -> int:
    """Bytes autograd keeps for the backward of `model(ids)` plus a float32 cross-entropy loss on `ids`: the
    measurement that `activation_bytes_per_token` predicts (x ids.numel()).

    model: a moecoder Transformer in train mode, returning logits [B, T, vocab]; ids: int64 [B, T] on its
    device. Units: bytes. Source: every tensor that torch.autograd.graph.saved_tensors_hooks hands to its pack
    hook, each underlying storage counted once at its full size, the model's parameters excluded (they are
    weights, counted by `memory_per_gpu`, not activations). Imports torch when called.
    """
    import torch
    import torch.nn.functional as F

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        F.cross_entropy(model(ids).float().flatten(0, 1), ids.flatten())
    return sum(saved.values())


def memory_per_gpu(c: ModelConfig, ep: int = 1, fsdp: int = 1, dp: int = 1, seq_len: int = 4096,
                   micro_batch: int = 1, dtype: str = "bfloat16", attention: str = "efficient") -> dict:
    """Training memory per GPU, in bytes, for world = dp x fsdp GPUs.

    Layout (moecoder.train.parallel's, extended to HSDP): weights other than routed experts are sharded over
    `fsdp` ranks and replicated over `dp`; routed experts are split over `ep` ranks (ep divides the world and
    is a multiple or a divisor of fsdp) and FSDP-sharded over the rest of the fsdp group, so each rank holds
    1/max(ep, fsdp) of them. Gradients and AdamW state follow their weights. With fsdp > 1 two layers are
    gathered at a time (the one computing and the one prefetched). Activations: one micro-batch of
    micro_batch x seq_len tokens. Raises ValueError for a layout that does not fit the model.
    """
    world = dp * fsdp
    if min(ep, fsdp, dp, micro_batch) < 1:
        raise ValueError("ep, fsdp, dp and micro_batch must be positive")
    if ep > 1 and (not c.is_moe or c.n_routed_experts % ep):
        raise ValueError(f"--ep {ep} does not divide the {c.n_routed_experts or 0} routed experts per layer")
    if world % ep or (fsdp % ep and ep % fsdp):
        raise ValueError(f"--ep {ep} must divide the world ({world} = dp {dp} x fsdp {fsdp}) and be a multiple "
                         f"or a divisor of --fsdp {fsdp}")
    routed = routed_expert_params(c)
    dense = total_params(c) - routed
    params = dense / fsdp + routed / max(ep, fsdp)
    layer = max(layer_params(c, i) - (c.n_routed_experts * expert_params(c) * (ep - 1) // ep
                                      if c.is_moe_layer(i) else 0) for i in range(c.num_hidden_layers))
    result = {name: params * size for name, size in TRAIN_BYTES_PER_PARAM.items()}
    result["fsdp_gathered_layers"] = 2 * layer * TRAIN_BYTES_PER_PARAM["weights"] if fsdp > 1 else 0
    result["activations"] = micro_batch * seq_len * activation_bytes_per_token(c, seq_len, dtype, attention)
    result["total"] = sum(result.values())
    result["params_per_gpu"] = params
    result["world_size"] = world
    return result
