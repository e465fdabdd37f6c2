"""Rotary position embedding and its context-extension variants, in the half-split or DeepSeek's interleaved layout.

Every rope type transformers implements for LLaMA and DeepSeek-V2/V3 (modeling_rope_utils.py), with its numbers:
default (RoFormer), linear (position interpolation, Chen et al. 2023), dynamic (NTK-aware base growth with the
sequence, /u/emozilla), yarn (Peng et al. 2023, arXiv:2309.00071) and llama3 (Meta's Llama 3.1 wavelength bands).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from moecoder.model.config import ModelConfig

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature: 0.1 * mscale * ln(factor) + 1 (1 when not extending)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def mla_softmax_scale(config: ModelConfig, head_dim: int) -> float:
    """Multi-head latent attention's softmax scale: 1/sqrt(head_dim), times yarn_mscale(factor, mscale_all_dim)^2
    when the rope is scaled and mscale_all_dim is set (DeepSeek-V2/V3 long-context configs; DeepSeek's
    modeling code, transformers' yarn_apply_mscale). Grouped-query attention has no such term: its scale is
    1/sqrt(head_dim), YaRN's temperature reaching it only through cos/sin."""
    scale = head_dim**-0.5
    scaling = config.rope_scaling or {}
    if config.rope_type != "default" and scaling.get("mscale_all_dim"):
        scale *= yarn_mscale(scaling["factor"], scaling["mscale_all_dim"]) ** 2
    return scale


def _base_frequencies(dim: int, base: float | torch.Tensor) -> torch.Tensor:
    """RoFormer's inverse frequencies base^(-2i/dim), i < dim/2, in float32."""
    return 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)


def rope_frequencies(config: ModelConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [rope_dim/2] (per position, radians) and the factor cos/sin are multiplied by.

    For dynamic these are the frequencies up to max_position_embeddings; longer sequences get
    dynamic_frequencies. Raises ValueError for a rope type outside ROPE_TYPES."""
    dim, base, scaling, kind = config.rope_dim, config.rope_theta, config.rope_scaling or {}, config.rope_type
    if kind not in ROPE_TYPES:
        raise ValueError(f"unsupported rope_scaling type {kind!r} (one of {', '.join(ROPE_TYPES)})")
    inv_freq = _base_frequencies(dim, base)
    if kind == "linear":
        return inv_freq / scaling["factor"], 1.0
    if kind == "yarn":
        return _yarn(config, inv_freq)
    if kind == "llama3":
        return _llama3(config, inv_freq), 1.0
    return inv_freq, 1.0


def dynamic_frequencies(config: ModelConfig, seq_len: torch.Tensor) -> torch.Tensor:
    """Dynamic NTK scaling for a sequence of seq_len positions (a 0-d tensor: no host sync): the base grows to
    base * (factor * L / max_pos - (factor - 1))^(dim / (dim - 2)) with L = max(seq_len, max_pos), so
    sequences within max_position_embeddings keep the original frequencies."""
    dim, max_pos, factor = config.rope_dim, config.max_position_embeddings, config.rope_scaling["factor"]
    length = seq_len.clamp(min=max_pos).float()
    base = config.rope_theta * (factor * length / max_pos - (factor - 1)) ** (dim / (dim - 2))
    return 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=seq_len.device) / dim)


def _yarn(config: ModelConfig, inv_freq: torch.Tensor) -> tuple[torch.Tensor, float]:
    dim, base, scaling = config.rope_dim, config.rope_theta, config.rope_scaling
    original_len = scaling.get("original_max_position_embeddings", config.max_position_embeddings)
    factor = scaling.get("factor") or config.max_position_embeddings / original_len
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
    return inv_freq / factor * ramp + inv_freq * (1 - ramp), float(attention_factor)


def _llama3(config: ModelConfig, inv_freq: torch.Tensor) -> torch.Tensor:
    """Wavelengths shorter than original_len / high_freq_factor are kept, longer than original_len /
    low_freq_factor divided by factor, and those in between interpolated smoothly."""
    scaling = config.rope_scaling
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original_len = scaling.get("original_max_position_embeddings", config.max_position_embeddings)
    wavelength = 2 * math.pi / inv_freq
    smooth = ((original_len / wavelength - low) / (high - low)).clamp(0, 1)
    return inv_freq / factor * (1 - smooth) + inv_freq * smooth


class RotaryEmbedding(nn.Module):
    """cos/sin tables [B, T, rope_dim/2] for given positions; `apply_rotary` rotates q or k with them."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.dynamic = config.rope_type == "dynamic"
        self.register_buffer("inv_freq", torch.empty(config.rope_dim // 2), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        inv_freq, self.attention_factor = rope_frequencies(self.config)
        with torch.no_grad():
            self.inv_freq.copy_(inv_freq.to(self.inv_freq.device))

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Dynamic NTK follows the longest sequence in the batch, as transformers does for a forward or a
        # generation whose positions only grow (it keeps the grown base for a later, shorter call; we do not).
        inv_freq = dynamic_frequencies(self.config, position_ids.max() + 1) if self.dynamic else self.inv_freq
        angles = position_ids[..., None].float() * inv_freq  # [B, T, rope_dim/2]
        return angles.cos() * self.attention_factor, angles.sin() * self.attention_factor


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotate x [B, T, H, D] by position. Interleaved (DeepSeek MLA) pairs dims (0,1),(2,3)...; otherwise (i, i+D/2).

    Both layouts return the rotated pairs half-split; q and k get the same treatment, so q.k is unchanged.
    """
    x1, x2 = (x[..., 0::2], x[..., 1::2]) if interleaved else x.chunk(2, dim=-1)
    cos, sin = cos[:, :, None, :].to(x.dtype), sin[:, :, None, :].to(x.dtype)  # broadcast over heads
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
