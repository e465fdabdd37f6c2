import pytest
import torch
from tiny_model import tiny_checkpoint


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A tiny model gains nothing from intra-op threads; on a busy 2-core machine they only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)
