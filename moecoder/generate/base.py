"""The Backend interface every generation backend implements, and `make_backend` that picks one by spec."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

from moecoder.errors import UserError
from moecoder.generate.params import SamplingParams

# Called with (prompt index, its n completions) as soon as a prompt is done: progress bars and resumable runs.
ResultCallback = Callable[[int, list[str]], None]


class Backend(ABC):
    """A model that completes prompts and answers conversations: n completions per input, in input order."""

    spec: str

    @abstractmethod
    def complete(self, prompts: list[str], params: SamplingParams,
                 on_result: ResultCallback | None = None) -> list[list[str]]:
        """Completion mode: the raw prompts continued; stop strings in params.stop are cut off here too."""

    @abstractmethod
    def chat(self, messages_list: list[list[dict]], params: SamplingParams,
             on_result: ResultCallback | None = None) -> list[list[str]]:
        """Chat mode: each conversation answered under the model's chat template."""

    @abstractmethod
    def infill(self, pairs: list[tuple[str, str]], params: SamplingParams,
               on_result: ResultCallback | None = None) -> list[list[str]]:
        """Fill-in-the-middle: the text between each (prefix, suffix) pair (DeepSeek-Coder's PSM prompt for
        local models, prompt + suffix for OpenAI servers). Raises UserError for a model without FIM tokens."""

    @abstractmethod
    def describe(self) -> dict:
        """What a run must record to be reproduced: spec, revision or weights hash, chat template."""

    def close(self) -> None:
        """Release what the backend holds (connections, memory)."""


def make_backend(spec: str, base_url: str | None = None, **opts) -> Backend:
    """The backend for "native:PATH", "hf:NAME_OR_PATH" or "openai:MODEL" (with base_url)."""
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise UserError(f"model spec {spec!r} must be native:PATH, hf:NAME_OR_PATH or openai:MODEL")
    if kind != "openai" and base_url is not None:
        raise UserError(f"--base-url applies to openai: models only, not {spec!r}")
    if kind == "native":
        from moecoder.generate.native import NativeBackend

        return NativeBackend(target, **opts)
    if kind == "hf":
        from moecoder.generate.hf import HFBackend

        return HFBackend(target, **opts)
    if kind == "openai":
        from moecoder.generate.remote import OpenAIBackend

        return OpenAIBackend(target, base_url=base_url, **opts)
    raise UserError(f"unknown backend {kind!r} in model spec {spec!r}: use native:, hf: or openai:")
