"""Byte-level BPE tokenizer with DeepSeek-Coder's special tokens, saved the way transformers loads it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from moecoder.errors import UserError
from moecoder.files import atomic_write

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
FIM_BEGIN = "<｜fim▁begin｜>"
FIM_HOLE = "<｜fim▁hole｜>"
FIM_END = "<｜fim▁end｜>"
EOT = "<|EOT|>"
PAD = "<｜▁pad▁｜>"
SPECIAL_TOKENS = (BOS, EOS, FIM_BEGIN, FIM_HOLE, FIM_END, EOT, PAD)

DEFAULT_SYSTEM_PROMPT = (
    "You are an AI programming assistant, utilizing the Deepseek Coder model, developed by Deepseek Company, "
    "and you only answer questions related to computer science. For politically sensitive questions, security "
    "and privacy issues, and other non-computer science questions, you will refuse to answer\n"
)
# DeepSeek-Coder instruct's chat template (deepseek-coder-*-instruct tokenizer_config.json), same rendering: the
# official one is spread over lines, and the newline after its generation prompt is part of the output.
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{%- set ns = namespace(found=false) -%}"
    "{%- for message in messages -%}{%- if message['role'] == 'system' -%}{%- set ns.found = true -%}{%- endif -%}"
    "{%- endfor -%}"
    "{{bos_token}}{%- if not ns.found -%}{{'" + DEFAULT_SYSTEM_PROMPT.replace("\n", "\\n") + "'}}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{ message['content'] }}"
    "{%- else %}{%- if message['role'] == 'user' %}{{'### Instruction:\\n' + message['content'] + '\\n'}}"
    "{%- else %}{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}{%- endif %}{%- endif %}"
    "{%- endfor %}"
    "{% if add_generation_prompt %}{{'### Response:\\n'}}{% endif %}"
)


class CoderTokenizer:
    """A `tokenizers.Tokenizer` plus the ids of DeepSeek-Coder's special tokens.

    `encode` never adds special tokens: callers place BOS/EOS/FIM tokens themselves (special token
    strings inside the text are still recognised as single tokens).
    """

    def __init__(self, tokenizer, name_or_path: str | None = None):
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path
        ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
        for required in (BOS, EOS):
            if ids[required] is None:
                raise UserError(f"tokenizer {name_or_path or ''} lacks the special token {required}")
        self.bos_id, self.eos_id = ids[BOS], ids[EOS]
        self.fim_begin_id, self.fim_hole_id, self.fim_end_id = ids[FIM_BEGIN], ids[FIM_HOLE], ids[FIM_END]
        # Base DeepSeek-Coder tokenizers may lack <|EOT|> or a pad token: fall back to EOS.
        self.eot_id = ids[EOT] if ids[EOT] is not None else self.eos_id
        self.pad_id = ids[PAD] if ids[PAD] is not None else self.eos_id

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def has_fim(self) -> bool:
        return None not in (self.fim_begin_id, self.fim_hole_id, self.fim_end_id)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [enc.ids for enc in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def save(self, out_dir: str | os.PathLike) -> None:
        """Write tokenizer.json and tokenizer_config.json (AutoTokenizer-loadable) into `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "tokenizer.json", self.tokenizer.to_str())
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS, "eos_token": EOS, "pad_token": self.tokenizer.id_to_token(self.pad_id),
            "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "model_max_length": 16384, "chat_template": CHAT_TEMPLATE,
        }
        atomic_write(out / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False))


PRE_TOKENIZERS = ("gpt2", "deepseek-coder")


def pre_tokenizer(name: str):
    r"""The split applied before BPE merges.

    - "gpt2": GPT-2's regex (byte-level BPE's default). Whitespace runs stay whole, so a newline and the next
      line's indentation can merge into one token ("\n" + "    ").
    - "deepseek-coder": DeepSeek-Coder's tokenizer.json pre-tokenizer: every newline alone, an optional space
      plus letters, an optional space plus ASCII/CJK punctuation, trailing whitespace, CJK runs, single digits.
      (DeepSeek-Coder spells the letter class as explicit Latin/Greek/Cyrillic/... ranges; \p{L} here, the same on
      code.) A newline is never merged with indentation.
    """
    from tokenizers import Regex, pre_tokenizers

    if name == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    if name != "deepseek-coder":
        raise UserError(f"pre_tokenizer={name!r}: expected one of {', '.join(PRE_TOKENIZERS)}")
    split = [r"[\r\n]", r"\s?\p{L}+", r"\s?[!-/:-~！-／：-～‘-‟　-。]+", r"\s+$", r"[一-龥ࠀ-一가-퟿]+"]
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated") for pattern in split]
        + [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, out_dir: str | os.PathLike | None = None,
                    min_frequency: int = 2, pre_tokenizer_name: str = "gpt2") -> CoderTokenizer:
    """Train a byte-level BPE on `texts` with DeepSeek-Coder's special tokens; save to `out_dir` if given.

    `pre_tokenizer_name`: "gpt2" or "deepseek-coder" (see `pre_tokenizer`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise UserError(f"vocab_size {vocab_size} is too small for a byte-level BPE (needs >= 263)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer(pre_tokenizer_name)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # As DeepSeek-Coder's tokenizer.json: transformers' encode(text) prepends BOS.
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    coder = CoderTokenizer(tokenizer)
    if out_dir is not None:
        coder.save(out_dir)
    return coder


def load_tokenizer(path: str | os.PathLike) -> CoderTokenizer:
    """Load tokenizer.json from a model directory (ours or a downloaded DeepSeek-Coder) or a file path."""
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"no tokenizer.json at {path}")
    return CoderTokenizer(Tokenizer.from_file(str(file)), str(path))
