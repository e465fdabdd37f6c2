"""A byte-level BPE trained once on a few standard-library modules, saved as a model directory would hold it."""

import sysconfig
from pathlib import Path

import pytest

from moecoder.text import train_tokenizer

MODULES = ("textwrap.py", "shlex.py", "bisect.py", "heapq.py", "fnmatch.py", "glob.py", "string.py", "posixpath.py")


@pytest.fixture(scope="session")
def code_texts() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [(stdlib / name).read_text() for name in MODULES]


@pytest.fixture(scope="session")
def tokenizer_dir(code_texts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(code_texts, vocab_size=600, out_dir=out)
    return out
