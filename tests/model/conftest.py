"""Fixtures for the model tests: one thread, and reference checkpoints saved once per session."""

import pytest
import torch
from model_layouts import build_reference


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run several times faster on one thread, above all on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
