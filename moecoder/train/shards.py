"""Checkpoints in transformers' layout whatever the parallel layout: written by several ranks, read in shares.

Saving (collective): FSDP2 shards are gathered one tensor at a time; rank 0 writes the non-expert weights and
each ep group's first replica writes its own experts under their global numbers (mlp.experts.<e>.*): one
file per ep rank plus transformers' index, so no rank holds more than its experts and one gathered tensor.
AdamW's two moments are written the same way (a weights directory each), so they reload under any layout.

Loading: each rank reads the non-expert tensors and only its own experts' (`LocalTensors.bytes_read` counts
the bytes it read), then FSDP2 keeps its slice of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn

from moecoder.errors import UserError
from moecoder.files import atomic_path, write_json
from moecoder.model.checkpoint import (EXPERT_KEY, INDEX, LAYER_KEY, PACKED_KEY, CheckpointReader, _copy_in,
                                       dequantize_fp8, hf_tensors)
from moecoder.train.parallel import Layout, is_expert_weight

MOMENTS = ("exp_avg", "exp_avg_sq")  # AdamW's state besides its step count


def _full(value: torch.Tensor) -> torch.Tensor:
    """The unsharded tensor of an FSDP2 DTensor (a collective over its mesh), or the tensor itself."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def _assign(target: torch.Tensor, full: torch.Tensor) -> None:
    """Copy `full` into target, or into its local shard when target is an FSDP2 DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    full = full.to(device=target.device, dtype=target.dtype)
    if isinstance(target, DTensor):
        full = distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None).to_local()
        target = target.to_local()
    target.copy_(full)


class _Named:
    """Named tensors plus a model config: the two things hf_tensors() reads from a model."""

    def __init__(self, config, tensors: dict[str, torch.Tensor]):
        self.config, self.tensors = config, tensors

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.tensors


def _renumber(hf_name: str, first: int) -> str:
    """...mlp.experts.<local e>.* -> ...mlp.experts.<first + e>.*"""
    match = EXPERT_KEY.search(hf_name)
    if match is None or first == 0:
        return hf_name
    start, end = match.span(2)
    return f"{hf_name[:start]}{first + int(match.group(2))}{hf_name[end:]}"


def _barrier(layout: Layout) -> None:
    if layout.world_size > 1:
        dist.barrier()


# --- writing -------------------------------------------------------------------------------------
def save_tensors(tensors: dict[str, torch.Tensor], config, layout: Layout, directory: Path) -> None:
    """Collective: write {model name: tensor, FSDP2-sharded or not} in transformers' names and layout.

    Every rank passes the same names in the same order; old weight files in `directory` are replaced."""
    directory = Path(directory)
    mine = {}
    for name, value in tensors.items():
        full = _full(value)
        if (layout.writes_experts if is_expert_weight(name) else layout.rank == 0):
            mine[name] = full.detach().cpu()
    first = layout.expert_range(config.n_routed_experts or 1)[0]
    hf = {_renumber(name, first): t.contiguous() for name, t in hf_tensors(_Named(config, mine))}
    file = "model.safetensors" if layout.ep == 1 else f"model-{layout.ep_rank + 1:05d}-of-{layout.ep:05d}.safetensors"
    if layout.rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("model*.safetensors*"):
            stale.unlink()
    _barrier(layout)
    if hf:
        with atomic_path(directory / file) as tmp:
            save_file(hf, tmp, metadata={"format": "pt"})
    written = [({name: file for name in hf}, sum(t.numel() * t.element_size() for t in hf.values()))]
    if layout.world_size > 1:
        written = [None] * layout.world_size
        dist.all_gather_object(written, ({name: file for name in hf}, sum(t.nbytes for t in hf.values())))
    if layout.rank == 0 and layout.ep > 1:
        weight_map = {name: f for names, _ in written for name, f in names.items()}
        write_json(directory / INDEX, {"metadata": {"total_size": sum(size for _, size in written)},
                                       "weight_map": weight_map})
    _barrier(layout)


def save_model(model: nn.Module, layout: Layout, directory: Path) -> None:
    """Collective: the model (config.json + safetensors) in transformers' layout, loadable by load_model."""
    save_tensors(model.state_dict(), model.config, layout, directory)
    if layout.rank == 0:
        config = model.config.to_hf()
        config["torch_dtype"] = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
        write_json(Path(directory) / "config.json", config)
    _barrier(layout)


