"""The batching engine in-process on the tiny checkpoint: rows joining a running batch get exactly the tokens
they get alone, static batching makes them wait, one failing row fails alone, cancelled rows stop."""

import asyncio

import pytest

from moecoder.generate import make_backend
from moecoder.serve.engine import Engine, Row, Ticket
from moecoder.serve.runner import NativeRunner, make_runner

PROMPTS = ["def add(a, b):", "def sub(a, b):\n", "print(add(1,", "def", "\n\n\ndef sub(a, b):\n    return a"]


@pytest.fixture(scope="module")
def backend(tiny_model, one_torch_thread):
    return make_backend(f"native:{tiny_model}", device="cpu")


class Request:
    """One ticket's rows, their text and finish reasons, and a way to wait for the first text."""

    def __init__(self, backend, prompts: list[str], max_tokens: int, **row_options):
        self.ticket = Ticket(asyncio.get_running_loop(), asyncio.Queue())
        self.rows = [Row(self.ticket, i, backend.prompt_ids(prompt=p), max_tokens, **row_options)
                     for i, p in enumerate(prompts)]
        self.texts, self.reasons, self.errors, self.order = [""] * len(prompts), [None] * len(prompts), [], []
        self.first_text = asyncio.Event()

    async def collect(self, finished: list):
        while None in self.reasons and not self.errors:
            event = await self.ticket.queue.get()
            if event.error:
                self.errors.append(event.error)
                break
            self.texts[event.index] += event.text
            if event.text:
                self.first_text.set()
            if event.finish_reason:
                self.reasons[event.index] = event.finish_reason
        finished.append(self)
        return self


def start(backend, runner=None, **options) -> Engine:
    engine = Engine(runner or make_runner(backend), backend.decode, backend.eos_ids, **options)
    engine.start()
    return engine


def alone(backend, prompt: str, max_tokens: int) -> str:
    return backend.decode(backend.generate_ids([backend.prompt_ids(prompt=prompt)], max_tokens)[0])


async def staggered(engine: Engine, backend, max_tokens: list[int], **row_options) -> tuple[list[Request], list[Request]]:
    """Each prompt submitted once the one before it has produced text: every later row joins a running batch."""
    finished, requests, tasks = [], [], []
    for prompt, tokens in zip(PROMPTS, max_tokens):
        request = Request(backend, [prompt], tokens, **row_options)
        engine.submit(request.rows)
        tasks.append(asyncio.create_task(request.collect(finished)))
        requests.append(request)
        await asyncio.wait_for(request.first_text.wait(), 60)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return requests, finished


def test_rows_joining_a_running_batch_get_the_tokens_they_get_alone(backend):
    engine = start(backend)
    try:
        requests, finished = asyncio.run(staggered(engine, backend, [40, 30, 24, 16, 8]))
    finally:
        engine.stop()
    assert [r.texts[0] for r in requests] == [alone(backend, p, n) for p, n in zip(PROMPTS, [40, 30, 24, 16, 8])]
    assert [r.ticket.peak_batch for r in requests] == [5] * 5  # every row joined while the others ran
    assert finished.index(requests[-1]) < finished.index(requests[0])  # the last to join left before the first
    assert engine.runner.rows == 0 and engine.status()["running"] == 0


def test_prompts_prefilled_in_chunks_get_the_same_tokens(backend):
    engine = start(backend, NativeRunner(backend.model, backend.pad_id, prefill_chunk=3))
    try:
        requests, _ = asyncio.run(staggered(engine, backend, [12, 10, 8]))
    finally:
        engine.stop()
    assert [r.texts[0] for r in requests] == [alone(backend, p, n) for p, n in zip(PROMPTS, [12, 10, 8])]
    assert all(len(backend.prompt_ids(prompt=p)) > 3 for p in PROMPTS[:2])  # (more than one chunk)


def test_static_batching_makes_later_rows_wait_for_the_batch_to_end(backend):
    engine = start(backend, joining=False, window_ms=0)
    try:
        requests, finished = asyncio.run(staggered(engine, backend, [40, 4]))  # (a short row behind a long one)
    finally:
        engine.stop()
    assert finished == requests and [r.ticket.peak_batch for r in requests] == [1, 1]
    assert [r.texts[0] for r in requests] == [alone(backend, p, n) for p, n in zip(PROMPTS, [40, 4])]


def test_seeded_rows_sample_what_they_sample_alone(backend):
    options = dict(temperature=1.0, top_p=0.9, seed=1234)
    engine = start(backend)
    try:
        solo = [asyncio.run(staggered_one(engine, backend, prompt, options)) for prompt in PROMPTS[:3]]
        together, _ = asyncio.run(staggered(engine, backend, [24] * 3, **options))
    finally:
        engine.stop()
    assert [r.ticket.peak_batch for r in together] == [3, 3, 3]
    assert [r.texts[0] for r in together] == solo
    assert len(set(solo)) > 1


async def staggered_one(engine: Engine, backend, prompt: str, options: dict) -> str:
    request = Request(backend, [prompt], 24, **options)
    engine.submit(request.rows)
    await asyncio.wait_for(request.collect([]), 60)
    assert request.ticket.peak_batch == 1
    return request.texts[0]


def test_a_failing_row_fails_alone(backend):
    class Faulty(Row):
        def push(self, *args, **kwargs):
            raise RuntimeError("decoding broke")

    async def scenario():
        finished = []
        good, bad, broken = (Request(backend, [p], 12) for p in PROMPTS[:3])
        bad.rows = [Faulty(bad.ticket, 0, bad.rows[0].prompt_ids, 12)]
        broken.rows[0].prompt_ids = [10**6]  # an id the embedding does not have: its prefill fails
        for request in (good, bad, broken):
            engine.submit(request.rows)
        await asyncio.wait_for(asyncio.gather(*(r.collect(finished) for r in (good, bad, broken))), 60)
        return good, bad, broken

    engine = start(backend)
    try:
        good, bad, broken = asyncio.run(scenario())
    finally:
        engine.stop()
    assert good.texts == [alone(backend, PROMPTS[0], 12)] and good.reasons == ["length"]
    assert "decoding broke" in bad.errors[0] and "prefill failed" in broken.errors[0]


def test_a_cancelled_request_stops_before_the_next_step(backend):
    async def scenario():
        request = Request(backend, ["def"] * 4, 400, temperature=1.0)
        engine.submit(request.rows)
        collecting = asyncio.create_task(request.collect([]))
        await asyncio.wait_for(request.first_text.wait(), 60)
        engine.cancel(request.ticket)
        at_cancel = engine.tokens
        await asyncio.sleep(0.5)
        collecting.cancel()
        return engine.tokens - at_cancel

    engine = start(backend)
    try:
        after = asyncio.run(scenario())
    finally:
        engine.stop()
    assert after <= 4  # at most the step that was running (one token per row)
    assert engine.status()["running"] == 0 and engine.runner.rows == 0
