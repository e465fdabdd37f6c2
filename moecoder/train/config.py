"""Training configuration: one flat dataclass, read from a TOML or JSON file plus key=value overrides.

Example TOML (every key optional; `[model]` holds moecoder.model.ModelConfig fields):

    steps = 300
    seq_len = 256
    batch_size = 8
    lr = 1e-3
    [model]
    hidden_size = 256
    num_hidden_layers = 4
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from moecoder.errors import UserError

# The nano DeepSeek-V3-layout MoE: about 4M active parameters (8 routed experts, top-2, 1 shared, MLA).
NANO_MOE = {
    "model_type": "deepseek_v3", "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4,
    "num_attention_heads": 4, "kv_lora_rank": 64, "q_lora_rank": None, "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16, "v_head_dim": 32, "n_routed_experts": 8, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "moe_intermediate_size": 256, "first_k_dense_replace": 1,
    "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": True,
    "routed_scaling_factor": 1.0, "max_position_embeddings": 4096,
}


@dataclass
class TrainConfig:
    """Everything a pre-training or SFT run needs. Batch sizes are global (split across processes)."""

    # model: ModelConfig fields for a new model (vocab_size comes from the tokenizer), or model_path to start from
    model: dict = field(default_factory=lambda: dict(NANO_MOE))
    model_path: str | None = None
    # data
    source: str | None = None  # directory of source files; None = this Python's standard library
    data_dir: str | None = None  # prepared data (corpus, tokenizer, shards); None = <out_dir>/data
    tokenizer: str | None = None  # an existing tokenizer.json or model directory; None = train a BPE
    vocab_size: int = 4096
    pre_tokenizer: str = "gpt2"  # split before BPE merges: "gpt2" or "deepseek-coder" (moecoder.text.pre_tokenizer)
    max_files: int | None = None
    # what a document is, in training and held out: whole "files", each of their "functions" on its own
    # (moecoder.train.corpus.function_documents), or "both"
    documents: str = "files"
    decontaminate: bool = True
    mbpp_path: str | None = None  # local mbpp.jsonl for decontamination; None = moecoder.bench's copy
    heldout_fraction: float = 0.02
    fim_rate: float = 0.5
    fim_spm_rate: float = 0.0  # share of FIM documents in SPM order (the rest PSM)
    fim_unit: str = "char"  # FIM cut points at any character, or at line starts ("line": the middle is whole lines)
    # FIM on pieces of whole lines of at most this many characters, each placed inside one training window
    # (None: FIM on whole files)
    fim_max_chars: int | None = None
    seq_len: int = 256
    # optimisation
    batch_size: int = 8  # sequences per micro-step, over all processes
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    steps: int | None = 300  # optimizer steps (0 = no step limit); with `minutes` too, whichever ends first
    minutes: float | None = None  # time budget (the cosine schedule follows time when steps is None)
    clock: str = "wall"  # what `minutes` counts: "wall" seconds, or "cpu" = process CPU seconds / torch threads
    balance: str = "bias"  # MoE balancing: "bias" (aux-loss-free, V3), "aux" (sequence-wise aux loss), "none"
    bias_update_rate: float = 1e-3
    aux_loss_alpha: float = 1e-4
    dtype: str = "auto"  # "auto" (bf16 autocast on GPUs that support it, else float32), "bf16", "fp32"
    fsdp: bool = False  # shard parameters with FSDP2 under torchrun instead of DDP
    expert_parallel: int = 1  # ranks that split each MoE layer's routed experts (divides E and the world size)
    seed: int = 0
    log_every: int = 10
    save_every: int = 100
    keep_checkpoints: int = 2
    eval_tokens: int = 32768  # held-out tokens scored at the end of the run
    progress: bool = True

    def __post_init__(self):
        if self.balance not in ("bias", "aux", "none"):
            raise UserError(f"balance={self.balance!r}: expected bias, aux or none")
        if self.clock not in ("wall", "cpu"):
            raise UserError(f"clock={self.clock!r}: expected wall or cpu")
        if self.documents not in ("files", "functions", "both"):
            raise UserError(f"documents={self.documents!r}: expected files, functions or both")
        if self.fim_unit not in ("char", "line"):
            raise UserError(f"fim_unit={self.fim_unit!r}: expected char or line")
        if self.pre_tokenizer not in ("gpt2", "deepseek-coder"):
            raise UserError(f"pre_tokenizer={self.pre_tokenizer!r}: expected gpt2 or deepseek-coder")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise UserError(f"dtype={self.dtype!r}: expected auto, bf16 or fp32")
        if self.steps == 0:
            self.steps = None
        if self.steps is None and self.minutes is None:
            raise UserError("set steps or minutes (or both)")

    def to_dict(self) -> dict:
        return asdict(self)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: list[str]) -> dict:
    """["lr=3e-4", "model.hidden_size=128"] -> {"lr": 0.0003, "model.hidden_size": 128} (values as JSON, else str)."""
    parsed = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not key=value")
        parsed[key.strip()] = _parse_value(raw)
    return parsed


def load_config(path: str | Path | None = None, overrides: list[str] = (), **values) -> TrainConfig:
    """TrainConfig from a .toml/.json file, then `key=value` overrides (`model.hidden_size=128`), then kwargs
    (`model=` a dict of ModelConfig fields that update the model's)."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} not found")
        try:
            data = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"config file {path} is not valid: {exc}") from exc
    model = dict(NANO_MOE) | data.pop("model", {})
    for key, value in parse_overrides(overrides).items():
        if key.startswith("model."):
            model[key.removeprefix("model.")] = value
        else:
            data[key] = value
    model |= values.pop("model", None) or {}
    data.update({k: v for k, v in values.items() if v is not None})
    kinds = {f.name: f.type for f in fields(TrainConfig)}
    unknown = sorted(set(data) - set(kinds))
    if unknown:
        raise UserError(f"unknown training config keys: {', '.join(unknown)}")
    for key, value in data.items():
        if not _fits(value, kinds[key]):
            raise UserError(f"training config {key}={json.dumps(value)}: expected {kinds[key]}")
    return TrainConfig(model=model, **data)


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}


def _fits(value, annotation: str) -> bool:
    """Whether `value` (from TOML, JSON or --set) has a type the field's annotation ("int | None"...) allows;
    a bool is not taken for a number. Annotations not made of those names are not checked here."""
    names = [name.strip() for name in annotation.split("|")]
    if not all(name in _TYPES for name in names):
        return True
    if isinstance(value, bool):
        return "bool" in names
    if isinstance(value, os.PathLike):  # a path given from Python for a path field
        return "str" in names
    return any(isinstance(value, _TYPES[name]) for name in names)