def save_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, layout: Layout, directory: Path) -> None:
    """Collective: AdamW's moments as <directory>/<moment>/ weights directories (model names and layout)."""
    params = dict(model.named_parameters())
    for moment in MOMENTS:
        tensors = {name: optimizer.state[p].get(moment, torch.zeros_like(p)) for name, p in params.items()}
        save_tensors(tensors, model.config, layout, Path(directory) / moment)


# --- reading -------------------------------------------------------------------------------------
@dataclass
class LocalTensors:
    """The tensors one rank read: all non-expert ones and its own experts', unsharded by FSDP."""

    tensors: dict[str, torch.Tensor]
    bytes_read: int  # tensor bytes taken from the files


def read_local(directory: Path, model: nn.Module, layout: Layout, names: list[str] | None = None,
               block: int = 128) -> LocalTensors:
    """Read the tensors `model` (already expert-sharded) needs on this rank from a transformers checkpoint.

    names: the model tensor names wanted (default: its whole state dict). block: the FP8 block size of
    DeepSeek-V3's quantized weights. Raises UserError when one is missing.
    """
    config = model.config
    state = model.state_dict()
    wanted = names if names is not None else list(state)
    tensors = {name: torch.empty(state[name].shape, dtype=state[name].dtype) for name in wanted}
    first, last = layout.expert_range(config.n_routed_experts or 1)
    reader = CheckpointReader(Path(directory))
    done, bytes_read = set(), 0
    with torch.no_grad():
        for shard in reader.shards():
            reader.close_all_but(shard)
            for key in reader.keys(shard):
                tensor, name = None, key.removeprefix("model.")
                layer = LAYER_KEY.match(name)
                if key.endswith(("_scale_inv", "rotary_emb.inv_freq")) or (
                        layer and int(layer.group(1)) >= config.num_hidden_layers):  # V3's multi-token prediction
                    continue
                if match := EXPERT_KEY.match(name):
                    expert = int(match.group(2))
                    name = f"{match.group(1)}.{expert - first}.{match.group(3)}.weight"
                    if not first <= expert < last:
                        continue
                elif not PACKED_KEY.match(name) and name not in tensors:
                    continue
                tensor = reader.get(key)
                bytes_read += tensor.nbytes
                if PACKED_KEY.match(name):
                    tensor = tensor[first:last]
                if tensor.dtype == torch.float8_e4m3fn:
                    tensor = dequantize_fp8(tensor, reader.get(key + "_scale_inv"), block)
                done |= _copy_in(tensors, name, tensor, config, key)
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)  # the same tensor as embed_tokens.weight
    missing = set(tensors) - done
    if missing:
        raise UserError(f"checkpoint {directory} lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}")
    return LocalTensors(tensors, bytes_read)


def load_into(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy read tensors into the model's parameters and buffers (each FSDP2 rank keeps its slice)."""
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, value in tensors.items():
            _assign(state[name], value)


def load_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, layout: Layout, directory: Path,
                   step: int) -> None:
    """Give every parameter its AdamW state from save_optimizer's directory, read in this rank's share."""
    params = dict(model.named_parameters())
    moments = {m: read_local(Path(directory) / m, model, layout, names=list(params)).tensors for m in MOMENTS}
    for name, p in params.items():
        state = {"step": torch.tensor(float(step))}
        for moment in MOMENTS:
            state[moment] = torch.zeros_like(p)
            with torch.no_grad():
                _assign(state[moment], moments[moment][name])
        optimizer.state[p] = state


def load_sharded_model(path: Path, layout: Layout, device: torch.device) -> nn.Module:
    """A float32 model from a transformers checkpoint holding only this rank's experts (built on meta first,
    so no rank allocates or reads the experts of others)."""
    from moecoder.model import ModelConfig, Transformer

    config = ModelConfig.from_hf(Path(path))
    block = (config.extra.pop("quantization_config", None) or {}).get("weight_block_size", [128])[0]
    config.torch_dtype = "float32"
    with torch.device("meta"):
        model = Transformer(config).float()
    layout.shard_experts(model)
    model.to_empty(device=device)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.reset_buffers()
    load_into(model, read_local(Path(path), model, layout, block=block).tensors)
    return model
