"""Continuous batching of requests on one local model, in a thread of its own.

Each iteration of the engine's loop
  1. drops the rows of requests that were cancelled (their client went away) or failed,
  2. admits waiting rows while the batch has room — continuous batching; with joining turned off (static
     batching) only when the batch is empty — prefilling their prompts and sampling their first token,
  3. runs one decoding step for every running row, sampling each row's next token with its own
     temperature, top_p and torch.Generator,
and a row leaves the batch as soon as it finishes. Text goes to the request's asyncio queue as it is decoded.
Because every row samples from its own logits with its own generator, a seeded request gets the tokens it
would get alone whatever it is batched with (up to floating-point differences between batch shapes).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from moecoder.model.generate import sample_next
from moecoder.text import HealedPrompt


@dataclass
class TokenLogprob:
    """One generated (or echoed prompt) token: its text, log-probability under the model (None for the first
    prompt token, which has no context), the `top` most likely alternatives, and where its text starts."""

    token: str
    logprob: float | None
    top: list[tuple[str, float]]
    offset: int


@dataclass
class Event:
    """What a row tells its request: new text, or (finish_reason set) that it is done."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    tokens: int = 0
    error: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # the tokens whose text this event releases


class Ticket:
    """One request as the engine sees it: where its rows' events go, whether its client is gone, and the
    largest batch its rows were decoded in (so tests and clients can see that requests shared a batch)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
        self.loop, self.queue = loop, queue
        self.cancelled = False
        self.peak_batch = 0

    def emit(self, event: Event) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


class QueueFull(Exception):
    """The engine holds as many waiting rows as it may."""


@dataclass(eq=False)
class Row:
    """One completion being generated: one row of the batch, reporting to its request's ticket.

    Text is decoded incrementally (only the ids since the last complete character are re-decoded) and
    released as it comes, except a tail that could still grow into a stop string, so a stream never shows
    text that the final answer cuts off. max_tokens 0 (echo only) finishes right after the prompt.
    """

    ticket: Ticket
    index: int
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # alternatives to report per token; None: no logprobs
    prompt_logprobs: bool = False  # also report the prompt's tokens (echo with logprobs)
    echo: str = ""  # text the choice starts with (the prompt, for echo); offsets count it
    logit_bias: dict[int, float] = field(default_factory=dict)
    heal: HealedPrompt | None = None  # token healing: the prompt's last token taken back (see moecoder.text)
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of text already released
    done: bool = False
    next_token: int | None = None
    generator: torch.Generator | None = None
    pending: list[TokenLogprob] = field(default_factory=list)
    _healed: bool = False
    _prefix: int = 0  # detokenizer: ids[_prefix:_read] decode to the last complete text
    _read: int = 0

    def push(self, token: int, decode: Callable, eos_ids, logprob: TokenLogprob | None = None) -> None:
        """Take one sampled token (an eos id ends the row and is not part of it)."""
        if token in eos_ids:
            return self.finish("stop", decode)
        self.ids.append(token)
        if logprob is not None:
            logprob.offset = len(self.echo) + len(self.text)
            self.pending.append(logprob)
        before = len(self.text)
        new = self._new_text(decode)
        if self.heal is not None and not self._healed and new:  # the healed token's text is the prompt's
            new, self._healed = self.heal.strip(new), True
        self.text += new
        if self.stop and self._cut_at_stop(before):
            return self.finish("stop", decode, flush=False)
        if len(self.ids) >= self.max_tokens:
            return self.finish("length", decode)
        hold = max((len(s) - 1 for s in self.stop), default=0)
        if len(self.text) - hold > self.sent:
            self._release(len(self.text) - hold)

    def _new_text(self, decode: Callable) -> str:
        """Text the newest ids add, once they end on a complete character (as transformers' streamers do)."""
        done = decode(self.ids[self._prefix:self._read])
        text = decode(self.ids[self._prefix:])
        if len(text) > len(done) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return text[len(done):]
        return ""

    def _cut_at_stop(self, before: int) -> bool:
        """Cut the text at the earliest stop string (only one ending in the new text can be new)."""
        start = max(0, before - max(len(s) for s in self.stop) + 1)
        found = [i for i in (self.text.find(s, start) for s in self.stop if s) if i >= 0]
        if found:
            self.text = self.text[:min(found)]
        return bool(found)

    def _release(self, end: int, **finish) -> None:
        released = self.pending if finish else [p for p in self.pending if p.offset < len(self.echo) + end]
        self.pending = self.pending[len(released):]
        self.ticket.emit(Event(self.index, self.text[self.sent:end], logprobs=released, **finish))
        self.sent = end

    def finish(self, reason: str, decode: Callable, flush: bool = True) -> None:
        if flush:  # an unfinished character at the very end
            self.text += decode(self.ids[self._prefix:])[len(decode(self.ids[self._prefix:self._read])):]
        self.done = True
        self._release(len(self.text), finish_reason=reason, tokens=len(self.ids))

    def fail(self, message: str) -> None:
        self.done = True
        self.ticket.cancelled = True  # the request fails as a whole: its other rows stop too
        self.ticket.emit(Event(self.index, finish_reason="error", error=message))


def make_generator(seed: int | None, device) -> torch.Generator:
    return torch.Generator(device).manual_seed(random.getrandbits(63) if seed is None else seed)


class Engine:
    """Rows of requests on one model runner (see runner.py), batched continuously or statically.

    max_batch: most rows decoded together; max_waiting: most rows waiting to join (submit raises QueueFull
    beyond); joining=False gives static batching: a batch is formed only when the last one has finished,
    after waiting `window_ms` for a burst of requests to arrive. prefill_tokens bounds one prefill forward
    (rows x longest prompt), so a burst of long prompts is prefilled in several passes.
    """

    def __init__(self, runner, decode: Callable, eos_ids: list[int], max_batch: int = 16, max_waiting: int = 256,
                 joining: bool = True, window_ms: float = 20.0, prefill_tokens: int = 8192):
        self.runner, self.decode, self.eos_ids = runner, decode, set(eos_ids)
        self.max_batch, self.max_waiting, self.joining = max_batch, max_waiting, joining
        self.window, self.prefill_tokens = window_ms / 1000, prefill_tokens
        self.cond = threading.Condition()
        self.waiting: deque[Row] = deque()
        self.active: list[Row] = []
        self.stopping = False
        self.steps = self.prefills = self.admitted = self.tokens = self.peak_batch = 0  # shown by /health
        self.thread = threading.Thread(target=self._run, name="moecoder-engine", daemon=True)

    # --- the event loop's side ------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout=30)

    def submit(self, rows: list[Row]) -> None:
        with self.cond:
            if len(self.waiting) + len(rows) > self.max_waiting:
                raise QueueFull(f"{len(self.waiting)} rows are waiting (the limit is {self.max_waiting})")
            self.waiting.extend(rows)
            self.cond.notify()

    def cancel(self, ticket: Ticket) -> None:
        """Drop a request's rows: waiting ones now, running ones before the next decoding step."""
        ticket.cancelled = True
        with self.cond:
            self.waiting = deque(row for row in self.waiting if row.ticket is not ticket)

    def status(self) -> dict:
        return {"running": len(self.active), "waiting": len(self.waiting), "steps": self.steps,
                "prefills": self.prefills, "admitted": self.admitted, "tokens": self.tokens, "peak_batch": self.peak_batch,
                "batching": "continuous" if self.joining else "static"}

    # --- the engine thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while (joining := self._take()) is not None:
                try:
                    self._leave()
                    if joining:
                        self._admit(joining)
                    if self.active:
                        self._step()
                except Exception as exc:  # noqa: BLE001 — a fault here must not leave requests waiting forever
                    for row in self.active + joining:
                        if not row.done:
                            row.fail(f"engine error: {type(exc).__name__}: {exc}")
                    self.active = []
                    self.runner.keep([])

    def _take(self) -> list[Row] | None:
        """Waiting rows to admit now (None when the engine stops); blocks while there is nothing to do."""
        with self.cond:
            while not (self.stopping or self.waiting or self.active):
                self.cond.wait()
            if self.stopping:
                return None
            if self.active and not self.joining:
                return []
            if not self.active and not self.joining:  # static batching: let a burst of requests arrive
                deadline = time.monotonic() + self.window
                while len(self.waiting) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    self.cond.wait(left)
            room = self.max_batch - len(self.active)
            return [self.waiting.popleft() for _ in range(min(room, len(self.waiting)))]

    def _leave(self) -> None:
        """Drop finished rows and those of cancelled requests from the batch."""
        keep = [i for i, row in enumerate(self.active) if not (row.done or row.ticket.cancelled)]
        if len(keep) < len(self.active):
            self.runner.keep(keep)
            self.active = [self.active[i] for i in keep]

    def _admit(self, rows: list[Row]) -> None:
        rows = [row for row in rows if not row.ticket.cancelled]
        self.admitted += len(rows)
        for row in rows:
            row.generator = make_generator(row.seed, self.runner.device)
            if row.echo and not row.prompt_logprobs:  # with logprobs, the echo goes out with the prompt's
                row.ticket.emit(Event(row.index, row.echo))
            if row.max_tokens == 0 and not row.prompt_logprobs:
                row.finish("length", self.decode)
        # Rows with the same prompt (n > 1) share one prefill; echo with logprobs needs every position's logits.
        groups: dict[tuple, list[Row]] = {}
        for row in rows:
            if not row.done:
                groups.setdefault((tuple(row.prompt_ids), row.prompt_logprobs), []).append(row)
        prompts = sorted(groups, key=lambda key: len(key[0]))
        chunk: list[tuple] = []
        for key in prompts:  # similar lengths share a prefill pass, up to prefill_tokens
            if chunk and (key[1] or chunk[-1][1] or (len(chunk) + 1) * len(key[0]) > self.prefill_tokens):
                self._prefill(chunk, groups)
                chunk = []
            chunk.append(key)
        if chunk:
            self._prefill(chunk, groups)

    def _prefill(self, keys: list[tuple], groups: dict[tuple, list[Row]]) -> None:
        """Prefill distinct prompts in one pass; if that fails, each alone, so only a failing prompt fails."""
        try:
            self.prefills += 1
            part, logits = self.runner.prefill([list(key[0]) for key in keys], all_positions=keys[0][1])
        except Exception as exc:  # noqa: BLE001 — any failure is reported to the requests it concerns
            if len(keys) > 1:
                for key in keys:
                    self._prefill([key], groups)
                return
            for row in groups[keys[0]]:
                row.fail(f"prefill failed: {type(exc).__name__}: {exc}")
            return
        order = [(k, row) for k, key in enumerate(keys) for row in groups[key]]
        rows = [row for _, row in order]
        for k, row in order:
            if row.prompt_logprobs:
                self._prompt_logprobs(row, logits[k])
                if row.max_tokens == 0:
                    row.finish("length", self.decode)
        self._sample(rows, logits[[k for k, _ in order], -1])
        joining = [i for i, row in enumerate(rows) if not row.done]
        if joining:
            self.runner.join(self.runner.select(part, [order[i][0] for i in joining]))
            self.active += [rows[i] for i in joining]

    def _step(self) -> None:
        self._leave()  # rows cancelled while others were being admitted
        if not self.active:
            return
        tokens = torch.tensor([row.next_token for row in self.active], device=self.runner.device)
        try:
            logits = self.runner.decode(tokens)
        except Exception as exc:  # noqa: BLE001 — a failed forward cannot be pinned on one row
            for row in self.active:
                row.fail(f"generation failed: {type(exc).__name__}: {exc}")
            self._leave()
            return
        self.steps += 1
        self.peak_batch = max(self.peak_batch, len(self.active))
        for row in self.active:
            row.ticket.peak_batch = max(row.ticket.peak_batch, len(self.active))
        self._sample(self.active, logits)
        self._leave()

    def _sample(self, rows: list[Row], logits: torch.Tensor) -> None:
        """Each row's next token from its logits [len(rows), V], with its own sampling and generator."""
        greedy = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            if row.done:
                continue
            try:
                scores = logits[i:i + 1]
                if row.heal is not None and not row.ids:  # healing: the first token starts with the removed text
                    scores = row.heal.mask_logits(scores)
                    greedy[i] = int(scores.argmax())
                if row.logit_bias:  # OpenAI's logit_bias: added to the logits before sampling
                    ids, bias = zip(*row.logit_bias.items())
                    scores = scores.index_add(1, torch.tensor(ids, device=scores.device),
                                              torch.tensor([bias], dtype=scores.dtype, device=scores.device))
                    greedy[i] = int(scores.argmax())
                token = greedy[i] if row.temperature <= 0 else \
                    int(sample_next(scores, row.temperature, row.top_p, row.generator)[0])
                logprob = None if row.logprobs is None else self._logprob(logits[i], token, row.logprobs)
                row.next_token = token
                self.tokens += 1
                row.push(token, self.decode, self.eos_ids, logprob)
            except Exception as exc:  # noqa: BLE001 — one row's failure fails its request alone
                row.fail(f"generation failed: {type(exc).__name__}: {exc}")

    def _logprob(self, logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
        """The token's log-probability under the model's distribution (before temperature and top_p)."""
        logprobs = logits.float().log_softmax(dim=-1)
        best = logprobs.topk(top) if top else None
        alternatives = [] if best is None else [(self.decode([i]), v) for v, i in
                                                zip(best.values.tolist(), best.indices.tolist())]
        return TokenLogprob(self.decode([token]), float(logprobs[token]), alternatives, 0)

    def _prompt_logprobs(self, row: Row, logits: torch.Tensor) -> None:
        """Echo: each prompt token's log-probability given the tokens before it (logits [T, V], left-padded)."""
        ids = row.prompt_ids
        logits = logits[-len(ids):]
        entries, offset = [TokenLogprob(self.decode(ids[:1]), None, [], 0)], len(self.decode(ids[:1]))
        for t in range(1, len(ids)):
            entry = self._logprob(logits[t - 1], ids[t], row.logprobs or 0)
            entry.offset = offset
            offset += len(entry.token)
            entries.append(entry)
        row.ticket.emit(Event(row.index, row.echo, logprobs=entries))
