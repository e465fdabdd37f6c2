"""`moecoder stats`: parameters, FLOPs, KV-cache bytes and a GPU-hours projection for a config.json."""

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
    ) -> None:
        """Total and active parameters, training/inference FLOPs per token, KV-cache bytes per token."""
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
            print(f"{config}  ({cfg.model_type}, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size})")
            print(f"  total params            {_human(result['total_params'])}")
            print(f"  active params / token   {_human(result['active_params'])}  (input embedding not counted)")
            print(f"  train FLOPs / token     {_human(result['train_flops_per_token'], 'G')}  (seq_len {seq_len})")
            print(f"  infer FLOPs / token     {_human(result['infer_flops_per_token'], 'G')}")
            print(f"  KV cache bytes / token  {_human(result['kv_cache_bytes_per_token'])}  ({kv_dtype})")
            if tokens is not None:
                print(f"  {gpu.upper()} GPU-hours         {_human(result['gpu_hours'])}  "
                      f"({tokens:.3g} tokens at MFU {mfu:.3f})")
            if as_json:
                print(json.dumps(result))


def _human(value: float, billion: str = "B") -> str:
    """1234567 -> '1.235 M' (K, M, B or G, T)."""
    for scale, unit in ((1e12, "T"), (1e9, billion), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:10.3f} {unit}"
    return f"{value:10.0f}"
