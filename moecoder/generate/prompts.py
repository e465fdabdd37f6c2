"""Prompting modes, as DeepSeek-Coder was evaluated.

- completion mode (base models): the raw benchmark prompt; the completion ends at the first of
  COMPLETION_STOP, cut here too because not every server honours `stop`.
- chat mode (instruct models): the model's chat template (moecoder.text.render_chat), or DeepSeek-Coder's where a
  model has none; the code is then taken out of the reply by `moecoder.generate.extract.extract_code`.
"""

from __future__ import annotations

from moecoder.text.prompts import HUMANEVAL_INSTRUCTION, humaneval_instruction

__all__ = ["COMPLETION_STOP", "HUMANEVAL_INSTRUCTION", "humaneval_instruction", "truncate_at_stop"]

COMPLETION_STOP = ("\ndef", "\nclass", "\nif", "\nprint", "\n#")


def truncate_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; also say whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
