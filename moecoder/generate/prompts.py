"""Prompting modes, as DeepSeek-Coder was evaluated, and extraction of code from a chat reply.

- completion mode (base models): the raw benchmark prompt; the completion ends at the first of
  COMPLETION_STOP, cut here too because not every server honours `stop`.
- chat mode (instruct models): the model's chat template (moecoder.text.render_chat), or DeepSeek-Coder's where a
  model has none; the code is then taken out of the reply with `extract_code`.
"""

from __future__ import annotations

import ast
import re
import textwrap

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


# --- extracting code from a chat reply -------------------------------------------------------------------

PYTHON_TAGS = {"python", "py", "python3", "py3"}
# A fence opens at a line start with ``` and an optional language tag; it closes at the next line-start ```
# or, for a reply cut off by the token limit, at the end of the text.
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_CODE_START = re.compile(r"^(?:import |from |def |async def |class |@)", re.MULTILINE)


def strip_think(reply: str) -> str:
    """The reply without reasoning drafts: <think>...</think> sections, a draft whose opening tag was in the
    prompt (text before a lone </think>), and an unfinished draft (a lone <think> to the end)."""
    reply = _THINK.sub("", reply)
    if "</think>" in reply:
        reply = reply.rsplit("</think>", 1)[1]
    return reply.split("<think>", 1)[0]


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code, re.MULTILINE) is not None


def _choose_block(reply: str, entry_point: str) -> str:
    """The fenced block that defines entry_point (python-tagged before untagged before others, then first);
    failing that the first python or untagged block; with no fences, the reply from its first code line."""
    blocks = [(tag.lower(), textwrap.dedent(code)) for tag, code in _FENCE.findall(reply)]

    def rank(block):
        tag = block[0]
        return 0 if tag in PYTHON_TAGS else 1 if not tag else 2

    defining = sorted((b for b in blocks if _defines(b[1], entry_point)), key=rank)
    if defining:
        return defining[0][1]
    plain = sorted((b for b in blocks if rank(b) < 2), key=rank)
    if plain:
        return plain[0][1]
    start = _CODE_START.search(reply)
    return reply[start.start():] if start else reply


def _parse_prefix(code: str) -> tuple[ast.Module, list[str]] | None:
    """Parse the longest prefix of `code` (by whole lines) that is valid Python: a reply cut off by the
    token limit still yields its finished functions."""
    lines = code.splitlines()
    for end in range(len(lines), 0, -1):
        try:
            return ast.parse("\n".join(lines[:end])), lines[:end]
        except SyntaxError:
            continue
    return None


def _is_usage(node: ast.stmt, entry_point: str) -> bool:
    """Top-level statements that exercise the solution rather than define it: prints, asserts, loops,
    `if __name__ == "__main__":`, and assignments computed by calling entry_point."""
    if isinstance(node, (ast.Expr, ast.Assert, ast.For, ast.While)):
        return True
    if isinstance(node, ast.If):
        return "__name__" in ast.unparse(node.test)
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
        return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == entry_point
                   for n in ast.walk(node.value))
    return False


def _keep_definitions(code: str, entry_point: str) -> str:
    """The block without its usage examples: imports, functions, classes and constants stay whole,
    comments and blank lines inside them too."""
    parsed = _parse_prefix(code)
    if parsed is None:
        return code.strip("\n")
    module, lines = parsed
    dropped = set()
    for node in module.body:
        if _is_usage(node, entry_point):
            start = node.lineno - 1
            while start > 0 and lines[start - 1].lstrip().startswith("#"):  # "# Example usage" goes with it
                start -= 1
            dropped.update(range(start, node.end_lineno))
    kept = [line for i, line in enumerate(lines) if i not in dropped]
    return "\n".join(kept).strip("\n") + "\n"


def extract_code(reply: str, entry_point: str) -> str:
    """The program in an instruct model's reply: the right fenced block, reasoning drafts ignored, the
    function kept whole with its helpers and imports, usage examples and tests dropped."""
    return _keep_definitions(_choose_block(strip_think(reply), entry_point), entry_point)
