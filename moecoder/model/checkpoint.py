"""Load and save transformers-layout checkpoints: config.json + model.safetensors (or shards + index).

Loading builds the model on the meta device, allocates it once, then copies tensors in shard by shard from
memory-mapped files, so peak memory stays at about one model. Per-expert weights
(mlp.experts.E.gate_proj.weight ...) are packed into our Experts tensors on load and unpacked on save.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from moecoder.errors import UserError
from moecoder.files import atomic_path, write_json
from moecoder.model.config import ModelConfig
from moecoder.model.transformer import Transformer

EXPERT_KEY = re.compile(r"(layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
PACKED_KEY = re.compile(r"(layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)$")  # transformers' in-memory form
LAYER_KEY = re.compile(r"layers\.(\d+)\.")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INDEX = "model.safetensors.index.json"


# --- reading -------------------------------------------------------------------------------------
class CheckpointReader:
    """Tensors of a checkpoint directory by name, memory-mapped, opening each shard once.

    safetensors (model.safetensors or shards + index) is the format; older pytorch_model.bin checkpoints
    (some DeepSeek-Coder v1 repositories) are read with torch.load(mmap=True).
    """

    def __init__(self, directory: Path):
        self.directory = directory
        for index, single in ((INDEX, "model.safetensors"), ("pytorch_model.bin.index.json", "pytorch_model.bin")):
            if (directory / index).is_file():
                self.weight_map = json.loads((directory / index).read_text())["weight_map"]
                break
            if (directory / single).is_file():
                self.weight_map = {key: single for key in self._load(single).keys()}
                break
        else:
            raise UserError(f"no model.safetensors, {INDEX} or pytorch_model.bin in {directory}")
        self._open: dict[str, object] = {}

    def _load(self, file: str):
        if file.endswith(".bin"):
            return torch.load(self.directory / file, mmap=True, weights_only=True, map_location="cpu")
        return safe_open(self.directory / file, framework="pt")

    def shards(self) -> list[str]:
        return sorted(set(self.weight_map.values()))

    def keys(self, shard: str) -> list[str]:
        return [key for key, file in self.weight_map.items() if file == shard]

    def get(self, key: str) -> torch.Tensor:
        file = self.weight_map[key]
        if file not in self._open:
            self._open[file] = self._load(file)
        handle = self._open[file]
        return handle[key] if isinstance(handle, dict) else handle.get_tensor(key)

    def close_all_but(self, shard: str) -> None:
        self._open = {file: handle for file, handle in self._open.items() if file == shard}


def dequantize_fp8(weight: torch.Tensor, scale_inv: torch.Tensor, block: int) -> torch.Tensor:
    """DeepSeek-V3's block-wise FP8: each block x block tile is multiplied by its scale."""
    rows, cols = weight.shape
    scale = scale_inv.repeat_interleave(block, 0)[:rows].repeat_interleave(block, 1)[:, :cols]
    return weight.float() * scale


def load_model(path: str | os.PathLike, dtype: torch.dtype | str | None = None,
               device: str = "cpu") -> Transformer:
    """A Transformer with the weights of a transformers-layout checkpoint directory.

    dtype defaults to the checkpoint's own (config.json `dtype`/`torch_dtype`), float32 if unstated; the
    router stays float32 as in transformers.
    """
    directory = Path(path)
    config = ModelConfig.from_hf(directory)
    dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    dtype = dtype or DTYPES.get(config.torch_dtype, torch.float32)
    config.torch_dtype = str(dtype).removeprefix("torch.")
    block = (config.extra.pop("quantization_config", None) or {}).get("weight_block_size", [128])[0]
    with torch.device("meta"):
        model = Transformer(config).to(dtype)
        for moe in model.moe_layers():
            moe.gate.float()
    model.to_empty(device=device)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    params = dict(model.state_dict(keep_vars=True))
    missing = set(params) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    reader = CheckpointReader(directory)
    with torch.no_grad():
        for shard in reader.shards():
            reader.close_all_but(shard)
            for key in reader.keys(shard):
                name = key.removeprefix("model.")
                layer = LAYER_KEY.match(name)
                beyond = layer and int(layer.group(1)) >= config.num_hidden_layers  # V3's multi-token prediction
                if beyond or key.endswith(("_scale_inv", "rotary_emb.inv_freq")):
                    continue
                tensor = reader.get(key)
                if tensor.dtype == torch.float8_e4m3fn:
                    tensor = dequantize_fp8(tensor, reader.get(key + "_scale_inv"), block)
                missing -= _copy_in(params, name, tensor, config, key)
    if missing:
        raise UserError(f"checkpoint {directory} lacks {len(missing)} weights, e.g. {sorted(missing)[0]}")
    model.rotary.reset_parameters()
    return model.eval()


