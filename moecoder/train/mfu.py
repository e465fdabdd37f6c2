"""Model FLOPs utilisation: achieved model FLOPs per second over this machine's measured peak.

The peak is measured once per (device, dtype, thread count) with large square matmuls and cached in
$MOECODER_HOME/peak_flops.json (default ~/.cache/moecoder), since vendor peaks do not exist for CPUs.
"""

from __future__ import annotations

import json
import os
import time

import torch

from moecoder.files import moecoder_home, write_json


def _device_key(device: torch.device, dtype: torch.dtype) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu-{os.cpu_count()}cores-{torch.get_num_threads()}threads"
    return f"{name}|{str(dtype).removeprefix('torch.')}"


def measure_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 1024,
                       seconds: float = 1.0) -> float:
    """Best FLOP/s of size x size matmuls over about `seconds` (warm-up excluded)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


def peak_flops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """This machine's peak matmul FLOP/s, measured on first use and cached."""
    device = torch.device(device)
    cache = moecoder_home() / "peak_flops.json"
    key = _device_key(device, dtype)
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in known:
        size = 4096 if device.type == "cuda" else 1024
        known[key] = measure_peak_flops(device, dtype, size=size)
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache, known)
    return known[key]


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    """Fraction of peak: tokens/s x model FLOPs per token (attention included) / peak FLOP/s."""
    return tokens_per_s * flops_per_token / peak
