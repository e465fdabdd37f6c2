"""The OpenAI-compatible HTTP API: /v1/models, /v1/completions, /v1/chat/completions (streaming too).

Every request is parsed, checked and tokenised in a worker thread (never on the event loop, so /health
stays responsive), within limits that bound its work: body size, prompts per request, characters per
prompt (checked before tokenising), n, rows (prompts x n), rows waiting for the engine (beyond: 429 with
Retry-After). A request whose client disconnects has its rows cancelled before the engine's next step.
A non-streamed answer carries the header `x-moecoder-peak-batch`: the most rows decoded together while the
request ran (so a client can see that it shared the batch).
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException
from tokenizers import Tokenizer

from moecoder.errors import UserError
from moecoder.generate.local import LocalBackend
from moecoder.serve.engine import Engine, Event, QueueFull, Row, Ticket, TokenLogprob
from moecoder.serve.limits import Limits
from moecoder.serve.runner import make_runner
from moecoder.text import TokenHealer, fim_prompt

MAX_SEED = 2**63 - 1
MAX_STOP = 16  # stop strings per request (OpenAI allows 4; each is searched for after every token)


class APIError(Exception):
    """A request the server refuses, answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers


def error_response(status: int, message: str, param=None, code=None, kind="invalid_request_error", headers=None):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


# --- request bodies ---------------------------------------------------------------------------------------

class Sampling(BaseModel):
    """The request fields both endpoints share; `null` for any optional field means its default. Unknown
    fields are ignored; known OpenAI fields this server does not implement are refused (see UNSUPPORTED)."""

    model_config = ConfigDict(extra="allow")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] = Field(default_factory=list)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: dict = Field(default_factory=dict)  # {"include_usage": true}: a last chunk with the counts
    logit_bias: dict[int, float] = Field(default_factory=dict)  # token id -> bias in -100..100 added to its logit

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data):
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    @property
    def stops(self) -> tuple[str, ...]:
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)


# Fields OpenAI defines that this server does not implement: refused unless they hold their no-op value.
UNSUPPORTED = {"presence_penalty": 0, "frequency_penalty": 0, "best_of": 1, "tools": [],
               "functions": [], "response_format": {"type": "text"}, "audio": None, "prediction": None}


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    max_tokens: int = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)


class TextPart(BaseModel):
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


@dataclass
class Job:
    """A checked, tokenised request: its prompts' ids and how to generate from them."""

    body: Sampling
    prompt_ids: list[list[int]]
    max_tokens: int
    echo: list[str]  # the text each prompt's choices start with ("" without echo)
    logprobs: int | None
    chat: bool
    heal: list = field(default_factory=list)  # per prompt: its HealedPrompt, or None

    @property
    def prompt_tokens(self) -> int:
        """The prompts' tokens as sent (a healed prompt's last token is generated again, yet is the prompt's)."""
        return sum(map(len, self.prompt_ids)) + sum(heal is not None for heal in self.heal)


def _healer(backend) -> TokenHealer | None:
    """Token healing for the backend's tokenizer (a `tokenizers.Tokenizer`, or transformers' fast one's)."""
    tokenizer = getattr(backend, "tokenizer", None)
    tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return TokenHealer(tokenizer) if isinstance(tokenizer, Tokenizer) else None


