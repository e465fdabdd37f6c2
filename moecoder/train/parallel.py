"""The parallel layout of a training run, decided in one place (torchtitan's parallelize.py, not the model).

W processes are data-parallel: each reads its own share of every batch. With `expert_parallel=N` they also
form a DeviceMesh ("dp_mod_ep", "ep") of shape (W/N, N): the N ranks of an "ep" group split the routed
experts of every MoE layer (ep rank r holds experts [r*E/N, (r+1)*E/N)) and send tokens to the experts'
owners with all_to_all_single; the W/N ranks of a "dp_mod_ep" group hold the same experts and combine their
gradients (FSDP2-sharded over that group with fsdp=true, all-reduced otherwise). Attention, dense layers,
shared experts and routers stay DDP-replicated or FSDP2-sharded over all W ranks.

Gradient scale: the loss on each rank is (W / global target tokens) * its summed token loss, because DDP and
FSDP2 average over the W ranks. An expert's owner already receives the sum over its ep group through the
all-to-all backward, so its gradient is summed over dp_mod_ep and divided by W, not W/N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from moecoder.errors import UserError
from moecoder.model.moe import Experts

EXPERT_WEIGHTS = (".experts.w13", ".experts.w2")


def is_expert_weight(name: str) -> bool:
    return name.endswith(EXPERT_WEIGHTS)


def check_layout(expert_parallel: int, world_size: int, n_experts: int | None) -> None:
    """One line per layout the mesh cannot hold (raised before any data or model is built)."""
    if expert_parallel < 1:
        raise UserError(f"expert_parallel={expert_parallel}: expected a positive number of ranks")
    if expert_parallel == 1:
        return
    if not n_experts:
        raise UserError(f"expert_parallel={expert_parallel}: the model has no routed experts to split")
    if n_experts % expert_parallel:
        raise UserError(f"expert_parallel={expert_parallel} does not divide the model's {n_experts} routed "
                        f"experts per layer")
    if world_size % expert_parallel:
        raise UserError(f"expert_parallel={expert_parallel} does not divide the world size {world_size} "
                        f"(torchrun processes)")


class AllToAll(torch.autograd.Function):
    """all_to_all_single with uneven splits, differentiable: the backward sends gradients back the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, output_splits: list[int], input_splits: list[int], group) -> torch.Tensor:
        ctx.splits, ctx.group = (output_splits, input_splits), group
        return _all_to_all(x, output_splits, input_splits, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        output_splits, input_splits = ctx.splits
        return _all_to_all(grad, input_splits, output_splits, ctx.group), None, None, None


def _all_to_all(x: torch.Tensor, output_splits: list[int], input_splits: list[int], group) -> torch.Tensor:
    out = x.new_empty(sum(output_splits), *x.shape[1:])
    dist.all_to_all_single(out, x.contiguous(), output_splits, input_splits, group=group)
    return out


class ExpertParallelExperts(Experts):
    """This rank's E/N routed experts of one layer, serving every rank of its ep group.

    Same parameter names as Experts (w13 [E/N, hidden, 2*inter], w2 [E/N, inter, hidden]), so state dicts
    keep their keys; forward takes what Experts takes for all E experts and returns what it would return.
    """

    def __init__(self, n_experts: int, hidden: int, intermediate: int, group, ep_rank: int, ep_size: int):
        super().__init__(n_experts // ep_size, hidden, intermediate)
        self.n_experts, self.group, self.ep_size = n_experts, group, ep_size
        self.first = ep_rank * (n_experts // ep_size)
        self.splits: tuple[list[int], list[int]] | None = None  # (sent, received) rows of the last forward

    @classmethod
    def from_experts(cls, experts: Experts, group, ep_rank: int, ep_size: int) -> "ExpertParallelExperts":
        n_experts, hidden, two_inter = experts.w13.shape
        local = cls(n_experts, hidden, two_inter // 2, group, ep_rank, ep_size).to(experts.w13.device,
                                                                                  experts.w13.dtype)
        rows = slice(local.first, local.first + n_experts // ep_size)
        with torch.no_grad():
            if experts.w13.device.type != "meta":
                local.w13.copy_(experts.w13[rows])
                local.w2.copy_(experts.w2[rows])
        return local

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x [M, hidden] sorted by expert, counts [E] rows per expert (all E) -> [M, hidden], same order."""
        n_local = self.w13.shape[0]
        # 1. Exchange the split sizes: received[s*L + e] = rows source rank s sends to my local expert e.
        received = torch.empty_like(counts)
        dist.all_to_all_single(received, counts.contiguous(), group=self.group)
        sent_rows = counts.view(self.ep_size, n_local).sum(1).tolist()
        received_rows = received.view(self.ep_size, n_local).sum(1).tolist()
        self.splits = (sent_rows, received_rows)
        # 2. Dispatch, regroup the arrivals (ordered by source, then expert) by local expert, compute.
        tokens = AllToAll.apply(x, received_rows, sent_rows, self.group)
        expert_of_row = torch.arange(n_local, device=counts.device).repeat(self.ep_size).repeat_interleave(received)
        order = expert_of_row.argsort(stable=True)
        out = super().forward(tokens[order], received.view(self.ep_size, n_local).sum(0))
        out = torch.empty_like(out).index_copy_(0, order, out)
        # 3. Combine: send every result back to the rank its token came from.
        return AllToAll.apply(out, sent_rows, received_rows, self.group)

    def few_tokens(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Decoding-size batches take the same collective path (every rank of the group must join)."""
        flat = ids.flatten()
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=self.n_experts)
        out = self(x[order // ids.shape[1]], counts)
        return torch.empty_like(out).index_copy_(0, order, out)


@dataclass
class Layout:
    """Who holds what: data parallel over `world_size` ranks, experts split over `ep` of them, FSDP2 or DDP."""

    rank: int = 0
    world_size: int = 1
    ep: int = 1
    fsdp: bool = False
    device_type: str = "cpu"

    def __post_init__(self):
        self.ep_group = self.dp_mod_ep_mesh = self.dp_mesh = None
        self.ep_rank, self.dp_mod_ep_rank = self.rank % self.ep, self.rank // self.ep
        self.sharded = self.fsdp and self.world_size > 1

    @classmethod
    def plan(cls, ep: int, fsdp: bool, rank: int, world_size: int, device: torch.device,
             n_experts: int | None) -> "Layout":
        check_layout(ep, world_size, n_experts)
        layout = cls(rank, world_size, ep, fsdp, device.type)
        if world_size > 1:
            from torch.distributed.device_mesh import init_device_mesh

            layout.dp_mesh = init_device_mesh(device.type, (world_size,), mesh_dim_names=("dp",))
            if ep > 1:
                mesh = init_device_mesh(device.type, (world_size // ep, ep), mesh_dim_names=("dp_mod_ep", "ep"))
                layout.ep_group, layout.dp_mod_ep_mesh = mesh.get_group("ep"), mesh["dp_mod_ep"]
        return layout

    @property
    def expert_parallel(self) -> bool:
        return self.ep > 1

    @property
    def experts_fsdp(self) -> bool:
        """Expert replicas sharded by FSDP2 (fsdp=true and more than one rank holds each expert)."""
        return self.sharded and self.expert_parallel and self.world_size > self.ep

    def expert_range(self, n_experts: int) -> tuple[int, int]:
        """[first, last) of the routed experts this rank holds."""
        per_rank = n_experts // self.ep
        return self.ep_rank * per_rank, (self.ep_rank + 1) * per_rank

    @property
    def writes_experts(self) -> bool:
        """The rank that saves its ep group's experts (one replica of each)."""
        return self.dp_mod_ep_rank == 0

    # --- applying it -------------------------------------------------------------------------------
    def shard_experts(self, model: nn.Module) -> None:
        """Keep only this rank's routed experts in every MoE layer (idempotent; works on the meta device)."""
        if not self.expert_parallel:
            return
        for moe in model.moe_layers():
            if not isinstance(moe.experts, ExpertParallelExperts):
                moe.experts = ExpertParallelExperts.from_experts(moe.experts, self.ep_group, self.ep_rank, self.ep)

    def expert_params(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for name, p in model.named_parameters() if self.expert_parallel and is_expert_weight(name)]

    def wrap(self, model: nn.Module) -> nn.Module:
        """Experts split (if EP), then DDP or FSDP2 over the rest; returns the module to call for training."""
        self.shard_experts(model)
        if self.world_size == 1:
            return model
        experts = set(self.expert_params(model))
        if self.sharded:
            from torch.distributed.fsdp import fully_shard

            for layer in model.layers:
                if self.experts_fsdp and hasattr(layer.mlp, "experts"):
                    experts_fsdp = fully_shard(layer.mlp.experts, mesh=self.dp_mod_ep_mesh)
                    experts_fsdp.set_gradient_divide_factor(float(self.world_size))
                    experts_fsdp.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no PREMUL_SUM
                fully_shard(layer, mesh=self.dp_mesh, ignored_params=experts or None)
            return fully_shard(model, mesh=self.dp_mesh, ignored_params=experts or None)
        from torch.nn.parallel import DistributedDataParallel

        names = [name for name, p in model.named_parameters() if p in experts]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
        device_ids = [torch.cuda.current_device()] if self.device_type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    # --- after backward ----------------------------------------------------------------------------
    def reduce_expert_grads(self, model: nn.Module) -> None:
        """Sum expert gradients over the replicas of each expert and divide by W (see the module docstring).

        FSDP2 does this itself when it shards the experts (gradient divide factor W)."""
        if not self.expert_parallel or self.experts_fsdp:
            return
        for p in self.expert_params(model):
            if p.grad is None:
                continue
            if self.world_size > self.ep:
                dist.all_reduce(p.grad, group=self.dp_mod_ep_mesh.get_group())
            p.grad.div_(self.world_size)

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        """Clip by the global gradient norm: replicated/FSDP-sharded weights once, each expert once."""
        if not self.expert_parallel:
            return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        experts = set(self.expert_params(model))
        dense = [p.grad for p in model.parameters() if p.grad is not None and p not in experts]
        local = [p.grad for p in experts if p.grad is not None]
        device = (dense or local)[0].device
        expert_square = _norm(local, device) ** 2  # this rank's experts; the ep group sums them
        dist.all_reduce(expert_square, group=self.ep_group)
        total = torch.sqrt(_norm(dense, device) ** 2 + expert_square)  # dense: replicated or a global DTensor norm
        coef = min(1.0, max_norm / (float(total) + 1e-6))
        if coef < 1.0:
            for grad in dense + local:
                grad.mul_(coef)
        return total


def _norm(grads: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """L2 norm of all grads together, a plain float32 tensor (a DTensor norm is reduced over its mesh)."""
    from torch.distributed.tensor import DTensor

    if not grads:
        return torch.zeros((), dtype=torch.float32, device=device)
    norm = torch.nn.utils.get_total_norm(grads, 2.0)
    return (norm.full_tensor() if isinstance(norm, DTensor) else norm).float()
