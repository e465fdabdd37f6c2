"""The OpenAI-compatible HTTP API: /v1/models, /v1/completions, /v1/chat/completions (streaming too)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from moecoder.errors import UserError
from moecoder.generate.local import LocalBackend
from moecoder.serve.engine import BatchingEngine, Event, Row


class APIError(Exception):
    """A request the server refuses, answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_response(status: int, message: str, param=None, code=None, kind="invalid_request_error"):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)


class Sampling(BaseModel):
    """The request fields both endpoints share (unknown OpenAI fields are accepted and ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None  # {"include_usage": true}: a last chunk carries the token counts


class CompletionRequest(Sampling):
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int = Field(16, ge=1)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class Server:
    """One local model behind the API; requests become rows for the batching engine."""

    def __init__(self, backend: LocalBackend, model_id: str, max_batch: int = 16, window_ms: float = 20.0,
                 default_max_tokens: int = 512):
        self.backend = backend
        self.model_id = model_id
        self.max_batch = max_batch
        self.window_ms = window_ms
        self.default_max_tokens = default_max_tokens
        self.context = getattr(getattr(backend.model, "config", None), "max_position_embeddings", None)
        self.engine: BatchingEngine | None = None
        self.created = int(time.time())

    def app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(app):
            self.engine = BatchingEngine(self.backend, self.max_batch, self.window_ms)
            task = asyncio.create_task(self.engine.run())
            yield
            task.cancel()

        app = FastAPI(title="moecoder", lifespan=lifespan)
        app.add_exception_handler(APIError, lambda request, exc: error_response(
            exc.status, exc.message, exc.param, exc.code, exc.kind))
        app.add_exception_handler(RequestValidationError, self._invalid)
        app.add_exception_handler(HTTPException, lambda request, exc: error_response(
            exc.status_code, str(exc.detail),
            kind="invalid_request_error" if exc.status_code < 500 else "server_error"))
        app.get("/health")(self.health)
        app.get("/v1/models")(self.models)
        app.post("/v1/completions")(self.completions)
        app.post("/v1/chat/completions")(self.chat_completions)
        return app

    @staticmethod
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error_response(400, f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}")
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return error_response(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", param=where)

    async def health(self):
        engine = self.engine
        return {"status": "ok", "batches": engine.batches, "rows": engine.rows}

    async def models(self):
        return {"object": "list", "data": [{"id": self.model_id, "object": "model", "created": self.created,
                                            "owned_by": "moecoder", "max_model_len": self.context}]}

    # --- endpoints ------------------------------------------------------------------------------------

    async def completions(self, body: CompletionRequest):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        ids = [self.backend.prompt_ids(prompt=p) for p in prompts]
        return await self._answer(body, ids, body.max_tokens, chat=False)

    async def chat_completions(self, body: ChatRequest):
        messages = [m.model_dump() for m in body.messages]
        try:
            ids = [self.backend.prompt_ids(messages=messages)]
        except UserError as exc:
            raise APIError(400, str(exc), param="messages") from exc
        max_tokens = body.max_completion_tokens or body.max_tokens or self.default_max_tokens
        return await self._answer(body, ids, max_tokens, chat=True)

    async def _answer(self, body: Sampling, prompt_ids: list[list[int]], max_tokens: int, chat: bool):
        if body.model != self.model_id:
            raise APIError(404, f"The model `{body.model}` does not exist; this server serves `{self.model_id}`.",
                           param="model", code="model_not_found")
        if self.context and max(len(p) for p in prompt_ids) + max_tokens > self.context:
            raise APIError(400, f"prompt ({max(len(p) for p in prompt_ids)} tokens) plus max_tokens ({max_tokens}) "
                                f"exceeds the model's context of {self.context} tokens", param="max_tokens")
        stop = tuple([body.stop] if isinstance(body.stop, str) else body.stop or [])
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        rows = [Row(i * body.n + j, ids, max_tokens, body.temperature, body.top_p,
                    None if body.seed is None else body.seed + j, stop, queue, loop)
                for i, ids in enumerate(prompt_ids) for j in range(body.n)]
        for row in rows:
            self.engine.submit(row)
        reply = Reply(self.model_id, chat, len(rows), sum(len(p) for p in prompt_ids))
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(reply.stream(queue, usage), media_type="text/event-stream")
        return await reply.collect(queue)


class Reply:
    """The answer to one request, built from its rows' events: one JSON body, or server-sent events."""

    def __init__(self, model_id: str, chat: bool, choices: int, prompt_tokens: int):
        self.model_id, self.chat, self.choices, self.prompt_tokens = model_id, chat, choices, prompt_tokens
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
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

    async def collect(self, queue: asyncio.Queue) -> dict:
        texts = [""] * self.choices
        choices = [None] * self.choices
        completion_tokens = 0
        async for event in self._events(queue):
            texts[event.index] += event.text
            if event.finish_reason:
                completion_tokens += event.tokens
                choices[event.index] = self._choice(event.index, texts[event.index], event.finish_reason)
        return {**self._envelope(choices, chunk=False), "usage": self._usage(completion_tokens)}

    def _choice(self, index: int, text: str, finish_reason: str | None, chunk: bool = False) -> dict:
        if not self.chat:
            return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
        if chunk:
            delta = {"content": text} if text else {}
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": finish_reason}

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
                if event.text or event.finish_reason:
                    yield sse([self._choice(event.index, event.text, event.finish_reason, chunk=True)])
            if include_usage:
                yield sse([], usage=self._usage(completion_tokens))
        except APIError as exc:  # headers are sent already: the error travels as an event
            yield f"data: {json.dumps({'error': {'message': exc.message, 'type': exc.kind}})}\n\n"
        yield "data: [DONE]\n\n"
