import random

import pytest

from moecoder.text import FIM_BEGIN, FIM_END, FIM_HOLE, train_tokenizer
from moecoder.train.corpus import collect_files
from moecoder.train.fim import FimEncoder, FimSplit, document_from_fim, fim_text, random_split


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tiny_source):
    docs = collect_files(tiny_source)
    return docs, train_tokenizer((d.text for d in docs), vocab_size=500)


def test_psm_and_spm_layouts():
    split = FimSplit("def f(x):\n", "    y = x\n", "    return y\n")
    assert fim_text(split) == f"{FIM_BEGIN}def f(x):\n{FIM_HOLE}    return y\n{FIM_END}    y = x\n"
    assert fim_text(split, spm=True) == f"{FIM_BEGIN}{FIM_HOLE}    return y\n{FIM_END}def f(x):\n    y = x\n"


def test_random_split_covers_the_document():
    rng = random.Random(1)
    for _ in range(100):
        split = random_split("abcdefghij", rng)
        assert split.prefix + split.middle + split.suffix == "abcdefghij"


@pytest.mark.parametrize("spm_rate", [0.0, 1.0, 0.5])
def test_fim_examples_decode_back_to_the_original(corpus_and_tokenizer, spm_rate):
    docs, tok = corpus_and_tokenizer
    encoder = FimEncoder(tok, rate=1.0, spm_rate=spm_rate, seed=3)
    for doc in docs:
        [ids] = encoder.encode(doc.text)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and ids[1] == tok.fim_begin_id
        text = tok.decode(ids[1:-1])
        assert text.count(FIM_HOLE) == text.count(FIM_END) == 1
        assert document_from_fim(text) == doc.text
        if spm_rate == 1.0:  # SPM: the hole token follows the begin token directly
            assert ids[2] == tok.fim_hole_id


def test_fim_rate_is_per_document(corpus_and_tokenizer):
    docs, tok = corpus_and_tokenizer
    texts = [d.text for d in docs] * 20
    never = FimEncoder(tok, rate=0.0)
    assert all(never.encode(t) == [[tok.bos_id, *tok.encode(t), tok.eos_id]] for t in texts[:5])
    half = FimEncoder(tok, rate=0.5, seed=0)
    transformed = sum(half.encode(t)[0][1] == tok.fim_begin_id for t in texts)
    assert 0.35 < transformed / len(texts) < 0.65


def test_long_documents_become_fim_examples_of_whole_lines_that_fit(corpus_and_tokenizer):
    from moecoder.train.fim import pieces

    docs, tok = corpus_and_tokenizer
    text = max((d.text for d in docs), key=len)
    cut = pieces(text, 1200)
    assert "".join(cut) == text and len(cut) > 2
    assert all(len(p) <= 1200 or p.count("\n") <= 1 for p in cut) and all(p.endswith("\n") for p in cut[:-1])
    examples = FimEncoder(tok, rate=1.0, seed=1, max_chars=1200).encode(text)
    assert len(examples) == len(cut)
    assert "".join(document_from_fim(tok.decode(ids[1:-1])) for ids in examples) == text


def test_line_level_splits_cut_at_line_starts():
    import random

    text = "def f(x):\n    y = x + 1\n    return y\n"
    rng = random.Random(0)
    for _ in range(200):
        split = random_split(text, rng, unit="line")
        assert split.prefix + split.middle + split.suffix == text
        assert split.prefix == "" or split.prefix.endswith("\n")
        assert split.middle == "" or split.middle.endswith("\n")


def test_fim_examples_are_placed_inside_one_training_window():
    from moecoder.train.fim import within_windows

    seq_len, fim = 16, lambda ids: ids[0] == -1
    plain = [list(range(100 * d, 100 * d + n)) for d, n in enumerate([23, 5, 40, 9, 31])]
    pieces_ = [[-1] + [-2] * n for n in (7, 12, 15, 3)]
    stream = [plain[0], pieces_[0], pieces_[1], plain[1], plain[2], pieces_[2], plain[3], pieces_[3], plain[4]]
    out = list(within_windows(stream, seq_len, fim))
    starts, offset = [], 0
    for ids in out:
        starts.append(offset)
        offset += len(ids)
    placed = [(s, ids) for s, ids in zip(starts, out) if fim(ids)]
    assert sorted(ids for _, ids in placed) == sorted(pieces_)
    assert all(s // seq_len == (s + len(ids) - 1) // seq_len for s, ids in placed)
    # every other token kept, in order
    assert [t for ids in out if not fim(ids) for t in ids] == [t for ids in plain for t in ids]
    # nothing to fill the window with: passed through
    assert list(within_windows([[-1] * 10, [-1] * 10], seq_len, fim)) == [[-1] * 10, [-1] * 10]
