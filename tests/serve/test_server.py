"""`moecoder serve` as a real process, spoken to over HTTP with httpx and with the official openai client."""

import asyncio
import json
import math

import httpx
import pytest
from conftest import VARIANT_ROOM
from tiny_model import CHAT, REPLY

from moecoder.generate import COMPLETION_STOP, SamplingParams, extract_code, make_backend
from moecoder.text import fim_prompt

openai = pytest.importorskip("openai")


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def native(tiny_model):
    return make_backend(f"native:{tiny_model}", device="cpu")


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


async def while_others_run(server: str, request, others: int = 4, max_tokens: int = 80):
    """Run `request(client)` once `others` long streaming completions are decoding in the server's batch."""
    async with openai.AsyncOpenAI(base_url=server, api_key="unused", max_retries=0) as client:
        async def long(i):
            return await client.completions.create(model="tiny", prompt=["def", "print", "a", "return"][i % 4],
                                                   max_tokens=max_tokens, temperature=1.0, seed=i)

        background = [asyncio.create_task(long(i)) for i in range(others)]
        async with httpx.AsyncClient() as http:
            while (await http.get(server.removesuffix("/v1") + "/health")).json()["running"] < others:
                await asyncio.sleep(0.01)
        answer = await request(client)
        await asyncio.gather(*background)
    return answer


def test_a_seeded_request_gets_the_tokens_it_gets_alone_when_batched(server, client):
    def ask(c):
        return c.completions.with_raw_response.create(model="tiny", prompt="def", max_tokens=24, temperature=1.5,
                                                      top_p=0.99, seed=2**63 - 1, n=2)

    async def ask_async(c):
        return await ask(c)

    alone = ask(client)
    batched = asyncio.run(while_others_run(server, ask_async))
    assert alone.headers["x-moecoder-peak-batch"] == "2"  # its two choices only
    assert int(batched.headers["x-moecoder-peak-batch"]) > 2  # it really shared the batch with the others
    texts = [[c.text for c in r.parse().choices] for r in (alone, batched)]
    assert texts[0] == texts[1] and texts[0][0] != texts[0][1]  # choice j samples with seed + j
    different_seed = client.completions.create(model="tiny", prompt="def", max_tokens=24, temperature=1.5,
                                               top_p=0.99, seed=7, n=2)
    assert [c.text for c in different_seed.choices] != texts[0]


def test_concurrent_requests_are_batched_and_answered_as_alone(server):
    prompts = ["def add(a, b):", "def sub(a, b):", "print(add(1,", "def", "def sub", "print", "return", "a"]

    async def ask_all():
        async with httpx.AsyncClient(base_url=server, timeout=120) as http:
            answers = await asyncio.gather(*(http.post("/completions", json={
                "model": "tiny", "prompt": p, "max_tokens": 12, "temperature": 0}) for p in prompts))
        return answers

    together = asyncio.run(ask_all())
    assert max(int(a.headers["x-moecoder-peak-batch"]) for a in together) > 1
    alone = [httpx.post(f"{server}/completions", json={"model": "tiny", "prompt": p, "max_tokens": 12,
                                                       "temperature": 0}, timeout=60) for p in prompts]
    assert [a.headers["x-moecoder-peak-batch"] for a in alone] == ["1"] * len(prompts)
    assert [a.json()["choices"][0]["text"] for a in together] == [a.json()["choices"][0]["text"] for a in alone]


def test_n_choices_for_several_prompts(client, native):
    answer = client.completions.create(model="tiny", prompt=["def", "print"], n=3, temperature=1.5, max_tokens=8)
    assert [c.index for c in answer.choices] == list(range(6))  # prompt i's choices at i * n ... i * n + n - 1
    assert answer.usage.prompt_tokens == len(native.prompt_ids(prompt="def")) + len(native.prompt_ids(prompt="print"))
    assert 6 <= answer.usage.completion_tokens <= 48
    # Streamed, the choices' pieces interleave; put together by index they are the unstreamed answer.
    options = dict(model="tiny", prompt=["def", "print"], n=2, temperature=1.5, max_tokens=8, seed=3)
    whole = [c.text for c in client.completions.create(**options).choices]
    pieces = [""] * 4
    for chunk in client.completions.create(**options, stream=True):
        for choice in chunk.choices:
            pieces[choice.index] += choice.text
    assert pieces == whole


