"""Token healing on /v1/completions: a verbatim prompt's last token is taken back and the first generated
token must start with its text; the reply is relative to the prompt as sent (issue #12's prompt boundary)."""

import asyncio
import json

import pytest

from moecoder.generate import make_backend
from moecoder.serve.app import Server
from moecoder.serve.engine import Engine, Row, Ticket
from moecoder.serve.runner import make_runner


@pytest.fixture(scope="module")
def server(tiny_model, one_torch_thread):
    return Server(make_backend(f"native:{tiny_model}", device="cpu"), "tiny")


def job(server, **body):
    return server._completion_job(json.dumps({"model": "tiny", "max_tokens": 8, **body}).encode())


def test_a_verbatim_prompt_is_healed_and_only_then(server):
    prompt = "def add(a, b):\n    return a +"
    healed = job(server, prompt=prompt)
    plain_ids = server._completion_ids(prompt, None)
    assert healed.heal[0] is not None and healed.prompt_ids[0] == plain_ids[:-1]
    assert server.backend.decode(plain_ids[-1:]) == healed.heal[0].text and healed.heal[0].allowed
    for options in ({"echo": True}, {"logprobs": 1}, {"suffix": "\n    return c\n"}):
        assert not any(job(server, prompt=prompt, **options).heal)
    assert not any(job(server, prompt=plain_ids).heal)  # token ids are taken as they are


def test_the_first_token_starts_with_the_removed_text_and_the_reply_continues_the_prompt(server):
    backend, prompt = server.backend, "def add(a, b):\n    return a +"
    request = job(server, prompt=prompt)
    heal = request.heal[0]

    async def generate():
        ticket = Ticket(asyncio.get_running_loop(), asyncio.Queue())
        row = Row(ticket, 0, request.prompt_ids[0], 8, heal=heal)
        engine = Engine(make_runner(backend), backend.decode, backend.eos_ids)
        engine.start()
        try:
            engine.submit([row])
            text = ""
            while True:
                event = await ticket.queue.get()
                text += event.text
                if event.finish_reason or event.error:
                    return row, text
        finally:
            engine.stop()

    row, text = asyncio.run(generate())
    assert row.ids and row.ids[0] in heal.allowed
    assert backend.decode(row.ids).startswith(heal.text)
    assert heal.text + text == backend.decode(row.ids)[:len(heal.text + text)]  # the reply follows the prompt
