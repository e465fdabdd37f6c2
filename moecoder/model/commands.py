"""`moecoder stats`: parameters, FLOPs, KV-cache bytes, a GPU-hours projection and training memory per GPU."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def stats(
        config: Path = typer.Option(..., "--config", help="A transformers config.json (or a checkpoint directory)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line of stdout."),
        seq_len: int = typer.Option(4096, "--seq-len", help="Context length for attention FLOPs (pre-training)."),
        kv_dtype: str = typer.Option("bfloat16", "--kv-dtype", help="KV-cache element: bfloat16, float32, float8."),
        tokens: float = typer.Option(None, "--tokens", help="Project GPU-hours for training on this many tokens."),
        gpu: str = typer.Option("h800", "--gpu", help="GPU for the projection: h800, h100 or a100 (dense BF16 peak)."),
        mfu: float = typer.Option(0.42, "--mfu", help="Model-FLOPs utilisation assumed by the projection (0-1]."),
        ep: int = typer.Option(None, "--ep", help="Memory per GPU: expert-parallel ranks (split the routed experts)."),
        fsdp: int = typer.Option(None, "--fsdp", help="Memory per GPU: ranks FSDP shards the weights over."),
        dp: int = typer.Option(None, "--dp", help="Memory per GPU: replicas of the FSDP group (world = dp x fsdp)."),
        micro_batch: int = typer.Option(1, "--micro-batch", help="Memory per GPU: sequences per GPU per micro-step."),
    ) -> None:
        """Total and active parameters, training/inference FLOPs per token, KV-cache bytes per token; with
        --ep/--fsdp/--dp, the training memory per GPU of that parallel layout."""
        from moecoder.errors import UserError, exit_on_user_error
        from moecoder.model import accounting
        from moecoder.model.config import ModelConfig

        with exit_on_user_error():
            if gpu not in accounting.GPU_PEAK_FLOPS:
                raise UserError(f"--gpu {gpu!r} is not one of {sorted(accounting.GPU_PEAK_FLOPS)}")
            if kv_dtype not in accounting.DTYPE_BYTES:
                raise UserError(f"--kv-dtype {kv_dtype!r} is not one of {sorted(accounting.DTYPE_BYTES)}")
            if not 0 < mfu <= 1:
                raise UserError(f"--mfu {mfu} must be in (0, 1]")
            cfg = ModelConfig.from_hf(config)
            result = accounting.stats(cfg, seq_len, kv_dtype)
            if tokens is not None:
                result["gpu_hours"] = accounting.gpu_hours(cfg, tokens, gpu, mfu, seq_len)
            layout = {"ep": ep or 1, "fsdp": fsdp or 1, "dp": dp or 1}
            if ep or fsdp or dp:
                try:
                    result["memory_per_gpu"] = accounting.memory_per_gpu(cfg, seq_len=seq_len,
                                                                         micro_batch=micro_batch, **layout)
                except ValueError as exc:
                    raise UserError(str(exc)) from None
            print(f"{config}  ({cfg.model_type}, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size})")
            print(f"  total params            {_human(result['total_params'])}")
            print(f"  active params / token   {_human(result['active_params'])}  (input embedding not counted)")
            print(f"  train FLOPs / token     {_human(result['train_flops_per_token'], 'G')}  (seq_len {seq_len})")
            print(f"  infer FLOPs / token     {_human(result['infer_flops_per_token'], 'G')}")
            print(f"  KV cache bytes / token  {_human(result['kv_cache_bytes_per_token'])}  ({kv_dtype})")
            if tokens is not None:
                print(f"  {gpu.upper()} GPU-hours         {_human(result['gpu_hours'])}  "
                      f"({tokens:.3g} tokens at MFU {mfu:.3f})")
            if "memory_per_gpu" in result:
                _print_memory(result["memory_per_gpu"], layout, micro_batch, seq_len, gpu,
                              accounting.GPU_MEMORY_BYTES[gpu])
            if as_json:
                print(json.dumps(result))


def _print_memory(memory: dict, layout: dict, micro_batch: int, seq_len: int, gpu: str, capacity: float) -> None:
    print(f"  training memory per GPU  (ep {layout['ep']}, fsdp {layout['fsdp']}, dp {layout['dp']}: "
          f"{memory['world_size']} GPUs; micro-batch {micro_batch} x {seq_len} tokens)")
    print(f"    params held           {_human(memory['params_per_gpu'])}")
    for key, label in (("weights", "weights (fp32)"), ("gradients", "gradients (fp32)"),
                       ("adamw", "AdamW moments (fp32)"), ("fsdp_gathered_layers", "FSDP gathered layers"),
                       ("activations", "activations (bf16)"), ("total", "total")):
        print(f"    {label:<22}{memory[key] / 2**30:10.2f} GiB")
    verdict = "fits" if memory["total"] <= capacity else "does not fit"
    print(f"    {verdict} in a {capacity / 1e9:.0f} GB {gpu.upper()} (before allocator and communication buffers)")


def _human(value: float, billion: str = "B") -> str:
    """1234567 -> '1.235 M' (K, M, B or G, T)."""
    for scale, unit in ((1e12, "T"), (1e9, billion), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:10.3f} {unit}"
    return f"{value:10.0f}"
