"""`moecoder serve` with continuous against static batching, side by side, next to hf: on the same weights.

    python benchmarks/bench_serve.py [--model-dir DIR | --preset nano|1.3b] [--concurrency 1,4,16]
                                     [--rounds 2] [--min-tokens 16] [--max-tokens 512] [--seed 0]
                                     [--servers continuous,static,hf] [--device cpu|cuda] [--dtype bfloat16]

Without --model-dir it saves a randomly initialised model of the preset's shape (nano: the quickstart's MoE+MLA
size, for CPUs; 1.3b: DeepSeek-Coder-1.3B's dense shape, for a GPU) with a BPE tokenizer trained on HumanEval
prompts.

The workload is a fixed mix: HumanEval prompts in completion mode, greedy, each request asking for max_tokens
drawn uniformly from --min-tokens..--max-tokens with --seed, and generating exactly that many (logit_bias
keeps the end-of-sequence ids out). At concurrency c, c clients each send --rounds requests one after another
(closed loop: a client's next request goes out when its last one is answered), streaming.

Servers (each a separate `moecoder serve` process, --max-batch 16, all started at once and run in turn at
each concurrency, so that changes in the machine's load fall on all alike):
  continuous  native: weights, rows join the running batch between decoding steps;
  static      the same engine with joining turned off: a batch runs until its last row has finished;
  hf          hf: on the same directory (transformers' model under the same continuous engine).
and, in this process, hf-offline: transformers' own generate on the same prompts in batches of c (no server).

Per server and concurrency: generated tokens/s over the run, request latency p50/p95, time to first token
(TTFT) p50/p95, and the engine's mean rows per decoding step (from /health); then the engine's decoding
step time at batch 1, 4, 16 in this process, and latency at c=16 counted in the engine's forward passes
(device-independent: what the batching policy decides). Prints a table, the ratios static / continuous, and
one JSON line with every number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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
MAX_BATCH = 16


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


def start_server(model: str, args, *flags: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-c", "from moecoder.cli import main; main()", "serve", "--model", model,
               "--served-model-name", "bench", "--port", str(port), "--device", args.device,
               "--max-batch", str(MAX_BATCH), "--max-waiting", "1024", *flags]
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
            return process, url
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                sys.exit(f"moecoder serve did not start: {process.stderr.read()}")
            time.sleep(0.2)


def workload(prompts: list[str], count: int, args) -> list[tuple[str, int]]:
    """The fixed mix: (prompt, max_tokens) pairs, max_tokens uniform in min..max tokens, from --seed."""
    draw = random.Random(args.seed)
    return [(prompts[i % len(prompts)], draw.randint(args.min_tokens, args.max_tokens)) for i in range(count)]


async def stream_one(client: httpx.AsyncClient, prompt: str, max_tokens: int, no_eos: dict) -> tuple:
    """(latency, time to first token, generated tokens) of one streamed completion."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "logit_bias": no_eos}
    start = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", "/v1/completions", json=body) as response:
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


async def load_test(url: str, requests: list[tuple[str, int]], concurrency: int, no_eos: dict) -> dict:
    """`concurrency` closed-loop clients working through `requests` in order."""
    queue = list(reversed(requests))
    results = []
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        async def worker():
            while queue:
                prompt, max_tokens = queue.pop()
                results.append(await stream_one(client, prompt, max_tokens, no_eos))

        before = (await client.get("/health")).json()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        after = (await client.get("/health")).json()
    latencies, ttfts, tokens = zip(*results)
    return {"tokens_per_s": sum(tokens) / wall, "latency_p50": statistics.median(latencies),
            "latency_p95": percentile(latencies, 95), "ttft_p50": statistics.median(ttfts),
            "ttft_p95": percentile(ttfts, 95), "tokens": sum(tokens), "wall_s": wall,
            "rows_per_step": (after["tokens"] - before["tokens"]) / max(1, after["steps"] - before["steps"])}


