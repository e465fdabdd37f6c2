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


# --- training memory per GPU ---------------------------------------------------------------------
SMALL = dict(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12, n_routed_experts=8,
             num_experts_per_tok=2, moe_intermediate_size=40, first_k_dense_replace=1)
SMALL_LAYOUTS = {
    "v3": dict(SMALL, model_type="deepseek_v3", q_lora_rank=24, n_shared_experts=1, n_group=2, topk_group=1),
    "v2": dict(SMALL, model_type="deepseek_v2", q_lora_rank=None, n_shared_experts=2, topk_method="greedy",
               scoring_func="softmax", norm_topk_prob=False, routed_scaling_factor=1.5),
    "llama": dict(model_type="llama", vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2),
}


@pytest.mark.parametrize("layout", sorted(SMALL_LAYOUTS))
@pytest.mark.parametrize("batch,seq_len", [(2, 32), (3, 48)])
def test_activation_figure_matches_a_measured_run(layout, batch, seq_len):
    """float32 on CPU (MLA takes PyTorch's math attention there); a few bytes per layer are not per token."""
    config = ModelConfig(**SMALL_LAYOUTS[layout])
    predicted = batch * seq_len * accounting.activation_bytes_per_token(config, seq_len, "float32", "math")
    torch.manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len))
    measured = accounting.measured_activation_bytes(Transformer(config).train(), ids)
    assert abs(measured - predicted) <= 128, (measured, predicted)


@pytest.mark.parametrize("name", ["deepseek-v3", "deepseek-coder-v2-lite"])
def test_memory_per_gpu_divides_the_parameter_count(name):
    config = ModelConfig.from_hf(CONFIGS / f"{name}.json")
    total, routed = accounting.total_params(config), accounting.routed_expert_params(config)
    whole = accounting.memory_per_gpu(config)
    assert whole["params_per_gpu"] == total and whole["fsdp_gathered_layers"] == 0
    assert whole["weights"] == whole["gradients"] == 4 * total and whole["adamw"] == 8 * total
    # FSDP over 64 with EP 8 inside it: the 64 ranks hold the model once between them
    sharded = accounting.memory_per_gpu(config, ep=8, fsdp=64)
    assert sharded["params_per_gpu"] * 64 == pytest.approx(total)
    # DDP with EP 8: every rank holds all but 7/8 of the routed experts
    ddp = accounting.memory_per_gpu(config, ep=8, dp=64)
    assert ddp["params_per_gpu"] == pytest.approx(total - routed * 7 / 8)
    assert ddp["activations"] == whole["activations"] and ddp["total"] < whole["total"]
    with pytest.raises(ValueError, match="--ep 3"):
        accounting.memory_per_gpu(config, ep=3, fsdp=3)
    with pytest.raises(ValueError, match="must divide the world"):
        accounting.memory_per_gpu(config, ep=8, fsdp=4)


def test_stats_command_memory_per_gpu():
    args = ["stats", "--config", str(CONFIGS / "deepseek-coder-v2-lite.json"), "--json", "--gpu", "h100"]
    result = CliRunner().invoke(app, [*args, "--ep", "8", "--fsdp", "8"])
    assert result.exit_code == 0, result.output
    memory = json.loads(result.output.strip().splitlines()[-1])["memory_per_gpu"]
    assert memory["world_size"] == 8 and memory["total"] < 80e9 and "fits in a 80 GB H100" in result.output
    result = CliRunner().invoke(app, [*args, "--ep", "5"])
    assert result.exit_code == 2 and "--ep 5 does not divide the 64 routed experts" in result.output
