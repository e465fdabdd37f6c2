"""`moecoder serve`: an OpenAI-compatible server for a native: or hf: model."""

from __future__ import annotations

from pathlib import Path

import typer

from moecoder.errors import UserError, exit_on_user_error


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        model: str = typer.Option(..., "--model", help="native:PATH or hf:NAME_OR_PATH"),
        host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)"),
        port: int = typer.Option(8000, help="TCP port"),
        served_model_name: str = typer.Option(None, help="model id clients send (default: the directory name)"),
        max_batch: int = typer.Option(16, help="most rows generated together in one batched forward pass"),
        batch_window_ms: float = typer.Option(
            20.0, help="a batch starts once no request has joined it for this long (at most 10 windows)"),
        max_tokens: int = typer.Option(512, help="chat max_tokens when a request gives none"),
        dtype: str = typer.Option(None, help="float32 | bfloat16 | float16 (default: the checkpoint's)"),
        device: str = typer.Option(None, help="cpu | cuda (default: cuda when available)"),
        threads: int = typer.Option(None, help="torch intra-op CPU threads (default: torch's choice)"),
    ):
        """Serve /v1/models, /v1/completions and /v1/chat/completions (with streaming) over HTTP."""
        with exit_on_user_error():
            import uvicorn

            from moecoder.generate import make_backend
            from moecoder.serve.app import Server

            if threads:
                import torch

                torch.set_num_threads(threads)
            if model.startswith("openai:"):
                raise UserError("moecoder serve takes native:PATH or hf:NAME_OR_PATH, not an openai: model")
            opts = {"batch_size": max_batch, "dtype": dtype}
            if device:
                opts["device"] = device
            backend = make_backend(model, **opts)
            name = served_model_name or Path(model.partition(":")[2].rstrip("/")).name
            server = Server(backend, name, max_batch=max_batch, window_ms=batch_window_ms,
                            default_max_tokens=max_tokens)
            print(f"serving {model} as `{name}` on http://{host}:{port}/v1", flush=True)
            uvicorn.run(server.app(), host=host, port=port, log_level="warning")
