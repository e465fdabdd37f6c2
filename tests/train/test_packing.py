import numpy as np
import pytest

from moecoder.train.packing import IGNORE_INDEX, BatchStream, PackedDataset, PackedExamples, write_shards

DOCS = [list(range(100, 100 + n)) for n in (5, 9, 3, 14, 7, 6, 11)]  # distinct token values per position


@pytest.fixture
def shards(tmp_path):
    manifest = write_shards(DOCS, tmp_path, vocab_size=1000, shard_tokens=20)
    return tmp_path, manifest


def test_shards_hold_every_document_once(shards):
    path, manifest = shards
    assert manifest["tokens"] == sum(map(len, DOCS)) and len(manifest["shards"]) > 1
    tokens = np.concatenate([np.fromfile(path / f"{s['name']}.bin", dtype=manifest["dtype"]) for s in manifest["shards"]])
    assert tokens.tolist() == [t for doc in DOCS for t in doc]


def test_windows_keep_documents_apart(shards):
    path, manifest = shards
    data = PackedDataset(path, seq_len=6)
    assert isinstance(data.tokens[0], np.memmap)
    for index in range(len(data)):
        row = data[index]
        ids, labels, pos, doc = row["input_ids"], row["labels"], row["position_ids"], row["document_ids"]
        assert doc[0] == 0 and np.all(np.diff(doc) >= 0)
        for t in range(6):
            same = t + 1 < 6 and doc[t + 1] == doc[t]
            # DOCS tokens count up by one inside a document: a kept label is always the next value
            if labels[t] != IGNORE_INDEX:
                assert labels[t] == ids[t] + 1
            if same:
                assert labels[t] == ids[t + 1]
            if t and doc[t] != doc[t - 1]:
                assert pos[t] == 0 and labels[t - 1] == IGNORE_INDEX
            elif t:
                assert pos[t] == pos[t - 1] + 1
        assert pos[0] == 0


def test_batch_stream_is_deterministic_resumable_and_splits_across_ranks(shards):
    path, _ = shards
    data = PackedDataset(path, seq_len=4)
    full = BatchStream(data, batch_size=4, seed=7)
    batches = [full.next_batch() for _ in range(6)]  # more than an epoch: crosses into a new permutation
    halves = [BatchStream(data, batch_size=4, seed=7, rank=r, world_size=2) for r in range(2)]
    for batch in batches[:3]:
        parts = [h.next_batch() for h in halves]
        assert np.array_equal(np.concatenate([p["input_ids"] for p in parts]), batch["input_ids"])
    resumed = BatchStream(data, batch_size=4, seed=7)
    resumed.load_state_dict({"position": 12})
    assert np.array_equal(resumed.next_batch()["input_ids"], batches[3]["input_ids"])


def test_packed_examples_only_train_on_masked_tokens():
    examples = [([1, 2, 3, 4, 5], [False, False, True, True, True]), ([6, 7, 8], [False, True, True]),
                ([9, 10, 11, 12, 13, 14, 15], [False] * 7)]
    rows = PackedExamples(examples, seq_len=8, pad_id=0)
    assert len(rows) == 1  # the third example has no target and is dropped
    row = rows[0]
    assert row["input_ids"].tolist() == [1, 2, 3, 4, 6, 7, 0, 0]
    assert row["labels"].tolist() == [IGNORE_INDEX, 3, 4, 5, 7, 8, IGNORE_INDEX, IGNORE_INDEX]
    assert row["position_ids"].tolist() == [0, 1, 2, 3, 0, 1, 0, 0]
    assert row["document_ids"].tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
