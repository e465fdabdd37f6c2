"""What native: and hf: share: tokenize, batch with left padding, generate, decode, cut at stop strings."""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from pathlib import Path
from typing import Callable

from moecoder.generate.base import Backend, ResultCallback
from moecoder.generate.params import SamplingParams
from moecoder.generate.prompts import truncate_at_stop
from moecoder.text import EOT, TokenHealer, fim_prompt, render_chat

# Called after each decoding step with the ids just sampled, one per batch row ([B] tensor).
StepCallback = Callable[["object"], None]


def weights_sha256(model_dir: Path) -> str:
    """sha256 over config.json and the safetensors files, in name order: the revision a local run records."""
    digest = hashlib.sha256()
    for file in sorted([model_dir / "config.json", *model_dir.glob("*.safetensors")]):
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


def token_text(token) -> str | None:
    """A special token as tokenizer_config.json spells it: a string or an AddedToken dict."""
    return token.get("content") if isinstance(token, dict) else token


def repeated_ngram_bans(generated: list[list[int]], n: int) -> list[list[int]]:
    """Per row, the tokens that would complete an n-gram already in that row's generated ids (the last n-1 ids
    seen before, followed by each of those tokens)."""
    bans = []
    for ids in generated:
        if n < 2 or len(ids) < n:
            bans.append([])
            continue
        tail = ids[len(ids) - n + 1:]
        bans.append([ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i:i + n - 1] == tail])
    return bans


def ban(logits, bans: list[list[int]]):
    """logits [B, V] with each row's banned ids at -inf (in place)."""
    for row, ids in enumerate(bans):
        if ids:
            logits[row, ids] = float("-inf")
    return logits


def allow_only(logits, allowed: list):
    """logits [B, V] with every id outside a row's allowed ids at -inf (in place; rows with None untouched)."""
    for row, ids in enumerate(allowed):
        if ids is not None:
            keep = logits[row, list(ids)].clone()
            logits[row] = float("-inf")
            logits[row, list(ids)] = keep
    return logits


