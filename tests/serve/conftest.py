"""A real `moecoder serve` process on loopback, serving the tiny checkpoint of tests/generate."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))
from tiny_model import moecoder_serve, tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="session")
def server(tiny_model):
    """Base URL (…/v1) of `moecoder serve --model native:<tiny>`, served as `tiny`."""
    with moecoder_serve(tiny_model, "--served-model-name", "tiny") as url:
        yield url
