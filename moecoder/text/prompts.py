"""Prompt builders every caller shares: DeepSeek-Coder's HumanEval instruction and fill-in-the-middle prompt,
and token healing."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from moecoder.errors import UserError
from moecoder.text.tokenizer import FIM_BEGIN, FIM_END, FIM_HOLE

# DeepSeek-Coder's instruction for HumanEval-style tasks in chat mode (Evaluation/HumanEval, eval_instruct).
HUMANEVAL_INSTRUCTION = (
    "Please continue to complete the function. You are not allowed to modify the given code and do the "
    "completion only. Please return all completed function in a codeblock. Here is the given code to do "
    "completion:\n```python\n{prompt}\n```"
)


def humaneval_instruction(prompt: str) -> str:
    """The user message DeepSeek-Coder-Instruct was given for a HumanEval prompt (a function's signature and
    docstring); the built-in instruction set asks for some of its functions this way too."""
    return HUMANEVAL_INSTRUCTION.format(prompt=prompt.strip())


def fim_prompt(prefix: str, suffix: str, vocab: dict[str, int]) -> str:
    """DeepSeek-Coder's PSM fill-in-the-middle prompt `<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>`;
    the model then writes the middle. `vocab` is the tokenizer's token -> id map (added tokens included).

    Encode the result the way a raw prompt is encoded (BOS added, as DeepSeek-Coder's FIM example does).
    Raises UserError when the tokenizer lacks one of the three FIM tokens."""
    missing = [token for token in (FIM_BEGIN, FIM_HOLE, FIM_END) if token not in vocab]
    if missing:
        raise UserError(f"this model's tokenizer has no fill-in-the-middle tokens ({', '.join(missing)} missing)")
    return f"{FIM_BEGIN}{prefix}{FIM_HOLE}{suffix}{FIM_END}"


@dataclass(frozen=True)
class HealedPrompt:
    """A prompt with its last token taken back: generate from `ids`, allowing as first token only `allowed`
    (ids whose text starts with `text`, the removed token's text), then `strip` the generated text."""

    ids: list[int]
    text: str = ""
    allowed: tuple[int, ...] | None = None  # None: nothing was removed, no constraint

    def mask_logits(self, logits):
        """The first step's logits [..., V] with every token outside `allowed` at -inf (a new tensor)."""
        if self.allowed is None:
            return logits
        import torch

        keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        keep[[i for i in self.allowed if i < logits.shape[-1]]] = True
        return logits.masked_fill(~keep, float("-inf"))

    def strip(self, generated: str) -> str:
        """The completion of the original prompt: the generated text less the removed token's text."""
        return generated.removeprefix(self.text)


class TokenHealer:
    """Token healing for a verbatim prompt (as in Microsoft guidance): a prompt ending mid-word, e.g. with
    "http:", ends on a token the model rarely saw before what should follow ("//" is usually inside "://").
    Taking that token back and making the first generated token start with its text lets the model pick the
    natural tokenisation.

    Built once per tokenizer (it decodes the whole vocabulary once). The tokenizer is a `tokenizers.Tokenizer`
    whose single-token decodes concatenate to the text (byte-level BPE: DeepSeek-Coder, Llama 3, GPT-2); from
    transformers use `tokenizer.backend_tokenizer`. Special and added tokens are never healed nor allowed.
    """

    def __init__(self, tokenizer):
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        added = set(tokenizer.get_added_tokens_decoder())
        texts = tokenizer.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
        self.texts = texts
        self._sorted = sorted((text, i) for i, text in enumerate(texts) if i not in added and text)
        self._keys = [text for text, _ in self._sorted]
        self._added = added

    def heal(self, ids: list[int]) -> HealedPrompt:
        """`ids` less its last token, with the first-token constraint. A prompt of one token, one ending in a
        special token, or one whose last token is not whole UTF-8 text is left as it is (allowed None)."""
        if len(ids) < 2 or ids[-1] in self._added or ids[-1] >= len(self.texts):
            return HealedPrompt(list(ids))
        text = self.texts[ids[-1]]
        if not text or "\ufffd" in text:
            return HealedPrompt(list(ids))
        start = bisect.bisect_left(self._keys, text)
        end = bisect.bisect_left(self._keys, text + "\U0010ffff", lo=start)
        allowed = tuple(sorted(i for _, i in self._sorted[start:end]))
        return HealedPrompt(list(ids[:-1]), text, allowed)
