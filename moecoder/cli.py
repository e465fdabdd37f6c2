"""The `moecoder` command line.

Each subpackage owns its commands in `moecoder/<pkg>/commands.py`, exposing
`register(app)`. Command bodies import their heavy dependencies lazily, so
`moecoder evaluate` never imports torch.
"""

import importlib

import typer

app = typer.Typer(
    help="Build, train, instruction-tune, serve and measure DeepSeek-Coder-style code models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_PACKAGES = ("bench", "model", "train", "generate", "serve", "report", "pipeline")


def _register_all() -> None:
    for package in COMMAND_PACKAGES:
        try:
            module = importlib.import_module(f"moecoder.{package}.commands")
        except ModuleNotFoundError as exc:
            if exc.name != f"moecoder.{package}.commands":
                raise
            continue
        module.register(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