class LocalBackend(Backend):
    """A model in this process. Subclasses load it and provide encode/decode and one batched generate;
    this class turns prompts into batches (n samples per prompt, longest first) and ids back into text."""

    chat_template: str | None = None  # the model's own; None means DeepSeek-Coder's instruct template
    bos_token: str = ""
    eos_token: str = ""
    eos_ids: list[int]
    pad_id: int

    def __init__(self, batch_size: int = 8):
        self.batch_size = batch_size
        self._healer = None

    @abstractmethod
    def fast_tokenizer(self):
        """The `tokenizers.Tokenizer` behind encode/decode (token healing reads its vocabulary)."""

    @property
    def healer(self) -> TokenHealer:
        if self._healer is None:  # decodes the whole vocabulary once
            self._healer = TokenHealer(self.fast_tokenizer())
        return self._healer

    @abstractmethod
    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        """Token ids of `text`; add_special_tokens adds what the tokenizer adds to a raw prompt (BOS)."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens left out."""

    @abstractmethod
    def _generate(self, input_ids, attention_mask, max_new_tokens: int, temperature: float, top_p: float,
                  seed: int, stop_ids: list[list[int]], on_step: StepCallback | None, no_repeat_ngram: int = 0,
                  first_allowed: list | None = None):
        """Left-padded ids [B, T] -> new ids [B, N] (rows that finished early padded with an eos id); with
        no_repeat_ngram > 0, no n-gram of the new ids twice (see repeated_ngram_bans); first_allowed: per row,
        None or the ids the first new token must be one of (token healing)."""

    # --- prompts --------------------------------------------------------------------------------------

    def chat_prompt(self, messages: list[dict]) -> str:
        return render_chat(messages, self.chat_template, add_generation_prompt=True, bos_token=self.bos_token,
                           eos_token=self.eos_token)

    def prompt_ids(self, prompt: str | None = None, messages: list[dict] | None = None) -> list[int]:
        """Ids of a raw prompt (completion mode) or of a conversation under the chat template (which
        writes BOS itself, so no special tokens are added)."""
        if messages is not None:
            return self.encode(self.chat_prompt(messages), add_special_tokens=False)
        return self.encode(prompt, add_special_tokens=True)

    @abstractmethod
    def vocab(self) -> dict[str, int]:
        """The tokenizer's token -> id map, added tokens included."""

    def infill_ids(self, prefix: str, suffix: str) -> list[int]:
        """Ids of DeepSeek-Coder's PSM prompt, encoded as a raw prompt (BOS first), as in FIM training."""
        return self.encode(fim_prompt(prefix, suffix, self.vocab()), add_special_tokens=True)

    def template_description(self) -> str:
        if self.chat_template is None:
            return "deepseek-coder-instruct (built in)"
        return "model chat_template sha256:" + hashlib.sha256(self.chat_template.encode()).hexdigest()[:16]

    # --- generation -----------------------------------------------------------------------------------

    def complete(self, prompts: list[str], params: SamplingParams,
                 on_result: ResultCallback | None = None) -> list[list[str]]:
        return self._sample([self.prompt_ids(prompt=p) for p in prompts], params, on_result)

    def chat(self, messages_list: list[list[dict]], params: SamplingParams,
             on_result: ResultCallback | None = None) -> list[list[str]]:
        return self._sample([self.prompt_ids(messages=m) for m in messages_list], params, on_result)

    def infill(self, pairs: list[tuple[str, str]], params: SamplingParams,
               on_result: ResultCallback | None = None) -> list[list[str]]:
        return self._sample([self.infill_ids(prefix, suffix) for prefix, suffix in pairs], params, on_result)

    def stop_ids(self, stop: tuple[str, ...]) -> list[list[int]]:
        """Id sequences that end generation early for stop strings. The text is cut at the stop string
        afterwards anyway; these only save steps, so the forms after one or two newlines are added
        (BPE merges "\\n\\ndef" differently from "\\ndef")."""
        forms = {prefix + s for s in stop for prefix in ("", "\n", "\n\n")}
        return [ids for ids in (self.encode(form, add_special_tokens=False) for form in sorted(forms)) if ids]

    def generate_ids(self, prompts: list[list[int]], max_new_tokens: int, temperature: float = 0.0,
                     top_p: float = 1.0, seed: int = 0, stop: tuple[str, ...] = (),
                     on_step: StepCallback | None = None, no_repeat_ngram: int = 0,
                     first_allowed: list | None = None) -> list[list[int]]:
        """One batch: prompt ids -> new ids per row, ending before the first eos id."""
        import torch

        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):  # left padding: every row's last prompt token in the last column
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention_mask[row, width - len(ids):] = 1
        new = self._generate(input_ids, attention_mask, max_new_tokens, temperature, top_p, seed,
                             self.stop_ids(stop), on_step, no_repeat_ngram, first_allowed).tolist()
        return [self.until_eos(row) for row in new]

    def until_eos(self, ids: list[int]) -> list[int]:
        ends = [i for i, token in enumerate(ids) if token in self.eos_ids]
        return ids[:ends[0]] if ends else ids

    def _sample(self, prompts: list[list[int]], params: SamplingParams,
                on_result: ResultCallback | None) -> list[list[str]]:
        # Greedy decoding gives one answer however often it is asked: generate it once, copy it n times.
        copies = 1 if params.greedy else params.n
        rows = sorted(((i, c) for i in range(len(prompts)) for c in range(copies)),
                      key=lambda row: (-len(prompts[row[0]]), row))  # similar lengths share a batch
        texts: list[list[str]] = [[] for _ in prompts]
        healed = [self.healer.heal(ids) for ids in prompts] if params.heal else None
        for batch_no, start in enumerate(range(0, len(rows), self.batch_size)):
            batch = rows[start:start + self.batch_size]
            new = self.generate_ids([healed[i].ids if healed else prompts[i] for i, _ in batch], params.max_new_tokens,
                                    params.temperature, params.top_p, params.seed + batch_no, params.stop,
                                    no_repeat_ngram=params.no_repeat_ngram,
                                    first_allowed=[healed[i].allowed for i, _ in batch] if healed else None)
            for (i, _), ids in zip(batch, new):
                text = healed[i].strip(self.decode(ids)) if healed else self.decode(ids)
                texts[i].append(truncate_at_stop(text, params.stop)[0])
                if len(texts[i]) == copies:
                    texts[i] *= params.n // copies
                    if on_result is not None:
                        on_result(i, texts[i])
        return texts


def special_token_ids(vocab: dict[str, int], eos_token: str | None) -> list[int]:
    """The ids that end a reply: the tokenizer's eos token and DeepSeek-Coder's end-of-turn <|EOT|>."""
    return [vocab[t] for t in dict.fromkeys([eos_token, EOT]) if t in vocab]
