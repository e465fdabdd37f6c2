"""Prompt building, stop sequences and sampling parameters (code extraction: test_extract.py)."""

import pytest

from moecoder.errors import UserError
from moecoder.generate import SamplingParams
from moecoder.generate.prompts import COMPLETION_STOP, humaneval_instruction, truncate_at_stop

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
                                 "stop": ["\ndef"], "no_repeat_ngram": 0, "heal": False}
    assert SamplingParams().greedy and not params.greedy
    for bad in ({"n": 0}, {"temperature": -1}, {"top_p": 0}, {"max_new_tokens": 0}, {"no_repeat_ngram": -1}):
        with pytest.raises(UserError):
            SamplingParams(**bad)
