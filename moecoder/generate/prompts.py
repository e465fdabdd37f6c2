"""Prompting modes, as DeepSeek-Coder was evaluated.

- completion mode (base models): the raw benchmark prompt; the completion ends at the first of
  COMPLETION_STOP, cut here too because not every server honours `stop`.
- chat mode (instruct models): the model's chat template (moecoder.text.render_chat), or DeepSeek-Coder's where a
  model has none; the code is then taken out of the reply by `moecoder.generate.extract.extract_code`.
"""

from __future__ import annotations

COMPLETION_STOP = ("\ndef", "\nclass", "\nif", "\nprint", "\n#")

# DeepSeek-Coder's instruction for HumanEval-style tasks in chat mode (Evaluation/HumanEval, eval_instruct).
HUMANEVAL_INSTRUCTION = (
    "Please continue to complete the function. You are not allowed to modify the given code and do the "
    "completion only. Please return all completed function in a codeblock. Here is the given code to do "
    "completion:\n```python\n{prompt}\n```"
)


def humaneval_instruction(prompt: str) -> str:
    """The user message DeepSeek-Coder-Instruct was given for a HumanEval prompt."""
    return HUMANEVAL_INSTRUCTION.format(prompt=prompt.strip())


def truncate_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; also say whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
