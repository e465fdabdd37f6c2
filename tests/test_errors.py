"""A user error is one line on stderr with exit code 2, whatever text its message quotes."""

import pytest
import typer
from typer.testing import CliRunner
from untrusted_text import HOSTILE

from moecoder.cli import app
from moecoder.errors import UserError, exit_on_user_error


def printed(message: str, capsys) -> str:
    with pytest.raises(typer.Exit) as exit_info:
        with exit_on_user_error():
            raise UserError(message)
    assert exit_info.value.exit_code == 2
    return capsys.readouterr().err


def test_controls_in_a_message_are_escaped_and_the_rest_is_kept(capsys):
    message = "name a\x1b[2Jb\rc\nd\te\x7f\x9b\u202eg\xa0h é 中 C:\\dir 'q' [bold]"
    assert printed(message, capsys) == ("error: name a\\x1b[2Jb\\rc\\nd\\te\\x7f\\x9b\\u202eg\\xa0h é 中 C:\\dir 'q' "
                                        "[bold]\n")


@pytest.mark.parametrize("message", HOSTILE, ids=range(len(HOSTILE)))
def test_untrusted_text_prints_as_one_line_of_printable_characters(message, capsys):
    line = printed(message, capsys).removesuffix("\n")
    assert line.isprintable() and line.startswith("error: ")
    if message.isprintable():
        assert line == f"error: {message}"


def test_a_file_name_with_terminal_escapes_through_the_cli(tmp_path):
    config = tmp_path / "a\x1b[2Jb\rc.json"
    result = CliRunner().invoke(app, ["stats", "--config", str(config)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.removesuffix("\n").isprintable()
    assert "a\\x1b[2Jb\\rc.json" in result.stderr
