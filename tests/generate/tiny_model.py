"""A tiny moecoder checkpoint for backend and server tests: a MoE+MLA model that has memorised a little
code, saved with save_model beside the training helper's tokenizer (tokenizer.json + tokenizer_config.json),
and a `moecoder serve` process serving it. Tests import this module by name (pytest puts the test directory
on sys.path; tests elsewhere add tests/generate)."""

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

TEXT = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\nprint(add(1, 2))\n"
REPLY = "Sure:\n```python\ndef add(a, b):\n    return a + b\n```\n"
# A short system prompt keeps the chat sequence short (the default one is ~300 tokens of a 300-token vocab).
CHAT = [{"role": "system", "content": "You write code.\n"}, {"role": "user", "content": "add"}]


def build_tiny_model(directory: Path) -> Path:
    """Train 80 steps on TEXT (completion mode) and on one chat exchange ending with <|EOT|>."""
    import torch

    from moecoder.model import ModelConfig, Transformer, save_model
    from moecoder.text import EOT, render_chat, train_tokenizer

    chat = render_chat(CHAT, add_generation_prompt=True) + REPLY + EOT
    tokenizer = train_tokenizer([TEXT, chat] * 20, vocab_size=300, out_dir=directory, min_frequency=1)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
                         v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                         max_position_embeddings=2048, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id)
    model = Transformer(config)
    model.init_weights()
    sequences = [[tokenizer.bos_id] + tokenizer.encode(TEXT), tokenizer.encode(chat)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        for ids in sequences:
            ids = torch.tensor([ids])
            logits = model(ids[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    save_model(model.eval(), directory)
    return Path(directory)


_built: dict[str, Path] = {}


def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny checkpoint, built once per test session (tests/generate and tests/serve share it), on one
    intra-op thread: a model this small gains nothing from more, and on a busy 2-core machine they only spin."""
    import torch

    if "path" not in _built:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _built["path"] = build_tiny_model(tmp_path_factory.mktemp("tiny-model"))
        finally:
            torch.set_num_threads(threads)
    return _built["path"]


@contextmanager
def moecoder_serve(model_dir: Path, *flags: str):
    """A real `moecoder serve --model native:<model_dir>` process on 127.0.0.1 and a free port, with one
    intra-op thread (a tiny model gains nothing from more). Yields the base URL (…/v1); stops it after."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-c", "from moecoder.cli import main; main()", "serve", "--model",
               f"native:{model_dir}", "--port", str(port), "--device", "cpu", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
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
