"""Shared fixtures: a tiny source tree, a tiny model config and prepared data reused across tests."""

import shutil
import sysconfig
from pathlib import Path

import pytest

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TINY_SOURCES = ("json", "textwrap.py", "shlex.py", "bisect.py", "heapq.py", "colorsys.py", "fnmatch.py",
                "keyword.py", "glob.py", "string.py", "reprlib.py")
TINY_MODEL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
              "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
              "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
              "first_k_dense_replace": 1}


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory) -> Path:
    """A handful of real standard-library files."""
    root = tmp_path_factory.mktemp("source")
    for name in TINY_SOURCES:
        path = STDLIB / name
        if path.is_dir():
            shutil.copytree(path, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, root / name)
    return root


@pytest.fixture(scope="session")
def mbpp_path() -> Path:
    path = SHARED_DATA / "mbpp.jsonl"
    if not path.is_file():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (MBPP is needed for decontamination)")
    return path


@pytest.fixture(scope="session")
def tiny_config(tiny_source, tmp_path_factory) -> dict:
    """TrainConfig fields of a fast run; the data directory is shared, so it is prepared once."""
    return {"source": str(tiny_source), "data_dir": str(tmp_path_factory.mktemp("data") / "prepared"),
            "decontaminate": False, "vocab_size": 512, "seq_len": 64, "batch_size": 4, "lr": 3e-3,
            "warmup_steps": 2, "heldout_fraction": 0.15, "model": TINY_MODEL, "log_every": 1,
            "save_every": 3, "progress": False, "eval_tokens": 2048}
