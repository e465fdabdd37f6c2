"""The model side of continuous batching: a KV cache whose rows can join and leave between decoding steps.

Every row of the running batch writes its next key into the same cache slot (`length`); rows that joined
later have their prompt right-aligned to end at that slot, and the slots before it are masked out for
them (`valid`), as left padding is. Positions are per row, and cached keys already carry their rotary
position, so a row's attention does not depend on which slots it occupies: joining copies a prefilled
prompt's keys into place, leaving drops the row. Slots no running row uses any more (those of rows that
left) are dropped whenever the cache is rebuilt, so it never holds more than the longest running row
(at most the model's context) plus `headroom` slots.

All cache tensors keep slots in dimension -2: our GQA [B, H_kv, S, D], our MLA latent [B, S, C+R],
transformers' DynamicCache keys and values [B, H, S, D].
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager, nullcontext

import torch

from moecoder.model.attention import LayerCache
from moecoder.model.generate import StaticCache


def merge_slots(parts: list[tuple[list[torch.Tensor], torch.Tensor, int]], headroom: int):
    """Stack the rows of several caches into one, each right-aligned to end at the same slot.

    parts: (tensors [B_i, ..., S_i, D], valid [B_i, >= length_i] bool, length_i): slots < length_i are in use.
    Returns (tensors [sum B_i, ..., L + headroom, D], valid [sum B_i, L + headroom], L), where L is the
    longest span of used slots; slots from L on are valid (free for the coming tokens).
    """
    firsts = []
    for _, valid, length in parts:
        used = valid[:, :length].any(dim=0)
        firsts.append(int(used.int().argmax()) if bool(used.any()) else length)
    span = max(length - first for (_, _, length), first in zip(parts, firsts))
    rows = sum(valid.shape[0] for _, valid, _ in parts)
    template, device = parts[0][0], parts[0][1].device
    out = [t.new_zeros(rows, *t.shape[1:-2], span + headroom, t.shape[-1]) for t in template]
    valid_out = torch.ones(rows, span + headroom, dtype=torch.bool, device=device)
    row = 0
    for (tensors, valid, length), first in zip(parts, firsts):
        count, width = valid.shape[0], length - first
        for target, source in zip(out, tensors):
            target[row:row + count, ..., span - width:span, :] = source[..., first:length, :]
        valid_out[row:row + count, :span - width] = False
        valid_out[row:row + count, span - width:span] = valid[:, first:length]
        row += count
    return out, valid_out, span


class SlotCache(StaticCache):
    """Our model's StaticCache, with rows that can be selected and merged (see the module docstring)."""

    def __init__(self, layers: list[LayerCache], valid: torch.Tensor, length: int, last_position: torch.Tensor):
        self.layers, self.valid, self.length, self.last_position = layers, valid, length, last_position

    @classmethod
    def of(cls, cache: StaticCache) -> "SlotCache":
        return cls(cache.layers, cache.valid, cache.length, cache.last_position)

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        return [t for layer in self.layers for t in (layer.k, layer.v) if t is not None]

    def select(self, rows: torch.Tensor) -> "SlotCache":
        layers = [LayerCache(layer.k[rows], None if layer.v is None else layer.v[rows]) for layer in self.layers]
        return SlotCache(layers, self.valid[rows], self.length, self.last_position[rows])

    @classmethod
    def merge(cls, caches: list["SlotCache"], headroom: int) -> "SlotCache":
        tensors, valid, length = merge_slots([(c.tensors(), c.valid, c.length) for c in caches], headroom)
        per_layer = [2 if layer.v is not None else 1 for layer in caches[0].layers]
        layers, i = [], 0
        for count in per_layer:
            layers.append(LayerCache(*tensors[i:i + count]))
            i += count
        return cls(layers, valid, length, torch.cat([c.last_position for c in caches]))


@contextmanager
def last_position_logits(model):
    """Make the model's LM head see only the last position (prefill needs one row of logits, not T)."""
    handle = model.norm.register_forward_hook(lambda module, args, out: out[:, -1:])
    try:
        yield
    finally:
        handle.remove()


