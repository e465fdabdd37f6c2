import json
from types import SimpleNamespace

import pytest

from moecoder.pipeline.manifest import check_resumable
from moecoder.errors import UserError
from moecoder.pipeline.prompting import Prompter, preamble
from moecoder.pipeline.samples import SampleFile

PROMPT = 'from typing import List\n\n\ndef helper(x):\n    return x\n\n\ndef add(a: int, b: int) -> int:\n    """Add."""\n'
TASK = SimpleNamespace(task_id="HumanEval/0", prompt=PROMPT, entry_point="add")


def test_sample_file_keeps_complete_tasks_and_drops_torn_lines(tmp_path):
    path = tmp_path / "samples-humaneval.jsonl"
    store = SampleFile(path, n=2)
    store.append("A", [{"task_id": "A", "sample": 0}, {"task_id": "A", "sample": 1}])
    with open(path, "a") as f:  # a crash after one of B's two rows, then half a line of C
        f.write(json.dumps({"task_id": "B", "sample": 0}) + "\n" + '{"task_id": "C", "sam')
    reopened = SampleFile(path, n=2)
    assert reopened.done("A") and not reopened.done("B") and not reopened.done("C")
    assert [json.loads(line)["task_id"] for line in path.read_text().splitlines()] == ["A", "A"]
    reopened.append("B", [{"task_id": "B", "sample": 0}, {"task_id": "B", "sample": 1}])
    assert [row["sample"] for row in SampleFile(path, n=2).rows(["B", "A"])] == [0, 1, 0, 1]


def test_preamble_is_everything_before_the_entry_point():
    assert preamble(PROMPT, "add") == "from typing import List\n\n\ndef helper(x):\n    return x\n\n\n"
    assert preamble(PROMPT, "missing") == ""


def test_chat_row_is_a_whole_program_with_the_prompt_preamble():
    prompter = Prompter("chat", "humaneval")
    messages = prompter.model_input(TASK)
    assert messages[0]["role"] == "user" and "def add(a: int, b: int)" in messages[0]["content"]
    reply = "<think>draft</think>Here:\n```python\ndef add(a, b):\n    return helper(a) + b\n\nprint(add(1, 2))\n```"
    row = prompter.row(TASK, 0, reply)
    namespace = {}
    exec(row["solution"], namespace)  # the program defines add, relying on the prompt's helper
    assert namespace["add"](2, 3) == 5
    assert "print(" not in row["solution"] and row["raw"] == reply


def test_completion_rows():
    humaneval = Prompter("completion", "humaneval")
    assert humaneval.model_input(TASK) == PROMPT.rstrip() and "\ndef" in humaneval.stop
    assert humaneval.row(TASK, 1, "\n    return a + b\n") == {"task_id": "HumanEval/0", "sample": 1,
                                                            "completion": "    return a + b\n", "raw": "\n    return a + b\n"}
    mbpp_task = SimpleNamespace(task_id="11", prompt="Add two numbers.\nassert add(1, 2) == 3", entry_point="add")
    row = Prompter("completion", "mbpp").row(mbpp_task, 0, "\ndef add(a, b):\n    return a + b\n")
    namespace = {}
    exec(row["solution"], namespace)
    assert namespace["add"](1, 2) == 3


def test_resume_refuses_other_sampling(tmp_path):
    before = {"model_spec": "openai:m", "mode": "chat", "sampling": {"n": 1}, "prompt_template": {}}
    check_resumable(before, dict(before), tmp_path)
    with pytest.raises(UserError, match="different sampling"):
        check_resumable(before, {**before, "sampling": {"n": 5}}, tmp_path)


def test_training_logs_found_beside_a_native_model(tmp_path):
    from moecoder.pipeline.manifest import training_logs_of

    (tmp_path / "run" / "model").mkdir(parents=True)
    assert training_logs_of(f"native:{tmp_path / 'run' / 'model'}") == {}
    (tmp_path / "run" / "train_log.jsonl").write_text("{}\n")
    assert training_logs_of(f"native:{tmp_path / 'run' / 'model'}") == {"logs": {"run": str(tmp_path / "run" / "train_log.jsonl")}}
    assert training_logs_of("openai:m") == {}
