"""`moecoder train` (pre-training) and `moecoder sft` (instruction tuning)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from moecoder.errors import exit_on_user_error

# Options both commands share, listed after each command's own (each gives --out its own default).
Out = Annotated[Path, typer.Option("--out", "-o", help="Run directory: checkpoints/, train_log.jsonl, "
                                   "summary.json, the trained model in OUT/model (and train's data/).")]
Steps = Annotated[Optional[int], typer.Option(help="Optimizer steps (overrides the config; 0 = no step limit).")]
Minutes = Annotated[Optional[float], typer.Option(help="Time budget in minutes (overrides the config).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")]
Overrides = Annotated[list[str], typer.Option("--set", help="TrainConfig override key=value, e.g. lr=3e-4 or "
                                              "model.hidden_size=128 (repeatable).")]


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML or JSON training config "
                                              "(keys of moecoder.train.TrainConfig; its model table holds ModelConfig fields)."),
        out: Out = Path("runs/pretrain"),
        steps: Steps = None,
        minutes: Minutes = None,
        resume: Resume = False,
        overrides: Overrides = [],
    ):
        """Pre-train a model (next-token + fill-in-the-middle) on a deduplicated, decontaminated code corpus.

        Without a config: the nano MoE on this Python's standard library. Under torchrun the same command
        trains data-parallel (DDP, or FSDP2 with fsdp=true).
        """
        with exit_on_user_error():
            from moecoder.train.config import load_config
            from moecoder.train.pretrain import pretrain

            cfg = load_config(config, overrides, steps=steps, minutes=minutes)
            pretrain(cfg, out, resume=resume)

    @app.command()
    def sft(
        model: Path = typer.Option(..., "--model", "-m", help="Model directory (config.json, safetensors, "
                                   "tokenizer.json): ours or a downloaded DeepSeek-Coder checkpoint."),
        data: Optional[Path] = typer.Option(None, "--data", "-d", help="JSONL of {instruction, output} or "
                                            "{messages}; default: the built-in set derived from the stdlib."),
        mbpp: Optional[Path] = typer.Option(None, help="Local mbpp.jsonl for decontaminating the built-in set."),
        out: Out = Path("runs/sft"),
        steps: Steps = None,
        minutes: Minutes = None,
        resume: Resume = False,
        overrides: Overrides = [],
    ):
        """Instruction-tune with the DeepSeek-Coder instruct template; loss on response tokens only (default 200 steps)."""
        with exit_on_user_error():
            from moecoder.train.config import parse_overrides
            from moecoder.train.sft import sft as run_sft

            run_sft(model, data, out, minutes=minutes, steps=steps, resume=resume,
                    mbpp_path=str(mbpp) if mbpp else None, **parse_overrides(overrides))
