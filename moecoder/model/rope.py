"""Rotary position embedding with linear and YaRN scaling, in the half-split or DeepSeek's interleaved layout."""

from __future__ import annotations

import math

import torch
from torch import nn

from moecoder.model.config import ModelConfig


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature: 0.1 * mscale * ln(factor) + 1 (1 when not extending)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def softmax_scale(config: ModelConfig, head_dim: int) -> float:
    """1/sqrt(d), times mscale_all_dim's YaRN correction squared (DeepSeek-V2/V3 long-context configs)."""
    scale = head_dim**-0.5
    scaling = config.rope_scaling or {}
    if config.rope_type != "default" and scaling.get("mscale_all_dim"):
        scale *= yarn_mscale(scaling["factor"], scaling["mscale_all_dim"]) ** 2
    return scale


def rope_frequencies(config: ModelConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [rope_dim/2] and the factor cos/sin are multiplied by."""
    dim, base, scaling = config.rope_dim, config.rope_theta, config.rope_scaling or {}
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    if config.rope_type == "linear":
        return inv_freq / scaling["factor"], 1.0
    if config.rope_type != "yarn":
        if config.rope_type != "default":
            raise ValueError(f"unsupported rope_scaling type {config.rope_type!r} (default, linear or yarn)")
        return inv_freq, 1.0
    factor = scaling.get("factor") or config.max_position_embeddings / scaling["original_max_position_embeddings"]
    original_len = scaling.get("original_max_position_embeddings", config.max_position_embeddings)
    mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        attention_factor = (yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
                            if mscale and mscale_all_dim else yarn_mscale(factor))

    # Dimensions rotating fewer than beta_slow times over the original context are interpolated (divided by
    # factor), those rotating more than beta_fast times are kept, with a linear ramp in between.
    def correction_dim(rotations: float) -> float:
        return dim * math.log(original_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(scaling.get("beta_fast") or 32), correction_dim(scaling.get("beta_slow") or 1)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / max(high - low, 1e-3)).clamp(0, 1)
    inv_freq = inv_freq / factor * ramp + inv_freq * (1 - ramp)
    return inv_freq, float(attention_factor)


class RotaryEmbedding(nn.Module):
    """cos/sin tables [B, T, rope_dim/2] for given positions; `apply_rotary` rotates q or k with them."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.register_buffer("inv_freq", torch.empty(config.rope_dim // 2), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        inv_freq, self.attention_factor = rope_frequencies(self.config)
        with torch.no_grad():
            self.inv_freq.copy_(inv_freq.to(self.inv_freq.device))

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = position_ids[..., None].float() * self.inv_freq  # [B, T, rope_dim/2]
        return angles.cos() * self.attention_factor, angles.sin() * self.attention_factor


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotate x [B, T, H, D] by position. Interleaved (DeepSeek MLA) pairs dims (0,1),(2,3)...; otherwise (i, i+D/2).

    Both layouts return the rotated pairs half-split; q and k get the same treatment, so q.k is unchanged.
    """
    x1, x2 = (x[..., 0::2], x[..., 1::2]) if interleaved else x.chunk(2, dim=-1)
    cos, sin = cos[:, :, None, :].to(x.dtype), sin[:, :, None, :].to(x.dtype)  # broadcast over heads
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