def left_padded(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids -> (ids [B, T], mask [B, T]) with every prompt's last token in the last column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


class NativeRunner:
    """Our Transformer (native:) behind prefill / decode / keep, on a SlotCache.

    prefill(prompts) -> (part, logits [B, T or 1, V]), in chunks of prefill_chunk positions; join(part) adds
    the part's rows to the running batch;
    decode(tokens [B]) -> logits [B, V] for the next position of every running row; keep(rows) drops the rest.
    """

    def __init__(self, model, pad_id: int, headroom: int = 256, prefill_chunk: int = 512):
        self.model, self.pad_id, self.headroom, self.prefill_chunk = model, pad_id, headroom, prefill_chunk
        self.device = model.lm_head.weight.device
        self.cache: SlotCache | None = None

    @property
    def rows(self) -> int:
        return 0 if self.cache is None else self.cache.rows

    def prefill(self, prompts: list[list[int]], all_positions: bool = False):
        ids, mask = left_padded(prompts, self.pad_id, self.device)
        cache = StaticCache(self.model, len(prompts), ids.shape[1], mask)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = []
        with nullcontext() if all_positions else last_position_logits(self.model):
            # In chunks of prefill_chunk positions: attention scores take [B, H, chunk, T], not [B, H, T, T].
            for start in range(0, ids.shape[1], self.prefill_chunk):
                end = start + self.prefill_chunk
                logits.append(self.model(ids[:, start:end], positions[:, start:end], cache=cache))
        return SlotCache.of(cache), torch.cat(logits, dim=1) if all_positions else logits[-1]

    def join(self, part: SlotCache) -> None:
        parts = [part] if self.cache is None else [self.cache, part]
        self.cache = SlotCache.merge(parts, self.headroom)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cache.length >= self.cache.valid.shape[1]:  # no free slot left: compact and grow
            self.cache = SlotCache.merge([self.cache], self.headroom)
        return self.model(tokens[:, None], cache=self.cache)[:, -1]

    def keep(self, rows: list[int]) -> None:
        self.cache = self.cache.select(torch.tensor(rows, device=self.device)) if rows else None

    @staticmethod
    def select(part: SlotCache, rows: list[int]) -> SlotCache:
        return part.select(torch.tensor(rows, device=part.valid.device))


class HFRunner:
    """The same for a transformers model (hf:), on its DynamicCache with a 2-D attention mask of `valid` slots."""

    def __init__(self, model, pad_id: int):
        self.model, self.pad_id = model, pad_id
        self.device = model.device
        self.cache = None  # (DynamicCache, valid [B, length], last_position [B])
        # transformers renamed forward's past_key_values to cache (5.x); use the name this version takes
        forward = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in forward else "past_key_values"

    @property
    def rows(self) -> int:
        return 0 if self.cache is None else self.cache[1].shape[0]

    def prefill(self, prompts: list[list[int]], all_positions: bool = False):
        from transformers import DynamicCache

        ids, mask = left_padded(prompts, self.pad_id, self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self.model(ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            logits_to_keep=0 if all_positions else 1, **{self.cache_arg: cache}).logits
        return (cache, mask.bool(), positions[:, -1]), logits

    @staticmethod
    def _tensors(cache) -> list[torch.Tensor]:
        return [t for layer in cache.layers for t in (layer.keys, layer.values)]

    def join(self, part) -> None:
        from transformers import DynamicCache

        parts = [part] if self.cache is None else [self.cache, part]
        tensors, valid, length = merge_slots([(self._tensors(c), v, v.shape[1]) for c, v, _ in parts], 0)
        cache = DynamicCache(ddp_cache_data=list(zip(tensors[::2], tensors[1::2])), config=self.model.config)
        self.cache = (cache, valid, torch.cat([p[2] for p in parts]))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        cache, valid, last = self.cache
        valid = torch.cat((valid, valid.new_ones(valid.shape[0], 1)), dim=1)
        logits = self.model(tokens[:, None], attention_mask=valid.long(), position_ids=(last + 1)[:, None],
                            use_cache=True, **{self.cache_arg: cache}).logits[:, -1]
        self.cache = (cache, valid, last + 1)
        return logits

    def keep(self, rows: list[int]) -> None:
        if not rows:
            self.cache = None
            return
        self.cache = self.select(self.cache, rows)

    @staticmethod
    def select(part, rows: list[int]):
        cache, valid, last = part
        index = torch.tensor(rows, device=valid.device)
        cache.batch_select_indices(index)
        return cache, valid[index], last[index]


def make_runner(backend, headroom: int = 256):
    """The runner for a native: or hf: backend's model."""
    from moecoder.generate.hf import HFBackend

    if isinstance(backend, HFBackend):
        return HFRunner(backend.model, backend.pad_id)
    return NativeRunner(backend.model, backend.pad_id, headroom)
