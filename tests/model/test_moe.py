"""Routing, dispatch, balancing and training behaviour of the MoE layer and the whole model."""

import pytest
import torch

from moecoder.model import ModelConfig, Transformer
from moecoder.model.moe import MoE, grouped_mm


def tiny(**changes) -> ModelConfig:
    base = dict(model_type="deepseek_v3", vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, n_shared_experts=1,
                n_group=2, topk_group=1)
    return ModelConfig(**{**base, **changes})


def naive_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Every token through each of its chosen experts one at a time (the definition)."""
    flat = x.reshape(-1, x.shape[-1])
    weights, ids, _ = moe.gate(flat)
    inter = moe.experts.w2.shape[1]
    out = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for w, e in zip(weights[t], ids[t]):
            gate, up = (flat[t] @ moe.experts.w13[e]).split(inter)
            out[t] += w * ((torch.nn.functional.silu(gate) * up) @ moe.experts.w2[e])
    return (out + moe.shared_experts(flat)).view_as(x)


@pytest.mark.parametrize("tokens", [10, 1])  # 1: the decoding path (k rows at most E) skips the grouped matmul
@pytest.mark.parametrize("hidden", [32, 30])  # 30: unaligned for torch._grouped_mm, the loop fallback runs
@pytest.mark.parametrize("scoring,method", [("sigmoid", "noaux_tc"), ("softmax", "greedy"),
                                            ("softmax", "group_limited_greedy")])
def test_grouped_dispatch_equals_per_token_definition(tokens, hidden, scoring, method):
    torch.manual_seed(0)
    model = Transformer(tiny(hidden_size=hidden, scoring_func=scoring, topk_method=method))
    moe = model.moe_layers()[0]
    if moe.gate.e_score_correction_bias is not None:
        moe.gate.e_score_correction_bias.normal_(0, 0.5)
    x = torch.randn(1, tokens, hidden)
    torch.testing.assert_close(moe(x), naive_moe(moe, x), rtol=1e-5, atol=1e-5)


def test_group_limited_routing_picks_only_from_top_groups():
    torch.manual_seed(0)
    moe = Transformer(tiny(n_routed_experts=8, n_group=4, topk_group=2, num_experts_per_tok=3)).moe_layers()[0]
    moe.gate.e_score_correction_bias.normal_(0, 1.0)
    _, ids, scores = moe.gate(torch.randn(50, 32))
    biased = (scores + moe.gate.e_score_correction_bias).view(50, 4, 2)
    top_groups = biased.topk(2, dim=-1).values.sum(-1).topk(2, dim=-1).indices
    assert all(set((ids[t] // 2).tolist()) <= set(top_groups[t].tolist()) for t in range(50))


def test_router_bias_changes_choice_not_weights():
    torch.manual_seed(0)
    moe = Transformer(tiny(norm_topk_prob=False, n_group=1)).moe_layers()[0]
    x = torch.randn(20, 32)
    weights, ids, scores = moe.gate(x)
    moe.gate.e_score_correction_bias[3] = 10.0  # expert 3 is now always chosen...
    weights, ids, scores = moe.gate(x)
    assert (ids == 3).any(dim=1).all()
    assert torch.allclose(weights, scores.gather(1, ids))  # ...with its unbiased score as weight


def test_gradients_reach_router_and_experts():
    torch.manual_seed(0)
    model = Transformer(tiny())
    model(torch.randint(0, 32, (2, 8))).logsumexp(-1).mean().backward()
    moe = model.moe_layers()[0]
    for param in (moe.gate.weight, moe.experts.w13, moe.experts.w2):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_grouped_mm_gradients_match_dense():
    torch.manual_seed(0)
    x, w = torch.randn(10, 8, requires_grad=True), torch.randn(3, 8, 4, requires_grad=True)
    offsets = torch.tensor([4, 4, 10], dtype=torch.int32)
    grad = torch.randn(10, 4)
    grouped_mm(x, w, offsets).backward(grad)
    xd, wd = x.detach().requires_grad_(), w.detach().requires_grad_()
    torch.cat((xd[:4] @ wd[0], xd[4:] @ wd[2])).backward(grad)
    torch.testing.assert_close(x.grad, xd.grad)
    torch.testing.assert_close(w.grad, wd.grad)


def test_expert_load_aux_loss_and_bias_update():
    torch.manual_seed(0)
    model = Transformer(tiny(aux_loss_alpha=0.01)).train()
    model(torch.randint(0, 32, (3, 8)))
    load = model.expert_load()
    assert load.shape == (2, 8) and (load.sum(dim=1) == 3 * 8 * 2).all()  # 2 MoE layers, k=2
    assert model.aux_loss() > 0 and model.aux_loss().requires_grad
    bias_before = model.moe_layers()[0].gate.e_score_correction_bias.clone()
    model.update_router_bias(0.01)
    moved = model.moe_layers()[0].gate.e_score_correction_bias - bias_before
    mean = load[0].float().mean()
    assert torch.equal(torch.sign(moved), torch.sign(mean - load[0].float()))  # against each expert's load
    summed = torch.zeros(2, 8)
    summed[:, 5] = 100.0  # an accumulated load given explicitly: only expert 5 is overloaded
    before = model.moe_layers()[1].gate.e_score_correction_bias.clone()
    model.update_router_bias(0.01, load=summed)
    moved = model.moe_layers()[1].gate.e_score_correction_bias - before
    assert moved[5] < 0 and (moved[torch.arange(8) != 5] > 0).all()


def test_aux_loss_free_bias_update_balances_a_skewed_router():
    torch.manual_seed(0)
    model = Transformer(tiny(n_group=1, first_k_dense_replace=1)).train()
    model.moe_layers()[0].gate.e_score_correction_bias[:2] = 0.3  # experts 0 and 1 take most tokens
    ids = torch.randint(0, 32, (8, 16))
    model(ids)
    skew_before = model.expert_load().float().std()
    for _ in range(60):
        model(ids)
        model.update_router_bias(0.01)
    assert model.expert_load().float().std() < 0.5 * skew_before


def test_update_router_bias_without_bias_is_refused():
    model = Transformer(tiny(model_type="deepseek_v2", topk_method="greedy", scoring_func="softmax"))
    model(torch.randint(0, 32, (1, 4)))
    with pytest.raises(ValueError, match="noaux_tc"):
        model.update_router_bias(0.01)


def test_a_few_hundred_steps_learn_a_toy_task():
    """Next token = (token + 1) mod vocab: the loss must fall from ~ln(32) to near zero."""
    torch.manual_seed(0)
    model = Transformer(tiny(aux_loss_alpha=0.001)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(200):
        start = torch.randint(0, 32, (8, 1))
        ids = (start + torch.arange(17)) % 32
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 32), ids[:, 1:].reshape(-1))
        (loss + model.aux_loss()).backward()
        optimizer.step()
        optimizer.zero_grad()
        model.update_router_bias(1e-3)
        losses.append(loss.item())
    assert losses[0] > 3.0 and sum(losses[-10:]) / 10 < 0.1
