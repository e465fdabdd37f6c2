"""Small eval run directories, written in the format `moecoder eval` produces, for report and compare tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_run(run_dir: Path, benchmark: str, verdicts: dict[str, list[str]], manifest: dict | None = None,
              seconds: dict[str, float] | None = None) -> Path:
    """A run with the given result strings per task (one per sample), its summary and manifest."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for task_id, results in verdicts.items():
        for index, result in enumerate(results):
            row = {"task_id": task_id, "completion": "    pass\n", "sample_index": index,
                   "passed": result == "passed", "result": result, "isolation": "bubblewrap"}
            if seconds and task_id in seconds:
                row["seconds"] = seconds[task_id]
            rows.append(row)
    (run_dir / f"results-{benchmark}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rates = [sum(r == "passed" for r in results) / len(results) for results in verdicts.values()]
    pass1 = sum(rates) / len(rates)
    summary = {
        "benchmark": benchmark, "dataset_sha256": "ab" * 32, "n_samples": len(rows), "n_tasks": len(verdicts),
        "pass_at_k": {"pass@1": {"value": pass1, "ci95": [max(0.0, pass1 - 0.1), min(1.0, pass1 + 0.1)]}},
        "outcomes": {}, "isolation": "bubblewrap", "limits": {}, "seconds": 1.0,
    }
    summaries_path = run_dir / "summary.json"
    summaries = json.loads(summaries_path.read_text()) if summaries_path.exists() else {}
    summaries[benchmark] = summary
    summaries_path.write_text(json.dumps(summaries))
    (run_dir / "manifest.json").write_text(json.dumps(manifest or {"model": {"spec": "openai:fixture"}, "mode": "chat"}))
    return run_dir


def verdicts_from_pattern(pattern: str, samples: int = 1) -> dict[str, list[str]]:
    """HumanEval-style task ids with verdicts from a string: P passed, F failed, T timed out, E error."""
    spelled = {"P": "passed", "F": "failed: AssertionError", "T": "timed out", "E": "error: SyntaxError"}
    return {f"HumanEval/{i}": [spelled[ch]] * samples for i, ch in enumerate(pattern)}
