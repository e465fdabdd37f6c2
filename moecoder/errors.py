"""User-facing errors: one clear line, a non-zero exit, no traceback."""

import sys
from contextlib import contextmanager

import typer


class UserError(Exception):
    """Bad input from the user (file, flag, data). The message is printed as one line."""


@contextmanager
def exit_on_user_error():
    """Turn a UserError raised inside a command into `error: <message>` and exit code 2."""
    try:
        yield
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2)