def joined_content(message: Message, where: str) -> str:
    """A message's content as one string: text parts are joined; any other part type is refused."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    others = sorted({part.type for part in message.content if part.type != "text"})
    if others:
        raise APIError(400, f"{where}.content: content parts of type {', '.join(map(repr, others))} are not "
                            "supported by this server (only 'text')", param=f"{where}.content")
    return "".join(part.text or "" for part in message.content)


class Server:
    """One local model behind the API; requests become rows for the engine."""

    def __init__(self, backend: LocalBackend, model_id: str, max_batch: int = 16, limits: Limits = Limits(),
                 joining: bool = True, window_ms: float = 20.0):
        self.backend, self.model_id, self.limits = backend, model_id, limits
        config = getattr(backend.model, "config", None)
        self.context = getattr(config, "max_position_embeddings", None)
        self.vocab_size = getattr(config, "vocab_size", None)
        self.vocab = backend.vocab()
        self.healer = _healer(backend)
        self.engine = Engine(make_runner(backend), backend.decode, backend.eos_ids, max_batch=max_batch,
                             max_waiting=limits.max_waiting, joining=joining, window_ms=window_ms)
        self.workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="moecoder-tokenize")
        self.preparing = 0  # requests being parsed and tokenised (at most max_waiting)
        self.created = int(time.time())

    def app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(app):
            self.engine.start()
            yield
            self.engine.stop()
            self.workers.shutdown(wait=False, cancel_futures=True)

        app = FastAPI(title="moecoder", lifespan=lifespan)
        app.add_exception_handler(APIError, lambda request, exc: error_response(
            exc.status, exc.message, exc.param, exc.code, exc.kind, exc.headers))
        app.add_exception_handler(HTTPException, lambda request, exc: error_response(
            exc.status_code, str(exc.detail),
            kind="invalid_request_error" if exc.status_code < 500 else "server_error"))
        app.get("/health")(self.health)
        app.get("/v1/models")(self.models)
        app.post("/v1/completions")(self.completions)
        app.post("/v1/chat/completions")(self.chat_completions)
        return BodyLimit(app, self.limits.max_body_bytes)

    async def health(self):
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kB
        return {"status": "ok", **self.engine.status(), "preparing": self.preparing, "peak_rss_mb": peak_rss_mb}

    async def models(self):
        return {"object": "list", "data": [{"id": self.model_id, "object": "model", "created": self.created,
                                            "owned_by": "moecoder", "max_model_len": self.context}]}

    # --- endpoints ------------------------------------------------------------------------------------

    async def completions(self, request: Request):
        return await self._serve(request, self._completion_job)

    async def chat_completions(self, request: Request):
        return await self._serve(request, self._chat_job)

    async def _serve(self, request: Request, prepare):
        if self.preparing >= self.limits.max_waiting:
            raise self._busy(f"{self.preparing} requests are being read")
        body = await request.body()
        self.preparing += 1
        try:
            job: Job = await asyncio.get_running_loop().run_in_executor(self.workers, prepare, body)
        finally:
            self.preparing -= 1
        ticket = Ticket(asyncio.get_running_loop(), asyncio.Queue())
        rows = self._rows(job, ticket)
        try:
            self.engine.submit(rows)
        except QueueFull as exc:
            raise self._busy(str(exc)) from exc
        reply = Reply(self.model_id, job, len(rows), job.prompt_tokens)
        if job.body.stream:
            usage = bool(job.body.stream_options.get("include_usage"))
            return StreamingResponse(self._stream(reply, ticket, usage), media_type="text/event-stream")
        collect = asyncio.ensure_future(reply.collect(ticket.queue))
        gone = asyncio.ensure_future(disconnected(request))
        await asyncio.wait((collect, gone), return_when=asyncio.FIRST_COMPLETED)
        if not collect.done():  # the client left: stop its rows, answer nobody
            self.engine.cancel(ticket)
            collect.cancel()
            return JSONResponse({}, status_code=499)
        gone.cancel()
        return JSONResponse(collect.result(), headers={"x-moecoder-peak-batch": str(ticket.peak_batch)})

    async def _stream(self, reply: "Reply", ticket: Ticket, include_usage: bool):
        try:
            async for chunk in reply.stream(ticket.queue, include_usage):
                yield chunk
        finally:  # normal end, or the client left (the response task is cancelled)
            self.engine.cancel(ticket)

    @staticmethod
    def _busy(why: str) -> APIError:
        return APIError(429, f"the server is busy ({why}); retry later", code="rate_limit_exceeded",
                        kind="rate_limit_error", headers={"Retry-After": "1"})

    def _rows(self, job: Job, ticket: Ticket) -> list[Row]:
        body = job.body
        return [Row(ticket, i * body.n + j, ids, job.max_tokens, body.temperature, body.top_p,
                    None if body.seed is None else body.seed + j, body.stops, job.logprobs,
                    prompt_logprobs=bool(job.echo[i]) and job.logprobs is not None, echo=job.echo[i],
                    logit_bias=body.logit_bias, heal=job.heal[i] if job.heal else None)
                for i, ids in enumerate(job.prompt_ids) for j in range(body.n)]

    # --- parsing, checks and tokenisation (worker threads) ---------------------------------------------

    def _parse(self, schema, raw: bytes):
        try:
            body = schema.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == "json_invalid":
                raise APIError(400, f"the request body is not valid JSON: {first['ctx']['error']}") from None
            where = ".".join(str(part) for part in first["loc"]) or None
            raise APIError(400, f"{where or 'body'}: {first['msg']}", param=where) from None
        if body.model != self.model_id:
            raise APIError(404, f"The model `{body.model}` does not exist; this server serves `{self.model_id}`.",
                           param="model", code="model_not_found")
        for name, value in (body.model_extra or {}).items():
            if name in UNSUPPORTED and value not in (UNSUPPORTED[name], None):
                raise APIError(400, f"{name}: not supported by this server", param=name)
        limits = self.limits
        self._within("n", body.n, limits.max_n, "choices")
        self._within("stop", len(body.stops), MAX_STOP, "stop strings")
        for token, bias in body.logit_bias.items():
            if not (0 <= token < (self.vocab_size or 2**31) and -100 <= bias <= 100):
                raise APIError(400, f"logit_bias: token {token} must be in 0..{self.vocab_size - 1} and its bias "
                                    f"{bias} in -100..100", param="logit_bias")
        return body

    @staticmethod
    def _within(field: str, value: int, limit: int, what: str) -> None:
        if value > limit:
            raise APIError(400, f"{field}: {value} {what} is over this server's limit of {limit}", param=field)

    def _completion_job(self, raw: bytes) -> Job:
        body: CompletionRequest = self._parse(CompletionRequest, raw)
        prompts = body.prompt
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not prompts:
            raise APIError(400, "prompt: at least one prompt is needed", param="prompt")
        self._within("prompt", len(prompts), self.limits.max_prompts, "prompts")
        self._within("n", len(prompts) * body.n, self.limits.max_rows, "rows (prompts x n)")
        if body.max_tokens == 0 and not body.echo:
            raise APIError(400, "max_tokens: 0 is only meaningful with echo", param="max_tokens")
        if body.suffix is not None and body.echo:
            raise APIError(400, "echo: not supported together with suffix", param="echo")
        ids = [self._completion_ids(p, body.suffix) for p in prompts]
        self._fits(ids, body.max_tokens)
        echo = [(p if isinstance(p, str) else self.backend.decode(p)) if body.echo else "" for p in prompts]
        heal = []
        if body.suffix is None and not body.echo and body.logprobs is None and self.healer is not None:
            # A verbatim text prompt ends on whatever token its last characters made ("\n" before an
            # indentation the model always saw merged with it): heal that boundary.
            heal = [self.healer.heal(i) if isinstance(p, str) else None for p, i in zip(prompts, ids)]
            ids = [h.ids if h is not None and h.allowed else i for h, i in zip(heal, ids)]
            heal = [h if h is not None and h.allowed else None for h in heal]
        return Job(body, ids, body.max_tokens, echo, body.logprobs, chat=False, heal=heal)

    def _completion_ids(self, prompt: str | list[int], suffix: str | None) -> list[int]:
        if not isinstance(prompt, str):
            if not prompt or not all(0 <= t < (self.vocab_size or 2**31) for t in prompt):
                raise APIError(400, f"prompt: token ids must be in 0..{self.vocab_size - 1}, and not empty",
                               param="prompt")
            return list(prompt)
        self._within("prompt", len(prompt) + len(suffix or ""), self.limits.max_prompt_chars, "characters")
        if suffix is not None:
            try:
                prompt = fim_prompt(prompt, suffix, self.vocab)
            except UserError as exc:
                raise APIError(400, f"suffix: {exc}", param="suffix") from exc
        return self._encode(prompt, add_special_tokens=True)

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        """The backend's ids of `text`. For a `tokenizers.Tokenizer` through encode_batch, which releases the
        GIL while it works (encode holds it: 0.3 s for a 128k-character prompt, /health waiting all along)."""
        if isinstance(self.backend.tokenizer, Tokenizer):
            return self.backend.tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids
        return self.backend.encode(text, add_special_tokens)

    def _chat_job(self, raw: bytes) -> Job:
        body: ChatRequest = self._parse(ChatRequest, raw)
        self._within("n", body.n, self.limits.max_rows, "rows")
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs: needs logprobs set to true", param="top_logprobs")
        messages = [{"role": "system" if m.role == "developer" else m.role,
                     "content": joined_content(m, f"messages.{i}")} for i, m in enumerate(body.messages)]
        self._within("messages", sum(len(m["content"]) for m in messages), self.limits.max_prompt_chars,
                     "characters")
        try:
            text = self.backend.chat_prompt(messages)
        except UserError as exc:
            raise APIError(400, str(exc), param="messages") from exc
        ids = self._encode(text, add_special_tokens=False)  # the template writes BOS itself
        max_tokens = body.max_completion_tokens or body.max_tokens
        if max_tokens is None:  # as much as the context leaves
            max_tokens = (self.context - len(ids)) if self.context else 4096
            if max_tokens < 1:
                raise APIError(400, f"the conversation ({len(ids)} tokens) fills the model's context of "
                                    f"{self.context} tokens", param="messages")
        self._fits([ids], max_tokens)
        return Job(body, [ids], max_tokens, [""], (body.top_logprobs or 0) if body.logprobs else None, chat=True)

    def _fits(self, ids: list[list[int]], max_tokens: int) -> None:
        longest = max(len(p) for p in ids)
        if self.context and longest + max_tokens > self.context:
            raise APIError(400, f"prompt ({longest} tokens) plus max_tokens ({max_tokens}) exceeds the model's "
                                f"context of {self.context} tokens", param="max_tokens")


async def disconnected(request: Request) -> None:
    """Return once the client has disconnected (the body has been read, so only that message can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets a 413 before it is read any further."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise APIError(413, f"the request body is over this server's limit of {self.limit} bytes",
                               headers={"connection": "close"})
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope, receive, send):
        # Connection: close, so that the server does not read (and parse) the rest of the body it refuses.
        response = error_response(413, f"the request body is over this server's limit of {self.limit} bytes",
                                  headers={"connection": "close"})
        await response(scope, receive, send)


