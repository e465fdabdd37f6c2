"""Fill-in-the-middle: split a document at two random points and reorder it (PSM or SPM).

PSM: <｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>{middle}
SPM: <｜fim▁begin｜><｜fim▁hole｜>{suffix}<｜fim▁end｜>{prefix}{middle}
(the token roles as in PSM, so one tokenizer serves both). The split is on characters (the FIM paper's
character-level spans) or on line boundaries (the middle is whole lines, as a hole in an editor usually is);
each piece is tokenized on its own, so the example decodes back to exactly the original text.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

from moecoder.text import FIM_BEGIN, FIM_END, FIM_HOLE, CoderTokenizer


@dataclass(frozen=True)
class FimSplit:
    """A document cut into prefix, middle and suffix."""

    prefix: str
    middle: str
    suffix: str


FIM_UNITS = ("char", "line")


def random_split(text: str, rng: random.Random, unit: str = "char") -> FimSplit:
    """Two uniform cut points in the text (the middle may be empty, as in the FIM paper): any character
    position, or (unit="line") any line start or the end of the text, so that the middle is whole lines.

    At the character level most middles begin inside a word, and a model trained for minutes learns little
    more than which letter is likeliest there; whole-line middles begin with indentation and end with a
    newline, which is the shape of an editor's hole and of single-line infilling."""
    if unit == "line":
        starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n" and i + 1 < len(text)] + [len(text)]
        low, high = sorted(rng.choice(starts) for _ in range(2))
    else:
        low, high = sorted(rng.randint(0, len(text)) for _ in range(2))
    return FimSplit(text[:low], text[low:high], text[high:])


def fim_text(split: FimSplit, spm: bool = False) -> str:
    """The FIM example as text (special tokens written out)."""
    if spm:
        return f"{FIM_BEGIN}{FIM_HOLE}{split.suffix}{FIM_END}{split.prefix}{split.middle}"
    return f"{FIM_BEGIN}{split.prefix}{FIM_HOLE}{split.suffix}{FIM_END}{split.middle}"


def document_from_fim(text: str) -> str:
    """Invert `fim_text`: rebuild the original document from a PSM or SPM example."""
    head, rest = text.split(FIM_HOLE, 1)
    suffix, tail = rest.split(FIM_END, 1)
    prefix = head.removeprefix(FIM_BEGIN)
    if prefix:  # PSM: the prefix sits between FIM_BEGIN and FIM_HOLE and the tail is the middle.
        return prefix + tail + suffix
    return tail + suffix  # SPM (or PSM with an empty prefix, where both readings agree): tail = prefix+middle.


def pieces(text: str, max_chars: int) -> list[str]:
    """`text` cut into runs of whole lines of at most max_chars characters (a longer line is a piece alone);
    the pieces concatenate to the text."""
    out, current = [], ""
    for line in text.splitlines(keepends=True):
        if current and len(current) + len(line) > max_chars:
            out.append(current)
            current = ""
        current += line
    return out + [current] if current else out


class FimEncoder:
    """Turns documents into token ids, applying FIM to a fraction `rate` of them (`spm_rate` of those in SPM).

    `unit`: where the cut points may fall, "char" or "line" (see random_split).
    `max_chars`: a document chosen for FIM is first cut into pieces of whole lines of at most this many
    characters, and each piece becomes its own FIM example. With a training context much shorter than a file
    (256-512 tokens against files of thousands), a FIM example made of a whole file is cut into many windows and
    the model almost never sees prefix, suffix and middle together; pieces that fit in one window it does.
    None: whole documents (DeepSeek-Coder's way, with a 16K context)."""

    def __init__(self, tokenizer: CoderTokenizer, rate: float = 0.5, spm_rate: float = 0.0, seed: int = 0,
                 max_chars: int | None = None, unit: str = "char"):
        if rate > 0 and not tokenizer.has_fim:
            raise ValueError("FIM needs a tokenizer with the three FIM special tokens")
        if unit not in FIM_UNITS:
            raise ValueError(f"FIM unit {unit!r}: expected one of {', '.join(FIM_UNITS)}")
        self.tokenizer, self.rate, self.spm_rate, self.max_chars, self.unit = tokenizer, rate, spm_rate, max_chars, unit
        self.rng = random.Random(seed)

    def encode(self, text: str) -> list[list[int]]:
        """The training examples of one document: [BOS + document + EOS], or BOS + FIM example + EOS per piece."""
        tok = self.tokenizer
        if self.rng.random() >= self.rate:
            return [[tok.bos_id, *tok.encode(text), tok.eos_id]]
        return [self._fim(piece) for piece in (pieces(text, self.max_chars) if self.max_chars else [text])]

    def _fim(self, text: str) -> list[int]:
        tok = self.tokenizer
        split = random_split(text, self.rng, self.unit)
        prefix, middle, suffix = tok.encode_batch([split.prefix, split.middle, split.suffix])
        if self.rng.random() < self.spm_rate:
            body = [tok.fim_begin_id, tok.fim_hole_id, *suffix, tok.fim_end_id, *prefix, *middle]
        else:
            body = [tok.fim_begin_id, *prefix, tok.fim_hole_id, *suffix, tok.fim_end_id, *middle]
        return [tok.bos_id, *body, tok.eos_id]


def within_windows(examples: Iterable[list[int]], seq_len: int, whole) -> Iterator[list[int]]:
    """Reorder and cut a stream of token lists so that every example `whole(ids)` is true of (FIM examples)
    lies inside one training window, without padding.

    Training sequences are the fixed windows tokens[j*seq_len : (j+1)*seq_len + 1] of the packed stream (see
    moecoder.train.packing), so an example of n tokens starting at a random offset is cut in two with
    probability about n / seq_len, and a FIM example cut in two is prefix and suffix without their middle, or a
    middle without its context. Here such an example waits until the current window is filled up to its end
    with the head of the next other (left-to-right) document; the rest of that document starts the next window,
    where it would have been cut anyway. Examples longer than a window, and any still waiting when no other
    document follows, are passed through as they are. Every token is kept, in documents of their own."""
    used, waiting = 0, deque()  # tokens in the current window; FIM examples waiting for a window with room

    def emit(ids):
        nonlocal used
        used = (used + len(ids)) % seq_len
        return ids

    for ids in examples:
        if whole(ids) and len(ids) <= seq_len:
            if waiting or len(ids) > seq_len - used:
                waiting.append(ids)
            else:
                yield emit(ids)
            continue
        while ids and waiting:
            if len(waiting[0]) <= seq_len - used:
                yield emit(waiting.popleft())
            else:
                head, ids = ids[:seq_len - used], ids[seq_len - used:]
                yield emit(head)
        if ids:
            yield emit(ids)
    yield from waiting
