"""Chat templates render as transformers' apply_chat_template renders them: DeepSeek-Coder's official instruct
template, templates written here for each feature of transformers' Jinja environment, and refusals."""

import json

import pytest

from moecoder.errors import UserError
from moecoder.text import BOS, CHAT_TEMPLATE, EOS, render_chat

# deepseek-coder-6.7b-instruct's tokenizer_config.json "chat_template", as published (JSON-escaped).
DEEPSEEK_CODER_INSTRUCT = json.loads(
    r'''"{% if not add_generation_prompt is defined %}\n{% set add_generation_prompt = false %}\n{% endif %}\n'''
    r'''{%- set ns = namespace(found=false) -%}\n{%- for message in messages -%}\n    {%- if message['role'] == 'system' -%}\n'''
    r'''        {%- set ns.found = true -%}\n    {%- endif -%}\n{%- endfor -%}\n{{bos_token}}{%- if not ns.found -%}\n'''
    r'''{{'You are an AI programming assistant, utilizing the Deepseek Coder model, developed by Deepseek Company, '''
    r'''and you only answer questions related to computer science. For politically sensitive questions, security '''
    r'''and privacy issues, and other non-computer science questions, you will refuse to answer\\n'}}\n{%- endif %}\n'''
    r'''{%- for message in messages %}\n    {%- if message['role'] == 'system' %}\n{{ message['content'] }}\n'''
    r'''    {%- else %}\n        {%- if message['role'] == 'user' %}\n{{'### Instruction:\\n' + message['content'] + '\\n'}}\n'''
    r'''        {%- else %}\n{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}\n        {%- endif %}\n'''
    r'''    {%- endif %}\n{%- endfor %}\n{% if add_generation_prompt %}\n{{'### Response:'}}\n{% endif %}"''')

# Templates written for each feature: whitespace control (trim_blocks, lstrip_blocks), loop controls,
# tojson without HTML escaping (and its options), strftime_now, extra variables, namespace and loop state.
FEATURES = {
    "indented blocks": (
        "{% for message in messages %}\n"
        "    {% if message['role'] == 'system' %}\n"
        "<<SYS>>{{ message['content'] | trim }}<</SYS>>\n"
        "    {% else %}\n"
        "[{{ message['role'] | upper }}] {{ message['content'] }}{% if not loop.last %}\n{% endif %}\n"
        "    {% endif %}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}[ASSISTANT]{% endif %}"),
    "loop controls": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if message['role'] == 'tool' %}{% continue %}{% endif %}"
        "{% if message['content'] == 'STOP' %}{% break %}{% endif %}"
        "{{ loop.index }}:{{ message['content'] }};{% endfor %}{{ eos_token }}"),
    "tojson": (
        "{% for message in messages %}{{ message['content'] | tojson }}|{{ message | tojson(sort_keys=true) }}\n"
        "{% endfor %}{% if tools %}{{ tools | tojson(indent=2) }}{% endif %}"),
    "strftime_now": "Today is {{ strftime_now('%Y-%m-%d') }}.{% for m in messages %} {{ m['content'] }}{% endfor %}",
    "namespace and slicing": (
        "{% set ns = namespace(system='', turns=0) %}"
        "{% if messages[0]['role'] == 'system' %}{% set ns.system = messages[0]['content'] %}"
        "{% set messages = messages[1:] %}{% endif %}"
        "{% for m in messages %}{% set ns.turns = ns.turns + 1 %}<|{{ m.role }}|>{{ m.content.strip() }}"
        "{% endfor %}(system={{ ns.system or 'none' }}, turns={{ ns.turns }})"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"),
}