def percentile(values, q: float) -> float:
    """The q-th percentile by linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def offline(backend, requests: list[tuple[str, int]], batch: int) -> dict:
    """transformers' generate in this process, the requests in batches of `batch` (each batch runs to its
    longest max_tokens; every row's tokens beyond its own max_tokens are not counted)."""
    tokens, start = 0, time.perf_counter()
    for i in range(0, len(requests), batch):
        chunk = requests[i:i + batch]
        new = backend.generate_ids([backend.prompt_ids(prompt=p) for p, _ in chunk], max(m for _, m in chunk))
        tokens += sum(min(len(ids), m) for ids, (_, m) in zip(new, chunk))
    wall = time.perf_counter() - start
    return {"tokens_per_s": tokens / wall, "tokens": tokens, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a save_model directory with tokenizer.json")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="nano")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=2, help="requests each client sends, one after another")
    parser.add_argument("--min-tokens", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0, help="seed of the max_tokens draw")
    parser.add_argument("--servers", default="continuous,static,hf", help="which of continuous,static,hf to run")
    parser.add_argument("--no-offline", action="store_true", help="skip transformers' offline generate")
    parser.add_argument("--device", default="cuda" if os.environ.get("CUDA_VISIBLE_DEVICES") else "cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads, here and in the servers (1 is far faster on a busy machine)")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    servers = args.servers.split(",")

    import torch

    from moecoder.generate import make_backend

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = humaneval_prompts()
    runs: dict[str, dict[int, dict]] = {name: {} for name in servers + ([] if args.no_offline else ["hf-offline"])}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(tmp) / f"random-{args.preset}"
            build_random_model(model_dir, args.preset, texts)
        opts = {"device": args.device, "dtype": args.dtype, "batch_size": MAX_BATCH}
        no_eos = {str(token): -100 for token in make_backend(f"native:{model_dir}", **opts).eos_ids}
        # All servers up at once and run in turn at each concurrency, so that a change in the machine's load
        # during the run falls on all of them alike.
        started = {name: start_server(f"hf:{model_dir}" if name == "hf" else f"native:{model_dir}", args,
                                      "--batching", "static" if name == "static" else "continuous")
                   for name in servers}
        try:
            for name, (_, url) in started.items():
                asyncio.run(load_test(url, workload(texts, 2, args), 2, no_eos))  # warm-up
            for c in concurrencies:
                for name, (_, url) in started.items():
                    runs[name][c] = asyncio.run(load_test(url, workload(texts, c * args.rounds, args), c, no_eos))
                    print(f"{name} c={c}: {json.dumps(runs[name][c])}", file=sys.stderr, flush=True)
        finally:
            for process, _ in started.values():
                process.terminate()
                process.wait(timeout=30)
        steps = decode_step_ms(model_dir, texts, opts)
        passes = {mode: passes_per_request(model_dir, workload(texts, 16 * args.rounds, args), 16, mode, opts)
                  for mode in ("continuous", "static")}
        if not args.no_offline:
            hf = make_backend(f"hf:{model_dir}", **opts)
            offline(hf, workload(texts, 2, args)[:2], 2)
            for c in concurrencies:
                runs["hf-offline"][c] = offline(hf, workload(texts, c * args.rounds, args), c)
    report(args, concurrencies, runs, steps, passes)


def decode_step_ms(model_dir: Path, texts: list[str], opts: dict, repeats: int = 20) -> dict[int, float]:
    """Milliseconds of one decoding step of the server's engine at batch 1, 4 and 16 (rows with ~150-token
    prompts): how much slower a full batch makes every row's next token on this device."""
    import torch

    from moecoder.generate import make_backend
    from moecoder.serve.runner import make_runner

    backend = make_backend(f"native:{model_dir}", **opts)
    runner = make_runner(backend)
    times = {}
    with torch.inference_mode():
        for batch in (1, 4, 16):
            runner.keep([])
            part, logits = runner.prefill([backend.prompt_ids(prompt=texts[i]) for i in range(batch)])
            runner.join(part)
            tokens = logits[:, -1].argmax(-1)
            runner.decode(tokens)
            start = time.perf_counter()
            for _ in range(repeats):
                runner.decode(tokens)
            if backend.device == "cuda":
                torch.cuda.synchronize()
            times[batch] = 1000 * (time.perf_counter() - start) / repeats
    return times


def passes_per_request(model_dir: Path, requests: list[tuple[str, int]], concurrency: int, mode: str,
                       opts: dict) -> dict:
    """Latency counted in the engine's forward passes (decoding steps and prefills) instead of seconds: the
    same closed-loop workload on the engine in this process. This is what batching decides, whatever a pass
    costs; on a device where a pass costs the same at batch 1 and 16 (a GPU decoding a small batch),
    latency in seconds follows it."""
    import torch

    from moecoder.generate import make_backend
    from moecoder.serve.engine import Engine, Row, Ticket
    from moecoder.serve.runner import make_runner

    backend = make_backend(f"native:{model_dir}", **opts)
    no_eos = {token: -100.0 for token in backend.eos_ids}
    engine = Engine(make_runner(backend), backend.decode, backend.eos_ids, max_batch=MAX_BATCH,
                    joining=mode == "continuous", window_ms=20)
    latencies = []

    async def client(queue):
        while queue:
            prompt, max_tokens = queue.pop()
            ticket = Ticket(asyncio.get_running_loop(), asyncio.Queue())
            begin = engine.steps + engine.prefills
            engine.submit([Row(ticket, 0, backend.prompt_ids(prompt=prompt), max_tokens, logit_bias=no_eos)])
            while not (await ticket.queue.get()).finish_reason:
                pass
            latencies.append(engine.steps + engine.prefills - begin)

    async def run():
        queue = list(reversed(requests))
        await asyncio.gather(*(client(queue) for _ in range(concurrency)))

    engine.start()
    try:
        with torch.inference_mode():
            asyncio.run(run())
    finally:
        engine.stop()
    # No scheduler does better than a request's own passes: one prefill and max_tokens - 1 decoding steps.
    floor = percentile([max_tokens for _, max_tokens in requests], 95)
    return {"p50": statistics.median(latencies), "p95": percentile(latencies, 95), "p95_floor": floor,
            "passes": engine.steps + engine.prefills}


def report(args, concurrencies: list[int], runs: dict, steps: dict[int, float], passes: dict) -> None:
    import torch

    print(f"model: {args.model_dir or 'random ' + args.preset}, device {args.device}, threads "
          f"{torch.get_num_threads()}; {args.rounds} requests per client, max_tokens uniform "
          f"{args.min_tokens}-{args.max_tokens} (seed {args.seed}), greedy, streamed, HumanEval prompts")
    print("| server | c | tok/s | latency p50 / p95 s | TTFT p50 / p95 s | rows per step |")
    print("|---|---|---|---|---|---|")
    for name, by_c in runs.items():
        for c, r in by_c.items():
            if name == "hf-offline":
                print(f"| hf: offline generate (batches of c) | {c} | {r['tokens_per_s']:.1f} | - | - | - |")
                continue
            print(f"| {name} | {c} | {r['tokens_per_s']:.1f} | {r['latency_p50']:.2f} / {r['latency_p95']:.2f} | "
                  f"{r['ttft_p50']:.2f} / {r['ttft_p95']:.2f} | {r['rows_per_step']:.1f} |")
    if "continuous" in runs and "static" in runs:
        print("\n| c | static / continuous: p95 latency | p50 latency | p95 TTFT | tok/s (continuous / static) |")
        print("|---|---|---|---|---|")
        for c in concurrencies:
            s, k = runs["static"][c], runs["continuous"][c]
            print(f"| {c} | {s['latency_p95'] / k['latency_p95']:.2f}x | {s['latency_p50'] / k['latency_p50']:.2f}x | "
                  f"{s['ttft_p95'] / k['ttft_p95']:.2f}x | {k['tokens_per_s'] / s['tokens_per_s']:.2f}x |")
    print("\ndecode step of the engine, ms: " + ", ".join(f"batch {b}: {ms:.1f}" for b, ms in steps.items()) +
          f" (batch 16 / batch 1: {steps[16] / steps[1]:.2f}x)")
    k, s = passes["continuous"], passes["static"]
    print(f"latency in forward passes at c=16 (p50 / p95): continuous {k['p50']:.0f} / {k['p95']:.0f}, static "
          f"{s['p50']:.0f} / {s['p95']:.0f} (static / continuous p95: {s['p95'] / k['p95']:.2f}x); p95 of the requests' "
          f"own passes (the floor): {k['p95_floor']:.0f}; passes in all: continuous {k['passes']}, static {s['passes']}")
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "rounds": args.rounds,
                      "preset": None if args.model_dir else args.preset, "runs": runs, "decode_step_ms": steps,
                      "passes_c16": passes}))


if __name__ == "__main__":
    main()
