"""Expert parallelism on CPU with gloo: 2 ranks with expert_parallel=2 train like 1 process, each holding and
serving only its experts; checkpoints stay in transformers' layout across layouts."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from train_runs import read_log, run_cli, torchrun, torchrun_train, write_config

WORKER = str(Path(__file__).with_name("ep_worker.py"))


@pytest.fixture(scope="module")
def ep_config(tiny_config, tmp_path_factory) -> tuple[dict, Path]:
    """4 steps with 2 accumulation micro-batches, checkpoints at steps 2 and 4; the config file."""
    cfg = tiny_config | {"steps": 4, "grad_accum": 2, "save_every": 2}
    return cfg, write_config(tmp_path_factory.mktemp("ep") / "cfg.json", cfg)


@pytest.fixture(scope="module")
def one_process(ep_config, tmp_path_factory) -> Path:
    """The reference: the same run in one process (this one)."""
    from moecoder.train import pretrain

    run = tmp_path_factory.mktemp("one") / "run"
    pretrain(ep_config[0], run, log=lambda _: None)
    return run


@pytest.fixture(scope="module")
def ep_runs(ep_config, tmp_path_factory) -> dict[str, Path]:
    """{"ddp": run dir, "fsdp2": run dir}: 2 processes with expert_parallel=2, started lazily."""
    runs = {}

    def get(kind: str) -> Path:
        if kind not in runs:
            run = tmp_path_factory.mktemp(kind) / "run"
            result = torchrun_train(2, 29541 + len(runs), ep_config[1], run, "--set", "expert_parallel=2",
                                    "--set", f"fsdp={str(kind == 'fsdp2').lower()}")
            assert result.returncode == 0, result.stderr[-3000:]
            runs[kind] = run
        return runs[kind]

    return get


def assert_same_curve(got: dict, want: dict, steps) -> None:
    for step in steps:
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-5), step
        assert got[step]["expert_load"] == want[step]["expert_load"], step


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    from moecoder.model import load_model

    a, b = load_model(a_dir), load_model(b_dir)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-6), name
    for moe_a, moe_b in zip(a.moe_layers(), b.moe_layers()):  # the biases moved, identically
        bias = moe_a.gate.e_score_correction_bias
        assert bias.abs().sum() > 0 and torch.equal(bias, moe_b.gate.e_score_correction_bias)


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_two_ranks_with_ep2_train_like_one_process(kind, one_process, ep_runs):
    run = ep_runs(kind)
    assert_same_curve(read_log(run), read_log(one_process), range(1, 5))
    assert_same_weights(run / "model", one_process / "model")
    # transformers' layout, one file per ep rank, each holding its experts under their global numbers
    index = json.loads((run / "model" / "model.safetensors.index.json").read_text())["weight_map"]
    assert index["model.layers.1.mlp.experts.1.down_proj.weight"] == "model-00001-of-00002.safetensors"
    assert index["model.layers.1.mlp.experts.2.down_proj.weight"] == "model-00002-of-00002.safetensors"


def test_ep2_checkpoint_loads_in_one_process_and_in_transformers(one_process, ep_runs):
    transformers = pytest.importorskip("transformers")
    from moecoder.model import load_model

    model_dir = ep_runs("ddp") / "model"
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = load_model(model_dir)(ids)
        theirs = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()(ids).logits
        reference = load_model(one_process / "model")(ids)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-4)


def rewind(run: Path, to: Path, step: int) -> Path:
    """A copy of a finished run whose latest checkpoint is `step`, as if it had been killed after it."""
    shutil.copytree(run, to)
    (to / "checkpoints" / "latest").write_text(f"step_{step:06d}")
    return to


def test_resume_across_layouts(ep_config, one_process, ep_runs, tmp_path):
    from moecoder.train import pretrain

    want = read_log(one_process)
    # saved with EP=2 (+DDP), resumed by one process: the gathered experts and AdamW moments carry on
    single = rewind(ep_runs("ddp"), tmp_path / "to_one", 2)
    pretrain(ep_config[0], single, resume=True, log=lambda _: None)
    assert_same_curve(read_log(single), want, range(1, 5))
    assert_same_weights(single / "model", one_process / "model")
    # saved by one process, resumed with EP=2 + FSDP2: each rank takes its experts' share
    split = rewind(one_process, tmp_path / "to_two", 2)
    result = torchrun_train(2, 29545, ep_config[1], split, "--resume", "--set", "expert_parallel=2",
                            "--set", "fsdp=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_curve(read_log(split), want, range(1, 5))


def test_each_rank_holds_sends_and_reads_only_its_share(one_process, tmp_path):
    model_dir = one_process / "model"
    result = torchrun(2, 29547, WORKER, str(model_dir), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    with safe_open(model_dir / "model.safetensors", "pt") as f:
        sizes = {key: f.get_tensor(key).nbytes for key in f.keys()}
    expert_bytes = {key: n for key, n in sizes.items() if ".mlp.experts." in key}
    total, dense = sum(sizes.values()), sum(sizes.values()) - sum(expert_bytes.values())
    for rank, report in enumerate(ranks):
        first, last = report["expert_range"]
        assert (first, last) == (2 * rank, 2 * rank + 2)
        assert report["expert_shapes"] == {"layers.1.mlp.experts.w13": [2, 64, 64],
                                           "layers.1.mlp.experts.w2": [2, 32, 64]}
        # every parameter and buffer on the rank (float32): the model less the other rank's two experts
        assert report["state_numel"] == (total - sum(expert_bytes.values()) // 2) // 4
        assert report["expert_grads"]
        # it read the dense tensors and exactly its own experts' bytes
        mine = sum(n for key, n in expert_bytes.items() if first <= int(key.split(".")[5]) < last)
        assert report["bytes_read"] == dense + mine < total
        # it sent what its router chose, and received what the other ranks sent to it
        sent, received = report["splits"][0]
        assert sent == report["implied_sent"][0] and sum(sent) == 2 * 24 * 2  # 48 tokens, top-2
        assert received == [other[0][rank] for other in report["every_sent"]]


def test_expert_parallel_that_does_not_fit_gets_one_line(ep_config, tmp_path):
    result = run_cli("train", "--config", str(ep_config[1]), "--out", str(tmp_path / "a"), "--set", "expert_parallel=3")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: expert_parallel=3 does not divide the model's 4 routed experts per layer"]
    result = run_cli("train", "--config", str(ep_config[1]), "--out", str(tmp_path / "b"), "--set", "expert_parallel=2")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: expert_parallel=2 does not divide the world size 1 (torchrun processes)"]
