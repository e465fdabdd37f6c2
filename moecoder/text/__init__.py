"""Text in and out of the model, shared by training, generation and serving: the tokenizer with
DeepSeek-Coder's special tokens, chat templates rendered as transformers renders them, and prompt builders.

    CoderTokenizer, load_tokenizer(path), train_tokenizer(texts, vocab_size, out_dir)
    BOS, EOS, EOT, PAD, FIM_BEGIN, FIM_HOLE, FIM_END, SPECIAL_TOKENS, CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT
    render_chat(messages, template=None, add_generation_prompt=False, bos_token=BOS, eos_token=EOS) -> str
    format_instruction(instruction) -> str
    fim_prompt(prefix, suffix, vocab) -> str
    TokenHealer(tokenizer).heal(ids) -> HealedPrompt
"""

from moecoder.text.chat import format_instruction, render_chat
from moecoder.text.prompts import HealedPrompt, TokenHealer, fim_prompt
from moecoder.text.tokenizer import (BOS, CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT, EOS, EOT, FIM_BEGIN, FIM_END, FIM_HOLE,
                                     PAD, SPECIAL_TOKENS, CoderTokenizer, load_tokenizer, train_tokenizer)

__all__ = ["BOS", "CHAT_TEMPLATE", "DEFAULT_SYSTEM_PROMPT", "EOS", "EOT", "FIM_BEGIN", "FIM_END", "FIM_HOLE", "PAD",
           "SPECIAL_TOKENS", "CoderTokenizer", "HealedPrompt", "TokenHealer", "fim_prompt", "format_instruction",
           "load_tokenizer", "render_chat", "train_tokenizer"]
