"""A real `moecoder serve` process on loopback, serving the tiny checkpoint of tests/generate."""

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))
from tiny_model import CHAT, moecoder_serve, tiny_checkpoint  # noqa: E402

from moecoder.text import FIM_BEGIN, FIM_END, FIM_HOLE  # noqa: E402

VARIANT_ROOM = 6  # tokens the variant's context leaves after CHAT's prompt


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="session")
def server(tiny_model):
    """Base URL (…/v1) of `moecoder serve --model native:<tiny>`, served as `tiny`."""
    with moecoder_serve(tiny_model, "--served-model-name", "tiny") as url:
        yield url


@pytest.fixture(scope="session")
def variant_model(tiny_model, tmp_path_factory):
    """The tiny checkpoint with a tokenizer that has no fill-in-the-middle tokens and a context that leaves
    VARIANT_ROOM tokens after CHAT's prompt."""
    from moecoder.generate import make_backend

    directory = tmp_path_factory.mktemp("tiny-variant")
    for file in tiny_model.iterdir():
        shutil.copy(file, directory / file.name)
    tokenizer = json.loads((directory / "tokenizer.json").read_text())
    fim = {FIM_BEGIN, FIM_HOLE, FIM_END}
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] not in fim]
    tokenizer["model"]["vocab"] = {k: v for k, v in tokenizer["model"]["vocab"].items() if k not in fim}
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    prompt = make_backend(f"native:{tiny_model}", device="cpu").prompt_ids(messages=CHAT)
    config = json.loads((directory / "config.json").read_text())
    config["max_position_embeddings"] = len(prompt) + VARIANT_ROOM
    (directory / "config.json").write_text(json.dumps(config))
    return directory
