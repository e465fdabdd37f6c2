"""The training loop shared by pre-training and SFT: AdamW, warmup + cosine, clipping, accumulation,
bf16 autocast, MoE balancing, JSONL + progress-bar logging, atomic resumable checkpoints, DDP/FSDP2 and
expert parallelism (the layout is decided in moecoder.train.parallel).

Under `torchrun` every process runs this same code: the global batch is split across ranks and the
loss is normalised by the global number of target tokens, so N processes compute the same update as one.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from moecoder.train.config import TrainConfig
from moecoder.train import shards
from moecoder.train.mfu import mfu, peak_flops
from moecoder.train.packing import IGNORE_INDEX, BatchStream
from moecoder.train.parallel import Layout

LOG_FILE = "train_log.jsonl"


@dataclass
class Runtime:
    """Where this process runs: its rank among `world_size` processes and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce(self, value: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(value)
        return value

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_runtime() -> Runtime:
    """Join the torchrun process group if there is one (NCCL on GPUs, gloo on CPU)."""
    cuda = torch.cuda.is_available()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world_size > 1 else 0
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return Runtime(rank, world_size, torch.device("cuda", local))
    return Runtime(rank, world_size, torch.device("cpu"))


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over warmup_steps, then cosine from lr to lr*min_lr_ratio as progress goes 0 -> 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not norms, biases or 1-d gains)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def autocast_context(cfg: TrainConfig, device: torch.device):
    """bf16 autocast where the device supports it (dtype=auto: CUDA with bf16), else nothing."""
    use_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def moe_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The MoE layers, in the order of model.expert_load()'s rows."""
    return model.moe_layers()


def has_router_bias(model: torch.nn.Module) -> bool:
    return any(getattr(m.gate, "e_score_correction_bias", None) is not None for m in moe_modules(model))


def update_router_bias(model: torch.nn.Module, load: torch.Tensor, rate: float) -> None:
    """Aux-loss-free update from the load of the whole optimizer step (all micro-batches, all ranks),
    so every rank moves the bias identically."""
    for module, layer_load in zip(moe_modules(model), load):
        module.last_load = layer_load
    model.update_router_bias(rate)


def batch_to_device(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value).to(device) for key, value in batch.items()}


