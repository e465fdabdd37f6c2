"""`moecoder evaluate` prints its summary table and JSON line whatever the programs named their exceptions.

The harness itself is replaced by a stand-in that returns hostile failure kinds (what a program gets by
naming its exception class `[/]`): this file tests the rendering, the harness's own tests the verdicts.
"""

import io
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console
from rich.errors import MarkupError
from rich.table import Table
from typer.testing import CliRunner

import moecoder.bench.evaluate
from moecoder.bench.commands import KIND_WIDTH
from moecoder.cli import app
from moecoder.display import visible

from untrusted_text import HOSTILE


def hostile_summary() -> dict:
    kinds = {f"failed: {text}": i + 1 for i, text in enumerate(HOSTILE)}
    return {
        "benchmark": "humaneval", "dataset_sha256": "ab" * 32, "n_samples": 11, "n_tasks": 11,
        "pass_at_k": {"pass@1": {"value": 0.0, "ci95": [0.0, 0.0]}},
        "outcomes": {"failed": sum(kinds.values())}, "failure_kinds": kinds,
        "isolation": "bubblewrap", "limits": {}, "seconds": 0.5, "note": "note " + HOSTILE[2],
    }


@pytest.fixture
def hostile_harness(monkeypatch):
    summary = hostile_summary()
    rows = [{"task_id": f"HumanEval/{i}", "completion": "", "passed": False, "result": kind}
            for i, kind in enumerate(summary["failure_kinds"])]
    monkeypatch.setattr(moecoder.bench.evaluate, "evaluate_samples", lambda *args, **kwargs: (rows, summary))
    return summary


def test_default_rich_console_is_broken_by_such_names():
    """Positive control: what the summary table did before, with the names the programs chose."""
    table = Table()
    table.add_column("metric")
    table.add_row("failed: [/]")
    with pytest.raises(MarkupError):
        Console(file=io.StringIO()).print(table)


def test_summary_table_shows_hostile_failure_kinds_as_written(tmp_path, hostile_harness):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    pass\n"}) + "\n")
    result = CliRunner().invoke(app, ["evaluate", "--benchmark", "humaneval", "--samples", str(samples), "--k", "1"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1]) == hostile_harness
    shown = result.stderr
    for text in HOSTILE:
        assert visible(f"failed: {text}", KIND_WIDTH) in shown
    assert "\x1b" not in shown and "\u202e" not in shown  # no escape sequence reaches the terminal
    assert "\\x1b[31mred\\x1b]0;retitled\\x07" in shown
    assert "👍" not in shown  # :thumbs_up: stays text
    assert "note [bold]x[/bold]" in shown


def hostile_program(entry_point: str, text: str) -> str:
    """A solution raising an exception whose class is named `text` and whose message is `text`."""
    return f"def {entry_point}(*args, **kwargs):\n    raise type({text!r}, (Exception,), {{}})({text!r})\n"


def test_evaluate_end_to_end_with_hostile_exceptions(tmp_path):
    """The real harness and CLI: whatever failure kinds the harness derives from these exceptions,
    the table shows each as written and the JSON line is printed."""
    from moecoder.bench.datasets import load_benchmark

    tasks = load_benchmark("humaneval").tasks[: len(HOSTILE)]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": task.task_id, "solution": hostile_program(task.entry_point, text)}) + "\n"
                               for task, text in zip(tasks, HOSTILE)))
    done = subprocess.run([sys.executable, "-c", "from moecoder.cli import main; main()", "evaluate", "--benchmark",
                           "humaneval", "--samples", str(samples), "--k", "1", "--workers", "2"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["n_samples"] == len(HOSTILE) and summary["pass_at_k"]["pass@1"]["value"] == 0
    assert summary["failure_kinds"]
    for kind in summary["failure_kinds"]:
        assert visible(kind, KIND_WIDTH) in done.stderr
    assert "\x1b" not in done.stderr and "\u202e" not in done.stderr
