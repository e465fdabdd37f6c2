"""`moecoder stats` numbers: against transformers' modules (on the meta device) and DeepSeek's published figures."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from moecoder.cli import app
from moecoder.model import ModelConfig, Transformer, accounting

CONFIGS = Path(__file__).parent / "configs"


def reference_counts(config_file: Path) -> tuple[int, int]:
    """(total, active) from transformers' own model built on the meta device."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoConfig.from_pretrained(config_file)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf)
    total = sum(p.numel() for p in model.parameters())
    unused = 0
    for module in model.modules():
        if type(module).__name__.endswith("Experts"):
            experts = sum(p.numel() for p in module.parameters())
            unused += experts * (hf.n_routed_experts - hf.num_experts_per_tok) // hf.n_routed_experts
    return total, total - model.model.embed_tokens.weight.numel() - unused


@pytest.mark.parametrize("name", ["deepseek-v3", "deepseek-coder-v2-lite", "deepseek-coder-1.3b",
                                  "deepseek-coder-33b"])
def test_param_counts_equal_transformers_modules(name, tmp_path):
    (tmp_path / "config.json").write_text((CONFIGS / f"{name}.json").read_text())
    config = ModelConfig.from_hf(tmp_path)
    assert (accounting.total_params(config), accounting.active_params(config)) == reference_counts(tmp_path)


def test_published_sizes():
    v3 = ModelConfig.from_hf(CONFIGS / "deepseek-v3.json")
    lite = ModelConfig.from_hf(CONFIGS / "deepseek-coder-v2-lite.json")
    assert round(accounting.total_params(v3) / 1e9) == 671
    assert abs(accounting.active_params(v3) / 1e9 - 36.6) < 0.1
    assert round(accounting.total_params(lite) / 1e9, 1) == 15.7
    assert round(accounting.active_params(lite) / 1e9, 1) in (2.4, 2.5)  # DeepSeek quotes 2.4B
    assert round(accounting.total_params(ModelConfig.from_hf(CONFIGS / "deepseek-coder-6.7b.json")) / 1e9, 1) == 6.7


def test_kv_cache_bytes_per_layout():
    v3 = ModelConfig.from_hf(CONFIGS / "deepseek-v3.json")
    coder33 = ModelConfig.from_hf(CONFIGS / "deepseek-coder-33b.json")
    assert accounting.kv_cache_bytes_per_token(v3) == 61 * (512 + 64) * 2  # latent + rope key, bf16
    assert accounting.kv_cache_bytes_per_token(coder33) == 62 * 2 * 8 * 128 * 2  # k and v of 8 GQA heads


def test_model_methods_agree_with_parameters_it_holds():
    config = ModelConfig(model_type="deepseek_v3", vocab_size=64, hidden_size=32, num_hidden_layers=3,
                         first_k_dense_replace=1, n_routed_experts=8, num_experts_per_tok=2, q_lora_rank=16,
                         n_group=2, topk_group=1)
    model = Transformer(config)
    assert model.num_params(active=False) == sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for m in model.moe_layers() for p in m.experts.parameters())
    assert model.num_params(active=True) == model.num_params() - 64 * 32 - experts * 6 // 8
    assert model.flops_per_token(128, training=True) == 3 * model.flops_per_token(128, training=False)


def test_gpu_hours_projection_reproduces_deepseek_v3():
    """DeepSeek-V3: 2.788M H800 GPU-hours, 14.8T tokens. The MFU those imply under our accounting
    (seq_len 4096, dense BF16 peak 989.5 TFLOP/s) is ~0.419; projecting with 0.42 must land within 10%."""
    v3 = ModelConfig.from_hf(CONFIGS / "deepseek-v3.json")
    mfu = accounting.implied_mfu(v3, 14.8e12, "h800", 2.788e6, seq_len=4096)
    assert 0.35 < mfu < 0.5
    hours = accounting.gpu_hours(v3, 14.8e12, "h800", 0.42, seq_len=4096)
    assert abs(hours - 2.788e6) / 2.788e6 < 0.10


def test_stats_command_json_last_line():
    result = CliRunner().invoke(app, ["stats", "--config", str(CONFIGS / "deepseek-v3.json"), "--json",
                                      "--tokens", "14.8e12", "--gpu", "h800", "--mfu", "0.42"])
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.output.strip().splitlines()[-1])
    assert set(numbers) == {"total_params", "active_params", "train_flops_per_token", "infer_flops_per_token",
                            "kv_cache_bytes_per_token", "gpu_hours"}
    assert abs(numbers["gpu_hours"] - 2.788e6) / 2.788e6 < 0.10


def test_stats_command_rejects_bad_input(tmp_path):
    result = CliRunner().invoke(app, ["stats", "--config", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "error:" in result.output
    result = CliRunner().invoke(app, ["stats", "--config", str(CONFIGS / "deepseek-v3.json"), "--gpu", "tpu"])
    assert result.exit_code == 2 and "--gpu" in result.output
