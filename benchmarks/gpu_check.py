"""The GPU check, prepared for a lent accelerator: one run, every number the GPU questions need.

    benchmarks/gpu_check.sh           # CUDA: real shapes, under 8 minutes on one H100/H200
    benchmarks/gpu_check.sh --cpu     # tiny shapes on CPU: proves the logic (tests/train/test_gpu_check.py)

Steps, each timed and recorded even when another fails:
1. parity: our logits on the device in float32 and bf16 against a float32 CPU reference (transformers'
   DeepseekV3 when installed, else our own model on CPU);
2. torch.compile: of the model's forward (logits equal eager) and of the decoding step (greedy tokens equal);
3. activations: bytes autograd saves in a training forward vs `moecoder stats`' formula (fused attention);
4. training: a DeepSeek-V3-shaped MoE of ~1B total parameters (hidden and expert sizes multiples of 128) in
   bf16 with torch._grouped_mm, eager and compiled: tokens/s and MFU against the GPU's dense bf16 peak
   (H100 SXM / H200: 989 TFLOP/s), next to transformers' DeepseekV3ForCausalLM on the same shapes;
5. decoding: greedy tokens/s at batch 1 and 32, ours (eager, compiled) vs transformers.

The CPU mode runs the same code on tiny shapes with torch.compile's "eager" backend (inductor would take
minutes to compile on a small CPU) and PyTorch's math attention; its timings mean nothing.

Needs only torch and this source tree (run through gpu_check.sh, which sets PYTHONPATH); transformers is
optional (its comparisons are skipped with a note). Writes gpu_check.json and gpu_check.md into $OUT or
--out, and prints the markdown.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path


def _stand_in_for_cli_modules() -> None:
    """moecoder.errors imports typer for its CLI exit; a lent machine has only torch. Nothing here exits."""
    if importlib.util.find_spec("typer") is None:
        sys.modules["typer"] = types.SimpleNamespace(Exit=SystemExit)


_stand_in_for_cli_modules()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from moecoder.model import ModelConfig, accounting  # noqa: E402
from moecoder.model.transformer import Transformer  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12}  # dense bf16 tensor-core FLOP/s
TINY = dict(model_type="deepseek_v3", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16,
            v_head_dim=16, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
            first_k_dense_replace=1, n_group=2, topk_group=1, max_position_embeddings=512)
# ~0.98B total / 0.19B active: V3's layout scaled down, every matmul dimension a multiple of 64 (mostly 128).
MOE_1B = dict(model_type="deepseek_v3", vocab_size=32768, hidden_size=1024, intermediate_size=4096,
              num_hidden_layers=12, num_attention_heads=16, q_lora_rank=384, kv_lora_rank=256, qk_nope_head_dim=64,
              qk_rope_head_dim=64, v_head_dim=128, n_routed_experts=64, num_experts_per_tok=6,
              moe_intermediate_size=384, n_shared_experts=1, first_k_dense_replace=1, n_group=8, topk_group=4,
              max_position_embeddings=4096)
GPU = {"model": MOE_1B, "batch": 8, "seq_len": 2048, "steps": 8, "decode_batches": (1, 32), "decode_prompt": 64,
       "decode_new": 128, "compile": "inductor", "attention": "efficient"}
CPU = {"model": TINY, "batch": 2, "seq_len": 64, "steps": 2, "decode_batches": (1, 4), "decode_prompt": 8,
       "decode_new": 4, "compile": "eager", "attention": "math"}


def transformers_or_none():
    try:
        import transformers
    except ImportError:
        return None
    return transformers


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(fields: dict, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig(**fields))


def reference_copy(ours: Transformer, directory: Path):
    """transformers' model with our weights (through our transformers-layout checkpoint), or None."""
    transformers = transformers_or_none()
    if transformers is None:
        return None
    from moecoder.model import save_model

    save_model(ours, directory)
    return transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


