"""Resumable sample files: DIR/samples-<benchmark>.jsonl, appended one finished task at a time.

Each task's n samples are written together, flushed and fsynced as soon as the backend returns them,
so a crash or Ctrl-C loses at most the tasks in flight. On reopening, a torn last line and any task
with fewer than n rows are dropped (the file is rewritten atomically) and generation continues with
the tasks still missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from moecoder.files import write_jsonl


class SampleFile:
    """Append-only store of generated samples, keyed by task, n rows per finished task."""

    def __init__(self, path: Path, n: int):
        self.path = Path(path)
        self.n = n
        self.rows_by_task: dict[str, list[dict]] = self._load_complete_tasks()

    def _load_complete_tasks(self) -> dict[str, list[dict]]:
        if not self.path.exists():
            return {}
        rows_by_task: dict[str, list[dict]] = {}
        torn = False
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                torn = True  # a line torn by a crash mid-write: that task is generated again
                continue
            rows_by_task.setdefault(str(row["task_id"]), []).append(row)
        complete = {task: rows for task, rows in rows_by_task.items() if len(rows) == self.n}
        if torn or len(complete) != len(rows_by_task):
            self._rewrite([row for rows in complete.values() for row in rows])
        return complete

    def _rewrite(self, rows: list[dict]) -> None:
        write_jsonl(self.path, rows)

    def done(self, task_id: str) -> bool:
        return task_id in self.rows_by_task

    def append(self, task_id: str, rows: list[dict]) -> None:
        """Record one task's n samples durably."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(row) + "\n" for row in rows))
            f.flush()
            os.fsync(f.fileno())
        self.rows_by_task[task_id] = rows

    def rows(self, task_ids: list[str]) -> list[dict]:
        """All samples of the given tasks, in task order."""
        return [row for task_id in task_ids for row in self.rows_by_task[task_id]]
