"""Chat templates rendered exactly as transformers' `apply_chat_template` renders them.

The same Jinja set-up as transformers (utils/chat_template_utils.py): an immutable sandbox (templates from the
Hub are untrusted code), trim_blocks and lstrip_blocks, the loop controls extension (`{% break %}`,
`{% continue %}`), a `tojson` filter that is plain `json.dumps` (no HTML escaping, non-ASCII kept), and the
globals `raise_exception(message)` and `strftime_now(format)`.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime

from moecoder.errors import UserError
from moecoder.text.tokenizer import BOS, CHAT_TEMPLATE, EOS


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _raise_exception(message: str):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


@functools.lru_cache(maxsize=16)
def compile_template(template: str):
    """The compiled Jinja template (cached: a server renders the same template for every request).

    Raises UserError for a template that is not valid Jinja."""
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    try:
        return env.from_string(template)
    except TemplateError as exc:
        raise UserError(f"the chat template is not valid Jinja: {exc}") from exc


def render_chat(messages: list[dict], template: str | None = None, *, add_generation_prompt: bool = False,
                bos_token: str = BOS, eos_token: str = EOS, **variables) -> str:
    """The prompt text of a conversation under a chat template (DeepSeek-Coder's instruct template when None).

    Equal to `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` for a
    tokenizer with that template and those bos/eos tokens; `variables` are further template variables
    (tools, documents, ...). The text holds whatever special tokens the template writes (BOS for
    DeepSeek-Coder's): encode it without adding special tokens.

    Raises UserError for a message that is not a dict with a 'role' (its 'content' a string, a list of parts
    or None, as templates expect), and for a template that is not valid Jinja, refuses the conversation
    (raise_exception) or fails to render (a sandbox violation, a missing field).
    """
    from jinja2.exceptions import TemplateError

    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise UserError(f"chat messages need a 'role', got {message!r}")
        if not isinstance(message.get("content"), (str, list, type(None))):
            raise UserError(f"a chat message's 'content' is a string or a list of parts, got {message['content']!r}")
    compiled = compile_template(template or CHAT_TEMPLATE)
    try:
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               bos_token=bos_token, eos_token=eos_token, **variables)
    except TemplateError as exc:
        raise UserError(f"the chat template refused the conversation: {exc}") from exc


def format_instruction(instruction: str) -> str:
    """DeepSeek-Coder's instruct prompt for one instruction, generation prompt included (BOS text included:
    encode without adding special tokens)."""
    return render_chat([{"role": "user", "content": instruction}], add_generation_prompt=True)
