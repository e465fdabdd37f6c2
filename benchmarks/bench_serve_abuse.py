"""`moecoder serve` under an abusive client: how fast bad requests are refused, whether /health stays
responsive, whether a disconnected client's rows stop, and how much memory the server takes.

    python benchmarks/bench_serve_abuse.py [--model-dir DIR | --preset nano] [--threads 1] [--repeats 20]

Starts `moecoder serve` with its default limits (a separate process, loopback only) on the model of
bench_serve.py, then, each phase bounded in count:
  idle       /health latency with nothing else running;
  load       /health and /v1/models latency while 16 streaming clients generate (the background load of
             every later phase);
  refusals   latency of each kind of bad request under that load, `--repeats` of each one after another:
             invalid JSON,
             a 22 MB body (announced by content-length, the kind that froze the server for 27 s before its
             limits; none of it is sent, so the time is the server's), a prompt over --max-prompt-chars, a seed
             of 2**64, n over --max-n, an image content part; /health latency measured while they fly;
  big        /health latency while clients send the largest accepted prompts (tokenised off the event loop);
  disconnect a client asking for 16 x 2000 tokens goes away (streaming, and not): tokens generated after it left;
  memory     the server's peak RSS after all this.
/health is polled by a process of its own and the load runs in another, so that the measuring client's
own work does not show up as server latency. The target for /health and for refusals is under 100 ms.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import build_random_model, humaneval_prompts, percentile, start_server  # noqa: E402

TARGET_MS = 100


def summary(latencies: list[float]) -> dict:
    ms = [1000 * t for t in latencies]
    return {"n": len(ms), "p50_ms": statistics.median(ms), "p95_ms": percentile(ms, 95), "max_ms": max(ms)}


def poll(url: str, path: str, ready, stop, out, every: float = 0.02) -> None:
    """In a process of its own (so that the abusive clients' work in this one does not delay it): GET `path`
    every `every` s until `stop` is set; put the latencies on `out`."""
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as http:
        http.get(path).raise_for_status()  # connected: the measured requests reuse this connection
        ready.set()
        while not stop.is_set():
            start = time.perf_counter()
            http.get(path).raise_for_status()
            latencies.append(time.perf_counter() - start)
            time.sleep(every)
    out.put(latencies)


async def during(url: str, work, path: str = "/health") -> tuple[list[float], object]:
    """Run `work` while another process polls `path`; return its latencies and work's result."""
    context = multiprocessing.get_context("spawn")
    ready, stop, out = context.Event(), context.Event(), context.Queue()
    poller = context.Process(target=poll, args=(url, path, ready, stop, out), daemon=True)
    poller.start()
    try:
        await asyncio.to_thread(ready.wait, 60)
        result, _ = await asyncio.gather(work, asyncio.sleep(1))  # at least a second of polls
    finally:
        stop.set()
    latencies = out.get(timeout=60)
    poller.join(timeout=10)
    return latencies, result


def generate(url: str, prompts: list[str], no_eos: dict, stop) -> None:
    """In a process of its own: 16 clients streaming 256-token completions one after another until `stop`."""
    async def client(http: httpx.AsyncClient, prompt: str):
        while not stop.is_set():
            body = {"model": "bench", "prompt": prompt, "max_tokens": 256, "temperature": 1.0, "stream": True,
                    "logit_bias": no_eos}
            async with http.stream("POST", "/v1/completions", json=body) as response:
                async for _ in response.aiter_lines():
                    if stop.is_set():
                        break

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=600) as http:
            await asyncio.gather(*(client(http, prompt) for prompt in prompts))

    asyncio.run(main())


def bad_requests(limits) -> dict[str, dict]:
    """name -> httpx request arguments of one bad request."""
    def raw(body: bytes) -> dict:
        return {"content": body, "headers": {"content-type": "application/json"}}

    chat = "/v1/chat/completions"
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    return {
        "invalid JSON": {"url": "/v1/completions", **raw(b"{not json")},
        "22 MB body (announced)": {"url": "/v1/completions", "declared": 22_000_000},
        "prompt over the character limit": {"url": "/v1/completions",
                                            "json": {"model": "bench", "prompt": "x" * (limits.max_prompt_chars + 1)}},
        "seed 2**64": {"url": "/v1/completions", "json": {"model": "bench", "prompt": "def", "seed": 2**64}},
        "n over the limit": {"url": "/v1/completions", "json": {"model": "bench", "prompt": "def",
                                                                "n": limits.max_n + 1}},
        "image content part": {"url": chat, "json": {"model": "bench", "messages": [
            {"role": "user", "content": [image]}]}},
    }


async def refuse(http: httpx.AsyncClient, request: dict) -> tuple[float, str]:
    start = time.perf_counter()
    if "declared" in request:
        return await refuse_unsent(http.base_url, request)
    response = await http.post(request["url"], **{k: v for k, v in request.items() if k != "url"})
    return time.perf_counter() - start, str(response.status_code)


async def one_after_another(http: httpx.AsyncClient, request: dict, repeats: int) -> list[tuple[float, str]]:
    return [await refuse(http, request) for _ in range(repeats)]


