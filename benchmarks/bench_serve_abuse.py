"""`moecoder serve` under an abusive client: how fast bad requests are refused, whether /health stays
responsive, whether a disconnected client's rows stop, and how much memory the server takes.

    python benchmarks/bench_serve_abuse.py [--model-dir DIR | --preset nano] [--threads 1] [--repeats 20]

Starts `moecoder serve` with its default limits (a separate process, loopback only) on the model of
bench_serve.py, then, each phase bounded in count:
  idle       /health latency with nothing else running;
  load       /health and /v1/models latency while 16 streaming clients generate (the background load of
             every later phase);
  refusals   latency of each kind of bad request under that load: invalid JSON, a 22 MB body (the kind that
             froze the server for 27 s before its limits), a prompt over --max-prompt-chars, a seed of 2**64,
             n over --max-n, an image content part; /health latency measured while they fly;
  big        /health latency while clients send the largest accepted prompts (tokenised off the event loop);
  disconnect a client asking for 16 x 2000 tokens goes away (streaming, and not): tokens generated after it left;
  memory     the server's peak RSS after all this.
The target for /health and for refusals is under 100 ms. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def health_latencies(http: httpx.AsyncClient, stop: asyncio.Event, every: float = 0.02,
                           path: str = "/health") -> list[float]:
    latencies = []
    while not stop.is_set():
        start = time.perf_counter()
        (await http.get(path)).raise_for_status()
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(every)
    return latencies


async def during(http: httpx.AsyncClient, work, path: str = "/health") -> tuple[list[float], object]:
    """Run `work` while polling `path`; return its latencies and work's result."""
    stop = asyncio.Event()
    poller = asyncio.create_task(health_latencies(http, stop, path=path))
    try:
        result = await work
    finally:
        stop.set()
    return await poller, result


async def generate_forever(http: httpx.AsyncClient, prompt: str, stop: asyncio.Event, no_eos: dict) -> int:
    """A client streaming 256-token completions one after another until told to stop."""
    done = 0
    while not stop.is_set():
        body = {"model": "bench", "prompt": prompt, "max_tokens": 256, "temperature": 1.0, "stream": True,
                "logit_bias": no_eos}
        async with http.stream("POST", "/v1/completions", json=body) as response:
            async for _ in response.aiter_lines():
                if stop.is_set():
                    break
        done += 1
    return done


def bad_requests(limits) -> dict[str, dict]:
    """name -> httpx request arguments of one bad request."""
    def raw(body: bytes) -> dict:
        return {"content": body, "headers": {"content-type": "application/json"}}

    chat = "/v1/chat/completions"
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    return {
        "invalid JSON": {"url": "/v1/completions", **raw(b"{not json")},
        "22 MB body": {"url": "/v1/completions",
                       **raw(b'{"model": "bench", "prompt": "' + b"x" * 22_000_000 + b'"}')},
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
    try:
        response = await http.post(request["url"], **{k: v for k, v in request.items() if k != "url"})
        outcome = str(response.status_code)
    except httpx.HTTPError as exc:  # the server answered 413 and closed while the client still sent
        outcome = type(exc).__name__
    return time.perf_counter() - start, outcome


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
        results["idle"] = summary((await during(http, asyncio.sleep(2)))[0])
        stop = asyncio.Event()
        load = [asyncio.create_task(generate_forever(http, prompts[i], stop, no_eos)) for i in range(16)]
        results["load"] = summary((await during(http, asyncio.sleep(3)))[0])
        results["models_load"] = summary((await during(http, asyncio.sleep(2), "/v1/models"))[0])
        refusals = {}
        health_during = []
        for name, request in bad_requests(limits).items():
            latencies, outcomes = await during(http, asyncio.gather(*(refuse(http, request) for _ in range(repeats))))
            health_during += latencies
            refusals[name] = {**summary([t for t, _ in outcomes]), "answers": sorted({o for _, o in outcomes})}
        results["refusals"] = refusals
        results["health_during_refusals"] = summary(health_during)
        big = {"model": "bench", "prompt": "x" * limits.max_prompt_chars, "max_tokens": 1}
        latencies, answers = await during(http, asyncio.gather(*(http.post("/v1/completions", json=big)
                                                                 for _ in range(8))))
        results["big_prompts"] = {"health": summary(latencies), "answers": sorted({a.status_code for a in answers})}
        stop.set()
        await asyncio.gather(*load, return_exceptions=True)
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
