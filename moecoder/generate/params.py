"""Sampling parameters, recorded with every run so that a score can be reproduced."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from moecoder.errors import UserError


@dataclass(frozen=True)
class SamplingParams:
    """How completions are drawn: n per prompt, temperature, nucleus top_p, length, seed and stop strings.

    temperature == 0 means greedy decoding (then every one of the n samples is the same completion).
    `stop` strings end a completion; they are cut off client-side too, since not every server honours them.
    `no_repeat_ngram` > 0 forbids a token that would repeat an n-gram of the generated text (the prompt is not
    counted), as transformers' no_repeat_ngram_size does over the whole sequence: greedy decoding of a weak
    model otherwise loops on one token ("#  #  #", backtick runs). 0 (DeepSeek's protocol): plain decoding.
    `heal` (completion mode): token healing of the verbatim prompt (moecoder.text.TokenHealer): its last token
    is taken back and the first generated token must start with that token's text; the returned text is still
    the continuation of the prompt as given. native: and hf: models only.
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)
    no_repeat_ngram: int = 0
    heal: bool = False

    def __post_init__(self):
        # Accept any sequence (a list from JSON, a tuple from code) and store a tuple: the params stay hashable.
        object.__setattr__(self, "stop", tuple(self.stop or ()))
        if self.n < 1:
            raise UserError(f"n must be at least 1, got {self.n}")
        if not 0.0 <= self.temperature <= 2.0:
            raise UserError(f"temperature must be within [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"top_p must be within (0, 1], got {self.top_p}")
        if self.no_repeat_ngram < 0 or self.no_repeat_ngram == 1:
            raise UserError(f"no_repeat_ngram must be 0 (off) or at least 2, got {self.no_repeat_ngram}")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def describe(self) -> dict:
        """The parameters as a JSON-ready dict (stop as a list)."""
        return {**asdict(self), "stop": list(self.stop)}
