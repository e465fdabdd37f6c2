"""Batching of concurrent requests: what arrives within a few milliseconds runs as one batched generate."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from moecoder.generate.local import LocalBackend
from moecoder.generate.prompts import truncate_at_stop


@dataclass
class Event:
    """What a row tells its request: new text, or (finish_reason set) that it is done."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    tokens: int = 0
    error: str | None = None


@dataclass(eq=False)
class Row:
    """One completion being generated: one row of a batch, reporting to its request's event queue.

    Text is released as it is decoded, except a tail that could still grow into a stop string (or is an
    unfinished UTF-8 character), so a stream never shows text that the final answer cuts off.
    """

    index: int
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    queue: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    ids: list[int] = field(default_factory=list)
    sent: int = 0  # characters of text already released
    done: bool = False

    def push(self, token: int, backend: LocalBackend) -> None:
        if self.done:
            return
        if token in backend.eos_ids:
            return self.finish(backend.decode(self.ids), "stop")
        self.ids.append(token)
        text, stopped = truncate_at_stop(backend.decode(self.ids), self.stop)
        if stopped:
            return self.finish(text, "stop")
        if len(self.ids) >= self.max_tokens:
            return self.finish(text, "length")
        hold = max((len(s) - 1 for s in self.stop), default=0)
        safe = len(text) - hold
        while safe > self.sent and text[safe - 1] == "\ufffd":
            safe -= 1
        if safe > self.sent:
            self._emit(Event(self.index, text[self.sent:safe]))
            self.sent = safe

    def finish(self, text: str, reason: str) -> None:
        self.done = True
        self._emit(Event(self.index, text[self.sent:], finish_reason=reason, tokens=len(self.ids)))

    def fail(self, message: str) -> None:
        self.done = True
        self._emit(Event(self.index, finish_reason="error", error=message))

    def _emit(self, event: Event) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


class BatchingEngine:
    """Runs rows on one local model, one batch at a time. A batch takes every waiting row that shares the
    first row's temperature and top_p (up to max_batch), once requests stop arriving for `window_ms`."""

    def __init__(self, backend: LocalBackend, max_batch: int = 16, window_ms: float = 20.0):
        self.backend = backend
        self.max_batch = max_batch
        self.window = window_ms / 1000
        self.waiting: list[Row] = []
        self.arrived = asyncio.Event()
        self.batches = 0  # batches run so far, and rows in them: batching visible in /health
        self.rows = 0

    def submit(self, row: Row) -> None:
        self.waiting.append(row)
        self.arrived.set()

    async def run(self) -> None:
        while True:
            await self.arrived.wait()
            await self._let_burst_arrive()
            batch = self._take()
            if not self.waiting:
                self.arrived.clear()
            await asyncio.to_thread(self._generate, batch)

    async def _let_burst_arrive(self) -> None:
        """Wait while requests keep coming (each window brings more), up to ten windows or a full batch:
        clients opening many connections at once arrive spread over milliseconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10 * self.window
        seen = -1
        while len(self.waiting) != seen and len(self.waiting) < self.max_batch and loop.time() < deadline:
            seen = len(self.waiting)
            await asyncio.sleep(self.window)

    def _take(self) -> list[Row]:
        first = self.waiting[0]
        batch = [r for r in self.waiting if (r.temperature, r.top_p) == (first.temperature, first.top_p)]
        batch = batch[:self.max_batch]
        self.waiting = [r for r in self.waiting if r not in batch]
        return batch

    def _generate(self, batch: list[Row]) -> None:
        self.batches += 1
        self.rows += len(batch)
        seeds = [r.seed for r in batch if r.seed is not None]
        try:
            new = self.backend.generate_ids(
                [r.prompt_ids for r in batch], max(r.max_tokens for r in batch), batch[0].temperature,
                batch[0].top_p, seeds[0] if seeds else random.randrange(2**31),
                # Only stop strings every row has may end rows inside generate; the rest are cut per row.
                tuple(sorted(set(batch[0].stop).intersection(*(r.stop for r in batch)))),
                on_step=lambda tokens: self._step(batch, tokens.tolist()))
        except Exception as exc:  # a failed batch fails its requests, never the server
            for row in batch:
                row.fail(f"generation failed: {type(exc).__name__}: {exc}")
            return
        for row, ids in zip(batch, new):
            for token in ids[len(row.ids):]:
                row.push(token, self.backend)
            if not row.done:  # generation ended on an eos id, which generate_ids leaves out
                row.finish(self.backend.decode(row.ids), "stop")

    def _step(self, batch: list[Row], tokens: list[int]) -> None:
        for row, token in zip(batch, tokens):
            row.push(token, self.backend)
