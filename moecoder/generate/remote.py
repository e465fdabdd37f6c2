"""openai:MODEL — any OpenAI-compatible server (vLLM, SGLang, the DeepSeek API, Ollama, `moecoder serve`)."""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time

import httpx

from moecoder.errors import UserError
from moecoder.generate.base import Backend, ResultCallback
from moecoder.generate.params import SamplingParams
from moecoder.generate.prompts import truncate_at_stop

# OpenAI's API takes at most 4 stop sequences (400 "array too long" for 5); the rest are cut here after the fact.
MAX_STOP = 4
# Statuses worth another try, as OpenAI's own client retries them: timeout, conflict, rate limit, server errors.
RETRYABLE_STATUS = {408, 409, 429}


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """The wait a server asks for: `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    if "retry-after-ms" in headers:
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if email.utils.parsedate_tz(value) else None
        return max(0.0, when.timestamp() - time.time()) if when else None


def _error_message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


class OpenAIBackend(Backend):
    """Requests to an OpenAI-compatible server: at most `concurrency` in flight, each retried with
    exponential backoff (honouring Retry-After) on 408/409/429/5xx and dropped connections, each bounded
    by `timeout` seconds. The API key comes from OPENAI_API_KEY (local servers need none).

    The server is sent the first MAX_STOP stop strings; the text is cut at the earliest of all of them here,
    which gives the same text (a server that stops only later just generated more than needed)."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 concurrency: int = 16, timeout: float = 600.0, max_retries: int = 6,
                 backoff: float = 1.0, max_backoff: float = 60.0):
        self.model = model
        self.spec = f"openai:{model}"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.retries = 0  # retried requests so far: a run reports how hard the server pushed back
        self._served = {}  # what the server says about itself: model id, system_fingerprint

    def complete(self, prompts: list[str], params: SamplingParams,
                 on_result: ResultCallback | None = None) -> list[list[str]]:
        bodies = [{"prompt": prompt} for prompt in prompts]
        return self._run("/completions", bodies, params, on_result)

    def chat(self, messages_list: list[list[dict]], params: SamplingParams,
             on_result: ResultCallback | None = None) -> list[list[str]]:
        bodies = [{"messages": messages} for messages in messages_list]
        return self._run("/chat/completions", bodies, params, on_result)

    def infill(self, pairs: list[tuple[str, str]], params: SamplingParams,
               on_result: ResultCallback | None = None) -> list[list[str]]:
        """The OpenAI completions API's own infilling: `prompt` is the prefix, `suffix` the suffix."""
        bodies = [{"prompt": prefix, "suffix": suffix} for prefix, suffix in pairs]
        return self._run("/completions", bodies, params, on_result)

    def describe(self) -> dict:
        return {"spec": self.spec, "backend": "openai", "base_url": self.base_url, "model": self.model,
                "revision": self._served.get("system_fingerprint"), "served_model": self._served.get("model"),
                "template": "server-side chat template", "concurrency": self.concurrency,
                "retries": self.retries}

    # --- requests ------------------------------------------------------------------------------------

    def _run(self, path: str, bodies: list[dict], params: SamplingParams,
             on_result: ResultCallback | None) -> list[list[str]]:
        if params.no_repeat_ngram or params.heal:
            raise UserError("no_repeat_ngram and heal apply to native: and hf: models (the OpenAI API has neither)")
        return asyncio.run(self._gather(path, bodies, params, on_result))

    async def _gather(self, path, bodies, params, on_result):
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        semaphore = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, limits=limits,
                                     timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 30.0))) as client:

            async def one(index, body):
                texts = await self._samples(client, semaphore, path, body, params)
                if on_result is not None:
                    on_result(index, texts)
                return texts

            return list(await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies))))

    async def _samples(self, client, semaphore, path, body, params: SamplingParams) -> list[str]:
        """n completions of one input; servers that return fewer choices than asked are asked again."""
        texts: list[str] = []
        while len(texts) < params.n:
            request = {**body, "model": self.model, "n": params.n - len(texts), "temperature": params.temperature,
                       "top_p": params.top_p, "max_tokens": params.max_new_tokens, "seed": params.seed + len(texts)}
            if params.stop:  # the first MAX_STOP only; every stop string is cut client-side below
                request["stop"] = list(params.stop[:MAX_STOP])
            async with semaphore:
                answer = await self._post(client, path, request)
            choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
            if not choices:
                raise UserError(f"{self.base_url}{path} answered without choices: {str(answer)[:200]}")
            self._served.setdefault("model", answer.get("model"))
            self._served.setdefault("system_fingerprint", answer.get("system_fingerprint"))
            for choice in choices:
                text = choice["text"] if "text" in choice else (choice.get("message") or {}).get("content") or ""
                texts.append(truncate_at_stop(text, params.stop)[0])
        return texts[:params.n]

    async def _post(self, client: httpx.AsyncClient, path: str, request: dict) -> dict:
        for attempt in range(self.max_retries + 1):
            try:
                response = await client.post(path, json=request)
            except httpx.TransportError as exc:  # timeouts, refused or dropped connections
                failure, wait = f"{type(exc).__name__}: {exc}", None
            else:
                if response.status_code < 400:
                    return response.json()
                failure = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code < 500 and response.status_code not in RETRYABLE_STATUS:
                    raise UserError(f"{self.base_url}{path} refused the request ({failure})")
                wait = retry_after_seconds(response.headers)
            if attempt == self.max_retries:
                raise UserError(f"{self.base_url}{path} failed {attempt + 1} times, last: {failure}")
            self.retries += 1
            await asyncio.sleep(self._delay(attempt, wait))

    def _delay(self, attempt: int, asked: float | None) -> float:
        """The server's Retry-After when it gives one, else backoff * 2^attempt with jitter; both capped."""
        if asked is not None:
            return min(asked, self.max_backoff)
        return min(self.backoff * 2 ** attempt * random.uniform(0.5, 1.0), self.max_backoff)
