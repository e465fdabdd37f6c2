"""Generation backends: our model (native:), transformers (hf:) and any OpenAI-compatible server (openai:).

Heavy modules (torch, transformers, httpx) are imported by the backend that needs them, not here.
"""

from moecoder.generate.base import Backend, make_backend
from moecoder.generate.params import SamplingParams
from moecoder.generate.extract import extract_code
from moecoder.generate.prompts import COMPLETION_STOP

__all__ = ["Backend", "make_backend", "SamplingParams", "COMPLETION_STOP", "extract_code"]
