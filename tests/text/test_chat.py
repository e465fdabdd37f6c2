"""Chat templates: DeepSeek-Coder's built in, a model's own, and refusals."""

import pytest

from moecoder.errors import UserError
from moecoder.text import render_chat


def test_deepseek_coder_template_renders_as_the_official_one():
    text = render_chat([{"role": "user", "content": "Hello"}], add_generation_prompt=True, bos_token="<BOS>")
    assert text == ("<BOS>You are an AI programming assistant, utilizing the Deepseek Coder model, developed by "
                    "Deepseek Company, and you only answer questions related to computer science. For politically "
                    "sensitive questions, security and privacy issues, and other non-computer science questions, "
                    "you will refuse to answer\n### Instruction:\nHello\n### Response:\n")
    turns = [{"role": "system", "content": "Be brief.\n"}, {"role": "user", "content": "a"},
             {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert render_chat(turns, add_generation_prompt=True, bos_token="") == ("Be brief.\n### Instruction:\na\n### Response:\nb\n<|EOT|>\n"
                                  "### Instruction:\nc\n### Response:\n")


def test_a_models_own_template_is_used_and_bad_messages_are_refused():
    chatml = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    text = render_chat([{"role": "user", "content": "hi"}], chatml, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(UserError, match="role"):
        render_chat([{"content": "no role"}])
    with pytest.raises(UserError, match="template refused"):
        render_chat([{"role": "user", "content": "x"}], template="{{ raise_exception('no users') }}")
