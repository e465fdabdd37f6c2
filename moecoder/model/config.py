"""One configuration for the three checkpoint layouts: LLaMA (DeepSeek-Coder v1), DeepSeek-V2 and DeepSeek-V3.

Field names are transformers' own, so a Hugging Face `config.json` maps onto it one to one and
`to_hf()` writes one back. This module imports no torch: `moecoder stats` uses it on its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from moecoder.errors import UserError

ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "deepseek_v2": "DeepseekV2ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}
MODEL_TYPE_OF_ARCHITECTURE = {arch: model_type for model_type, arch in ARCHITECTURES.items()}

# Defaults that differ between the layouts when a config.json leaves them out (transformers' defaults).
LAYOUT_DEFAULTS = {
    "llama": {"rope_theta": 10000.0, "rms_norm_eps": 1e-6},
    "deepseek_v2": {"scoring_func": "softmax", "topk_method": "greedy", "norm_topk_prob": False,
                    "routed_scaling_factor": 1.0, "rope_interleave": True},
    "deepseek_v3": {"scoring_func": "sigmoid", "topk_method": "noaux_tc", "norm_topk_prob": True,
                    "routed_scaling_factor": 2.5, "rope_interleave": True},
}


@dataclass
class ModelConfig:
    """Hyper-parameters of a decoder-only transformer: dense/GQA (llama) or MoE + MLA (deepseek_v2/v3).

    Build small models in code (`ModelConfig(model_type="deepseek_v3", hidden_size=64, ...)`) or read a
    checkpoint's config with `ModelConfig.from_hf(path_or_dict)`.
    """

    model_type: str = "deepseek_v3"  # "llama" | "deepseek_v2" | "deepseek_v3"
    vocab_size: int = 32256
    hidden_size: int = 256
    intermediate_size: int = 704  # dense MLP (llama layers, and the first_k_dense_replace layers)
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None  # GQA (llama); None = num_attention_heads
    head_dim: int | None = None  # llama; None = hidden_size // num_attention_heads
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"type"|"rope_type": "linear"|"yarn", "factor": ..., yarn fields}
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    torch_dtype: str = "float32"
    # Multi-head latent attention (deepseek_v2/v3)
    q_lora_rank: int | None = None
    kv_lora_rank: int = 64
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 16
    v_head_dim: int = 32
    rope_interleave: bool = True
    # DeepSeekMoE (deepseek_v2/v3)
    n_routed_experts: int | None = 8
    n_shared_experts: int | None = 1
    num_experts_per_tok: int | None = 2
    moe_intermediate_size: int = 128
    first_k_dense_replace: int = 0
    moe_layer_freq: int = 1
    n_group: int | None = 1
    topk_group: int | None = 1
    topk_method: str = "noaux_tc"  # "greedy" | "group_limited_greedy" | "noaux_tc" (V3: bias-corrected)
    scoring_func: str = "sigmoid"  # "softmax" | "sigmoid"
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    aux_loss_alpha: float = 0.0  # sequence-wise balance loss weight (0 = off, V3 uses 1e-4 with the bias)
    extra: dict = field(default_factory=dict, repr=False)  # config.json fields we carry but do not use

    def __post_init__(self):
        if self.model_type not in ARCHITECTURES:
            raise UserError(f"model_type {self.model_type!r} is not one of {sorted(ARCHITECTURES)}")
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.n_group = self.n_group or 1
        self.topk_group = self.topk_group or 1
        if self.scoring_func not in ("softmax", "sigmoid"):
            raise UserError(f"scoring_func {self.scoring_func!r} is not softmax or sigmoid")
        if self.topk_method not in ("greedy", "group_limited_greedy", "noaux_tc"):
            raise UserError(f"topk_method {self.topk_method!r} is not greedy, group_limited_greedy or noaux_tc")
        if self.is_moe and self.n_routed_experts % self.n_group:
            raise UserError(f"n_routed_experts={self.n_routed_experts} is not divisible by n_group={self.n_group}")

    # --- derived ---------------------------------------------------------------------------------
    @property
    def uses_mla(self) -> bool:
        return self.model_type != "llama"

    @property
    def is_moe(self) -> bool:
        return self.model_type != "llama" and bool(self.n_routed_experts)

    def is_moe_layer(self, layer: int) -> bool:
        return self.is_moe and layer >= self.first_k_dense_replace and layer % self.moe_layer_freq == 0

    @property
    def moe_layers(self) -> list[int]:
        return [i for i in range(self.num_hidden_layers) if self.is_moe_layer(i)]

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def rope_type(self) -> str:
        scaling = self.rope_scaling or {}
        return scaling.get("rope_type", scaling.get("type", "default"))

    @property
    def rope_dim(self) -> int:
        return self.qk_rope_head_dim if self.uses_mla else self.head_dim

    @property
    def has_router_bias(self) -> bool:
        return self.topk_method == "noaux_tc"

    # --- Hugging Face config.json ------------------------------------------------------------------
    @classmethod
    def from_hf(cls, source: dict | str | Path) -> "ModelConfig":
        """Read a transformers config (a dict, a config.json path, or a checkpoint directory)."""
        hf = dict(source) if isinstance(source, dict) else _read_json(source)
        model_type = hf.get("model_type") or MODEL_TYPE_OF_ARCHITECTURE.get((hf.get("architectures") or [""])[0])
        if model_type not in ARCHITECTURES:
            raise UserError(f"unsupported model_type {model_type!r}: expected one of {sorted(ARCHITECTURES)}")
        values = dict(LAYOUT_DEFAULTS[model_type])
        # transformers 5 writes `rope_parameters` (theta inside); official checkpoints `rope_theta` + `rope_scaling`.
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        values["rope_theta"] = float(rope.pop("rope_theta", hf.get("rope_theta", values.get("rope_theta", 10000.0))))
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            values["rope_scaling"] = rope
        if "dtype" in hf or "torch_dtype" in hf:
            values["torch_dtype"] = hf.get("dtype") or hf.get("torch_dtype")
        known = {f.name for f in fields(cls)} - {"extra", "rope_scaling", "rope_theta", "torch_dtype"}
        values.update({k: v for k, v in hf.items() if k in known and v is not None})
        values["model_type"] = model_type
        if model_type == "llama":
            values["n_routed_experts"] = None
        ignored = {"rope_parameters", "rope_scaling", "rope_theta", "dtype", "torch_dtype", "architectures"}
        values["extra"] = {k: v for k, v in hf.items() if k not in known and k not in ignored}
        return cls(**values)

    def to_hf(self) -> dict:
        """A transformers config.json dict of this layout (also readable by transformers 4.x)."""
        common = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
                  "tie_word_embeddings", "attention_bias", "bos_token_id", "eos_token_id", "pad_token_id"]
        mla_moe = ["q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                   "n_routed_experts", "n_shared_experts", "num_experts_per_tok", "moe_intermediate_size",
                   "first_k_dense_replace", "moe_layer_freq", "n_group", "topk_group", "topk_method",
                   "scoring_func", "norm_topk_prob", "routed_scaling_factor", "aux_loss_alpha"]
        names = common + (["head_dim", "mlp_bias"] if self.model_type == "llama" else mla_moe)
        if self.model_type == "deepseek_v3":
            names.append("rope_interleave")
        # auto_map points at remote modeling code we do not ship; weights are written dequantized.
        dropped = ("model_type", "architectures", "auto_map", "quantization_config")
        out = {k: v for k, v in self.extra.items() if k not in dropped}
        values = asdict(self)
        out.update({k: values[k] for k in names})
        if self.model_type != "llama":
            out["seq_aux"] = True
            out["num_key_value_heads"] = self.num_attention_heads
        out.update(architectures=[ARCHITECTURES[self.model_type]], model_type=self.model_type,
                   hidden_act="silu", torch_dtype=self.torch_dtype)
        return out

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed (e.g. `config.replace(n_routed_experts=64)`)."""
        return ModelConfig(**{**asdict(self), **changes})


def _read_json(source: str | Path) -> dict:
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise UserError(f"no config.json at {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from exc