def token_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the target tokens (labels != -100)."""
    logits = model(batch["input_ids"], position_ids=batch["position_ids"], document_ids=batch["document_ids"])
    return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(),
                           ignore_index=IGNORE_INDEX, reduction="sum")


@torch.no_grad()
def heldout_loss(model, dataset, max_tokens: int, batch_size: int, runtime: Runtime) -> float:
    """Mean token loss on up to max_tokens of a held-out dataset (ranks split the sequences)."""
    was_training = model.training
    model.eval()
    count = min(len(dataset), max(1, max_tokens // dataset.seq_len))
    totals = torch.zeros(2, dtype=torch.float64, device=runtime.device)
    # The same number of batches on every rank (FSDP2 forwards are collectives).
    per_rank = max(1, count // runtime.world_size)
    indices = [(runtime.rank + runtime.world_size * i) % len(dataset) for i in range(per_rank)]
    for first in range(0, len(indices), batch_size):
        rows = [dataset[i] for i in indices[first:first + batch_size]]
        batch = batch_to_device({k: np.stack([r[k] for r in rows]) for k in rows[0]}, runtime.device)
        totals[0] += token_loss_sum(model, batch).double()
        totals[1] += (batch["labels"] != IGNORE_INDEX).sum()
    runtime.all_reduce(totals)
    model.train(was_training)
    return float(totals[0] / totals[1]) if totals[1] > 0 else math.nan


class CheckpointStore:
    """`<run>/checkpoints/step_XXXXXX/{model/, optimizer/, trainer.pt}`: written to a .tmp directory, renamed,
    then `latest` (a one-line file) is replaced atomically, so a kill at any moment leaves a usable checkpoint."""

    def __init__(self, run_dir: Path, keep: int):
        self.dir, self.keep = run_dir / "checkpoints", keep

    def latest(self) -> Path | None:
        pointer = self.dir / "latest"
        return self.dir / pointer.read_text().strip() if pointer.is_file() else None

    def save(self, step: int, write, runtime: Runtime) -> Path:
        """Collective: every rank runs write(directory) into the .tmp directory, then rank 0 publishes it."""
        name = f"step_{step:06d}"
        tmp, final = self.dir / f"{name}.tmp", self.dir / name
        if runtime.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        runtime.barrier()
        write(tmp)
        runtime.barrier()
        if not runtime.is_main:
            return final
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer = self.dir / "latest.tmp"
        pointer.write_text(name)
        os.replace(pointer, self.dir / "latest")
        for old in sorted(self.dir.glob("step_??????"))[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Runs optimizer steps over a BatchStream and owns logging, checkpoints and the final evaluation."""

    def __init__(self, model, stream: BatchStream, cfg: TrainConfig, run_dir: Path, runtime: Runtime,
                 tokenizer=None, heldout=None, layout: Layout | None = None):
        self.model, self.stream, self.cfg, self.run_dir = model, stream, cfg, Path(run_dir)
        self.runtime, self.tokenizer, self.heldout = runtime, tokenizer, heldout
        self.layout = layout or Layout.plan(cfg.expert_parallel, cfg.fsdp, runtime.rank, runtime.world_size,
                                            runtime.device, model.config.n_routed_experts)
        self.wrapped = self.layout.wrap(model)
        self.optimizer = build_optimizer(model, cfg)  # after wrapping: EP and FSDP2 replace parameters
        self.checkpoints = CheckpointStore(self.run_dir, cfg.keep_checkpoints)
        self.step, self.elapsed = 0, 0.0
        self.bytes_read: int | None = None  # checkpoint bytes this rank read on resume
        self.is_moe = bool(moe_modules(model))
        self.balance = cfg.balance if self.is_moe else "none"
        if self.balance == "bias" and not has_router_bias(model):
            self.balance = "none"  # e.g. a V2-layout (greedy) router: it has no correction bias to move
        self.flops_per_token = model.flops_per_token(cfg.seq_len, training=True)
        self.peak = peak_flops(runtime.device)

    # --- setup ---------------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Restore weights, optimizer, data position, RNG and step from the latest checkpoint, if any."""
        checkpoint = self.checkpoints.latest()
        if checkpoint is None:
            return False
        state = torch.load(checkpoint / "trainer.pt", weights_only=False)
        weights = shards.read_local(checkpoint / "model", self.model, self.layout)
        shards.load_into(self.model, weights.tensors)
        shards.load_optimizer(self.model, self.optimizer, self.layout, checkpoint / "optimizer", state["step"])
        self.bytes_read = weights.bytes_read
        self.stream.load_state_dict(state["stream"])
        set_rng_state(state["rng"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        self._truncate_log(self.step)
        return True

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint by the interrupted run."""
        log = self.run_dir / LOG_FILE
        if self.runtime.is_main and log.is_file():
            kept = [line for line in log.read_text().splitlines() if json.loads(line).get("step", 0) <= step
                    and "heldout_loss" not in line]
            log.write_text("".join(line + "\n" for line in kept))

    # --- one optimizer step ------------------------------------------------------------------------
    def train_step(self, lr: float) -> dict:
        """Forward/backward over grad_accum micro-batches, clip, AdamW, router-bias update."""
        cfg, runtime = self.cfg, self.runtime
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        micro = [batch_to_device(self.stream.next_batch(), runtime.device) for _ in range(cfg.grad_accum)]
        targets = runtime.all_reduce(sum((b["labels"] != IGNORE_INDEX).sum() for b in micro).double())
        scale = runtime.world_size / targets.clamp(min=1)  # DDP averages over ranks: undo it
        loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
        load = None
        for index, batch in enumerate(micro):
            last = index == len(micro) - 1
            sync = nullcontext() if last or not hasattr(self.wrapped, "no_sync") else self.wrapped.no_sync()
            with sync, autocast_context(cfg, runtime.device):
                summed = token_loss_sum(self.wrapped, batch)
                loss = summed * scale.float()
                if self.balance == "aux":
                    loss = loss + self.model.aux_loss() / len(micro)
            loss.backward()
            loss_sum += summed.detach().double()
            if self.is_moe:
                step_load = self.model.expert_load().detach().float()
                load = step_load if load is None else load + step_load
        self.layout.reduce_expert_grads(self.model)
        grad_norm = self.layout.clip_grad_norm(self.model, cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if load is not None:
            runtime.all_reduce(load)
            if self.balance == "bias":
                update_router_bias(self.model, load, cfg.bias_update_rate)
        return {"loss": float(runtime.all_reduce(loss_sum) / targets.clamp(min=1)), "grad_norm": float(grad_norm),
                "expert_load": load.long().tolist() if load is not None else None}

    # --- the run -----------------------------------------------------------------------------------
    def progress_fraction(self) -> float:
        cfg = self.cfg
        by_steps = self.step / cfg.steps if cfg.steps else 0.0
        by_time = self.elapsed / (60 * cfg.minutes) if cfg.minutes else 0.0
        return max(by_steps, by_time)

    def done(self) -> bool:
        return self.progress_fraction() >= 1.0

    def checkpoint(self) -> None:
        """Collective: model and AdamW state in transformers' layout, plus data position, RNG and step."""
        state = {"stream": self.stream.state_dict(), "rng": rng_state(), "step": self.step, "elapsed": self.elapsed,
                 "config": self.cfg.to_dict()}

        def write(directory: Path) -> None:
            self.save_model(directory / "model")
            shards.save_optimizer(self.model, self.optimizer, self.layout, directory / "optimizer")
            if self.runtime.is_main:
                torch.save(state, directory / "trainer.pt")

        self.checkpoints.save(self.step, write, self.runtime)
        self.runtime.barrier()

    def save_model(self, directory: Path) -> None:
        """Collective: the model (and tokenizer) in transformers' layout, whatever the parallel layout."""
        shards.save_model(self.model, self.layout, directory)
        if self.runtime.is_main and self.tokenizer is not None:
            self.tokenizer.save(directory)

    def log(self, record: dict) -> None:
        if self.runtime.is_main:
            with open(self.run_dir / LOG_FILE, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def fit(self) -> dict:
        """Train until steps/minutes run out; checkpoint every save_every steps and at the end."""
        cfg, runtime = self.cfg, self.runtime
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.seq_len
        self.model.train()
        first_loss = last = None
        with ProgressDisplay(cfg, enabled=cfg.progress and runtime.is_main, start=self.progress_fraction()) as bar:
            while not self.done():
                started, cpu_started = time.perf_counter(), time.process_time()
                lr = learning_rate(cfg, self.step, self.progress_fraction())
                metrics = self.train_step(lr)
                seconds = time.perf_counter() - started
                # clock="cpu": the seconds a dedicated machine with torch's thread count would have taken
                # (for budgets on a shared CPU, where other processes take wall-clock time away).
                budget_seconds = (seconds if cfg.clock == "wall"
                                  else (time.process_time() - cpu_started) / torch.get_num_threads())
                # Every rank must agree on when to stop: use rank 0's clock.
                self.elapsed += float(runtime.all_reduce(torch.tensor(budget_seconds if runtime.is_main else 0.0,
                                                                      dtype=torch.float64)))
                self.step += 1
                tokens_per_s = tokens_per_step / seconds
                last = {"step": self.step, "loss": metrics["loss"], "lr": lr, "grad_norm": metrics["grad_norm"],
                        "tokens": self.step * tokens_per_step, "tokens_per_s": tokens_per_s,
                        "mfu": mfu(tokens_per_s, self.flops_per_token, self.peak * runtime.world_size),
                        "elapsed_s": self.elapsed, "expert_load": metrics["expert_load"]}
                first_loss = first_loss if first_loss is not None else metrics["loss"]
                if self.step % cfg.log_every == 0 or self.step == 1 or self.done():
                    self.log(last)
                bar.update(self.progress_fraction(), last)
                if self.step % cfg.save_every == 0 and not self.done():
                    self.checkpoint()
        self.checkpoint()
        summary = {"steps": self.step, "first_loss": first_loss, "final_loss": last["loss"] if last else None,
                   "tokens": self.step * tokens_per_step, "elapsed_s": self.elapsed}
        if self.heldout is not None and len(self.heldout):
            loss = heldout_loss(self.model, self.heldout, cfg.eval_tokens, cfg.batch_size, runtime)
            if not math.isnan(loss):
                summary |= {"heldout_loss": loss, "heldout_ppl": math.exp(loss)}
                self.log({"step": self.step, "heldout_loss": loss, "heldout_ppl": math.exp(loss)})
        return summary


class ProgressDisplay:
    """A rich progress bar (fraction of steps or time budget) showing step, loss and tokens/s."""

    def __init__(self, cfg: TrainConfig, enabled: bool, start: float = 0.0):
        self.enabled, self.start = enabled, start
        self.progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                     TextColumn("{task.fields[status]}"), TimeElapsedColumn())
            self.progress.start()
            self.task = self.progress.add_task("train", total=1.0, completed=self.start, status="")
        return self

    def update(self, fraction: float, record: dict) -> None:
        if self.progress is not None:
            status = f"step {record['step']} loss {record['loss']:.4f} {record['tokens_per_s']:,.0f} tok/s"
            self.progress.update(self.task, completed=min(1.0, fraction), status=status)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
