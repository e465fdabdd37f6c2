"""The prompt-boundary problem of byte-level BPE code models, checked where evaluation prompts are built.

A model continues a prompt well only if the prompt's tokens are the tokens the same text has inside a longer
text, i.e. the tokenization of prompt + reference continuation starts with the prompt's own tokens. HumanEval
prompts end in a newline; a GPT-2-style BPE merges that newline with the next line's indentation, so the
verbatim prompt ends on a lone "\\n" token the model rarely saw before code (the first quickstart answered
every task with blank lines). Checked on every HumanEval task for our tokenizer and for one with
DeepSeek-Coder's pre-tokenizer, for the stripped prompt (DeepSeek's protocol) and for token healing of the
verbatim prompt.
"""

import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest

from moecoder.bench.datasets import load_benchmark
from moecoder.pipeline.prompting import Prompter, completion_row
from moecoder.text import TokenHealer, train_tokenizer

MODULES = ("textwrap.py", "shlex.py", "bisect.py", "heapq.py", "fnmatch.py", "glob.py", "string.py", "posixpath.py")


@pytest.fixture(scope="module")
def tasks():
    return load_benchmark("humaneval").tasks


@pytest.fixture(scope="module", params=["gpt2", "deepseek-coder"])
def tokenizer(request):
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return train_tokenizer([(stdlib / name).read_text() for name in MODULES], vocab_size=800,
                           pre_tokenizer_name=request.param)


def is_prefix(short: list[int], long: list[int]) -> bool:
    return long[:len(short)] == short


def test_verbatim_prompts_end_on_an_unnatural_token_with_a_gpt2_split(tasks):
    """What went wrong: with our tokenizer, nearly every verbatim prompt's tokens are not how the model saw
    that text followed by code (DeepSeek-Coder's split keeps newlines alone and is immune to this case)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    ours = train_tokenizer([(stdlib / name).read_text() for name in MODULES], vocab_size=800)
    broken = sum(not is_prefix(ours.encode(t.prompt), ours.encode(t.reference)) for t in tasks)
    assert broken > 0.9 * len(tasks)


def test_completion_prompts_tokenize_as_inside_the_solution(tasks, tokenizer):
    prompter = Prompter("completion", "humaneval")
    for task in tasks:
        prompt = prompter.model_input(task)
        assert task.prompt.startswith(prompt) and not prompt[-1:].isspace()
        full = tokenizer.encode(task.reference)
        assert is_prefix(tokenizer.encode(prompt), full), task.task_id


def test_healing_the_verbatim_prompt_lets_the_natural_token_through(tasks, tokenizer):
    healer = TokenHealer(tokenizer.tokenizer)
    for task in tasks:
        full = tokenizer.encode(task.reference)
        healed = healer.heal(tokenizer.encode(task.prompt))
        assert is_prefix(healed.ids, full) and full[len(healed.ids)] in healed.allowed, task.task_id
        assert healed.strip(tokenizer.decode(full[len(healed.ids):])) == task.reference[len(task.prompt):]


def test_completions_stay_relative_to_the_dataset_prompt(tasks):
    task = tasks[0]
    prompter = Prompter("completion", "humaneval")
    stripped = prompter.model_input(task)
    output = "\n    return sorted(numbers) == numbers\n"  # the model continues the stripped prompt
    row = prompter.row(task, 0, output)
    assert task.prompt + row["completion"] == stripped + output and row["raw"] == output
    # An output that does not begin with the stripped whitespace becomes the whole program.
    odd = SimpleNamespace(task_id="t", prompt="def f():\n    'doc'\n")
    assert completion_row(odd.prompt, "def f():\n    'doc'", "  # no\n    return 1\n") == {
        "solution": "def f():\n    'doc'  # no\n    return 1\n"}
    assert "stripped" in prompter.describe()["prompt_trailing_whitespace"]


def test_infilling_prompts_are_split_as_in_fim_training(tokenizer):
    """A PSM prompt's pieces tokenize on their own (special tokens split the text), as FimEncoder encodes
    them in training, and it ends on <｜fim▁end｜>: there is no boundary token to heal."""
    from moecoder.text import fim_prompt

    infill = load_benchmark("humaneval-fim-single").tasks[:50]
    vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=True)
    prompter = Prompter("completion", "humaneval-fim-single")
    for task in infill:
        prefix, suffix = prompter.model_input(task)
        ids = tokenizer.encode(fim_prompt(prefix, suffix, vocab))
        assert ids == [tokenizer.fim_begin_id, *tokenizer.encode(prefix), tokenizer.fim_hole_id,
                       *tokenizer.encode(suffix), tokenizer.fim_end_id]
    row = prompter.row(infill[0], 0, "    return x")
    assert row["completion"] == "    return x\n" and prompter.stop == ("\n",)