CONVERSATIONS = [
    [{"role": "user", "content": "Sort a list."}],
    [{"role": "system", "content": "Be brief.\n"}, {"role": "user", "content": "Is a < b && c > \"d\"? 'ü' → ✓"},
     {"role": "assistant", "content": "Yes: `a < b`\n<|EOT|>"}, {"role": "user", "content": "  and now?  "}],
    [{"role": "user", "content": "one"}, {"role": "tool", "content": "hidden"}, {"role": "user", "content": "two"},
     {"role": "user", "content": "STOP"}, {"role": "user", "content": "never"}],
]
TOOLS = [{"type": "function", "function": {"name": "run", "description": "Run <code> & report",
                                           "parameters": {"type": "object", "properties": {}}}}]

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_tokenizer():
    """A transformers tokenizer with DeepSeek-Coder's bos/eos tokens: only its apply_chat_template is used."""
    from tokenizers import Tokenizer, models

    vocab = {"<unk>": 0, BOS: 1, EOS: 2}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "<unk>")),
                                                bos_token=BOS, eos_token=EOS, unk_token="<unk>")


def theirs(tokenizer, messages, template, **kwargs):
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, **kwargs)


@pytest.mark.parametrize("generation", [False, True])
@pytest.mark.parametrize("template", [DEEPSEEK_CODER_INSTRUCT, CHAT_TEMPLATE], ids=["official", "built-in"])
def test_deepseek_coder_instruct_template_renders_as_transformers(hf_tokenizer, template, generation):
    for messages in CONVERSATIONS[:2]:
        want = theirs(hf_tokenizer, messages, DEEPSEEK_CODER_INSTRUCT, add_generation_prompt=generation)
        assert render_chat(messages, template, add_generation_prompt=generation) == want
    assert want.startswith(BOS + "Be brief.\n### Instruction:\n")  # the system prompt replaces the default one


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_template_features_render_as_transformers(hf_tokenizer, name):
    template = FEATURES[name]
    for messages in CONVERSATIONS:
        for generation in (False, True):
            want = theirs(hf_tokenizer, messages, template, add_generation_prompt=generation, tools=TOOLS)
            got = render_chat(messages, template, add_generation_prompt=generation, tools=TOOLS)
            assert got == want, name


def test_tojson_does_not_escape_html_and_break_stops_the_loop():
    """The two differences from a plain Jinja environment that templates meet most."""
    assert render_chat([{"role": "user", "content": "a < b"}], "{{ messages[0]['content'] | tojson }}") == '"a < b"'
    assert render_chat(CONVERSATIONS[2], FEATURES["loop controls"]) == f"{BOS}1:one;3:two;{EOS}"


@pytest.mark.parametrize("template, message", [
    ("{{ raise_exception('no system messages') }}", "no system messages"),
    ("{{ ''.__class__.__mro__ }}", "unsafe"),  # the sandbox keeps Python internals out of reach
    ("{% set _ = messages.append(1) %}", "unsafe"),  # and inputs immutable
])
def test_refusals_are_the_same_as_transformers(hf_tokenizer, template, message):
    from jinja2.exceptions import TemplateError

    with pytest.raises(TemplateError, match=message):
        theirs(hf_tokenizer, CONVERSATIONS[0], template)
    with pytest.raises(UserError, match=f"template refused the conversation: .*{message}"):
        render_chat(CONVERSATIONS[0], template)


def test_deepseek_coder_template_text():
    text = render_chat([{"role": "user", "content": "Hello"}], add_generation_prompt=True, bos_token="<BOS>")
    assert text == ("<BOS>You are an AI programming assistant, utilizing the Deepseek Coder model, developed by "
                    "Deepseek Company, and you only answer questions related to computer science. For politically "
                    "sensitive questions, security and privacy issues, and other non-computer science questions, "
                    "you will refuse to answer\n### Instruction:\nHello\n### Response:\n")
    turns = [{"role": "system", "content": "Be brief.\n"}, {"role": "user", "content": "a"},
             {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert render_chat(turns, add_generation_prompt=True, bos_token="") == (
        "Be brief.\n### Instruction:\na\n### Response:\nb\n<|EOT|>\n### Instruction:\nc\n### Response:\n")


def test_bad_messages_and_broken_templates_are_clear_errors():
    with pytest.raises(UserError, match="role"):
        render_chat([{"content": "no role"}])
    with pytest.raises(UserError, match="content"):
        render_chat([{"role": "user", "content": 3}])
    with pytest.raises(UserError, match="not valid Jinja"):
        render_chat(CONVERSATIONS[0], "{% for m in messages %}")
