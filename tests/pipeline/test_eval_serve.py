"""`moecoder eval --model openai:... --base-url` against a real `moecoder serve` process (tiny checkpoint)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))
from tiny_model import moecoder_serve, tiny_checkpoint  # noqa: E402

LIMIT = 3
CLI = [sys.executable, "-c", "from moecoder.cli import main; main()"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Base URL of `moecoder serve --model native:<tiny checkpoint>`, stopped after the module."""
    with moecoder_serve(tiny_checkpoint(tmp_path_factory), "--served-model-name", "tiny") as url:
        yield url


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_eval_through_moecoder_serve(tmp_path, served, mode):
    out = tmp_path / "run"
    env = {**os.environ, "MOECODER_HOME": str(tmp_path / "home")}
    done = subprocess.run([*CLI, "eval", "--model", "openai:tiny", "--base-url", served, "--benchmark", "humaneval",
                           "--mode", mode, "--limit", str(LIMIT), "--max-new-tokens", "24", "--out", str(out),
                           "--workers", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    pass1 = json.loads(done.stdout.strip().splitlines()[-1])["humaneval"]["pass@1"]
    assert 0.0 <= pass1["ci95"][0] <= pass1["value"] <= pass1["ci95"][1] <= 1.0
    samples = [json.loads(line) for line in (out / "samples-humaneval.jsonl").read_text().splitlines()]
    results = [json.loads(line) for line in (out / "results-humaneval.jsonl").read_text().splitlines()]
    assert sorted(s["task_id"] for s in samples) == [f"HumanEval/{i}" for i in range(LIMIT)]  # in finishing order
    # completion mode: relative to the prompt, or the whole program when the output did not begin with the
    # whitespace stripped from the prompt (a tiny model's output need not)
    programs = ("solution",) if mode == "chat" else ("completion", "solution")
    assert all(isinstance(s["raw"], str) and any(isinstance(s.get(p), str) for p in programs) for s in samples)
    assert [r["task_id"] for r in results] == [f"HumanEval/{i}" for i in range(LIMIT)]  # in task order
    assert all(isinstance(r["passed"], bool) and r["result"] for r in results)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["served_model"] == "tiny" and manifest["mode"] == mode
    assert (out / "report.html").stat().st_size > 0