async def refuse_unsent(base_url, request: dict) -> tuple[float, str]:
    """Announce a body of `declared` bytes, send none of it, and time the answer: the server's own latency
    (sending 22 MB first would time the client's upload)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(base_url.host, base_url.port)
    writer.write(f"POST {request['url']} HTTP/1.1\r\nhost: {base_url.host}\r\ncontent-type: application/json\r\n"
                 f"content-length: {request['declared']}\r\n\r\n".encode())
    await writer.drain()
    status = (await reader.readline()).split()[1].decode()
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed, status


async def disconnect(url: str, stream: bool, no_eos: dict) -> dict:
    """Tokens the server generates after a client asking for 16 x 2000 tokens goes away."""
    body = {"model": "bench", "prompt": "def", "max_tokens": 2000, "temperature": 1.0, "n": 16, "stream": stream,
            "logit_bias": no_eos}
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60, read=None if stream else 1.0)) as http:
        if stream:
            async with http.stream("POST", "/v1/completions", json=body) as response:
                lines = response.aiter_lines()
                for _ in range(64):
                    await anext(lines)
                at_leave = (await http.get("/health")).json()["tokens"]
                left = time.perf_counter()
        else:
            try:
                await http.post("/v1/completions", json=body)
            except httpx.ReadTimeout:
                pass
            at_leave = (await http.get("/health")).json()["tokens"]
            left = time.perf_counter()
        while (state := (await http.get("/health")).json())["running"] > 0:
            await asyncio.sleep(0.001)
    return {"tokens_after": state["tokens"] - at_leave, "rows_gone_ms": 1000 * (time.perf_counter() - left)}


async def run(url: str, prompts: list[str], limits, repeats: int, no_eos: dict) -> dict:
    results = {}
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        results["idle"] = summary((await during(url, asyncio.sleep(2)))[0])
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        load = context.Process(target=generate, args=(url, prompts[:16], no_eos, stop), daemon=True)
        load.start()
        while (await http.get("/health")).json()["running"] < 16:
            await asyncio.sleep(0.05)
        results["load"] = summary((await during(url, asyncio.sleep(3)))[0])
        results["models_load"] = summary((await during(url, asyncio.sleep(2), "/v1/models"))[0])
        refusals = {}
        health_during = []
        for name, request in bad_requests(limits).items():
            latencies, outcomes = await during(url, one_after_another(http, request, repeats))
            health_during += latencies
            refusals[name] = {**summary([t for t, _ in outcomes]), "answers": sorted({o for _, o in outcomes})}
        results["refusals"] = refusals
        results["health_during_refusals"] = summary(health_during)
        big = {"model": "bench", "prompt": "x" * limits.max_prompt_chars, "max_tokens": 1}
        latencies, answers = await during(url, asyncio.gather(*(http.post("/v1/completions", json=big)
                                                                for _ in range(8))))
        results["big_prompts"] = {"health": summary(latencies), "answers": sorted({a.status_code for a in answers})}
        stop.set()
        load.join(timeout=60)
    results["disconnect_stream"] = await disconnect(url, True, no_eos)
    results["disconnect_plain"] = await disconnect(url, False, no_eos)
    async with httpx.AsyncClient(base_url=url) as http:
        results["peak_rss_mb"] = (await http.get("/health")).json()["peak_rss_mb"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--repeats", type=int, default=20, help="requests of each bad kind")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from moecoder.generate import make_backend
    from moecoder.serve.limits import Limits

    prompts = humaneval_prompts()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(tmp) / f"random-{args.preset}"
            build_random_model(model_dir, args.preset, prompts)
        no_eos = {str(t): -100 for t in make_backend(f"native:{model_dir}", device="cpu").eos_ids}
        process, url = start_server(f"native:{model_dir}", args)
        try:
            results = asyncio.run(run(url, prompts, Limits(), args.repeats, no_eos))
        finally:
            process.terminate()
            process.wait(timeout=30)
    report(results)


def report(results: dict) -> None:
    def row(what: str, s: dict, extra: str = "") -> str:
        verdict = "yes" if s["p95_ms"] < TARGET_MS else "no"
        return f"| {what} | {s['n']} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['max_ms']:.1f} | {verdict} | {extra} |"

    print(f"| what | count | p50 ms | p95 ms | max ms | p95 < {TARGET_MS} ms | answers |")
    print("|---|---|---|---|---|---|---|")
    print(row("/health, idle", results["idle"]))
    print(row("/health, 16 clients generating", results["load"]))
    print(row("/v1/models, 16 clients generating", results["models_load"]))
    for name, s in results["refusals"].items():
        print(row(f"refusal: {name} (under load)", s, ", ".join(s["answers"])))
    print(row("/health while the refusals fly", results["health_during_refusals"]))
    big = results["big_prompts"]
    print(row("/health while 8 clients send the largest accepted prompt", big["health"],
              ", ".join(map(str, big["answers"]))))
    for kind in ("stream", "plain"):
        d = results[f"disconnect_{kind}"]
        print(f"\ndisconnect ({kind}): {d['tokens_after']} tokens generated after the client left "
              f"(16 rows x 2000 asked), rows gone {d['rows_gone_ms']:.1f} ms after")
    print(f"\nserver peak RSS: {results['peak_rss_mb']:.0f} MB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
