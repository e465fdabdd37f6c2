"""Helpers for the training tests: run `moecoder train` (alone or under torchrun) and read its log.

A module of its own (not conftest.py) so that tests import it by a name no other test folder uses.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

MOECODER = str(Path(sys.executable).with_name("moecoder"))
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def read_log(run: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return {row["step"]: row for row in rows if "loss" in row}


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path


def run_cli(*args, **kwargs):
    return subprocess.run([MOECODER, *args], env=ENV, capture_output=True, text=True, timeout=240, **kwargs)


def torchrun(nproc: int, port: int, *command: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=N --no-python COMMAND...` on gloo (CPU), one thread per process."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                           f"--master_port={port}", *command], env=ENV, capture_output=True, text=True, timeout=240)


def torchrun_train(nproc: int, port: int, config: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return torchrun(nproc, port, "--no-python", MOECODER, "train", "--config", str(config), "--out", str(out), *args)
