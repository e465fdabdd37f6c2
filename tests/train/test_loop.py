"""Training behaviour: the loss falls, resume after kill -9 reproduces the curve, 2 processes == 1."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from train_runs import MOECODER, read_log, run_cli, torchrun_train, write_config

from moecoder.errors import UserError
from moecoder.text import BOS, EOS
from moecoder.train.config import load_config


@pytest.fixture(scope="module")
def pretrained(tiny_config, tmp_path_factory) -> tuple[dict, Path]:
    """A tiny model pre-trained for 25 steps in this process: (summary, run directory)."""
    from moecoder.train import pretrain

    run = tmp_path_factory.mktemp("pretrain") / "run"
    return pretrain(tiny_config, run, steps=25, log=lambda _: None), run


def test_loss_decreases_and_run_is_complete(pretrained):
    from moecoder.model import load_model
    from moecoder.text import load_tokenizer

    summary, run = pretrained
    log = read_log(run)
    assert sorted(log) == list(range(1, 26))
    first, last = log[1]["loss"], sum(log[s]["loss"] for s in range(21, 26)) / 5
    assert last < first - 0.5
    assert summary["heldout_ppl"] > 1 and summary["heldout_loss"] < first
    assert len(log[1]["expert_load"]) == 1 and len(log[1]["expert_load"][0]) == 4  # one MoE layer, 4 experts
    assert sum(log[1]["expert_load"][0]) == 4 * 64 * 2  # every token routed to top-2
    assert log[5]["mfu"] > 0 and log[5]["tokens_per_s"] > 0
    model = load_model(summary["model_dir"])
    assert load_tokenizer(summary["model_dir"]).vocab_size == model.config.vocab_size == 512
    # the router bias moved against the load (aux-loss-free balancing is the default)
    assert model.moe_layers()[0].gate.e_score_correction_bias.abs().sum() > 0


def test_resume_after_kill_reproduces_the_uninterrupted_run(tiny_config, tmp_path):
    cfg = write_config(tmp_path / "cfg.json", tiny_config | {"steps": 12, "save_every": 3})
    reference = run_cli("train", "--config", str(cfg), "--out", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr

    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = tmp_path / "killed"
    proc = subprocess.Popen([MOECODER, "train", "--config", str(cfg), "--out", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:  # kill -9 once a checkpoint exists and training went past it
        latest = run / "checkpoints" / "latest"
        if latest.is_file() and (run / "train_log.jsonl").is_file() and max(read_log(run), default=0) >= 7:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(read_log(run))
    assert killed_at < 12, "the run finished before it could be killed"
    resumed = run_cli("train", "--config", str(cfg), "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = read_log(tmp_path / "ref"), read_log(run)
    assert sorted(got) == sorted(expected) == list(range(1, 13))
    for step in expected:
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], rel=1e-6, abs=1e-6), step


def test_sft_learns_the_responses_and_saves_an_instruct_model(pretrained, tmp_path):
    from transformers import AutoTokenizer

    from moecoder.model import load_model
    from moecoder.train import sft

    rows = [{"instruction": f"Return {word} in upper case.", "output": f"print('{word.upper()}')"}
            for word in ("apple", "pear", "plum", "fig", "lime", "kiwi", "date", "yuzu")]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows * 4))
    summary = sft(pretrained[0]["model_dir"], data, tmp_path / "sft", steps=15, seq_len=256, batch_size=4,
                  lr=3e-3, warmup_steps=2, log_every=1, progress=False, log=lambda _: None)
    log = read_log(tmp_path / "sft")
    assert log[15]["loss"] < log[1]["loss"] - 1.0
    assert summary["heldout_ppl"] > 1  # the responses of held-out rows (here: repeats of trained ones)
    model = load_model(summary["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(summary["model_dir"])
    assert model.config.eos_token_id == [tokenizer.convert_tokens_to_ids(t) for t in ("<｜end▁of▁sentence｜>", "<|EOT|>")]


@pytest.fixture(scope="module")
def single_process_run(tiny_config, tmp_path_factory) -> tuple[dict, Path]:
    """Training config (4 steps, 2 accumulation micro-batches) and the log of one process running it."""
    root = tmp_path_factory.mktemp("single")
    cfg = tiny_config | {"steps": 4, "grad_accum": 2}
    result = run_cli("train", "--config", str(write_config(root / "cfg.json", cfg)), "--out", str(root / "run"))
    assert result.returncode == 0, result.stderr
    return cfg, root / "run"


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_processes_with_half_batch_match_one_process(single_process_run, tmp_path, fsdp):
    cfg, single = single_process_run
    config = write_config(tmp_path / "cfg.json", cfg | {"fsdp": fsdp})
    two = torchrun_train(2, 29533 + fsdp, config, tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    one, two = read_log(single), read_log(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], rel=1e-4), step
        assert two[step]["expert_load"] == one[step]["expert_load"]
    # the saved models agree too (FSDP2 gathers its shards into the same Hugging Face layout)
    from moecoder.model import load_model

    a, b = load_model(single / "model"), load_model(tmp_path / "two" / "model")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, rtol=1e-3, atol=1e-5), name


def test_cli_rejects_bad_config_and_missing_checkpoint(tmp_path):
    bad = write_config(tmp_path / "bad.json", {"stepz": 3})
    result = run_cli("train", "--config", str(bad), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "unknown training config keys: stepz" in result.stderr
    result = run_cli("train", "--out", str(tmp_path / "empty"), "--resume")
    assert result.returncode == 2 and "no checkpoint" in result.stderr
    # A value of the wrong type, and a missing MBPP file: one line each, before any data is prepared.
    for override, message in (("lr=abc", 'training config lr="abc": expected float'),
                              (f"mbpp_path={tmp_path / 'nope.jsonl'}", "nope.jsonl does not exist")):
        result = run_cli("train", "--out", str(tmp_path / "typed"), "--set", override, "--set", "max_files=20")
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_override_values_must_have_the_fields_type():
    for override in ("steps=1.5", "decontaminate=1", "fim_rate=true", "mbpp_path=3"):
        with pytest.raises(UserError, match=override.split("=")[0]):
            load_config(None, [override])
    assert load_config(None, ["fim_rate=1", "steps=null", "minutes=2"]).fim_rate == 1  # an int is a float; null where None is


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('steps = 7\nlr = 0.01\n[model]\nhidden_size = 96\n')
    cfg = load_config(path, ["model.num_hidden_layers=3", "balance=aux"], minutes=2.5)
    assert (cfg.steps, cfg.lr, cfg.balance, cfg.minutes) == (7, 0.01, "aux", 2.5)
    assert cfg.model["hidden_size"] == 96 and cfg.model["num_hidden_layers"] == 3
    cfg = load_config(path, ["model.num_hidden_layers=3"], model={"hidden_size": 64})
    assert (cfg.model["hidden_size"], cfg.model["num_hidden_layers"], cfg.model["n_routed_experts"]) == (64, 3, 8)
    with pytest.raises(UserError, match="balance"):
        load_config(None, ["balance=sometimes"])


def test_pretraining_documents_can_be_functions(tiny_config, tmp_path):
    """documents=functions: every training and held-out document is one function of the corpus, ending where
    it does."""
    from moecoder.train.pretrain import coerce_config, prepare_data

    fields = tiny_config | {"documents": "functions", "fim_rate": 0.0}
    data = prepare_data(coerce_config(fields), tmp_path / "functions")
    for shard_dir in (data.train_dir, data.heldout_dir):
        documents = _shard_documents(shard_dir, data.tokenizer)
        assert len(documents) > 5 and all(doc.startswith(BOS) and doc.endswith(EOS) for doc in documents)
        texts = [doc.removeprefix(BOS).removesuffix(EOS) for doc in documents]
        assert all(text.startswith(("def ", "async def ", "@")) and compile(text, "<f>", "exec") for text in texts)
    whole = prepare_data(coerce_config(fields | {"documents": "files"}), tmp_path / "files")
    assert whole.report["train_tokens"] > data.report["train_tokens"]
    with pytest.raises(UserError, match="documents='classes': expected files, functions or both"):
        load_config(None, ["documents=classes"])


def _shard_documents(shard_dir: Path, tokenizer) -> list[str]:
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    shard = manifest["shards"][0]
    tokens = np.memmap(shard_dir / f"{shard['name']}.bin", dtype=np.dtype(manifest["dtype"]), mode="r")
    starts = list(np.load(shard_dir / f"{shard['name']}.starts.npy")) + [shard["tokens"]]
    return [tokenizer.decode(tokens[a:b].tolist()) for a, b in zip(starts, starts[1:])]
