"""`moecoder evaluate` prints its summary table and JSON line whatever the programs named their exceptions.

The harness itself is replaced by a stand-in that returns hostile failure kinds (what a program gets by
naming its exception class `[/]`): this file tests the rendering, the harness's own tests the verdicts.
"""

import io
import json

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
