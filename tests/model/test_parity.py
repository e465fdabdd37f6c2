"""Our model against transformers on the same checkpoints: logits, save -> from_pretrained, generation."""

import json

import pytest
import torch
from model_layouts import LAYOUTS, relative_error

from moecoder.model import load_model, save_model
from moecoder.model.moe import MoE

transformers = pytest.importorskip("transformers")
TOL = 1e-4


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_load_matches_transformers_logits_and_save_loads_back(layout, reference_checkpoint, tmp_path):
    reference, directory = reference_checkpoint(layout)
    ours = load_model(directory, dtype=torch.float32)
    ids = torch.randint(0, 128, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference(ids).logits
        assert relative_error(ours(ids), want) <= TOL

    save_model(ours, tmp_path / "ours")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert relative_error(back(ids).logits, want) <= TOL
    assert type(back).__name__ == type(reference).__name__


def test_saved_names_are_transformers_per_expert_names(reference_checkpoint, tmp_path):
    from safetensors import safe_open

    reference, directory = reference_checkpoint("v3")
    save_model(load_model(directory), tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        ours = set(f.keys())
    with safe_open(directory / "model.safetensors", "pt") as f:
        theirs = set(f.keys())
    assert ours == theirs
    assert "model.layers.1.mlp.experts.7.gate_proj.weight" in ours
    assert "model.layers.1.mlp.gate.e_score_correction_bias" in ours


def test_sharded_checkpoint_loads_and_saves_sharded(reference_checkpoint, tmp_path):
    reference, _ = reference_checkpoint("v2")
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    ours = load_model(tmp_path / "sharded")
    ids = torch.randint(0, 128, (1, 9))
    with torch.no_grad():
        assert relative_error(ours(ids), reference(ids).logits) <= TOL
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "tokenizer.json").write_text("{}")  # files beside the weights survive a save
    save_model(ours, tmp_path / "out", max_shard_bytes=60_000)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert (tmp_path / "out" / "tokenizer.json").exists()
    assert not list((tmp_path / "out").glob("*.tmp"))
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert relative_error(back(ids).logits, reference(ids).logits) <= TOL
    save_model(ours, tmp_path / "out")  # re-saving unsharded removes the old shards and index
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["config.json", "model.safetensors", "tokenizer.json"]


def test_missing_weight_is_a_clear_error(reference_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    from moecoder.errors import UserError

    _, directory = reference_checkpoint("llama")
    tensors = load_file(directory / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(UserError, match="model.norm.weight|norm.weight"):
        load_model(tmp_path)


@pytest.mark.parametrize("layout", ["v3", "v2", "llama"])
def test_greedy_generation_equals_transformers(layout, reference_checkpoint):
    reference, directory = reference_checkpoint(layout)
    ours = load_model(directory)
    prompt = torch.randint(0, 128, (1, 7), generator=torch.Generator().manual_seed(2))
    want = reference.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(ours.generate(prompt, max_new_tokens=12), want)


@pytest.mark.parametrize("layout", ["v3", "llama"])
def test_batched_left_padded_generation_equals_unbatched(layout, reference_checkpoint):
    ours = load_model(reference_checkpoint(layout)[1])
    g = torch.Generator().manual_seed(3)
    short, long = torch.randint(0, 128, (1, 4), generator=g), torch.randint(0, 128, (1, 9), generator=g)
    batch = torch.cat((torch.cat((torch.zeros(1, 5, dtype=torch.long), short), dim=1), long))
    mask = torch.ones_like(batch)
    mask[0, :5] = 0
    out = ours.generate(batch, max_new_tokens=8, attention_mask=mask)
    assert torch.equal(out[0, 5:], ours.generate(short, max_new_tokens=8)[0])
    assert torch.equal(out[1], ours.generate(long, max_new_tokens=8)[0])


def test_generation_stops_at_eos_and_stop_sequences(reference_checkpoint):
    ours = load_model(reference_checkpoint("v3")[1])
    prompt = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(4))
    free = ours.generate(prompt, max_new_tokens=10)[0, 5:].tolist()
    eos = free[3]
    stopped = ours.generate(prompt, max_new_tokens=10, eos_token_id=eos)[0, 5:].tolist()
    assert stopped == free[:free.index(eos) + 1]
    by_sequence = ours.generate(prompt, max_new_tokens=10, stop=[free[1:3]])[0, 5:].tolist()
    assert by_sequence == free[:3]


def test_cached_absorbed_mla_equals_expanded_forward(reference_checkpoint):
    from moecoder.model.generate import StaticCache

    ours = load_model(reference_checkpoint("v3")[1])
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(5))
    cache = StaticCache(ours, 2, 10)
    with torch.no_grad():
        full = ours(ids)
        stepped = torch.cat([ours(ids[:, :6], cache=cache), ours(ids[:, 6:], cache=cache)], dim=1)
    assert relative_error(stepped, full) <= TOL
    # The MLA cache holds only the latent and the rotary key: kv_lora_rank + qk_rope_head_dim per token.
    assert cache.layers[0].k.shape == (2, 10, 16 + 8) and cache.layers[0].v is None


def test_router_weights_kept_in_float32_for_bf16(reference_checkpoint):
    ours = load_model(reference_checkpoint("v3")[1], dtype=torch.bfloat16)
    moe = next(m for m in ours.modules() if isinstance(m, MoE))
    assert moe.gate.weight.dtype == torch.float32 and ours.lm_head.weight.dtype == torch.bfloat16


def test_pytorch_bin_and_fp8_block_quantized_checkpoints_load(reference_checkpoint, tmp_path):
    """Old pytorch_model.bin files, and DeepSeek-V3's FP8 weights with 128x128-block weight_scale_inv."""
    from safetensors.torch import load_file, save_file

    reference, directory = reference_checkpoint("llama")
    tensors = load_file(directory / "model.safetensors")
    config = json.loads((directory / "config.json").read_text())
    (tmp_path / "bin").mkdir()
    torch.save(tensors, tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text(json.dumps(config))
    ids = torch.randint(0, 128, (1, 6))
    with torch.no_grad():
        assert relative_error(load_model(tmp_path / "bin")(ids), reference(ids).logits) <= TOL

    weight = tensors["model.layers.0.mlp.up_proj.weight"]  # [96, 64]
    scale = weight.abs().view(3, 32, 2, 32).amax(dim=(1, 3)) / 448  # per 32x32 block, as DeepSeek quantizes
    tensors["model.layers.0.mlp.up_proj.weight"] = (weight / scale.repeat_interleave(32, 0).repeat_interleave(
        32, 1)).to(torch.float8_e4m3fn)
    tensors["model.layers.0.mlp.up_proj.weight_scale_inv"] = scale
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [32, 32]}
    (tmp_path / "fp8").mkdir()
    save_file(tensors, tmp_path / "fp8" / "model.safetensors")
    (tmp_path / "fp8" / "config.json").write_text(json.dumps(config))
    ours = load_model(tmp_path / "fp8")
    got = ours.layers[0].mlp.up_proj.weight
    assert relative_error(got, weight) < 0.07 and not torch.equal(got, weight)  # e4m3 rounding, scales undone
    save_model(ours, tmp_path / "fp8-saved")
    assert "quantization_config" not in json.loads((tmp_path / "fp8-saved" / "config.json").read_text())


# Every rope type transformers implements for these layouts, on a 32-position model fed 48 tokens (beyond the
# trained length, where the types differ); "yarn" is DeepSeek's long-context form with mscale and mscale_all_dim.
SHORT = 16
ROPES = {
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 4.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": SHORT, "mscale": 0.707,
             "mscale_all_dim": 0.707},
    "yarn-plain": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": SHORT},
    "llama3": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": SHORT},
}


