import json

import pytest

from moecoder.errors import UserError
from moecoder.text import EOT, render_chat, train_tokenizer
from moecoder.text.prompts import humaneval_instruction
from moecoder.train.corpus import Decontaminator, Document, collect_files, humaneval_texts
from moecoder.train.sft import corpus_instructions, encode_chat, function_examples, read_sft_jsonl

MODULE = '''"""A module."""


def mean(values):
    """Arithmetic mean of a non-empty list."""
    total = sum(values)
    return total / len(values)


def _private(x):
    """Hidden."""
    return x


def undocumented(x):
    return x
'''


@pytest.fixture(scope="module")
def tokenizer(tiny_source):
    return train_tokenizer((d.text for d in collect_files(tiny_source)), vocab_size=500)


def test_loss_mask_covers_exactly_the_responses(tokenizer):
    messages = [{"role": "user", "content": "Add two numbers."}, {"role": "assistant", "content": "a + b"},
                {"role": "user", "content": "Now subtract."}, {"role": "assistant", "content": "a - b"}]
    ids, mask = encode_chat(tokenizer, messages)
    assert ids[0] == tokenizer.bos_id and len(ids) == len(mask)
    assert tokenizer.decode(ids) == render_chat(messages)
    # token by token: the trained spans are the two responses with their end-of-turn token, nothing else
    spans, current = [], []
    for token, trains in zip(ids, mask):
        if trains:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    assert [tokenizer.decode(span) for span in spans] == [f"a + b\n{EOT}", f"a - b\n{EOT}"]
    assert sum(mask) == sum(map(len, spans))
    assert tokenizer.eot_id in ids and mask[ids.index(tokenizer.eot_id)]


def test_function_examples_take_documented_public_functions():
    examples = function_examples(Document("m.py", MODULE))
    assert len(examples) == 1
    example = examples[0]
    assert "def mean(values):" in example["instruction"] and "Arithmetic mean" in example["instruction"]
    assert "total = sum(values)" not in example["instruction"]
    assert example["output"].startswith("```python\ndef mean(values):") and "return total / len(values)" in example["output"]


def test_builtin_set_is_decontaminated(tiny_source):
    leaked = humaneval_texts()[2]  # HumanEval/2 as a documented function
    docs = [Document("leak.py", leaked), Document("m.py", MODULE)]
    clean = corpus_instructions(docs, Decontaminator(humaneval_texts()))
    assert [ex["path"] for ex in corpus_instructions(docs)] == ["leak.py", "m.py"]
    assert [ex["path"] for ex in clean] == ["m.py"]


def test_read_sft_jsonl_formats_and_errors(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"instruction": "i", "output": "o"}) + "\n\n"
                    + json.dumps({"messages": [{"role": "user", "content": "u"},
                                               {"role": "assistant", "content": "a"}]}) + "\n")
    assert read_sft_jsonl(path) == [[{"role": "user", "content": "i"}, {"role": "assistant", "content": "o"}],
                                    [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]]
    path.write_text('{"prompt": "x"}\n')
    with pytest.raises(UserError, match="data.jsonl, line 1: expected keys"):
        read_sft_jsonl(path)
    path.write_text("not json\n")
    with pytest.raises(UserError, match="not valid JSON"):
        read_sft_jsonl(path)


def test_rendering_token_by_token_is_the_prompt_tokenized_whole(tokenizer):
    """Each SFT piece is encoded on its own (for the loss mask); the ids must be the ones the whole rendered
    conversation gets, which is how an inference prompt is tokenized."""
    messages = [{"role": "user", "content": function_examples(Document("m.py", MODULE))[0]["instruction"]},
                {"role": "assistant", "content": function_examples(Document("m.py", MODULE))[0]["output"]}]
    ids, _ = encode_chat(tokenizer, messages)
    assert ids == [tokenizer.bos_id] + tokenizer.encode(render_chat(messages, bos_token=""))


def test_examples_that_do_not_fit_are_left_out(tokenizer):
    from moecoder.train.sft import whole_examples

    short = [{"role": "user", "content": "Add."}, {"role": "assistant", "content": "a + b"}]
    long = [{"role": "user", "content": "Add."}, {"role": "assistant", "content": "a + b " * 400}]
    said = []
    kept = whole_examples(tokenizer, [short, long], seq_len=256, log=said.append)
    assert kept == [encode_chat(tokenizer, short)] and said == ["1 of 2 SFT examples are longer than seq_len=256 tokens and are left out"]


def test_the_tokenizer_learns_the_instruction_format_from_the_built_in_set(tiny_source, tokenizer):
    """Trained on the files and the built-in instruction set rendered, "```" is one token; trained on the files
    alone it is split (the standard library's "``" from reStructuredText)."""
    from moecoder.train.pretrain import tokenizer_texts

    with_format = train_tokenizer(list(tokenizer_texts(collect_files(tiny_source))), vocab_size=500)
    assert len(with_format.encode("```")) == 1 and len(tokenizer.encode("```")) > 1


def test_function_examples_alternate_two_phrasings_with_the_head_as_written():
    first, second = function_examples(Document("m.py", MODULE + MODULE.replace("def mean", "def median")))
    assert first["instruction"].startswith("Write a Python function with this signature and docstring.")
    assert second["instruction"] == humaneval_instruction('def median(values):\n    """Arithmetic mean of a non-empty list."""')
    assert second["output"] == ('```python\ndef median(values):\n    """Arithmetic mean of a non-empty list."""\n'
                                "    total = sum(values)\n    return total / len(values)\n```")
