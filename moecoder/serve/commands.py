"""`moecoder serve`: an OpenAI-compatible server for a native: or hf: model."""

from __future__ import annotations

from pathlib import Path

import typer

from moecoder.errors import UserError, exit_on_user_error


def register(app: typer.Typer) -> None:
    from moecoder.serve.limits import Limits

    defaults = Limits()

    @app.command()
    def serve(
        model: str = typer.Option(..., "--model", help="native:PATH or hf:NAME_OR_PATH"),
        host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)"),
        port: int = typer.Option(8000, help="TCP port"),
        served_model_name: str = typer.Option(None, help="model id clients send (default: the directory name)"),
        max_batch: int = typer.Option(16, help="most rows (completions) decoded together in one forward pass"),
        batching: str = typer.Option(
            "continuous", help="continuous: requests join the running batch between decoding steps; "
                               "static: a batch runs until its last row ends before the next one starts"),
        batch_window_ms: float = typer.Option(
            20.0, help="static batching: how long a new batch waits for more requests to arrive"),
        max_waiting: int = typer.Option(
            defaults.max_waiting, help="most rows waiting to join the batch; beyond, requests get 429 with "
                                       "Retry-After"),
        max_prompt_chars: int = typer.Option(
            defaults.max_prompt_chars, help="most characters in one prompt (or a chat's messages together), "
                                            "checked before tokenising"),
        max_prompts: int = typer.Option(defaults.max_prompts, help="most prompts in one /v1/completions request"),
        max_n: int = typer.Option(defaults.max_n, help="most choices (n) per prompt"),
        max_rows: int = typer.Option(defaults.max_rows, help="most rows (prompts x n) in one request"),
        max_body_bytes: int = typer.Option(defaults.max_body_bytes, help="largest request body (beyond: 413)"),
        max_connections: int = typer.Option(
            512, help="most open connections (beyond: 503), which bounds the memory requests in flight take"),
        dtype: str = typer.Option(None, help="float32 | bfloat16 | float16 (default: the checkpoint's)"),
        device: str = typer.Option(None, help="cpu | cuda (default: cuda when available)"),
        threads: int = typer.Option(None, help="torch intra-op CPU threads (default: torch's choice)"),
    ):
        """Serve /v1/models, /v1/completions and /v1/chat/completions (with streaming) over HTTP."""
        with exit_on_user_error():
            import uvicorn

            from moecoder.generate import make_backend
            from moecoder.serve.app import Server

            if batching not in ("continuous", "static"):
                raise UserError(f"--batching is continuous or static, not {batching!r}")
            for name, value in (("--max-batch", max_batch), ("--max-waiting", max_waiting),
                                ("--max-prompt-chars", max_prompt_chars), ("--max-prompts", max_prompts),
                                ("--max-n", max_n), ("--max-rows", max_rows), ("--max-body-bytes", max_body_bytes),
                                ("--max-connections", max_connections)):
                if value < 1:
                    raise UserError(f"{name} must be at least 1, got {value}")
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
            limits = Limits(max_body_bytes=max_body_bytes, max_prompt_chars=max_prompt_chars,
                            max_prompts=max_prompts, max_n=max_n, max_rows=max_rows, max_waiting=max_waiting)
            server = Server(backend, name, max_batch=max_batch, limits=limits, joining=batching == "continuous",
                            window_ms=batch_window_ms)
            print(f"serving {model} as `{name}` on http://{host}:{port}/v1 ({batching} batching)", flush=True)
            uvicorn.run(server.app(), host=host, port=port, log_level="warning", limit_concurrency=max_connections)
