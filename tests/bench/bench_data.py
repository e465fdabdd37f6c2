"""Paths and JSONL helpers for the harness tests (kept out of conftest.py so imports are unambiguous)."""

import gzip
import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HUMANEVAL_PLUS = DATA / "HumanEvalPlus-v0.1.10.jsonl.gz"
MBPP = DATA / "mbpp.jsonl"


def shared_file(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"benchmark data {path} is absent (see shared/data/README.md)")
    return path


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
