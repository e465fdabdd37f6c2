"""Attention: grouped-query attention (DeepSeek-Coder v1 / LLaMA) and multi-head latent attention (DeepSeek-V2/V3).

Both take x [B, T, hidden], the rotary tables, a boolean mask (None = plain causal) and optionally a static
`LayerCache` they write their new keys into at `start`. MLA has two forms: the expanded one for training
(keys and values rebuilt per head from the latent) and the absorbed one for cached inference, which folds
kv_b_proj into the query and the output so that only the compressed latent is ever cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moecoder.model.config import ModelConfig
from moecoder.model.rope import apply_rotary, mla_softmax_scale


class RMSNorm(nn.Module):
    """Root-mean-square layer norm, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


@dataclass
class LayerCache:
    """One layer's preallocated keys: GQA keeps k and v [B, H_kv, S, D]; MLA keeps the latent+rope key [B, S, C+R]."""

    k: torch.Tensor
    v: torch.Tensor | None = None


def attend(q, k, v, mask, scale, gqa=False):
    """SDPA over [B, H, T, D] tensors; mask None means causal with no cache."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


class GroupedQueryAttention(nn.Module):
    """Multi-head attention with n_kv <= n_heads key/value heads (LLaMA names: q_proj, k_proj, v_proj, o_proj)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=bias)
        self.scale = self.head_dim**-0.5  # no YaRN term here: that is MLA's (mla_softmax_scale)

    def new_cache(self, batch: int, length: int, dtype, device) -> LayerCache:
        shape = (batch, self.n_kv, length, self.head_dim)
        return LayerCache(*(torch.zeros(shape, dtype=dtype, device=device) for _ in "kv"))

    def forward(self, x, cos, sin, mask=None, cache: LayerCache | None = None, start: int = 0):
        B, T, _ = x.shape
        q = apply_rotary(self.q_proj(x).view(B, T, self.n_heads, self.head_dim), cos, sin, interleaved=False)
        k = apply_rotary(self.k_proj(x).view(B, T, self.n_kv, self.head_dim), cos, sin, interleaved=False)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), self.v_proj(x).view(B, T, self.n_kv, -1).transpose(1, 2)
        if cache is not None:
            cache.k[:, :, start:start + T] = k
            cache.v[:, :, start:start + T] = v
            k, v = cache.k[:, :, :start + T], cache.v[:, :, :start + T]
        out = attend(q, k, v, mask, self.scale, gqa=self.n_kv != self.n_heads)  # [B, H, T, D]
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class MultiHeadLatentAttention(nn.Module):
    """MLA: keys and values come from a shared kv_lora_rank latent plus one rotary key of qk_rope_head_dim."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = config
        self.n_heads, self.rank, self.rope_dim = c.num_attention_heads, c.kv_lora_rank, c.qk_rope_head_dim
        self.nope_dim, self.v_dim, self.interleaved = c.qk_nope_head_dim, c.v_head_dim, c.rope_interleave
        q_out = self.n_heads * c.qk_head_dim
        self.q_lora = c.q_lora_rank is not None
        if not self.q_lora:
            self.q_proj = nn.Linear(c.hidden_size, q_out, bias=False)
        else:
            self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=c.attention_bias)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank)
            self.q_b_proj = nn.Linear(c.q_lora_rank, q_out, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(c.hidden_size, self.rank + self.rope_dim, bias=c.attention_bias)
        self.kv_a_layernorm = RMSNorm(self.rank)
        self.kv_b_proj = nn.Linear(self.rank, self.n_heads * (self.nope_dim + self.v_dim), bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.v_dim, c.hidden_size, bias=c.attention_bias)
        self.scale = mla_softmax_scale(c, c.qk_head_dim)

    def new_cache(self, batch: int, length: int, dtype, device) -> LayerCache:
        return LayerCache(torch.zeros(batch, length, self.rank + self.rope_dim, dtype=dtype, device=device))

    def forward(self, x, cos, sin, mask=None, cache: LayerCache | None = None, start: int = 0):
        B, T, _ = x.shape
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))) if self.q_lora else self.q_proj(x)
        q_nope, q_pe = q.view(B, T, self.n_heads, -1).split([self.nope_dim, self.rope_dim], dim=-1)
        q_pe = apply_rotary(q_pe, cos, sin, self.interleaved)
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([self.rank, self.rope_dim], dim=-1)
        latent = self.kv_a_layernorm(latent)  # [B, T, C]
        k_pe = apply_rotary(k_pe[:, :, None, :], cos, sin, self.interleaved)  # [B, T, 1, R]
        if cache is None:
            out = self._expanded(q_nope, q_pe, latent, k_pe, mask)
        else:
            cache.k[:, start:start + T] = torch.cat((latent, k_pe[:, :, 0]), dim=-1)
            out = self._absorbed(q_nope, q_pe, cache.k[:, :start + T], mask)
        return self.o_proj(out.reshape(B, T, -1))

    def _expanded(self, q_nope, q_pe, latent, k_pe, mask):
        """Training form: rebuild per-head keys/values [B, H, T, *] from the latent, then ordinary attention."""
        B, T, H, _ = q_nope.shape
        k_nope, v = self.kv_b_proj(latent).view(B, T, H, -1).split([self.nope_dim, self.v_dim], dim=-1)
        q = torch.cat((q_nope, q_pe), dim=-1).transpose(1, 2)
        k = torch.cat((k_nope, k_pe.expand(-1, -1, H, -1)), dim=-1).transpose(1, 2)
        return attend(q, k, v.transpose(1, 2), mask, self.scale).transpose(1, 2)  # [B, T, H, v_dim]

    def _absorbed(self, q_nope, q_pe, cached, mask):
        """Inference form: q_nope.W_uk scores against the cached latent, W_uv applied after attention."""
        w = self.kv_b_proj.weight.view(self.n_heads, self.nope_dim + self.v_dim, self.rank)
        q_latent = q_nope.transpose(1, 2) @ w[:, :self.nope_dim]  # [B, H, T, nope] @ [H, nope, C]
        q = torch.cat((q_latent, q_pe.transpose(1, 2)), dim=-1)  # [B, H, T, C+R]
        kv = cached[:, None]  # [B, 1, S, C+R]: one latent "head" broadcast to all query heads, never copied
        scores = (q @ kv.transpose(-1, -2)).float() * self.scale  # [B, H, T, S]
        probs = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1).to(q.dtype)
        out_latent = probs @ kv[..., :self.rank]  # [B, H, T, C]
        return (out_latent @ w[:, self.nope_dim:].transpose(1, 2)).transpose(1, 2)  # [B, T, H, v_dim]