# --- steps ---------------------------------------------------------------------------------------
def check_parity(device: torch.device, plan: dict, scratch: Path) -> dict:
    model = build(TINY).eval()
    ids = torch.randint(0, TINY["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(1))
    reference = reference_copy(model, scratch / "parity")
    with torch.no_grad():
        want = reference(ids).logits if reference is not None else model(ids)
        on_device = model.to(device)
        fp32 = relative_error(on_device(ids.to(device)), want)
        bf16 = relative_error(on_device.to(torch.bfloat16)(ids.to(device)), want)
    return {"reference": "transformers" if reference is not None else "ours on CPU (transformers not installed)",
            "fp32_rel_error": fp32, "bf16_rel_error": bf16, "ok": fp32 <= 1e-4 and bf16 <= 3e-2}


def check_compile(device: torch.device, plan: dict, scratch: Path) -> dict:
    model = build(TINY).to(device).eval()
    ids = torch.randint(0, TINY["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(2)).to(device)
    with torch.no_grad():
        eager = model(ids)
        compiled = torch.compile(model, backend=plan["compile"])(ids)
    prompt = ids[:, :plan["decode_prompt"]]
    tokens = model.generate(prompt, max_new_tokens=16)
    tokens_compiled = model.generate(prompt, max_new_tokens=16, compile=plan["compile"])
    forward_error = relative_error(compiled, eager)
    return {"backend": plan["compile"], "forward_rel_error": forward_error,
            "decode_tokens_equal": bool(torch.equal(tokens, tokens_compiled)),
            "ok": forward_error <= 1e-4 and bool(torch.equal(tokens, tokens_compiled))}


def check_activations(device: torch.device, plan: dict, scratch: Path) -> dict:
    fields = dict(TINY, vocab_size=1024, hidden_size=128, moe_intermediate_size=128)
    config = ModelConfig(**fields)
    ids = torch.randint(0, fields["vocab_size"], (4, 128), generator=torch.Generator().manual_seed(3)).to(device)
    result = {"attention": plan["attention"]}
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        measured = accounting.measured_activation_bytes(build(fields).to(device, dtype).train(), ids)
        predicted = ids.numel() * accounting.activation_bytes_per_token(config, ids.shape[1], name, plan["attention"])
        result[name] = {"measured": measured, "predicted": predicted, "ratio": measured / predicted}
    result["ok"] = abs(result["float32"]["ratio"] - 1) < 0.01
    return result


def time_steps(step, steps: int, device: torch.device) -> float:
    """Median seconds of `steps` calls after two warm-up calls (compilation, allocator)."""
    step(), step()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def train_step_fn(model, forward, ids):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=ids.device.type == "cuda")

    def step():
        logits = forward(ids)
        F.cross_entropy(logits.float()[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def check_training(device: torch.device, plan: dict, scratch: Path) -> dict:
    fields, batch, seq_len = plan["model"], plan["batch"], plan["seq_len"]
    config = ModelConfig(**fields)
    flops = accounting.flops_per_token(config, seq_len, training=True)
    peak = next((v for k, v in PEAK_BF16.items() if device.type == "cuda" and k in torch.cuda.get_device_name(device)),
                None)
    ids = torch.randint(0, fields["vocab_size"], (batch, seq_len), generator=torch.Generator().manual_seed(4)).to(device)
    result = {"total_params": accounting.total_params(config), "active_params": accounting.active_params(config),
              "tokens_per_step": batch * seq_len, "train_flops_per_token": flops, "peak_flops": peak,
              "planned_activation_bytes": batch * seq_len * accounting.activation_bytes_per_token(
                  config, seq_len, "bfloat16", plan["attention"])}

    def measure(name, model, forward):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = time_steps(train_step_fn(model, forward, ids), plan["steps"], device)
        tokens_per_s = batch * seq_len / seconds
        result[name] = {"step_s": seconds, "tokens_per_s": tokens_per_s,
                        "mfu": tokens_per_s * flops / peak if peak else None,
                        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}

    ours = build(fields).to(device, torch.bfloat16).train()
    measure("ours_eager", ours, ours)
    try:
        measure("ours_compiled", ours, torch.compile(ours, backend=plan["compile"]))
    except Exception as exc:  # compile failures are results too
        result["ours_compiled"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    del ours
    reference = reference_copy(build(fields), scratch / "train")
    if reference is None:
        result["transformers"] = {"skipped": "transformers not installed"}
    else:
        reference = reference.to(device, torch.bfloat16).train()
        measure("transformers", reference, lambda x: reference(x).logits)
        result["speedup_vs_transformers"] = (result["transformers"]["step_s"]
                                             / min(result[k]["step_s"] for k in ("ours_eager", "ours_compiled")
                                                   if "step_s" in result.get(k, {})))
    return result


def check_decoding(device: torch.device, plan: dict, scratch: Path) -> dict:
    fields, new = plan["model"], plan["decode_new"]
    ours = build(fields).to(device, torch.bfloat16).eval()
    reference = reference_copy(build(fields), scratch / "decode")
    if reference is not None:
        reference = reference.to(device, torch.bfloat16).eval()
    result = {"new_tokens": new, "prompt_tokens": plan["decode_prompt"]}
    for batch in plan["decode_batches"]:
        ids = torch.randint(0, fields["vocab_size"], (batch, plan["decode_prompt"]),
                            generator=torch.Generator().manual_seed(5)).to(device)
        row = {}
        for name, run in (("ours_eager", lambda: ours.generate(ids, new)),
                          ("ours_compiled", lambda: ours.generate(ids, new, compile=plan["compile"])),
                          ("transformers", None if reference is None else lambda: reference.generate(
                              ids, max_new_tokens=new, min_new_tokens=new, do_sample=False))):
            if run is None:
                row[name] = None
                continue
            with torch.no_grad():
                row[name] = batch * new / time_steps(run, 1 if device.type == "cpu" else 3, device)
        if row["transformers"]:
            row["speedup"] = max(row["ours_eager"], row["ours_compiled"]) / row["transformers"]
        result[f"batch_{batch}_tokens_per_s"] = row
    return result


STEPS = {"parity": check_parity, "compile": check_compile, "activations": check_activations,
         "training": check_training, "decoding": check_decoding}


# --- report --------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU check: {env['device_name']}", "",
             f"torch {env['torch']}, transformers {env['transformers'] or 'not installed'}, mode {env['mode']}", "",
             "| step | seconds | result |", "|---|---:|---|"]
    for name in STEPS:
        step = report["steps"][name]
        summary = step.get("error") or ", ".join(f"{k}={_fmt(v)}" for k, v in step["result"].items()
                                                 if not isinstance(v, dict))
        lines.append(f"| {name} | {step['seconds']:.1f} | {summary} |")
    train = report["steps"]["training"].get("result", {})
    lines += ["", "| training (bf16) | tokens/s | MFU | step s |", "|---|---:|---:|---:|"]
    for name in ("ours_eager", "ours_compiled", "transformers"):
        row = train.get(name, {})
        if "tokens_per_s" in row:
            lines.append(f"| {name} | {row['tokens_per_s']:,.0f} | {_fmt(row['mfu'])} | {row['step_s']:.3f} |")
        elif row:
            lines.append(f"| {name} | {next(iter(row.values()))} | | |")
    decode = report["steps"]["decoding"].get("result", {})
    lines += ["", "| greedy decoding tokens/s | ours eager | ours compiled | transformers |", "|---|---:|---:|---:|"]
    for key, row in decode.items():
        if isinstance(row, dict):
            lines.append(f"| {key.removesuffix('_tokens_per_s').replace('_', ' ')} | {_fmt(row['ours_eager'])} | "
                         f"{_fmt(row['ours_compiled'])} | {_fmt(row['transformers'])} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny shapes on CPU (tests the script's logic)")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="where to write gpu_check.json/.md ($OUT)")
    parser.add_argument("--only", default=",".join(STEPS), help="comma list of steps to run")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA device (use --cpu for the tiny CPU run)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    plan = CPU if args.cpu else GPU
    transformers = transformers_or_none()
    report = {"environment": {"mode": "cpu" if args.cpu else "cuda", "torch": torch.__version__,
                              "transformers": getattr(transformers, "__version__", None), "python": sys.version.split()[0],
                              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"},
              "plan": {k: v for k, v in plan.items() if k != "model"} | {"model": plan["model"]}, "steps": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.only.split(","):
            start = time.perf_counter()
            try:
                report["steps"][name] = {"result": STEPS[name](device, plan, Path(scratch))}
            except Exception as exc:
                traceback.print_exc()
                report["steps"][name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            report["steps"][name]["seconds"] = time.perf_counter() - start
            print(f"{name}: {report['steps'][name]['seconds']:.1f} s", file=sys.stderr)
    for name in STEPS:
        report["steps"].setdefault(name, {"error": "not run", "seconds": 0.0})
    text = markdown(report)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
        (Path(args.out) / "gpu_check.md").write_text(text)
    return 1 if any("error" in step for step in report["steps"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
