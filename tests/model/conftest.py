"""Fixtures for the model tests: one thread, and reference checkpoints saved once per session."""

import pytest
from model_layouts import build_reference


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs a tiny model."""


@pytest.fixture(scope="session")
def reference_checkpoint(tmp_path_factory):
    """layout -> (transformers model, directory it was saved to); built once per session."""
    built = {}

    def get(layout: str):
        if layout not in built:
            model = build_reference(layout)
            directory = tmp_path_factory.mktemp(layout)
            model.save_pretrained(directory)
            built[layout] = (model, directory)
        return built[layout]

    return get
