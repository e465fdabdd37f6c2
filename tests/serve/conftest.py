"""A real `moecoder serve` process on loopback, serving the tiny checkpoint of tests/generate."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))
from tiny_model import tiny_checkpoint  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server process below
    try:
        return tiny_checkpoint(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def server(tiny_model):
    """Base URL (…/v1) of `moecoder serve --model native:<tiny>` in a subprocess, stopped at the end."""
    port = free_port()
    command = [sys.executable, "-c", "from moecoder.cli import main; main()", "serve",
               "--model", f"native:{tiny_model}", "--served-model-name", "tiny", "--port", str(port),
               "--device", "cpu", "--batch-window-ms", "20"]
    # One intra-op thread: the tiny model gains nothing from more, and a busy 2-core machine makes them spin.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"moecoder serve did not start: {process.stdout.read()}")
                time.sleep(0.2)
        yield f"{url}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)
