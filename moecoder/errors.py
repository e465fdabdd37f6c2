"""User-facing errors: one clear line, a non-zero exit, no traceback."""

import sys
from contextlib import contextmanager

import typer


class UserError(Exception):
    """Bad input from the user (file, flag, data). The message is printed as one line."""


def escape_controls(text: str) -> str:
    """`text` with each character that is not printable written as its Python escape: C0 and C1 controls
    (ESC as \\x1b, CR as \\r, LF as \\n, TAB as \\t), DEL, Unicode format characters such as the bidi
    override U+202E (\\u202e), spaces other than ' ' (\\xa0), line separators and lone surrogates. A message
    quotes text the user does not control (a file name, another program's exception); escaped, that text can
    neither drive the terminal nor break the line. Printable text, non-ASCII included (é, 中), is kept as is;
    a backslash already in the text is kept too.
    """
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


@contextmanager
def exit_on_user_error():
    """Turn a UserError raised inside a command into `error: <message>` (one line, controls escaped) on
    stderr and exit code 2."""
    try:
        yield
    except UserError as exc:
        print(f"error: {escape_controls(str(exc))}", file=sys.stderr)
        raise typer.Exit(2)
