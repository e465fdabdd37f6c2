"""Verdicts, calibrations and reference outputs in SQLite (WAL) under $MOECODER_HOME.

A run commits verdicts as they arrive, so a crash or `kill -9` loses at most the
last uncommitted batch; the next run with the same inputs reuses every stored
verdict and computes only the rest.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    benchmark TEXT, dataset_sha256 TEXT, task_id TEXT, program_sha256 TEXT, mode TEXT,
    outcome TEXT, reason TEXT, details TEXT, cpu_seconds REAL,
    PRIMARY KEY (benchmark, dataset_sha256, task_id, program_sha256, mode)
);
CREATE TABLE IF NOT EXISTS calibration (
    machine TEXT, benchmark TEXT, dataset_sha256 TEXT, task_id TEXT, cpu_seconds REAL,
    PRIMARY KEY (machine, benchmark, dataset_sha256, task_id)
);
CREATE TABLE IF NOT EXISTS reference_outputs (
    benchmark TEXT, dataset_sha256 TEXT, task_id TEXT, outputs BLOB,
    PRIMARY KEY (benchmark, dataset_sha256, task_id)
);
"""


def program_sha256(program: str) -> str:
    return hashlib.sha256(program.encode("utf-8", "surrogatepass")).hexdigest()


class Store:
    """The harness's persistent memory for one benchmark file."""

    def __init__(self, path: Path, benchmark: str, dataset_sha256: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.key = (benchmark, dataset_sha256)
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        self.db.executescript(SCHEMA)

    def verdicts(self, mode: str) -> dict[tuple[str, str], dict]:
        """{(task_id, program_sha256): verdict} stored for this benchmark file and mode."""
        rows = self.db.execute(
            "SELECT task_id, program_sha256, outcome, reason, details, cpu_seconds FROM verdicts "
            "WHERE benchmark=? AND dataset_sha256=? AND mode=?", (*self.key, mode))
        return {
            (task, sha): {"outcome": outcome, "reason": reason,
                          "details": json.loads(details) if details else None, "cpu_seconds": cpu}
            for task, sha, outcome, reason, details, cpu in rows
        }

    def add_verdicts(self, mode: str, verdicts: list[tuple[str, str, dict]]) -> None:
        """Commit (task_id, program_sha256, verdict) triples in one transaction."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES (?,?,?,?,?,?,?,?,?)",
                [(*self.key, task, sha, mode, v["outcome"], v.get("reason"),
                  json.dumps(v["details"]) if v.get("details") is not None else None, v.get("cpu_seconds"))
                 for task, sha, v in verdicts])

    def calibration(self, machine: str) -> dict[str, float]:
        rows = self.db.execute(
            "SELECT task_id, cpu_seconds FROM calibration WHERE machine=? AND benchmark=? AND dataset_sha256=?",
            (machine, *self.key))
        return dict(rows)

    def add_calibration(self, machine: str, seconds: dict[str, float]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO calibration VALUES (?,?,?,?,?)",
                                [(machine, *self.key, task, cpu) for task, cpu in seconds.items()])

    def reference_outputs(self) -> dict[str, bytes]:
        rows = self.db.execute(
            "SELECT task_id, outputs FROM reference_outputs WHERE benchmark=? AND dataset_sha256=?", self.key)
        return dict(rows)

    def add_reference_outputs(self, outputs: dict[str, bytes]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO reference_outputs VALUES (?,?,?,?)",
                                [(*self.key, task, blob) for task, blob in outputs.items()])

    def close(self) -> None:
        self.db.close()
