"""An abusive client against a real `moecoder serve` with small limits, on loopback, bounded in count and time:
malformed and oversized requests get a 4xx while well-formed ones complete, a full queue answers 429 with
Retry-After, a client that disconnects has its rows stopped, memory stays bounded and /health answers.
(Latencies are measured by benchmarks/bench_serve_abuse.py, not asserted here.)"""

import asyncio
import time

import httpx
import pytest
from tiny_model import moecoder_serve

LIMITS = ["--max-batch", "4", "--max-waiting", "32", "--max-prompt-chars", "20000", "--max-body-bytes", "300000",
          "--max-n", "8", "--max-rows", "8", "--max-prompts", "4"]
GOOD = {"model": "tiny", "prompt": "def add(a, b):", "max_tokens": 12, "temperature": 0}


@pytest.fixture(scope="module")
def abused(tiny_model):
    with moecoder_serve(tiny_model, "--served-model-name", "tiny", *LIMITS) as url:
        yield url


def health(url: str) -> dict:
    response = httpx.get(url.removesuffix("/v1") + "/health", timeout=5)
    response.raise_for_status()
    return response.json()


def test_bad_requests_get_4xx_while_good_ones_complete(abused):
    expected = httpx.post(f"{abused}/completions", json=GOOD, timeout=60).json()["choices"][0]["text"]
    rss_before = health(abused)["peak_rss_mb"]
    bad = [
        (b"{" * 100_000, 400),  # deeply nested, not JSON
        (b'{"model": "tiny", "prompt": "' + b"x" * 20_001 + b'"}', 400),  # over --max-prompt-chars
        (b'{"model": "tiny", "prompt": "' + b"x" * 400_000 + b'"}', 413),  # over --max-body-bytes
        (b'{"model": "tiny", "prompt": "def", "seed": 18446744073709551616}', 400),
        (b'{"model": "tiny", "prompt": ["def", "def"], "n": 8}', 400),  # 16 rows
        (b'{"model": "tiny", "prompt": "def", "max_tokens": -1}', 400),
        (b'{"model": "tiny", "prompt": "def", "stop": ' + b'["a", ' * 20 + b'"a"' + b']' * 20 + b'}', 400),
    ]

    async def scenario():
        async with httpx.AsyncClient(base_url=abused, timeout=60) as http:
            async def good():
                return (await http.post("/completions", json=GOOD)).json()["choices"][0]["text"]

            async def abuse(body, _):
                return (await http.post("/completions", content=body,
                                        headers={"content-type": "application/json"})).status_code

            async def checks():
                statuses = []
                for _ in range(5):
                    statuses.append((await http.get(abused.removesuffix("/v1") + "/health")).status_code)
                    await asyncio.sleep(0.05)
                return statuses

            return await asyncio.gather(asyncio.gather(*(good() for _ in range(4))),
                                        asyncio.gather(*(abuse(*b) for b in bad * 3)), checks())

    start = time.monotonic()
    goods, statuses, health_statuses = asyncio.run(scenario())
    assert time.monotonic() - start < 60
    assert goods == [expected] * 4
    assert statuses == [status for _, status in bad] * 3
    assert health_statuses == [200] * 5
    assert health(abused)["peak_rss_mb"] < rss_before + 200  # nothing kept the 400 kB bodies around for long


@pytest.fixture(scope="module")
def no_eos(tiny_model) -> dict:
    """logit_bias that keeps the tiny model from ever ending a row by itself."""
    from moecoder.generate import make_backend

    return {str(token): -100 for token in make_backend(f"native:{tiny_model}", device="cpu").eos_ids}


def test_a_full_queue_answers_429_with_retry_after(abused, no_eos):
    long = {"model": "tiny", "prompt": "def", "max_tokens": 1500, "temperature": 1.0, "n": 8, "logit_bias": no_eos}

    async def scenario():
        async with httpx.AsyncClient(base_url=abused, timeout=60) as http:
            # 4 rows run and 28 wait after four of these requests: a fifth's 8 rows do not fit in the queue
            tasks = [asyncio.create_task(http.post("/completions", json=long)) for _ in range(4)]
            deadline = time.monotonic() + 30
            while (state := (await http.get(abused.removesuffix("/v1") + "/health")).json())["waiting"] + \
                    state["running"] < 32:
                assert time.monotonic() < deadline, state
                await asyncio.sleep(0.02)
            refused = await http.post("/completions", json=long)
            for task in tasks:  # the clients leave: their rows are cancelled
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return refused

    refused = asyncio.run(scenario())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    wait_until_idle(abused)
    assert httpx.post(f"{abused}/completions", json=GOOD, timeout=60).status_code == 200


def wait_until_idle(url: str, seconds: float = 10) -> dict:
    deadline = time.monotonic() + seconds
    while (state := health(url))["running"] + state["waiting"] > 0:
        assert time.monotonic() < deadline, f"rows still running: {state}"
        time.sleep(0.01)
    return state


@pytest.mark.parametrize("stream", [True, False])
def test_a_disconnected_clients_rows_stop(abused, stream, no_eos):
    wait_until_idle(abused)
    body = {"model": "tiny", "prompt": "def", "max_tokens": 1500, "temperature": 1.0, "n": 4, "stream": stream,
            "logit_bias": no_eos}
    with httpx.Client(base_url=abused, timeout=httpx.Timeout(60, read=0.3 if not stream else 60)) as http:
        if stream:
            with http.stream("POST", "/completions", json=body) as response:
                lines = response.iter_lines()
                [next(lines) for _ in range(8)]  # some text arrived: the rows are decoding
                before = health(abused)["tokens"]
        else:
            with pytest.raises(httpx.ReadTimeout):  # gives up after 0.3 s and closes the connection
                http.post("/completions", json=body)
            before = health(abused)["tokens"]
    after = wait_until_idle(abused)["tokens"]
    # Tokens generated from the disconnect until the rows left, of the 6000 asked for: 4 rows x the steps
    # until the server read the disconnect.
    assert after - before <= 4 * 5
