"""Training throughput on this machine: tokens/s and MFU of a training step (forward, backward, AdamW).

Side by side in one run, on the same batch shape:
  1. our nano MoE (moecoder.train.NANO_MOE, DeepSeek-V3 layout: MLA, 8 routed experts top-2 + 1 shared),
  2. our dense model (LLaMA layout) with the same number of active parameters,
  3. transformers' implementation of the nano MoE's exact config and weights (DeepseekV3ForCausalLM here;
     the class follows the config's layout).
Rounds are interleaved (1, 2, 3, 1, 2, 3, ...) and each model keeps its best round, so load from other
processes on a shared machine hurts all three alike. MFU uses the model's own FLOPs/token (attention
included) for all three, over this machine's measured peak matmul rate (moecoder.train.mfu).

    python benchmarks/bench_train.py [--batch 8] [--seq-len 256] [--steps 5] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
import torch.nn.functional as F

from moecoder.model import ModelConfig, Transformer, save_model
from moecoder.model.accounting import active_params
from moecoder.train.config import NANO_MOE
from moecoder.train.mfu import peak_flops

VOCAB = 4096


def dense_config_like(moe: ModelConfig) -> ModelConfig:
    """A LLaMA-layout model with the MoE's hidden size, depth and heads, MLP width set to match active params."""
    base = dict(model_type="llama", vocab_size=moe.vocab_size, hidden_size=moe.hidden_size,
                num_hidden_layers=moe.num_hidden_layers, num_attention_heads=moe.num_attention_heads)
    target = active_params(moe)
    best = min(range(64, 8 * moe.hidden_size, 16),
               key=lambda width: abs(active_params(ModelConfig(**base, intermediate_size=width)) - target))
    return ModelConfig(**base, intermediate_size=best)


class Runner:
    """Times training steps of one model on a fixed random batch."""

    def __init__(self, name: str, model: torch.nn.Module, flops_per_token: float, active: int, ours: bool):
        self.name, self.model, self.flops_per_token, self.active, self.ours = name, model, flops_per_token, active, ours
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.best = float("inf")

    def step(self, ids: torch.Tensor) -> None:
        logits = self.model(ids) if self.ours else self.model(input_ids=ids).logits
        loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def round(self, ids: torch.Tensor, steps: int) -> None:
        self.step(ids)  # warm-up (allocations, first-call dispatch)
        start = time.perf_counter()
        for _ in range(steps):
            self.step(ids)
        self.best = min(self.best, (time.perf_counter() - start) / steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    torch.manual_seed(0)
    moe_config = ModelConfig(**(NANO_MOE | {"vocab_size": VOCAB}))
    moe = Transformer(moe_config)
    dense = Transformer(dense_config_like(moe_config))
    with tempfile.TemporaryDirectory() as tmp:
        save_model(moe, tmp)
        reference = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
    reference.train()
    fpt = moe.flops_per_token(args.seq_len, training=True)
    runners = [Runner("moecoder nano MoE", moe.train(), fpt, moe.num_params(active=True), True),
               Runner("moecoder dense (same active)", dense.train(), dense.flops_per_token(args.seq_len, True),
                      dense.num_params(active=True), True),
               Runner(f"transformers {type(reference).__name__}", reference, fpt, moe.num_params(active=True), False)]
    ids = torch.randint(0, VOCAB, (args.batch, args.seq_len))
    for _ in range(args.rounds):
        for runner in runners:
            runner.round(ids, args.steps)

    peak = peak_flops("cpu")
    tokens = args.batch * args.seq_len
    print(f"threads {torch.get_num_threads()}, batch {args.batch} x {args.seq_len} tokens, "
          f"peak {peak / 1e9:.0f} GFLOP/s (measured)")
    print(f"{'model':38s} {'active':>9s} {'step s':>8s} {'tokens/s':>9s} {'MFU':>7s}")
    results = {}
    for r in runners:
        tps = tokens / r.best
        results[r.name] = {"active_params": r.active, "step_s": r.best, "tokens_per_s": tps,
                           "mfu": tps * r.flops_per_token / peak}
        print(f"{r.name:38s} {r.active / 1e6:8.2f}M {r.best:8.3f} {tps:9.0f} {100 * results[r.name]['mfu']:6.2f}%")
    ours, dense_r, ref = (results[r.name] for r in runners)
    ratios = {"moe_vs_dense_tokens_per_s": ours["tokens_per_s"] / dense_r["tokens_per_s"],
              "moe_vs_transformers_tokens_per_s": ours["tokens_per_s"] / ref["tokens_per_s"]}
    print(f"ratio nano MoE / dense (same active):   {ratios['moe_vs_dense_tokens_per_s']:.2f}x tokens/s")
    print(f"ratio nano MoE / transformers (same):   {ratios['moe_vs_transformers_tokens_per_s']:.2f}x tokens/s")
    if args.json:
        print(json.dumps({"results": results, "ratios": ratios}))


if __name__ == "__main__":
    main()
