"""Fill-in-the-middle: split a document at two random points and reorder it (PSM or SPM).

PSM: <｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>{middle}
SPM: <｜fim▁begin｜><｜fim▁hole｜>{suffix}<｜fim▁end｜>{prefix}{middle}
(the token roles as in PSM, so one tokenizer serves both). The split is on characters and each
piece is tokenized on its own, so the example decodes back to exactly the original text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from moecoder.text import FIM_BEGIN, FIM_END, FIM_HOLE, CoderTokenizer


@dataclass(frozen=True)
class FimSplit:
    """A document cut into prefix, middle and suffix."""

    prefix: str
    middle: str
    suffix: str


def random_split(text: str, rng: random.Random) -> FimSplit:
    """Two uniform cut points in the text (the middle may be empty, as in the FIM paper)."""
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


class FimEncoder:
    """Turns documents into token ids, applying FIM to a fraction `rate` of them (`spm_rate` of those in SPM)."""

    def __init__(self, tokenizer: CoderTokenizer, rate: float = 0.5, spm_rate: float = 0.0, seed: int = 0):
        if rate > 0 and not tokenizer.has_fim:
            raise ValueError("FIM needs a tokenizer with the three FIM special tokens")
        self.tokenizer, self.rate, self.spm_rate = tokenizer, rate, spm_rate
        self.rng = random.Random(seed)

    def encode(self, text: str) -> list[int]:
        """BOS + (FIM-transformed or plain) document + EOS."""
        tok = self.tokenizer
        if self.rng.random() >= self.rate:
            return [tok.bos_id, *tok.encode(text), tok.eos_id]
        split = random_split(text, self.rng)
        prefix, middle, suffix = tok.encode_batch([split.prefix, split.middle, split.suffix])
        if self.rng.random() < self.spm_rate:
            body = [tok.fim_begin_id, tok.fim_hole_id, *suffix, tok.fim_end_id, *prefix, *middle]
        else:
            body = [tok.fim_begin_id, *prefix, tok.fim_hole_id, *suffix, tok.fim_end_id, *middle]
        return [tok.bos_id, *body, tok.eos_id]
