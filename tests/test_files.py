"""files: written whole or not at all, with the mode a plain open() would give them."""

import os
import stat

import pytest

from moecoder.errors import UserError
from moecoder.files import atomic_write, existing_file


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_an_atomic_write_gets_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "out.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out.txt").st_mode) == mode
    assert os.listdir(tmp_path) == ["out.txt"]  # no temporary file left beside it


def test_a_directory_or_a_missing_path_is_named_as_such(tmp_path):
    with pytest.raises(UserError, match="is a directory, not a file"):
        existing_file(tmp_path, "samples file")
    with pytest.raises(UserError, match="does not exist"):
        existing_file(tmp_path / "nothing", "samples file")
