"""Batched decoding with a static, preallocated KV cache (greedy or temperature / top-p sampling)."""

from __future__ import annotations

import torch

from moecoder.model.attention import LayerCache


class StaticCache:
    """Every layer's keys for `batch` rows and `capacity` slots, allocated once; slot i holds token i of each row.

    Left padding is handled by `valid` (False for pad slots, never attended to) and per-row positions.
    """

    def __init__(self, model, batch: int, capacity: int, prompt_mask: torch.Tensor | None = None, dtype=None):
        self.layers: list[LayerCache] = model.new_cache(batch, capacity, dtype)
        device = model.lm_head.weight.device
        self.valid = torch.ones(batch, capacity, dtype=torch.bool, device=device)
        if prompt_mask is not None:
            self.valid[:, :prompt_mask.shape[1]] = prompt_mask.bool()
        self.length = 0
        self.last_position = torch.full((batch,), -1, dtype=torch.long, device=device)

    def next_positions(self, T: int) -> torch.Tensor:
        return self.last_position[:, None] + 1 + torch.arange(T, device=self.valid.device)

    def mask(self, T: int) -> torch.Tensor:
        """[B, 1, T, length+T] bool: causal over slots, pads excluded, each token always sees itself."""
        if T == 1:  # decoding: every earlier slot is in the past; the new slot is valid
            return self.valid[:, None, None, :self.length + 1]
        query = torch.arange(self.length, self.length + T, device=self.valid.device)[:, None]
        key = torch.arange(self.length + T, device=self.valid.device)[None, :]
        allowed = (key <= query) & self.valid[:, None, :self.length + T]
        return (allowed | (key == query))[:, None]

    def advance(self, T: int, position_ids: torch.Tensor) -> None:
        self.length += T
        self.last_position = position_ids[:, -1]


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, generator=None) -> torch.Tensor:
    """logits [B, V] -> ids [B]: argmax at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = (logits.float() / temperature).softmax(dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter_(1, order, sorted_probs.masked_fill(outside, 0.0))
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _ends_with(tokens: torch.Tensor, stops: list[list[int]]) -> torch.Tensor:
    """[B] True where a row's generated ids end with one of the stop id sequences."""
    hit = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    for stop in stops:
        if stop and tokens.shape[1] >= len(stop):
            hit |= (tokens[:, -len(stop):] == torch.tensor(stop, device=tokens.device)).all(dim=1)
    return hit


def next_token_logits(model, tokens: torch.Tensor, cache: StaticCache) -> torch.Tensor:
    """One decoding step: tokens [B, 1] -> logits [B, vocab] (the function `compile=` compiles)."""
    return model(tokens, cache=cache)[:, -1]


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
             stop: list[list[int]] | None = None, eos_token_id: int | list[int] | None = None,
             attention_mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
             compile: bool | str = False) -> torch.Tensor:
    """Prompt ids [B, T] (left-padded where attention_mask is 0) -> [B, T + n] with n <= max_new_tokens.

    A row stops at eos_token_id or when its new ids end with a `stop` id sequence; finished rows are padded
    with the (first) eos id, or the config's pad id, while others go on, like transformers' generate.
    compile=True (or a torch.compile backend name) compiles the decoding step: one graph with a dynamic
    cache length, compiled once per process (dynamo caches it), worth it for long or repeated generation.
    """
    decode = next_token_logits
    if compile:
        decode = torch.compile(next_token_logits, dynamic=True, backend="inductor" if compile is True else compile)
    was_training = model.training
    model.eval()
    B, T = input_ids.shape
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    pad = eos[0] if eos else (model.config.pad_token_id or 0)
    cache = StaticCache(model, B, T + max_new_tokens, attention_mask)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0) if attention_mask is not None else None
    logits = model(input_ids, positions, cache=cache)[:, -1]
    new = torch.empty(B, 0, dtype=input_ids.dtype, device=input_ids.device)
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        token = sample_next(logits, temperature, top_p, generator).masked_fill(done, pad)
        new = torch.cat((new, token[:, None]), dim=1)
        if eos:
            done |= torch.isin(token, torch.tensor(eos, device=token.device))
        if stop:
            done |= _ends_with(new, stop)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        logits = decode(model, token[:, None], cache)
    model.train(was_training)
    return torch.cat((input_ids, new), dim=1)
