"""Packing documents into fixed-length training sequences.

Pre-training tokens live in memory-mapped shards (`shard_XXXXX.bin` + document start offsets), so a
corpus larger than memory streams. Sequence j of a shard is the window tokens[jL : jL+L+1]; each
token carries the index of its document inside the window, positions restart at every document,
and the label that would cross from one document into the next is masked (-100).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from moecoder.files import atomic_write

IGNORE_INDEX = -100
MANIFEST = "manifest.json"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


class ShardWriter:
    """Appends documents (token id lists) to shards of about `shard_tokens` tokens; a document never spans shards."""

    def __init__(self, out_dir: str | os.PathLike, vocab_size: int, shard_tokens: int = 1 << 24):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.dtype, self.shard_tokens = token_dtype(vocab_size), shard_tokens
        self.vocab_size = vocab_size
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0
        self.shards: list[dict] = []

    def add(self, tokens: list[int]) -> None:
        if self.pending_tokens and self.pending_tokens + len(tokens) > self.shard_tokens:
            self._flush()
        self.pending.append(np.asarray(tokens, dtype=self.dtype))
        self.pending_tokens += len(tokens)

    def _flush(self) -> None:
        name = f"shard_{len(self.shards):05d}"
        lengths = np.array([len(doc) for doc in self.pending], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        atomic_write(self.out / f"{name}.bin", np.concatenate(self.pending).tobytes())
        np.save(self.out / f"{name}.starts.npy", starts)
        self.shards.append({"name": name, "tokens": int(lengths.sum()), "documents": len(lengths)})
        self.pending, self.pending_tokens = [], 0

    def close(self) -> dict:
        """Flush and write manifest.json (written last: its presence means the shards are complete)."""
        if self.pending:
            self._flush()
        manifest = {"dtype": self.dtype.name, "vocab_size": self.vocab_size, "shards": self.shards,
                    "tokens": sum(s["tokens"] for s in self.shards)}
        atomic_write(self.out / MANIFEST, json.dumps(manifest, indent=2).encode())
        return manifest


def write_shards(documents: Iterable[list[int]], out_dir: str | os.PathLike, vocab_size: int,
                 shard_tokens: int = 1 << 24) -> dict:
    """Write tokenized documents to memory-mapped shards; returns the manifest."""
    writer = ShardWriter(out_dir, vocab_size, shard_tokens)
    for tokens in documents:
        writer.add(tokens)
    return writer.close()


def window_example(tokens: np.ndarray, doc_of_token: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
    """Inputs/labels/positions/document ids for one window of seq_len+1 tokens with their document index."""
    inputs, targets = tokens[:seq_len], tokens[1:seq_len + 1]
    doc = doc_of_token - doc_of_token[0]
    same_doc = doc[1:seq_len + 1] == doc[:seq_len]
    document_ids = doc[:seq_len]
    first = np.searchsorted(document_ids, document_ids, side="left")  # document_ids is non-decreasing
    return {
        "input_ids": inputs.astype(np.int64),
        "labels": np.where(same_doc, targets.astype(np.int64), IGNORE_INDEX),
        "position_ids": np.arange(seq_len, dtype=np.int64) - first,
        "document_ids": document_ids.astype(np.int64),
    }


class PackedDataset:
    """Fixed-length sequences over memory-mapped shards written by `ShardWriter`."""

    def __init__(self, shard_dir: str | os.PathLike, seq_len: int):
        self.dir, self.seq_len = Path(shard_dir), seq_len
        manifest_path = self.dir / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"no {MANIFEST} in {self.dir}")
        self.manifest = json.loads(manifest_path.read_text())
        dtype = np.dtype(self.manifest["dtype"])
        self.tokens, self.starts, counts = [], [], []
        for shard in self.manifest["shards"]:
            self.tokens.append(np.memmap(self.dir / f"{shard['name']}.bin", dtype=dtype, mode="r"))
            self.starts.append(np.load(self.dir / f"{shard['name']}.starts.npy"))
            counts.append(max(0, (shard["tokens"] - 1) // seq_len))
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        begin = (index - int(self.offsets[shard])) * self.seq_len
        window = np.asarray(self.tokens[shard][begin:begin + self.seq_len + 1])
        doc = np.searchsorted(self.starts[shard], np.arange(begin, begin + self.seq_len + 1), side="right") - 1
        return window_example(window, doc, self.seq_len)


class PackedExamples:
    """In-memory rows of whole examples (e.g. SFT), greedily packed; pad positions carry no loss.

    Each example is (token ids, target mask): label t is token t+1 when mask[t+1] is true. Examples
    longer than seq_len+1 are truncated; examples left without a target are dropped.
    """

    def __init__(self, examples: Iterable[tuple[list[int], list[bool]]], seq_len: int, pad_id: int):
        self.seq_len = seq_len
        rows: list[list[tuple[list[int], list[bool]]]] = [[]]
        used = 0
        for ids, mask in examples:
            ids, mask = ids[:seq_len + 1], mask[:seq_len + 1]
            if not any(mask[1:]):  # nothing left to learn from (e.g. the response was truncated away)
                continue
            if used + len(ids) - 1 > seq_len:
                rows.append([])
                used = 0
            rows[-1].append((ids, mask))
            used += len(ids) - 1
        self.rows = [self._row(row, seq_len, pad_id) for row in rows if row]

    @staticmethod
    def _row(examples, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
        row = {"input_ids": np.full(seq_len, pad_id, np.int64), "labels": np.full(seq_len, IGNORE_INDEX, np.int64),
               "position_ids": np.zeros(seq_len, np.int64), "document_ids": np.full(seq_len, len(examples), np.int64)}
        at = 0
        for doc, (ids, mask) in enumerate(examples):
            n = len(ids) - 1
            ids_arr, mask_arr = np.asarray(ids, np.int64), np.asarray(mask, bool)
            row["input_ids"][at:at + n] = ids_arr[:-1]
            row["labels"][at:at + n] = np.where(mask_arr[1:], ids_arr[1:], IGNORE_INDEX)
            row["position_ids"][at:at + n] = np.arange(n)
            row["document_ids"][at:at + n] = doc
            at += n
        return row

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.rows[index]


class BatchStream:
    """Deterministic, resumable batches: a seeded permutation per epoch, `position` sequences consumed.

    Every rank walks the same global order and takes its own contiguous slice of each global batch,
    so N processes with batch/N each see exactly the batch one process would.
    """

    def __init__(self, dataset, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if len(dataset) == 0:
            raise ValueError("dataset has no complete sequence: use more data or a shorter seq_len")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by {world_size} processes")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.position = 0
        self._epoch, self._order = -1, None

    def _index(self, global_position: int) -> int:
        epoch, offset = divmod(global_position, len(self.dataset))
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng(self.seed + epoch).permutation(len(self.dataset))
        return int(self._order[offset])

    def next_batch(self) -> dict[str, np.ndarray]:
        """This rank's share of the next global batch, stacked: each value is [batch/world, seq_len]."""
        local = self.batch_size // self.world_size
        first = self.position + self.rank * local
        rows = [self.dataset[self._index(first + i)] for i in range(local)]
        self.position += self.batch_size
        return {key: np.stack([row[key] for row in rows]) for key in rows[0]}

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
