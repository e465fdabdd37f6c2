"""`moecoder eval` end to end through openai: against a local OpenAI-compatible server, in real subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moecoder.bench.datasets import load_benchmark

from stub_openai import StubOpenAIServer

LIMIT = 6


@pytest.fixture(scope="module")
def tasks():
    return load_benchmark("humaneval").tasks[:LIMIT]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One MOECODER_HOME for the module: the harness calibrates its time limits once."""
    return {**os.environ, "MOECODER_HOME": str(tmp_path_factory.mktemp("home")), "OPENAI_API_KEY": "test-key"}


def eval_command(base_url: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from moecoder.cli import main; main()", "eval", "--model", "openai:stub", "--base-url", base_url,
            "--benchmark", "humaneval", "--limit", str(LIMIT), "--out", str(out), "--workers", "2", *extra]


def run_eval(env: dict, base_url: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(eval_command(base_url, out, *extra), capture_output=True, text=True, timeout=120, env=env)


def sample_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "samples-humaneval.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda row: (row["task_id"], row["sample"]))


def test_eval_chat_end_to_end(tmp_path, env, tasks):
    with StubOpenAIServer(tasks) as server:
        done = run_eval(env, server.base_url, tmp_path / "run")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "run"
    last = json.loads(done.stdout.strip().splitlines()[-1])
    pass1 = last["humaneval"]["pass@1"]
    assert pass1["value"] == pytest.approx(3 / 6)  # tasks 0, 2, 4 answered with their reference solution
    assert pass1["ci95"][0] <= pass1["value"] <= pass1["ci95"][1]

    results = [json.loads(line) for line in (out / "results-humaneval.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in results] == [i % 2 == 0 for i in range(LIMIT)]
    summary = json.loads((out / "summary.json").read_text())["humaneval"]
    assert summary["n_tasks"] == LIMIT
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["spec"] == "openai:stub" and manifest["model"]["revision"] == "stub-1"
    assert manifest["sampling"]["temperature"] == 0.0 and manifest["mode"] == "chat"
    assert manifest["datasets"]["humaneval"]["sha256"] == summary["dataset_sha256"]
    assert manifest["harness"]["humaneval"]["isolation"] == summary["isolation"]
    assert manifest["packages"]["moecoder"] and manifest["machine"]["cpu_count"]
    assert "pass@1 50.0%" in (out / "report.html").read_text()

    # Finished: the same command re-evaluates what is stored and never needs the model again.
    again = run_eval(env, "http://127.0.0.1:9/v1", out)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1]) == last
    assert json.loads((out / "manifest.json").read_text())["model"]["revision"] == "stub-1"


def test_eval_completion_mode_cuts_at_stop_sequences(tmp_path, env, tasks):
    with StubOpenAIServer(tasks) as server:
        done = run_eval(env, server.base_url, tmp_path / "run", "--mode", "completion", "--concurrency", "2")
    assert done.returncode == 0, done.stderr
    rows = sample_rows(tmp_path / "run")
    assert all("print(" not in row["completion"] for row in rows)
    assert json.loads(done.stdout.strip().splitlines()[-1])["humaneval"]["pass@1"]["value"] == pytest.approx(0.5)


def test_eval_resumes_after_kill(tmp_path, env, tasks):
    with StubOpenAIServer(tasks) as server:
        assert run_eval(env, server.base_url, tmp_path / "whole").returncode == 0
    expected = sample_rows(tmp_path / "whole")

    out = tmp_path / "interrupted"
    with StubOpenAIServer(tasks, delay=0.5) as server:
        process = subprocess.Popen(eval_command(server.base_url, out), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples = out / "samples-humaneval.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not samples.exists() or len(samples.read_text().splitlines()) < 2):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        kept = {row["task_id"] for row in sample_rows(out)}
        assert 2 <= len(kept) < LIMIT, "the run should have been stopped part-way"
        server.requests.clear()
        server.delay = 0.0
        done = run_eval(env, server.base_url, out)
    assert done.returncode == 0, done.stderr
    assert not kept & set(server.requests), "finished tasks were generated again"
    assert sample_rows(out) == expected
    assert json.loads(done.stdout.strip().splitlines()[-1])["humaneval"]["pass@1"]["value"] == pytest.approx(0.5)


def test_eval_refuses_to_mix_sampling_settings(tmp_path, env, tasks):
    with StubOpenAIServer(tasks) as server:
        assert run_eval(env, server.base_url, tmp_path / "run").returncode == 0
        done = run_eval(env, server.base_url, tmp_path / "run", "--temperature", "0.8")
    assert done.returncode == 2
    assert "different sampling" in done.stderr and "Traceback" not in done.stderr


def test_a_run_that_made_no_sample_does_not_bind_its_folder(tmp_path, env, tasks):
    # A mistyped model: the run fails before any sample, leaving its manifest behind.
    command = eval_command("http://127.0.0.1:9/v1", tmp_path / "run", "--temperature", "0.8")
    command[command.index("openai:stub")] = f"native:{tmp_path / 'no-such-model'}"
    failed = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert failed.returncode == 2 and (tmp_path / "run" / "manifest.json").exists(), failed.stderr
    assert not (tmp_path / "run" / "samples-humaneval.jsonl").exists()
    with StubOpenAIServer(tasks) as server:
        done = run_eval(env, server.base_url, tmp_path / "run")  # other settings, same folder
    assert done.returncode == 0, done.stderr


def test_eval_rejects_unknown_benchmark(tmp_path, env):
    done = run_eval(env, "http://127.0.0.1:9/v1", tmp_path / "run", "--benchmark", "nope")
    assert done.returncode == 2 and "unknown benchmark" in done.stderr
