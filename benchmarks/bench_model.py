"""Our model vs transformers' DeepseekV2ForCausalLM on the same small checkpoint, on CPU, side by side.

    python benchmarks/bench_model.py [--steps 6] [--new-tokens 64] [--threads N] [--scaling 8,16,32,64,128]

Prints training-step time (forward + backward + AdamW) and greedy decoding speed (KV cache) for both, their
ratios (targets: >= 2x each), whether the greedy tokens are equal, and how our step time grows as routed
experts grow at fixed top-k (it should follow active, not total, parameters). Measurements alternate
between the two implementations; medians are reported. Times are this process's CPU time on one thread
(time.process_time), so that other processes on a shared machine do not count; --wall uses wall-clock.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
import transformers

from moecoder.model import ModelConfig, Transformer, load_model

SMALL_V2 = dict(vocab_size=2048, hidden_size=256, intermediate_size=1024, moe_intermediate_size=128,
                num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=64, q_lora_rank=None,
                qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, n_routed_experts=32,
                num_experts_per_tok=4, n_shared_experts=2, first_k_dense_replace=0, topk_method="greedy",
                max_position_embeddings=4096)


def lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def train_step_fn(model, logits_of):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(ids):
        loss = lm_loss(logits_of(model, ids), ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


CLOCK = time.process_time


def timed(fn, *args) -> float:
    start = CLOCK()
    fn(*args)
    return CLOCK() - start


def alternate(a, b, args, repeats: int) -> tuple[float, float]:
    """Median seconds of a(*args) and b(*args), interleaved, after one warm-up call each."""
    a(*args), b(*args)
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(timed(a, *args))
        times_b.append(timed(b, *args))
    return statistics.median(times_a), statistics.median(times_b)


def expert_scaling(experts_list, batch, seq, repeats):
    """Our step time as routed experts grow at fixed top-k: forward+backward and the AdamW update apart,
    since the optimizer necessarily touches every parameter, routed to or not."""
    print(f"\nour training step vs routed experts (top-{SMALL_V2['num_experts_per_tok']}, batch {batch}x{seq}):")
    print("| routed experts | total params | active params | fwd+bwd ms | AdamW ms | step ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in experts_list:
        config = ModelConfig.from_hf(dict(SMALL_V2, n_routed_experts=n, model_type="deepseek_v2"))
        torch.manual_seed(0)
        model = Transformer(config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(0, config.vocab_size, (batch, seq))
        forward_backward, update = [], []
        for i in range(repeats + 1):
            start = CLOCK()
            lm_loss(model(ids), ids).backward()
            middle = CLOCK()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i:  # the first step is a warm-up
                forward_backward.append(middle - start)
                update.append(CLOCK() - middle)
        fb, up = 1e3 * statistics.median(forward_backward), 1e3 * statistics.median(update)
        total, active = model.num_params(), model.num_params(active=True)
        print(f"| {n} | {total / 1e6:.1f}M | {active / 1e6:.2f}M | {fb:.0f} | {up:.0f} | {fb + up:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per implementation")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--decode-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU time sums over threads)")
    parser.add_argument("--wall", action="store_true", help="time with the wall clock instead of CPU time")
    parser.add_argument("--compile", action="store_true",
                        help="also time our training step and decoding step under torch.compile (inductor)")
    parser.add_argument("--scaling", default="8,16,32,64,128", help="routed expert counts for the table ('' = skip)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.wall else time.process_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    theirs = transformers.DeepseekV2ForCausalLM(transformers.DeepseekV2Config(**SMALL_V2))
    with tempfile.TemporaryDirectory() as directory:
        theirs.save_pretrained(directory)
        ours = load_model(directory, dtype=torch.float32)
    print(f"transformers {transformers.__version__} (experts: {theirs.config._experts_implementation}, "
          f"attention: {theirs.config._attn_implementation}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {'wall-clock' if args.wall else 'CPU'} time")
    print(f"model: DeepSeek-V2 layout, hidden 256, 4 layers, 32 routed experts top-4, 2 shared; "
          f"{ours.num_params() / 1e6:.1f}M params, {ours.num_params(active=True) / 1e6:.2f}M active")

    # Decoding first: the training steps below change the two models' weights (not identically).
    ours.eval(), theirs.eval()
    prompt = torch.randint(0, SMALL_V2["vocab_size"], (1, args.prompt))
    out = {}

    def ours_decode(p, compile=False):
        out["ours"] = ours.generate(p, max_new_tokens=args.new_tokens, compile=compile)

    def theirs_decode(p):
        with torch.no_grad():
            out["theirs"] = theirs.generate(p, max_new_tokens=args.new_tokens, do_sample=False,
                                            eos_token_id=None, pad_token_id=0)

    d_ours, d_theirs = alternate(ours_decode, theirs_decode, (prompt,), args.decode_repeats)
    n = args.new_tokens
    print(f"\ngreedy decoding (prompt {args.prompt}, {n} new tokens, batch 1): ours {n / d_ours:.0f} tok/s, "
          f"transformers {n / d_theirs:.0f} tok/s")
    print(f"decoding speed-up: {d_theirs / d_ours:.2f}x (target >= 2x)")
    print(f"greedy tokens equal: {torch.equal(out['ours'], out['theirs'])}")
    if args.compile:
        start = time.perf_counter()
        ours_decode(prompt, compile=True)
        print(f"torch.compile of our decoding step took {time.perf_counter() - start:.0f} s (wall)")
        d_compiled, d_theirs = alternate(lambda p: ours_decode(p, compile=True), theirs_decode, (prompt,),
                                         args.decode_repeats)
        print(f"greedy decoding, ours compiled: {n / d_compiled:.0f} tok/s, transformers eager "
              f"{n / d_theirs:.0f} tok/s: speed-up {d_theirs / d_compiled:.2f}x, "
              f"tokens equal: {torch.equal(out['ours'], out['theirs'])}")


    ids = torch.randint(0, SMALL_V2["vocab_size"], (args.batch, args.seq))
    ours.train(), theirs.train()
    ours_step = train_step_fn(ours, lambda m, x: m(x))
    theirs_step = train_step_fn(theirs, lambda m, x: m(x).logits)
    t_ours, t_theirs = alternate(ours_step, theirs_step, (ids,), args.steps)
    tokens = args.batch * args.seq
    print(f"\ntraining step ({args.batch}x{args.seq} tokens, fwd+bwd+AdamW): ours {t_ours * 1e3:.0f} ms "
          f"({tokens / t_ours:.0f} tok/s), transformers {t_theirs * 1e3:.0f} ms ({tokens / t_theirs:.0f} tok/s)")
    print(f"training-step speed-up: {t_theirs / t_ours:.2f}x (target >= 2x)")
    if args.compile:
        compiled = torch.compile(ours)
        compiled_step = train_step_fn(ours, lambda m, x: compiled(x))
        start = time.perf_counter()
        compiled_step(ids)
        print(f"torch.compile of our step took {time.perf_counter() - start:.0f} s (wall)")
        t_compiled, t_theirs = alternate(compiled_step, theirs_step, (ids,), args.steps)
        print(f"training step, ours compiled: {t_compiled * 1e3:.0f} ms ({tokens / t_compiled:.0f} tok/s), "
              f"transformers eager {t_theirs * 1e3:.0f} ms: speed-up {t_theirs / t_compiled:.2f}x")

    if args.scaling:
        expert_scaling([int(n) for n in args.scaling.split(",")], args.batch, args.seq, max(args.steps // 2, 2))


if __name__ == "__main__":
    main()
