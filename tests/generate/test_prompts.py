"""Prompt building, stop sequences, sampling parameters and code extraction on realistic replies."""

import pytest

from moecoder.errors import UserError
from moecoder.generate import SamplingParams, extract_code
from moecoder.generate.prompts import COMPLETION_STOP, humaneval_instruction, strip_think, truncate_at_stop

FN = ("def has_close_elements(numbers, threshold):\n    return any(abs(a - b) < threshold\n"
      "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n")


def run(code, entry_point="has_close_elements"):
    namespace = {}
    exec(code, namespace)
    return namespace[entry_point]


def test_deepseek_style_reply_keeps_imports_and_drops_prose():
    reply = f"```python\nfrom typing import List\n\n\n{FN}```\n\nThis function compares every pair.\n"
    assert extract_code(reply, "has_close_elements") == f"from typing import List\n\n\n{FN}"


def test_defining_block_is_chosen_among_shell_usage_and_untagged_blocks():
    reply = ("First install nothing:\n```bash\npip install numpy\n```\n"
             "```python\nprint(has_close_elements([1.0, 2.0], 0.5))\n```\n"
             f"The solution:\n```\n{FN}```\n")
    assert extract_code(reply, "has_close_elements") == FN


def test_python_tagged_block_wins_over_untagged_and_first_wins_among_equals():
    tagged = FN.replace("any(", "bool(any(").replace("numbers[i + 1:])", "numbers[i + 1:]))")
    reply = f"```\n{FN}```\n```Python\n{tagged}```\n```py\n{FN}```"
    assert extract_code(reply, "has_close_elements") == tagged


def test_think_drafts_are_ignored_closed_open_or_started_in_the_prompt():
    draft = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```\n"
    final = f"```python\n{FN}```"
    assert extract_code(f"<think>\n{draft}</think>\n{final}", "has_close_elements") == FN
    assert extract_code(f"Okay, so {draft} hmm.</think>{final}", "has_close_elements") == FN
    assert extract_code(f"{final}\n<think>more ideas {draft}", "has_close_elements") == FN
    assert strip_think("<think>only a draft, cut off") == ""


def test_usage_examples_tests_and_main_guard_are_dropped_helpers_and_constants_kept():
    reply = ("```python\nimport functools\n\nLIMIT = 10\n\n\n@functools.lru_cache(maxsize=None)\n"
             "def fib(k):\n    # small helper\n    return k if k < 2 else fib(k - 1) + fib(k - 2)\n\n\n"
             "class Box:\n    value = 1\n\n\n"
             "def fib_sum(n):\n    return sum(fib(i) for i in range(min(n, LIMIT)))\n\n\n"
             "result = fib_sum(5)\n# Test the function\nassert fib_sum(3) == 2\n"
             "for n in range(3):\n    print(fib_sum(n))\n"
             "if __name__ == \"__main__\":\n    print(result)\n```")
    code = extract_code(reply, "fib_sum")
    assert code.endswith("def fib_sum(n):\n    return sum(fib(i) for i in range(min(n, LIMIT)))\n")
    for kept in ("import functools", "LIMIT = 10", "@functools.lru_cache", "# small helper", "class Box"):
        assert kept in code
    for dropped in ("result", "assert", "print", "__main__", "# Test"):
        assert dropped not in code
    assert run(code, "fib_sum")(5) == 7


def test_reply_cut_off_by_the_token_limit_keeps_its_finished_functions():
    reply = f"```python\n{FN}\n\ndef second(x):\n    if x >"
    assert extract_code(reply, "has_close_elements") == FN


def test_replies_without_fences():
    assert extract_code(FN, "has_close_elements") == FN
    assert extract_code(f"Sure! Here it is:\n{FN}", "has_close_elements") == FN
    assert run(extract_code(f"Sure! Here it is:\n{FN}", "has_close_elements"))([1.0, 1.05], 0.1)


def test_indented_fence_in_a_list_item():
    indented = "".join(f"   {line}\n" for line in FN.splitlines())
    reply = f"1. Write it:\n   ```python\n{indented}   ```\n"
    assert extract_code(reply, "has_close_elements") == FN


def test_completion_stop_sequences():
    completion = "    return 1\n\n\ndef other():\n    pass\n"
    assert truncate_at_stop(completion, COMPLETION_STOP) == ("    return 1\n\n", True)
    indented = "    x = 1\n    # fine, indented\n"
    assert truncate_at_stop(indented, COMPLETION_STOP) == (indented, False)
    assert truncate_at_stop("a\nprint(1)\n#x", COMPLETION_STOP) == ("a", True)


def test_humaneval_instruction_wraps_the_prompt_in_a_python_fence():
    text = humaneval_instruction("def f():\n    \"\"\"doc\"\"\"\n")
    assert text.endswith("```python\ndef f():\n    \"\"\"doc\"\"\"\n```") and "complete the function" in text


def test_sampling_params_validate_and_describe_themselves():
    params = SamplingParams(n=5, temperature=0.8, top_p=0.95, max_new_tokens=256, seed=3, stop=["\ndef"])
    assert params.describe() == {"n": 5, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 256, "seed": 3,
                                 "stop": ["\ndef"]}
    assert SamplingParams().greedy and not params.greedy
    for bad in ({"n": 0}, {"temperature": -1}, {"top_p": 0}, {"max_new_tokens": 0}):
        with pytest.raises(UserError):
            SamplingParams(**bad)
