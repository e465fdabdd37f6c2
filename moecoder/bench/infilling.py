"""HumanEval single-line infilling (OpenAI's human-eval-infilling, "SingleLineInfilling"): data and scores.

Each task is a HumanEval problem with one line of its canonical solution cut out: `prompt` is
the problem and the solution's lines before the hole, `suffix` the lines after it, and a
sample's `completion` is the middle. The program run is prompt + completion + suffix, then the
task's test and `check(entry_point)`, as human-eval-infilling runs it.

`derive_single_line` builds the 1,033 tasks offline from HumanEval's canonical solutions (one
hole per non-blank line), as OpenAI built its file; it reproduces that file exactly
(tests/bench/test_infilling.py), including one quirk of it: a hole on a solution's first line
has a prompt ending in an extra newline.

Two scores sit beside execution pass@1: DeepSeek-Coder's exact match (the completion's first
line against the reference line, whitespace-stripped; `exact_match`) and the best constant
answer (the single most common reference line, re-indented to each hole; `constant_baseline`),
so a reader sees whether a model beat a trivial answer.
"""

from __future__ import annotations

from collections import Counter

NAME = "humaneval-fim-single"


def derive_single_line(humaneval_records: list[dict]) -> list[dict]:
    """Infilling records (task_id, entry_point, prompt, suffix, canonical_solution, test) from HumanEval's."""
    records = []
    for record in humaneval_records:
        lines = record["canonical_solution"].splitlines(keepends=True)
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            records.append({
                "task_id": f"SingleLineInfilling/{record['task_id']}/L{number}",
                "entry_point": record["entry_point"],
                "prompt": record["prompt"] + "".join(lines[:number]) + ("\n" if number == 0 else ""),
                "suffix": "".join(lines[number + 1:]),
                "canonical_solution": line,
                "test": record["test"],
            })
    return records


def first_line(text: str) -> str:
    """The first non-empty line of a completion, stripped (DeepSeek's exact-match unit)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def exact_match(completion: str, reference_line: str) -> bool:
    """DeepSeek-Coder's single-line infilling score: first generated line == reference line, stripped."""
    return first_line(completion) == reference_line.strip()


def constant_baseline(tasks) -> list[dict]:
    """One sample per task: the most common stripped reference line, indented as the task's own line."""
    common, _ = Counter(task.middle.strip() for task in tasks).most_common(1)[0]
    return [{"task_id": task.task_id,
             "completion": task.middle[:len(task.middle) - len(task.middle.lstrip())] + common + "\n"}
            for task in tasks]