@pytest.fixture(scope="module")
def rope_checkpoint(tmp_path_factory):
    """(layout, rope) -> (transformers model, directory): the layout with that rope and 32 positions."""
    from model_layouts import LAYOUTS

    def build(layout, rope):
        model_class, config_class, kwargs = LAYOUTS[layout]
        kwargs = dict(kwargs, max_position_embeddings=2 * SHORT,
                      rope_parameters=dict(ROPES[rope], rope_theta=kwargs["rope_parameters"]["rope_theta"]))
        torch.manual_seed(0)
        config = getattr(transformers, config_class)(**kwargs)
        model = getattr(transformers, model_class)(config).eval()
        directory = tmp_path_factory.mktemp(f"{layout}-{rope}")
        model.save_pretrained(directory)
        return model, directory

    return build


@pytest.mark.parametrize("rope", sorted(ROPES))
@pytest.mark.parametrize("layout", ["llama", "v2", "v3"])
def test_every_rope_type_matches_transformers_beyond_the_trained_length(layout, rope, rope_checkpoint):
    reference, directory = rope_checkpoint(layout, rope)
    ours = load_model(directory, dtype=torch.float32)
    assert ours.config.rope_type == ROPES[rope]["rope_type"]
    ids = torch.randint(0, 128, (2, 3 * SHORT), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert relative_error(ours(ids), reference(ids).logits) <= TOL


@pytest.mark.parametrize("layout", ["llama", "v3"])
def test_dynamic_rope_generation_across_the_trained_length_equals_transformers(layout, rope_checkpoint):
    """Dynamic NTK's base grows with every step past 32 positions; the cached keys keep the frequencies
    they were rotated with, in both implementations."""
    reference, directory = rope_checkpoint(layout, "dynamic")
    ours = load_model(directory)
    prompt = torch.randint(0, 128, (1, 2 * SHORT - 4), generator=torch.Generator().manual_seed(7))
    want = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                              pad_token_id=0, eos_token_id=None)  # the mask: the prompt holds a 0
    assert torch.equal(ours.generate(prompt, max_new_tokens=12), want)
