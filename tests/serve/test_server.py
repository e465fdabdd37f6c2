"""`moecoder serve` as a real process, spoken to over HTTP with httpx and with the openai client."""

import asyncio
import json

import httpx
import pytest
from tiny_model import CHAT, REPLY

from moecoder.generate import COMPLETION_STOP, SamplingParams, extract_code, make_backend

openai = pytest.importorskip("openai")


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_completion_with_stop_sequences_over_plain_http(server):
    body = {"model": "tiny", "prompt": "def add(a, b):", "max_tokens": 40, "temperature": 0,
            "stop": list(COMPLETION_STOP)}
    answer = httpx.post(f"{server}/completions", json=body, timeout=60).json()
    assert answer["object"] == "text_completion"
    assert answer["choices"] == [{"index": 0, "text": "\n    return a + b\n\n", "logprobs": None,
                                  "finish_reason": "stop"}]
    assert answer["usage"]["completion_tokens"] > 0
    body.update(stop=None, max_tokens=5)
    assert httpx.post(f"{server}/completions", json=body, timeout=60).json()["choices"][0]["finish_reason"] == "length"


def test_chat_completion_with_the_openai_client(client):
    answer = client.chat.completions.create(model="tiny", messages=CHAT, temperature=0, max_tokens=60)
    assert answer.choices[0].message.content == REPLY and answer.choices[0].finish_reason == "stop"
    namespace = {}
    exec(extract_code(answer.choices[0].message.content, "add"), namespace)
    assert namespace["add"](2, 3) == 5


def test_streaming_gives_the_same_text_in_pieces(client, server):
    stream = client.chat.completions.create(model="tiny", messages=CHAT, temperature=0, max_tokens=60, stream=True)
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(pieces) == REPLY and len(pieces) > 3
    assert chunks[-1].choices[0].finish_reason == "stop"
    # Completion streaming never shows text that a stop sequence cuts off, and ends with [DONE].
    body = {"model": "tiny", "prompt": "def add(a, b):", "max_tokens": 40, "temperature": 0,
            "stop": list(COMPLETION_STOP), "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server}/completions", json=body, timeout=60) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    *events, usage = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert "".join(e["choices"][0]["text"] for e in events) == "\n    return a + b\n\n"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0


def test_concurrent_requests_are_batched_and_answered_as_alone(server):
    prompts = ["def add(a, b):", "def sub(a, b):", "print(add(1,", "def", "def sub", "print", "return", "a"]

    async def ask_all():
        async with httpx.AsyncClient(base_url=server, timeout=120) as http:
            answers = await asyncio.gather(*(http.post("/completions", json={
                "model": "tiny", "prompt": p, "max_tokens": 12, "temperature": 0}) for p in prompts))
        return [a.json()["choices"][0]["text"] for a in answers]

    before = httpx.get(server.removesuffix("/v1") + "/health").json()
    together = asyncio.run(ask_all())
    after = httpx.get(server.removesuffix("/v1") + "/health").json()
    assert after["rows"] - before["rows"] == len(prompts)
    assert after["batches"] - before["batches"] < len(prompts)  # some requests shared a forward pass
    alone = [httpx.post(f"{server}/completions", json={"model": "tiny", "prompt": p, "max_tokens": 12,
                                                       "temperature": 0}, timeout=60).json()["choices"][0]["text"]
             for p in prompts]
    assert together == alone


def test_n_choices_and_seeded_sampling(client):
    first = client.completions.create(model="tiny", prompt="def", n=3, temperature=1.5, max_tokens=8, seed=5)
    again = client.completions.create(model="tiny", prompt="def", n=3, temperature=1.5, max_tokens=8, seed=5)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]


@pytest.mark.parametrize("body, status, fragment", [
    ("{not json", 400, "not valid JSON"),
    ({"model": "tiny"}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ({"model": "tiny", "messages": CHAT, "n": 0}, 400, "n"),
    ({"model": "tiny", "messages": CHAT, "temperature": 9}, 400, "temperature"),
    ({"model": "tiny", "messages": CHAT, "max_tokens": 100000}, 400, "context"),
    ({"model": "gpt-5", "messages": CHAT}, 404, "does not exist"),
])
def test_malformed_requests_get_openai_errors_and_the_server_keeps_serving(server, body, status, fragment):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, str) \
        else {"json": body}
    response = httpx.post(f"{server}/chat/completions", timeout=30, **kwargs)
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"] == "invalid_request_error"
    still = httpx.post(f"{server}/completions", json={"model": "tiny", "prompt": "def", "max_tokens": 2}, timeout=60)
    assert still.status_code == 200


def test_openai_backend_against_the_server(server):
    backend = make_backend("openai:tiny", base_url=server)
    params = SamplingParams(max_new_tokens=60)
    assert backend.chat([CHAT, CHAT], params) == [[REPLY], [REPLY]]
    assert backend.complete(["def add(a, b):"], SamplingParams(max_new_tokens=40, stop=COMPLETION_STOP)) == \
        [["\n    return a + b\n\n"]]


def test_serving_an_hf_model_streams_what_native_serves(tiny_model, server):
    pytest.importorskip("transformers")
    from instruct_server import serve_in_thread

    from moecoder.serve.app import Server

    hf_server = Server(make_backend(f"hf:{tiny_model}", device="cpu"), "tiny-hf")
    with serve_in_thread(hf_server.app()) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(model="tiny-hf", messages=CHAT, temperature=0, max_tokens=60,
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == REPLY
        mixed = [client.completions.create(model="tiny-hf", prompt=p, max_tokens=12, temperature=0,
                                           stop=stop).choices[0].text
                 for p, stop in (("def add(a, b):", list(COMPLETION_STOP)), ("def", None))]
    native = openai.OpenAI(base_url=server, api_key="unused", max_retries=0)
    assert mixed == [native.completions.create(model="tiny", prompt=p, max_tokens=12, temperature=0,
                                               stop=stop).choices[0].text
                     for p, stop in (("def add(a, b):", list(COMPLETION_STOP)), ("def", None))]
