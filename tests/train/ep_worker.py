"""Run under torchrun (gloo): what one expert-parallel rank holds, sends and reads. Writes <out>/rank<r>.json.

    torchrun --nproc_per_node=2 ep_worker.py CHECKPOINT_DIR OUT_DIR

Loads the checkpoint with expert_parallel=2 (only this rank's experts), runs one forward/backward on
tokens of its own and records: its parameter counts and expert shapes, the split sizes each MoE layer
exchanged, the split sizes the router's choices imply (computed here independently of the dispatch), the
send sizes of every rank (all-gathered), and the checkpoint bytes it read. The test asserts on them.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from moecoder.train.parallel import Layout
from moecoder.train.shards import load_sharded_model, read_local


def main(checkpoint: Path, out: Path) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    from moecoder.model import ModelConfig

    n_experts = ModelConfig.from_hf(checkpoint).n_routed_experts
    layout = Layout.plan(2, False, rank, world, torch.device("cpu"), n_experts)
    model = load_sharded_model(checkpoint, layout, torch.device("cpu")).train()
    bytes_read = read_local(checkpoint, model, layout).bytes_read
    wrapped = layout.wrap(model)

    inputs = []  # what each MoE layer saw, to recompute its routing
    for moe in model.moe_layers():
        moe.register_forward_hook(lambda module, args, output: inputs.append((module, args[0].detach())))
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(rank))
    wrapped(ids).float().square().mean().backward()

    first, last = layout.expert_range(n_experts)
    per_rank = n_experts // layout.ep
    implied = []
    for moe, x in inputs:
        chosen = moe.gate(x.flatten(0, 1))[1].flatten()
        implied.append(torch.bincount(chosen // per_rank, minlength=layout.ep).tolist())
    sent = torch.tensor([moe.experts.splits[0] for moe in model.moe_layers()])
    every_sent = [torch.zeros_like(sent) for _ in range(world)]
    dist.all_gather(every_sent, sent)
    report = {
        "rank": rank, "expert_range": [first, last], "bytes_read": bytes_read,
        "state_numel": sum(t.numel() for t in model.state_dict().values()),
        "expert_shapes": {n: list(p.shape) for n, p in model.named_parameters() if ".experts." in n},
        "expert_grads": all(p.grad is not None and p.grad.abs().sum() > 0
                            for n, p in model.named_parameters() if ".experts." in n),
        "splits": [list(map(list, moe.experts.splits)) for moe in model.moe_layers()],
        "implied_sent": implied, "every_sent": [s.tolist() for s in every_sent],
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
