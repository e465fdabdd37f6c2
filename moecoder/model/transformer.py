"""The decoder: embeddings, pre-norm blocks (attention + dense MLP or MoE), final norm, LM head.

Module names follow transformers' checkpoints minus the leading "model." (layers.3.self_attn.kv_b_proj...),
so checkpoint conversion only has to pack and unpack the routed experts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from moecoder.model import accounting
from moecoder.model.attention import GroupedQueryAttention, LayerCache, MultiHeadLatentAttention, RMSNorm
from moecoder.model.config import ModelConfig
from moecoder.model.moe import MLP, MoE
from moecoder.model.rope import RotaryEmbedding

if TYPE_CHECKING:
    from moecoder.model.generate import StaticCache


class Block(nn.Module):
    """One pre-norm decoder layer: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        attention = MultiHeadLatentAttention if config.uses_mla else GroupedQueryAttention
        self.self_attn = attention(config)
        self.mlp = MoE(config) if config.is_moe_layer(layer) else MLP(
            config.hidden_size, config.intermediate_size, config.mlp_bias)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask=None, cache: LayerCache | None = None, start: int = 0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """DeepSeek-Coder (LLaMA layout), DeepSeek-V2 and DeepSeek-V3 decoders behind one forward: ids -> logits."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = RotaryEmbedding(config)
        self.init_weights()

    def init_weights(self, std: float = 0.02) -> None:
        """Normal(0, std) matrices, unit norms, zero biases (as transformers initialises these models)."""
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):  # every RMSNorm (layernorms and the final norm)
                nn.init.ones_(param)
            elif name.endswith(".bias"):
                nn.init.zeros_(param)
            else:
                nn.init.normal_(param, std=std)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """Recompute non-checkpoint state (rotary frequencies, router bias) after building on the meta device."""
        self.rotary.reset_parameters()
        for moe in self.moe_layers():
            if moe.gate.e_score_correction_bias is not None:
                moe.gate.e_score_correction_bias.zero_()

    def moe_layers(self) -> list[MoE]:
        return [block.mlp for block in self.layers if isinstance(block.mlp, MoE)]

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                document_ids: torch.Tensor | None = None, *, cache: "StaticCache | None" = None) -> torch.Tensor:
        """input_ids [B, T] -> logits [B, T, vocab].

        document_ids [B, T] keep attention inside each packed document (pass position_ids restarting per
        document too). With a `cache` (see generate.py), tokens go into cache slots cache.length...+T.
        """
        B, T = input_ids.shape
        start = 0 if cache is None else cache.length
        if position_ids is None:
            position_ids = (cache.next_positions(T) if cache is not None
                            else torch.arange(T, device=input_ids.device).expand(B, T))
        mask = None
        if cache is not None:
            mask = cache.mask(T)
        elif document_ids is not None:
            causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
            mask = (causal & (document_ids[:, :, None] == document_ids[:, None, :]))[:, None]  # [B, 1, T, T]
        cos, sin = self.rotary(position_ids)
        x = self.embed_tokens(input_ids)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, mask, None if cache is None else cache.layers[i], start)
        if cache is not None:
            cache.advance(T, position_ids)
        return self.lm_head(self.norm(x))

    # --- MoE training hooks ---------------------------------------------------------------------
    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE layers' sequence-wise balance losses from the last training forward (0 if off)."""
        losses = [moe.stats.aux_loss for moe in self.moe_layers() if moe.stats.aux_loss is not None]
        return torch.stack(losses).sum() if losses else torch.zeros((), device=self.lm_head.weight.device)

    def expert_load(self) -> torch.Tensor:
        """Tokens routed to each expert in the last forward: [n_moe_layers, n_routed_experts]."""
        loads = [moe.stats.load for moe in self.moe_layers() if moe.stats.load is not None]
        if not loads:
            return torch.zeros(0, self.config.n_routed_experts or 0, dtype=torch.long)
        return torch.stack(loads)

    def update_router_bias(self, rate: float, load: torch.Tensor | None = None) -> None:
        """DeepSeek-V3's aux-loss-free balancing step: each bias moves by `rate` against its expert's load.

        load [n_moe_layers, E] defaults to expert_load() of the last forward; pass one accumulated over
        micro-batches (and all-reduced over ranks) to update every rank identically.
        """
        for i, moe in enumerate(self.moe_layers()):
            moe.update_bias(rate, None if load is None else load[i])

    # --- accounting -----------------------------------------------------------------------------
    def num_params(self, active: bool = False) -> int:
        """All parameters, or those one token uses (k of E routed experts, input embedding not counted)."""
        return accounting.active_params(self.config) if active else accounting.total_params(self.config)

    def flops_per_token(self, seq_len: int, training: bool = True) -> float:
        """Model FLOPs per token at context seq_len (matmuls + attention; training = 3x forward)."""
        return accounting.flops_per_token(self.config, seq_len, training)

    # --- generation -----------------------------------------------------------------------------
    def new_cache(self, batch: int, length: int, dtype=None) -> list[LayerCache]:
        dtype = dtype or self.lm_head.weight.dtype
        return [block.self_attn.new_cache(batch, length, dtype, self.lm_head.weight.device) for block in self.layers]

    def generate(self, input_ids, max_new_tokens, temperature=0.0, top_p=1.0, stop=None, eos_token_id=None,
                 attention_mask=None, generator=None, compile=False):
        """Prompt + up to max_new_tokens new ids [B, T+N] (see moecoder.model.generate.generate)."""
        from moecoder.model.generate import generate

        return generate(self, input_ids, max_new_tokens, temperature=temperature, top_p=top_p, stop=stop,
                        eos_token_id=eos_token_id, attention_mask=attention_mask, generator=generator,
                        compile=compile)

