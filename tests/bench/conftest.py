"""A private MOECODER_HOME per test: no test reads or writes the user's cache."""

import pytest


@pytest.fixture(autouse=True)
def moecoder_home(tmp_path, monkeypatch):
    home = tmp_path / "moecoder-home"
    monkeypatch.setenv("MOECODER_HOME", str(home))
    return home
