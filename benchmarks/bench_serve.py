"""`moecoder serve` under concurrent load, next to hf: (transformers) generation on the same weights.

    python benchmarks/bench_serve.py [--model-dir DIR | --preset nano|1.3b] [--concurrency 1,4,16]
                                     [--requests 16] [--max-tokens 64] [--device cpu|cuda] [--dtype bfloat16]

Without --model-dir it saves a randomly initialised model of the preset's shape (nano: the quickstart's MoE+MLA
size, for CPUs; 1.3b: DeepSeek-Coder-1.3B's dense shape, for a GPU) with a BPE tokenizer trained on HumanEval
prompts. Requests are HumanEval prompts in completion mode, greedy, exactly --max-tokens new tokens unless the
model ends earlier (tokens are counted as generated, from the server's usage).

For each concurrency c it measures, one after another:
  server   c clients stream requests at a running `moecoder serve --model native:DIR` (separate process):
           generated tokens/s over the whole run, request latency p50/p95, time to first token p50;
  hf:      transformers' generate on the same directory in this process, the same prompts in batches of c;
  native:  our backend in this process, batches of c (the server's work without HTTP and batching queue);
and prints a table with the ratio server / hf: and one JSON line with every number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PRESETS = {
    "nano": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                 n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=128),
    "1.3b": dict(model_type="llama", hidden_size=2048, intermediate_size=5504, num_hidden_layers=24,
                 num_attention_heads=16, num_key_value_heads=16, rope_theta=100000.0, n_routed_experts=None),
}


def humaneval_prompts() -> list[str]:
    from moecoder.bench.datasets import load_benchmark

    return [task.prompt for task in load_benchmark("humaneval").tasks]


def build_random_model(directory: Path, preset: str, texts: list[str]) -> None:
    import torch

    from moecoder.model import ModelConfig, Transformer, save_model
    from moecoder.text import train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=4096, out_dir=directory)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=4096, bos_token_id=tokenizer.bos_id,
                         eos_token_id=tokenizer.eos_id, **PRESETS[preset])
    model = Transformer(config)
    model.init_weights()
    save_model(model, directory)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-c", "from moecoder.cli import main; main()", "serve", "--model",
               f"native:{model_dir}", "--served-model-name", "bench", "--port", str(port), "--device", args.device,
               "--max-batch", str(max(args.concurrency))]
    if args.dtype:
        command += ["--dtype", args.dtype]
    if args.threads:
        command += ["--threads", str(args.threads)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1).raise_for_status()
            return process, f"{url}/v1"
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                sys.exit(f"moecoder serve did not start: {process.stderr.read()}")
            time.sleep(0.2)


async def stream_one(client: httpx.AsyncClient, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    """(latency, time to first token, generated tokens) of one streamed completion."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", "/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line.removeprefix("data: "))
            if first is None and event["choices"] and event["choices"][0]["text"]:
                first = time.perf_counter()
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    end = time.perf_counter()
    return end - start, (first or end) - start, tokens


async def load_test(url: str, prompts: list[str], concurrency: int, max_tokens: int) -> dict:
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def limited(prompt):
            async with semaphore:
                return await stream_one(client, prompt, max_tokens)

        health = url.removesuffix("/v1") + "/health"
        before = (await client.get(health)).json()
        start = time.perf_counter()
        results = await asyncio.gather(*(limited(p) for p in prompts))
        wall = time.perf_counter() - start
        after = (await client.get(health)).json()
    latencies, ttfts, tokens = zip(*results)
    return {"tokens_per_s": sum(tokens) / wall, "latency_p50": statistics.median(latencies),
            "latency_p95": percentile(latencies, 95), "ttft_p50": statistics.median(ttfts), "tokens": sum(tokens),
            "mean_batch": (after["rows"] - before["rows"]) / max(1, after["batches"] - before["batches"])}


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def offline(backend, prompts: list[str], batch: int, max_tokens: int) -> dict:
    """Tokens/s of a backend generating the prompts in batches of `batch` in this process."""
    ids = [backend.prompt_ids(prompt=p) for p in prompts]
    start = time.perf_counter()
    tokens, latencies = 0, []
    for i in range(0, len(ids), batch):
        began = time.perf_counter()
        tokens += sum(len(row) for row in backend.generate_ids(ids[i:i + batch], max_tokens))
        latencies += [time.perf_counter() - began] * len(ids[i:i + batch])
    return {"tokens_per_s": tokens / (time.perf_counter() - start), "latency_p50": statistics.median(latencies),
            "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a save_model directory with tokenizer.json")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="nano")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--device", default="cuda" if os.environ.get("CUDA_VISIBLE_DEVICES") else "cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads, here and in the server (1 is far faster on a busy machine)")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]

    import torch

    from moecoder.generate import make_backend

    if args.threads:
        torch.set_num_threads(args.threads)

    texts = humaneval_prompts()
    prompts = (texts * (args.requests // len(texts) + 1))[:args.requests]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(tmp) / f"random-{args.preset}"
            build_random_model(model_dir, args.preset, texts)
        opts = {"device": args.device, "dtype": args.dtype, "batch_size": max(args.concurrency)}
        hf, native = make_backend(f"hf:{model_dir}", **opts), make_backend(f"native:{model_dir}", **opts)
        process, url = start_server(model_dir, args)
        try:
            asyncio.run(load_test(url, prompts[:2], 2, 4))  # warm-up
            offline(hf, prompts[:2], 2, 4), offline(native, prompts[:2], 2, 4)
            rows = []
            for c in args.concurrency:
                served = asyncio.run(load_test(url, prompts, c, args.max_tokens))
                rows.append({"concurrency": c, "server": served,
                             "hf": offline(hf, prompts, c, args.max_tokens),
                             "native": offline(native, prompts, c, args.max_tokens)})
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"model: {args.model_dir or 'random ' + args.preset}, device {args.device}, "
          f"threads {torch.get_num_threads()}, {args.requests} requests "
          f"of {args.max_tokens} new tokens (greedy, HumanEval prompts)")
    print("| concurrency | server tok/s | latency p50 / p95 s | TTFT p50 s | hf: tok/s (batch c) | "
          "native offline tok/s | server / hf: | mean server batch |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        s, h, n = row["server"], row["hf"], row["native"]
        print(f"| {row['concurrency']} | {s['tokens_per_s']:.1f} | {s['latency_p50']:.2f} / {s['latency_p95']:.2f} | "
              f"{s['ttft_p50']:.2f} | {h['tokens_per_s']:.1f} | {n['tokens_per_s']:.1f} | "
              f"{s['tokens_per_s'] / h['tokens_per_s']:.2f}x | {s['mean_batch']:.1f} |")
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(),
                      "preset": None if args.model_dir else args.preset, "rows": rows}))


if __name__ == "__main__":
    main()