def _copy_in(params: dict, name: str, tensor: torch.Tensor, config: ModelConfig, key: str) -> set[str]:
    """Copy one checkpoint tensor into the model; returns the model tensor names it completes."""
    inter = config.moe_intermediate_size
    if match := EXPERT_KEY.match(name):
        prefix, expert, proj = match.group(1), int(match.group(2)), match.group(3)
        if proj == "down_proj":
            params[f"{prefix}.w2"][expert].copy_(tensor.T)
        else:
            columns = slice(0, inter) if proj == "gate_proj" else slice(inter, 2 * inter)
            params[f"{prefix}.w13"][expert, :, columns].copy_(tensor.T)
        return {f"{prefix}.w13", f"{prefix}.w2"}  # reported complete once all experts are in (checked below)
    if match := PACKED_KEY.match(name):
        target = f"{match.group(1)}.{'w13' if match.group(2) == 'gate_up_proj' else 'w2'}"
        params[target].copy_(tensor.transpose(1, 2))
        return {target}
    if name not in params:
        raise UserError(f"unexpected weight {key} (not part of a {config.model_type} model of this config)")
    if params[name].shape != tensor.shape:
        raise UserError(f"weight {key} has shape {tuple(tensor.shape)}, the config implies {tuple(params[name].shape)}")
    params[name].copy_(tensor)
    return {name}


# --- writing -------------------------------------------------------------------------------------
def hf_tensors(model: Transformer):
    """(transformers name, tensor) pairs of the model, experts unpacked; yielded lazily (views, no copies)."""
    config = model.config
    inter = config.moe_intermediate_size
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        hf_name = name if name.startswith("lm_head") else f"model.{name}"
        if name.endswith(".experts.w13"):
            base = hf_name.removesuffix(".w13")
            for e in range(tensor.shape[0]):
                yield f"{base}.{e}.gate_proj.weight", tensor[e, :, :inter].T
                yield f"{base}.{e}.up_proj.weight", tensor[e, :, inter:].T
        elif name.endswith(".experts.w2"):
            base = hf_name.removesuffix(".w2")
            for e in range(tensor.shape[0]):
                yield f"{base}.{e}.down_proj.weight", tensor[e].T
        else:
            yield hf_name, tensor


def save_model(model: Transformer, path: str | os.PathLike, max_shard_bytes: int = 5 * 2**30) -> None:
    """Write config.json and safetensors weights (sharded above max_shard_bytes) in transformers' layout.

    Every file is written to a temporary name and renamed into place; other files in the directory
    (a tokenizer, say) are left alone, stale weight shards from an earlier save are removed.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    shards, current, size = [], [], 0
    for name, tensor in hf_tensors(model):
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    shards.append(current)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    weight_map, total = {}, 0
    for file, shard in zip(names, shards):
        wanted = set(shard)
        tensors = {n: t.detach().contiguous() for n, t in hf_tensors(model) if n in wanted}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        with atomic_path(directory / file) as tmp:
            save_file(tensors, tmp, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
        del tensors
    for stale in directory.glob("model*.safetensors*"):
        if stale.name not in names and stale.name != INDEX:
            stale.unlink()
    if len(names) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        write_json(directory / INDEX, index)
    elif (directory / INDEX).exists():
        (directory / INDEX).unlink()
    config = model.config.to_hf()
    config["torch_dtype"] = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
    write_json(directory / "config.json", config)
