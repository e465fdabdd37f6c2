"""`moecoder eval` against a model whose programs raise exceptions named and worded to break renderers:
the run finishes, prints its JSON line and writes a report with every plot drawn."""

import json
import os
import subprocess
import sys

from moecoder.bench.datasets import load_benchmark

from stub_openai import StubOpenAIServer
from untrusted_text import HOSTILE

LIMIT = 6  # HOSTILE[:6]: math, markup, HTML and terminal escapes


class HostileModel(StubOpenAIServer):
    """Answers task i with a function raising an exception whose class name and message are HOSTILE[i]."""

    def answer(self, path: str, body: dict) -> dict:
        reply = super().answer(path, body)
        number, task = self._task_for(body["messages"][-1]["content"])
        text = HOSTILE[number]
        code = f"def {task.entry_point}(*args):\n    raise type({text!r}, (Exception,), {{}})({text!r})\n"
        for choice in reply["choices"]:
            choice["message"]["content"] = f"```python\n{code}```\n"
        return reply


def test_eval_survives_hostile_exception_text(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "MOECODER_HOME": str(tmp_path / "home"), "OPENAI_API_KEY": "test-key"}
    with HostileModel(load_benchmark("humaneval").tasks[:LIMIT]) as server:
        done = subprocess.run([sys.executable, "-c", "from moecoder.cli import main; main()", "eval", "--model",
                               "openai:stub", "--base-url", server.base_url, "--benchmark", "humaneval", "--limit",
                               str(LIMIT), "--out", str(out), "--workers", "2"],
                              capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["humaneval"]["pass@1"]["value"] == 0
    results = [json.loads(line) for line in (out / "results-humaneval.jsonl").read_text().splitlines()]
    assert any("$\\foo$" in row["result"] for row in results)  # the hostile text reached the report's input
    page = (out / "report.html").read_text()
    assert "plot-failures-humaneval" in page and "plot-failed" not in page
    assert "<script" not in page and "\x1b" not in done.stderr