def test_null_means_the_default_on_both_endpoints(client, server):
    nulls = dict(max_tokens=None, temperature=None, top_p=None, n=None, stop=None, seed=None)
    greedy = dict(temperature=0)
    completion = client.completions.create(model="tiny", prompt="def add(a, b):", **{**nulls, **greedy})
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 16
    chat = client.chat.completions.create(model="tiny", messages=CHAT, **{**nulls, **greedy})
    assert chat.choices[0].message.content == REPLY
    raw = {"model": "tiny", "prompt": "def add(a, b):", **nulls, "logprobs": None, "echo": None, "suffix": None,
           "stream": None, "stream_options": None}
    answer = httpx.post(f"{server}/completions", json=raw, timeout=60)
    assert answer.status_code == 200 and len(answer.json()["choices"]) == 1


def test_chat_content_parts_are_joined_and_other_parts_refused(client):
    parts = [{"role": "system", "content": [{"type": "text", "text": "You write "}, {"type": "text", "text": "code.\n"}]},
             {"role": "user", "content": [{"type": "text", "text": "add"}]}]
    answer = client.chat.completions.create(model="tiny", messages=parts, temperature=0, max_tokens=60)
    assert answer.choices[0].message.content == REPLY
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "text", "text": "add"}, image]}], max_tokens=4)
    assert "'image_url'" in refused.value.message and "messages.0.content" in refused.value.message


def test_suffix_builds_deepseek_coders_fill_in_the_middle_prompt(client, native):
    prefix, suffix = "def add(a, b):\n", "\n\nprint(add(1, 2))\n"
    filled = client.completions.create(model="tiny", prompt=prefix, suffix=suffix, max_tokens=10, temperature=0)
    prompt = fim_prompt(prefix, suffix, native.tokenizer.get_vocab(with_added_tokens=True))
    spelled = client.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0)
    assert filled.choices[0].text == spelled.choices[0].text
    assert filled.usage.prompt_tokens == spelled.usage.prompt_tokens == len(native.prompt_ids(prompt=prompt))


def test_completion_logprobs_and_echo(client, native):
    answer = client.completions.create(model="tiny", prompt="def add(a, b):", max_tokens=6, temperature=0,
                                       logprobs=2)
    choice = answer.choices[0]
    choice_logprobs = choice.logprobs
    assert "".join(choice_logprobs.tokens) == choice.text and len(choice_logprobs.tokens) == 6
    for token, logprob, top in zip(choice_logprobs.tokens, choice_logprobs.token_logprobs,
                                   choice_logprobs.top_logprobs):
        assert len(top) == 2 and top[token] == pytest.approx(logprob) and logprob == max(top.values()) <= 0
    assert choice_logprobs.text_offset == [sum(map(len, choice_logprobs.tokens[:i])) for i in range(6)]

    echoed = client.completions.create(model="tiny", prompt="def add(a, b):", max_tokens=0, echo=True, logprobs=0)
    lp = echoed.choices[0].logprobs
    assert echoed.choices[0].text == "def add(a, b):" and lp.token_logprobs[0] is None
    assert "".join(lp.tokens) == "def add(a, b):" and echoed.usage.completion_tokens == 0
    assert all(v <= 0 for v in lp.token_logprobs[1:]) and math.fsum(lp.token_logprobs[1:]) > -50
    assert lp.token_logprobs[1:] == pytest.approx(model_logprobs(native, "def add(a, b):"), abs=1e-4)
    both = client.completions.create(model="tiny", prompt="def add(a, b):", max_tokens=6, temperature=0, echo=True)
    assert both.choices[0].text == "def add(a, b):" + choice.text


def model_logprobs(backend, prompt: str) -> list[float]:
    """Each prompt token's log-probability given those before it, from one plain forward of the model."""
    import torch

    ids = torch.tensor([backend.prompt_ids(prompt=prompt)])
    with torch.no_grad():
        logprobs = backend.model(ids)[0].float().log_softmax(-1)
    return [float(logprobs[t - 1, ids[0, t]]) for t in range(1, ids.shape[1])]


def test_chat_logprobs_with_the_openai_client(client):
    answer = client.chat.completions.create(model="tiny", messages=CHAT, temperature=0, max_tokens=60,
                                            logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert "".join(t.token for t in content) == answer.choices[0].message.content == REPLY
    assert all(len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token for t in content)
    stream = client.chat.completions.create(model="tiny", messages=CHAT, temperature=0, max_tokens=60,
                                            logprobs=True, stream=True)
    streamed = [t.token for c in stream if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert "".join(streamed) == REPLY


def test_without_max_tokens_chat_fills_the_context_and_completions_take_16(variant_model):
    from instruct_server import serve_in_thread

    from moecoder.serve.app import Server

    server = Server(make_backend(f"native:{variant_model}", device="cpu"), "variant")
    with serve_in_thread(server.app()) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        chat = client.chat.completions.create(model="variant", messages=CHAT, temperature=0)
        assert chat.usage.completion_tokens == VARIANT_ROOM and chat.choices[0].finish_reason == "length"
        assert REPLY.startswith(chat.choices[0].message.content)
        with pytest.raises(openai.BadRequestError) as too_long:  # 16 tokens do not fit after CHAT's prompt
            client.completions.create(model="variant", prompt=server.backend.chat_prompt(CHAT))
        assert "max_tokens (16)" in too_long.value.message
        with pytest.raises(openai.BadRequestError) as no_fim:
            client.completions.create(model="variant", prompt="def f(x):", suffix="\n", max_tokens=4)
        assert "suffix" in no_fim.value.message and "fill-in-the-middle" in no_fim.value.message


@pytest.mark.parametrize("path, body, status, fragment", [
    ("chat", "{not json", 400, "not valid JSON"),
    ("chat", {"model": "tiny"}, 400, "messages"),
    ("chat", {"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ("chat", {"model": "tiny", "messages": CHAT, "n": 0}, 400, "n"),
    ("chat", {"model": "tiny", "messages": CHAT, "n": 17}, 400, "limit of 16"),
    ("chat", {"model": "tiny", "messages": CHAT, "temperature": 9}, 400, "temperature"),
    ("chat", {"model": "tiny", "messages": CHAT, "max_tokens": 100000}, 400, "context"),
    ("chat", {"model": "tiny", "messages": CHAT, "seed": 2**63}, 400, "seed"),
    ("chat", {"model": "tiny", "messages": CHAT, "seed": -1}, 400, "seed"),
    ("chat", {"model": "tiny", "messages": CHAT, "presence_penalty": 0.5}, 400, "presence_penalty"),
    ("chat", {"model": "tiny", "messages": CHAT, "top_logprobs": 2}, 400, "top_logprobs"),
    ("chat", {"model": "gpt-5", "messages": CHAT}, 404, "does not exist"),
    ("completions", {"model": "tiny", "prompt": "x" * 200_000}, 400, "characters"),
    ("completions", {"model": "tiny", "prompt": ["def"] * 33}, 400, "prompts"),
    ("completions", {"model": "tiny", "prompt": ["def"] * 8, "n": 9}, 400, "rows"),
    ("completions", {"model": "tiny", "prompt": [5, 10**9]}, 400, "token ids"),
    ("completions", {"model": "tiny", "prompt": "def", "max_tokens": 0}, 400, "echo"),
    ("completions", {"model": "tiny", "prompt": "def", "logprobs": 21}, 400, "logprobs"),
    ("completions", {"model": "tiny", "prompt": "def", "best_of": 3}, 400, "best_of"),
])
def test_malformed_requests_get_openai_errors_and_the_server_keeps_serving(server, path, body, status, fragment):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, str) \
        else {"json": body}
    response = httpx.post(f"{server}/{path.replace('chat', 'chat/completions')}", timeout=30, **kwargs)
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
    prompts = (("def add(a, b):", list(COMPLETION_STOP)), ("def", None))
    with serve_in_thread(hf_server.app()) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(model="tiny-hf", messages=CHAT, temperature=0, max_tokens=60,
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == REPLY

        async def together():  # rows joining transformers' running batch too
            async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as c:
                return await asyncio.gather(*(c.completions.create(model="tiny-hf", prompt=p, max_tokens=12,
                                                                   temperature=0, stop=stop) for p, stop in prompts))
        mixed = [a.choices[0].text for a in asyncio.run(together())]
    native = openai.OpenAI(base_url=server, api_key="unused", max_retries=0)
    assert mixed == [native.completions.create(model="tiny", prompt=p, max_tokens=12, temperature=0,
                                               stop=stop).choices[0].text for p, stop in prompts]
