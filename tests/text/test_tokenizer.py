"""The tokenizer: DeepSeek-Coder's special tokens, lossless round trips, loadable by transformers."""

import pytest

from moecoder.text import (EOT, FIM_BEGIN, FIM_END, FIM_HOLE, SPECIAL_TOKENS, format_instruction, load_tokenizer,
                           render_chat, train_tokenizer)

transformers = pytest.importorskip("transformers")


def test_special_tokens_are_single_ids(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    for token in SPECIAL_TOKENS:
        assert len(tok.encode(token)) == 1
    ids = tok.encode(f"{FIM_BEGIN}def f():{FIM_HOLE}\n{FIM_END}    pass{EOT}")
    assert ids[0] == tok.fim_begin_id and tok.fim_hole_id in ids and tok.fim_end_id in ids and ids[-1] == tok.eot_id
    assert tok.vocab_size == 600


def test_roundtrip_is_lossless(tokenizer_dir, code_texts):
    tok = load_tokenizer(tokenizer_dir)
    text = code_texts[0] + "\n# ünïcödé → ✓\t\r\n"
    assert tok.decode(tok.encode(text)) == text


def test_transformers_autotokenizer_loads_it(tokenizer_dir):
    ours = load_tokenizer(tokenizer_dir)
    hf = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    text = "def add(a, b):\n    return a + b\n"
    assert hf.encode(text) == [ours.bos_id] + ours.encode(text)  # BOS prepended, like DeepSeek-Coder's
    assert hf.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [ours.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    assert hf.encode(EOT, add_special_tokens=False) == [ours.eot_id]


def test_chat_template_matches_transformers_rendering(tokenizer_dir):
    hf = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    chats = [
        [{"role": "user", "content": "Sort a list."}, {"role": "assistant", "content": "sorted(xs)"}],
        [{"role": "system", "content": "Be brief.\n"}, {"role": "user", "content": "Hi"}],
    ]
    for messages in chats:
        assert hf.apply_chat_template(messages, tokenize=False) == render_chat(messages)
        assert (hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                == render_chat(messages, add_generation_prompt=True))
    prompt = format_instruction("Write hello world.")
    assert prompt.endswith("### Instruction:\nWrite hello world.\n### Response:\n")
    assert prompt == hf.apply_chat_template([{"role": "user", "content": "Write hello world."}], tokenize=False,
                                            add_generation_prompt=True)


def test_too_small_vocab_is_refused():
    from moecoder.errors import UserError

    with pytest.raises(UserError, match="too small"):
        train_tokenizer(["x = 1"], vocab_size=100)
