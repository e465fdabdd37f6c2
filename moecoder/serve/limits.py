"""The bounds on one request's work and on the queue, shared by `moecoder serve`'s options and the server."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how much may wait (see `moecoder serve --help`)."""

    max_body_bytes: int = 4 * 2**20
    max_prompt_chars: int = 131072
    max_prompts: int = 32
    max_n: int = 16
    max_rows: int = 64
    max_waiting: int = 256
