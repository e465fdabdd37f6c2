"""native:PATH — our model (moecoder.load_model) with its batched static-KV-cache generate."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from moecoder.errors import UserError
from moecoder.generate.local import (LocalBackend, StepCallback, allow_only, ban, repeated_ngram_bans, special_token_ids,
                                     token_text, weights_sha256)


@contextmanager
def watch_steps(model, on_step: StepCallback | None):
    """Report each sampled token while model.generate runs: every forward after the prompt's is fed the
    tokens sampled one step before. (The last step's tokens arrive with generate's result.)"""
    if on_step is None:
        yield
        return
    forwards = 0

    def hook(module, args, kwargs):
        nonlocal forwards
        if forwards:
            on_step(args[0][:, 0])
        forwards += 1

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def constrained(model, no_repeat_ngram: int, first_allowed: list | None):
    """Constrain the logits while model.generate runs (it takes no logits processor): a pre-hook collects the ids
    fed back each step, a forward hook edits the last position's logits in place (generate runs without
    autograd and reads only that position): the first step keeps only each row's allowed ids (token healing),
    later steps ban repeats of a generated n-gram."""
    if no_repeat_ngram < 2 and not first_allowed:
        yield
        return
    fed = []  # per decoding step, the ids fed back: the tokens sampled one step before
    forwards = [0]

    def collect(module, args, kwargs):
        if forwards[0]:
            fed.append(args[0][:, 0].tolist())

    def edit(module, args, kwargs, output):
        if forwards[0] == 0 and first_allowed:
            allow_only(output[:, -1], first_allowed)
        elif fed and no_repeat_ngram >= 2:
            ban(output[:, -1], repeated_ngram_bans([list(ids) for ids in zip(*fed)], no_repeat_ngram))
        forwards[0] += 1

    handles = [model.register_forward_pre_hook(collect, with_kwargs=True),
               model.register_forward_hook(edit, with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class NativeBackend(LocalBackend):
    """A save_model directory with tokenizer.json (+ tokenizer_config.json) beside the weights."""

    def __init__(self, path: str, batch_size: int = 8, dtype: str | None = None, device: str | None = None):
        import torch
        from tokenizers import Tokenizer

        from moecoder.model import load_model

        super().__init__(batch_size)
        self.path = Path(path)
        self.spec = f"native:{path}"
        if not (self.path / "config.json").is_file():
            raise UserError(f"native model {path}: no config.json there (expected a save_model directory)")
        if not (self.path / "tokenizer.json").is_file():
            raise UserError(f"native model {path}: no tokenizer.json beside the weights")
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        config_file = self.path / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        self.chat_template = config.get("chat_template")
        self.bos_token = token_text(config.get("bos_token")) or ""
        self.eos_token = token_text(config.get("eos_token")) or ""
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        self.eos_ids = special_token_ids(vocab, self.eos_token)
        pad_token = token_text(config.get("pad_token"))
        self.pad_id = vocab.get(pad_token, self.eos_ids[0] if self.eos_ids else 0)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(self.path, dtype=dtype, device=self.device)
        self._revision = None

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def vocab(self) -> dict[str, int]:
        return self.tokenizer.get_vocab(with_added_tokens=True)

    def fast_tokenizer(self):
        return self.tokenizer

    def _generate(self, input_ids, attention_mask, max_new_tokens, temperature, top_p, seed, stop_ids, on_step,
                  no_repeat_ngram=0, first_allowed=None):
        import torch

        generator = torch.Generator(self.device).manual_seed(seed)
        with watch_steps(self.model, on_step), constrained(self.model, no_repeat_ngram, first_allowed):
            out = self.model.generate(input_ids.to(self.device), max_new_tokens, temperature=temperature,
                                      top_p=top_p, stop=stop_ids, eos_token_id=self.eos_ids or None,
                                      attention_mask=attention_mask.to(self.device), generator=generator)
        return out[:, input_ids.shape[1]:].cpu()

    def describe(self) -> dict:
        if self._revision is None:
            self._revision = weights_sha256(self.path)
        return {"spec": self.spec, "backend": "native", "revision": f"sha256:{self._revision}",
                "template": self.template_description(), "batch_size": self.batch_size,
                "dtype": str(self.model.lm_head.weight.dtype).removeprefix("torch."), "device": self.device}
