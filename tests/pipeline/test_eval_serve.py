"""`moecoder eval --model openai:... --base-url` against a real `moecoder serve` process (tiny checkpoint)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))
from tiny_model import tiny_checkpoint  # noqa: E402

LIMIT = 3
CLI = [sys.executable, "-c", "from moecoder.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Base URL of `moecoder serve --model native:<tiny checkpoint>`, stopped after the module."""
    model = tiny_checkpoint(tmp_path_factory)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([*CLI, "serve", "--model", f"native:{model}", "--served-model-name", "tiny",
                                "--port", str(port), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"moecoder serve did not start: {process.stdout.read()}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


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
    assert all(s["raw"] for s in samples), "the server answered with empty text"
    assert [r["task_id"] for r in results] == [f"HumanEval/{i}" for i in range(LIMIT)]  # in task order
    assert all(isinstance(r["passed"], bool) and r["result"] for r in results)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["served_model"] == "tiny" and manifest["mode"] == mode
    assert (out / "report.html").stat().st_size > 0
