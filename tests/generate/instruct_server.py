"""A small OpenAI-compatible server that answers like an instruct model, for the openai: backend's tests.

Chat replies carry a <think> draft, prose, the solution in a python fence and a usage-example fence.
The server can be told to push back: a 429 with Retry-After, a 500, a 400. Like OpenAI's API it refuses
more than 4 stop sequences with a 400, and honours those it gets. It records every request.
Tests import this module by name (pytest puts the test directory on sys.path).
"""

import asyncio
import threading
import time
from contextlib import contextmanager

import uvicorn

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SOLUTION = "import math\n\n\ndef _double(x):\n    return 2 * x\n\n\ndef {name}(x):\n    return math.floor(_double(x)) + 1\n"

REPLY = (
    "<think>\nThe user wants {name}. A first try:\n```python\ndef {name}(x):\n    return None\n```\n"
    "That is wrong, do it properly.\n</think>\n"
    "Here is the completed function:\n\n```python\n{solution}\n# Example usage\nprint({name}(3))\n```\n\n"
    "You can check it with:\n```python\nassert {name}(3) == 7\n```\n"
)


class InstructServer:
    """The app plus a script of failures: `failures` is a list of (status, headers) served first, in order."""

    def __init__(self, delay: float = 0.0, choices_per_request: int | None = None):
        self.delay = delay
        self.choices_per_request = choices_per_request  # None: as many as asked (n)
        self.failures: list[tuple[int, dict]] = []
        self.requests: list[tuple[float, str, dict]] = []  # (loop time, path, body)
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)
        self.app.post("/v1/completions")(self.completions)

    async def _enter(self, path: str, request: Request):
        body = await request.json()
        self.requests.append((asyncio.get_running_loop().time(), path, body))
        if self.failures:
            status, headers = self.failures.pop(0)
            return body, JSONResponse({"error": {"message": f"scripted {status}", "type": "test"}},
                                      status_code=status, headers=headers)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        return body, None

    def _count(self, body) -> int:
        return self.choices_per_request or body.get("n", 1)

    async def chat(self, request: Request):
        body, failure = await self._enter("chat", request)
        if failure:
            return failure
        name = body["messages"][-1]["content"].split()[-1]
        content = REPLY.format(name=name, solution=SOLUTION.format(name=name))
        choices = [{"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                   for i in range(self._count(body))]
        return {"id": "chat-1", "object": "chat.completion", "model": body["model"], "choices": choices,
                "system_fingerprint": "fp-test"}

    async def completions(self, request: Request):
        body, failure = await self._enter("completions", request)
        if failure:
            return failure
        stop = body.get("stop") or []
        if isinstance(stop, list) and len(stop) > 4:
            return JSONResponse({"error": {"message": f"{stop} is too long - 'stop' (array too long)",
                                           "type": "invalid_request_error", "param": "stop"}}, status_code=400)
        # A base model that runs on past the function, cut at the stop sequences it was sent.
        text = f"    return x + {body['seed']}\n\n\n# unrelated\n\ndef unrelated():\n    pass\n"
        text = min((text[:text.index(s)] for s in stop if s in text), key=len, default=text)
        choices = [{"index": i, "text": text, "finish_reason": "length"} for i in range(self._count(body))]
        return {"id": "cmpl-1", "object": "text_completion", "model": body["model"], "choices": choices}


@contextmanager
def serve_in_thread(app):
    """Run an ASGI app with uvicorn on 127.0.0.1 and a free port; yield its base URL, stop it after."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