class Reply:
    """The answer to one request, built from its rows' events: one JSON body, or server-sent events."""

    def __init__(self, model_id: str, job: Job, choices: int, prompt_tokens: int):
        self.model_id, self.chat, self.choices, self.prompt_tokens = model_id, job.chat, choices, prompt_tokens
        self.logprobs = job.logprobs is not None
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def _envelope(self, choices: list[dict], chunk: bool) -> dict:
        kind = ("chat.completion" + (".chunk" if chunk else "")) if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_id, "choices": choices}

    async def _events(self, queue: asyncio.Queue):
        finished = 0
        while finished < self.choices:
            event: Event = await queue.get()
            if event.error:
                raise APIError(500, event.error, kind="server_error")
            finished += event.finish_reason is not None
            yield event

    def _usage(self, completion_tokens: int) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens}

    def _logprobs(self, entries: list[TokenLogprob]) -> dict | None:
        """OpenAI's logprobs object: chat's {"content": [...]}, or completions' parallel lists."""
        if not self.logprobs:
            return None
        if self.chat:
            def one(token, logprob):
                return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

            return {"content": [{**one(e.token, e.logprob), "top_logprobs": [one(t, v) for t, v in e.top]}
                                for e in entries]}
        return {"tokens": [e.token for e in entries], "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [dict(e.top) if e.logprob is not None else None for e in entries],
                "text_offset": [e.offset for e in entries]}

    def _choice(self, index: int, text: str, finish_reason: str | None, entries: list[TokenLogprob],
                chunk: bool = False) -> dict:
        logprobs = self._logprobs(entries)
        if not self.chat:
            return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
        if chunk:
            delta = {"content": text} if text else {}
            return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                "finish_reason": finish_reason}

    async def collect(self, queue: asyncio.Queue) -> dict:
        texts, entries = [""] * self.choices, [[] for _ in range(self.choices)]
        choices = [None] * self.choices
        completion_tokens = 0
        async for event in self._events(queue):
            texts[event.index] += event.text
            entries[event.index] += event.logprobs
            if event.finish_reason:
                completion_tokens += event.tokens
                choices[event.index] = self._choice(event.index, texts[event.index], event.finish_reason,
                                                    entries[event.index])
        return {**self._envelope(choices, chunk=False), "usage": self._usage(completion_tokens)}

    async def stream(self, queue: asyncio.Queue, include_usage: bool = False):
        def sse(choices, **extra):
            return f"data: {json.dumps({**self._envelope(choices, chunk=True), **extra})}\n\n"

        if self.chat:  # OpenAI opens each chat choice with its role
            yield sse([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                        "finish_reason": None} for i in range(self.choices)])
        completion_tokens = 0
        try:
            async for event in self._events(queue):
                completion_tokens += event.tokens
                if event.text or event.finish_reason or event.logprobs:
                    yield sse([self._choice(event.index, event.text, event.finish_reason, event.logprobs,
                                            chunk=True)])
            if include_usage:
                yield sse([], usage=self._usage(completion_tokens))
        except APIError as exc:  # headers are sent already: the error travels as an event
            yield f"data: {json.dumps({'error': {'message': exc.message, 'type': exc.kind}})}\n\n"
        yield "data: [DONE]\n\n"
