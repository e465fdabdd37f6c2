"""A small OpenAI-compatible server for tests: answers HumanEval tasks like an instruct model would.

Even-numbered tasks get their reference solution in a fenced block after a <think> draft, odd ones a
wrong function; /v1/completions answers with the canonical body continued by a stop sequence. Each
answer waits `delay * task_number` seconds, so tests can interrupt a run part-way.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubOpenAIServer:
    """Serves on 127.0.0.1:<free port> in a thread; records the task of every request."""

    def __init__(self, tasks, delay: float = 0.0):
        self.tasks = list(tasks)
        self.delay = delay
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def _task_for(self, text: str):
        for number, task in enumerate(self.tasks):
            if task.prompt.strip() in text:
                return number, task
        raise KeyError("no task matches the request")

    def answer(self, path: str, body: dict) -> dict:
        text = body["prompt"] if path.endswith("/completions") and "prompt" in body else body["messages"][-1]["content"]
        number, task = self._task_for(text)
        with self._lock:
            self.requests.append(task.task_id)
        time.sleep(self.delay * number)
        if path.endswith("/chat/completions"):
            if number % 2 == 0:
                code = task.reference
            else:
                code = f"def {task.entry_point}(*args):\n    return None\n"
            reply = f"<think>Let me try `def {task.entry_point}(x): pass` first.</think>\nHere it is:\n```python\n{code}\n```\n"
            choices = [{"index": i, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                       for i in range(body.get("n", 1))]
        else:
            # The continuation of the prompt as sent (evaluation strips its trailing whitespace).
            program = task.reference if number % 2 == 0 else task.prompt + "    return None\n"
            body_text = program[len(text):]
            choices = [{"index": i, "text": body_text + "\n\nprint('stop here')\n", "finish_reason": "length"}
                       for i in range(body.get("n", 1))]
        return {"id": "stub", "object": "chat.completion", "model": body.get("model"), "choices": choices,
                "system_fingerprint": "stub-1"}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                data = json.dumps(server.answer(self.path, body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler
