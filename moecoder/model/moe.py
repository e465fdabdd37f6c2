"""DeepSeekMoE: a router (Gate), packed routed experts run as grouped matmuls, and always-on shared experts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moecoder.model.config import ModelConfig


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)). Dense layers and the shared experts."""

    def __init__(self, hidden: int, intermediate: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.up_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Gate(nn.Module):
    """Top-k router: softmax or sigmoid scores, greedy or group-limited choice, optional V3 correction bias.

    The bias only changes which experts are chosen; the mixing weights are the unbiased scores, so gradients
    reach `weight` through them. Scores are computed in float32 whatever the model dtype.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.top_k, self.n_experts = config.num_experts_per_tok, config.n_routed_experts
        self.n_group, self.topk_group = config.n_group, config.topk_group
        self.method, self.scoring = config.topk_method, config.scoring_func
        self.normalize, self.scaling = config.norm_topk_prob, config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(self.n_experts, config.hidden_size))
        if config.has_router_bias:
            self.register_buffer("e_score_correction_bias", torch.zeros(self.n_experts, dtype=torch.float32))
        else:
            self.e_score_correction_bias = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, hidden] -> (weights [N, k], expert ids [N, k], scores [N, E])."""
        logits = F.linear(x.float(), self.weight.float())
        scores = logits.softmax(dim=-1) if self.scoring == "softmax" else logits.sigmoid()
        choice = scores.detach()
        if self.e_score_correction_bias is not None:
            choice = choice + self.e_score_correction_bias
        if self.method != "greedy" and self.n_group > 1:
            grouped = choice.view(-1, self.n_group, self.n_experts // self.n_group)
            # V3 (with bias) ranks a group by its two best experts, V2 by its best one.
            group_score = grouped.topk(2, dim=-1).values.sum(-1) if self.e_score_correction_bias is not None \
                else grouped.amax(dim=-1)
            keep = torch.zeros_like(group_score, dtype=torch.bool)
            keep.scatter_(1, group_score.topk(self.topk_group, dim=-1).indices, True)
            choice = grouped.masked_fill(~keep[..., None], float("-inf")).flatten(1)
        ids = choice.topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, ids)
        if self.normalize:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return (weights * self.scaling if self.scaling != 1.0 else weights), ids, scores


class Experts(nn.Module):
    """All routed experts as two packed tensors, so one grouped matmul runs every expert on its tokens.

    w13 [E, hidden, 2*inter] holds gate_proj and up_proj (transposed), w2 [E, inter, hidden] down_proj.
    Kept as one module so FSDP2 / expert parallelism can shard dim 0.
    """

    def __init__(self, n_experts: int, hidden: int, intermediate: int):
        super().__init__()
        self.w13 = nn.Parameter(torch.empty(n_experts, hidden, 2 * intermediate))
        self.w2 = nn.Parameter(torch.empty(n_experts, intermediate, hidden))

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x [M, hidden] sorted by expert, counts [E] tokens per expert -> [M, hidden]."""
        offsets = counts.cumsum(0).to(torch.int32)
        gate, up = grouped_mm(x, self.w13, offsets).chunk(2, dim=-1)
        return grouped_mm(F.silu(gate) * up, self.w2, offsets)

    def few_tokens(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Decoding: x [N, hidden] through each token's k experts, ids [N, k] -> [N*k, hidden].

        Eager: one product per (token, expert) with the weights in place (a grouped matmul would walk all E
        groups, most of them empty). Compiled: one batched matmul on gathered weights, no Python loop.
        """
        if torch.compiler.is_compiling():
            rows = x.repeat_interleave(ids.shape[1], dim=0)[:, None]  # [N*k, 1, hidden]
            gate, up = torch.bmm(rows, self.w13[ids.flatten()]).chunk(2, dim=-1)
            return torch.bmm(F.silu(gate) * up, self.w2[ids.flatten()])[:, 0]
        return torch.cat([self.expert(e, x[t:t + 1]) for t, row in enumerate(ids.tolist()) for e in row])

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e alone on x [M, hidden], its weights used in place."""
        gate, up = (x @ self.w13[e]).chunk(2, dim=-1)
        return (F.silu(gate) * up) @ self.w2[e]


def _grouped_mm_supported(a: torch.Tensor, b: torch.Tensor) -> bool:
    # torch._grouped_mm wants 16-byte aligned strides; tiny test shapes may not have them.
    row = a.shape[-1] * a.element_size()
    return hasattr(torch, "_grouped_mm") and row % 16 == 0 and (b.shape[-1] * b.element_size()) % 16 == 0


@torch.library.custom_op("moecoder::grouped_mm", mutates_args=())
def grouped_mm(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Rows offsets[e-1]:offsets[e] of x [M, K] times w[e] [K, N] -> [M, N], as one grouped matmul.

    A custom op so torch.compile treats it as one opaque kernel (its meta function rejects float32 on CPU);
    falls back to a loop over the experts that got tokens where the kernel is missing or shapes are unaligned.
    """
    if _grouped_mm_supported(x, w):
        return torch._grouped_mm(x, w, offs=offsets)
    out, begin = x.new_zeros(x.shape[0], w.shape[-1]), 0
    for expert, end in enumerate(offsets.tolist()):
        if end > begin:
            out[begin:end] = x[begin:end] @ w[expert]
        begin = end
    return out


@grouped_mm.register_fake
def _(x, w, offsets):
    return x.new_empty(x.shape[0], w.shape[-1])


@torch.library.custom_op("moecoder::grouped_mm_weight_grad", mutates_args=())
def grouped_mm_weight_grad(x: torch.Tensor, grad: torch.Tensor, offsets: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per-group x_e^T grad_e -> [E, K, N]: the gradient of grouped_mm with respect to w."""
    if _grouped_mm_supported(grad, x):
        return torch._grouped_mm(x.t(), grad, offs=offsets)
    out, begin = x.new_zeros(n_groups, x.shape[1], grad.shape[1]), 0
    for expert, end in enumerate(offsets.tolist()):
        out[expert] = x[begin:end].t() @ grad[begin:end]
        begin = end
    return out


@grouped_mm_weight_grad.register_fake
def _(x, grad, offsets, n_groups):
    return x.new_empty(n_groups, x.shape[1], grad.shape[1])


def _grouped_mm_backward(ctx, grad):
    x, w, offsets = ctx.saved_tensors
    grad = grad.contiguous()
    grad_x = grouped_mm(grad, w.transpose(-2, -1), offsets) if ctx.needs_input_grad[0] else None
    grad_w = grouped_mm_weight_grad(x, grad, offsets, w.shape[0]) if ctx.needs_input_grad[1] else None
    return grad_x, grad_w, None


def _grouped_mm_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


grouped_mm.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup)


@dataclass
class RoutingStats:
    """What the last forward of one MoE layer routed (a plain object: cheap to update on every step)."""

    load: torch.Tensor | None = None  # [E] tokens per routed expert
    aux_loss: torch.Tensor | None = None  # sequence-wise balance loss (training with aux_loss_alpha > 0)


class MoE(nn.Module):
    """Routed experts (k of E per token, by the gate) plus shared experts on every token.

    Records, on the module, the expert load and the sequence-wise balance loss of the last forward.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.top_k, self.n_experts = config.num_experts_per_tok, config.n_routed_experts
        self.aux_alpha = config.aux_loss_alpha
        self.gate = Gate(config)
        self.experts = Experts(config.n_routed_experts, config.hidden_size, config.moe_intermediate_size)
        self.shared_experts = (MLP(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts)
                               if config.n_shared_experts else None)
        self.stats = RoutingStats()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        flat = x.reshape(-1, H)
        weights, ids, scores = self.gate(flat)  # [N, k]
        flat_ids = ids.flatten()  # tokens per expert, with a static shape (bincount's would depend on data)
        counts = torch.zeros(self.n_experts, dtype=torch.long, device=ids.device).index_add_(
            0, flat_ids, torch.ones_like(flat_ids))
        if flat.shape[0] * self.top_k <= self.n_experts:
            routed = self.experts.few_tokens(flat, ids)
        else:
            # Sort the N*k (token, expert) pairs by expert so each expert's tokens are contiguous.
            order = ids.flatten().argsort(stable=True)
            routed = self.experts(flat[order // self.top_k], counts)
            routed = torch.empty_like(routed).index_copy_(0, order, routed)
        out = (routed.view(-1, self.top_k, H) * weights.to(x.dtype)[..., None]).sum(dim=1).view(B, T, H)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        self.stats.load = counts.detach()
        self.stats.aux_loss = (self._sequence_aux_loss(scores.view(B, T, -1), ids.view(B, T, -1))
                               if self.training and self.aux_alpha > 0 else None)
        return out

    def _sequence_aux_loss(self, scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """DeepSeek-V3 eq. 17-20: alpha * sum_i f_i * P_i per sequence, averaged over the batch."""
        B, T, E = scores.shape
        chosen = torch.zeros(B, E, device=scores.device).scatter_add_(
            1, ids.flatten(1), torch.ones(B, T * self.top_k, device=scores.device))
        fraction = chosen * E / (self.top_k * T)  # f_i
        probability = (scores / scores.sum(-1, keepdim=True)).mean(dim=1)  # P_i
        return self.aux_alpha * (fraction * probability).sum(-1).mean()

    @property
    def last_load(self) -> torch.Tensor | None:
        """Tokens per expert in the last forward (assignable, e.g. with a load summed over micro-batches)."""
        return self.stats.load

    @last_load.setter
    def last_load(self, load: torch.Tensor) -> None:
        self.stats.load = load

    @torch.no_grad()
    def update_bias(self, rate: float, load: torch.Tensor | None = None) -> None:
        """Aux-loss-free balancing: lower the bias of overloaded experts, raise it for underloaded ones.

        load [E] defaults to the last forward's; pass one summed over micro-batches or ranks instead.
        """
        if self.gate.e_score_correction_bias is None:
            raise ValueError("update_router_bias needs topk_method='noaux_tc' (the router has no correction bias)")
        load = self.stats.load if load is None else load
        if load is not None:
            load = load.float().to(self.gate.e_score_correction_bias.device)
            self.gate.e_score_correction_bias += rate * torch.sign(load.mean() - load)
