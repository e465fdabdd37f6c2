"""`moecoder quickstart`: the whole system, small enough for a 2-core laptop with no GPU and no internet.

corpus + tokenizer (standard library, deduplicated, decontaminated) -> nano DeepSeek-style MoE pre-trained
with FIM -> instruction tuning -> HumanEval in the sandbox -> report. The time budget (--minutes) covers
data, pre-training and SFT; evaluation comes on top. A model this small scores near zero on HumanEval,
and the report says so; what it can show is a falling held-out loss, completions that parse, and
balanced experts.
"""

from __future__ import annotations

import ast
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from moecoder.errors import UserError

# Share of the time left after data preparation that goes to pre-training (the rest: SFT), and the time
# kept back for what surrounds a training loop (building the model, scoring held-out files, saving).
PRETRAIN_SHARE = 0.7
STAGE_OVERHEAD_SECONDS = 15
HELDOUT_TOKENS = 16384
# A run of a few dozen steps cannot spend twenty of them warming up.
WARMUP_STEPS = 5

# Files of the standard library per minute of budget: data preparation stays near a tenth of the budget.
FILES_PER_MINUTE = 100


@dataclass
class QuickstartPlan:
    """What the quickstart does with its budget, and where it puts everything."""

    out: Path
    minutes: float
    seed: int = 0
    # Completion mode: most of a nano model's training is next-token prediction on standard-library code,
    # where a signature and docstring are followed by the body, which is exactly HumanEval's prompt. The
    # stop sequences end each sample at the next top-level statement, so generation stays short; chat
    # mode would also make the model restate the signature inside a fenced block before any body.
    mode: str = "completion"
    max_new_tokens: int = 128
    eval_batch_size: int = 32
    limit: int | None = None  # HumanEval tasks to evaluate (None: all 164)
    mbpp_path: str | None = None

    @property
    def max_files(self) -> int:
        return max(150, int(FILES_PER_MINUTE * self.minutes))

    def path(self, name: str) -> Path:
        return self.out / name


class Quickstart:
    """Runs the stages in order, each writing into its own folder of the output directory."""

    def __init__(self, plan: QuickstartPlan, console=None):
        from rich.console import Console

        self.plan = plan
        self.console = console or Console(stderr=True)
        self.started = time.monotonic()

    def seconds_left(self) -> float:
        return self.plan.minutes * 60 - (time.monotonic() - self.started)

    def log(self, message: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/dim] {message}")

    def stage(self, title: str) -> None:
        self.console.rule(f"[bold]{title}[/bold] ({max(0.0, self.seconds_left()):.0f}s of budget left)")

    def run(self) -> dict:
        plan = self.plan
        if plan.out.exists() and any(plan.out.iterdir()):
            raise UserError(f"{plan.out} is not empty: choose another --out (or delete it) for a fresh quickstart")
        plan.out.mkdir(parents=True, exist_ok=True)
        mbpp = mbpp_for_decontamination(plan.mbpp_path, plan.out, self.log)
        config = self.train_config(mbpp)

        self.stage("1/5 corpus and tokenizer")
        from moecoder.train.pretrain import prepare_data, pretrain

        data = prepare_data(config, plan.path("data"), log=self.log)

        self.stage("2/5 pre-training a nano MoE with fill-in-the-middle")
        pretrain_minutes = max(0.2, (self.seconds_left() * PRETRAIN_SHARE - STAGE_OVERHEAD_SECONDS) / 60)
        pre = pretrain(replace(config, minutes=pretrain_minutes), plan.path("pretrain"), log=self.log)

        self.stage("3/5 instruction tuning")
        sft_summary = self.instruction_tune(data, pre, mbpp)
        shutil.copytree(sft_summary["model_dir"], plan.path("model"))

        self.stage("4/5 HumanEval in the sandbox")
        summaries = self.evaluate(data, pre, sft_summary)

        self.stage("5/5 report")
        return self.finish(summaries)

    def train_config(self, mbpp: str):
        from moecoder.train.config import load_config

        config = load_config(None, (), max_files=self.plan.max_files, seed=self.plan.seed,
                             data_dir=str(self.plan.path("data")), mbpp_path=mbpp, decontaminate=True,
                             eval_tokens=HELDOUT_TOKENS, warmup_steps=WARMUP_STEPS)
        return replace(config, steps=None, minutes=self.plan.minutes, save_every=10**9)

    def instruction_tune(self, data, pre: dict, mbpp: str) -> dict:
        """SFT on the built-in instruction set of the already prepared corpus, in the time that is left.

        `sft` takes a step count (its cosine schedule follows steps), so the count comes from the
        pre-training speed: SFT sequences are twice as long, so about half the steps per second.
        """
        from moecoder.train.corpus import load_documents
        from moecoder.train.sft import as_messages, corpus_instructions, sft

        documents = load_documents(data.root / "corpus" / "train.jsonl") + load_documents(data.root / "corpus" / "heldout.jsonl")
        examples = [as_messages(example) for example in corpus_instructions(documents)]
        sft_data = self.plan.path("sft-data.jsonl")
        sft_data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in examples))
        self.log(f"built-in instruction set: {len(examples)} functions with docstrings from the corpus")
        minutes = max(0.2, (self.seconds_left() - STAGE_OVERHEAD_SECONDS) / 60)
        steps_per_second = pre["steps"] / max(pre["elapsed_s"], 1e-6)
        steps = max(10, int(0.5 * steps_per_second * minutes * 60))
        return sft(Path(pre["model_dir"]), data=sft_data, out_dir=self.plan.path("sft"), minutes=minutes,
                   steps=steps, mbpp_path=mbpp, seq_len=512, log=self.log, save_every=10**9, seed=self.plan.seed,
                   eval_tokens=HELDOUT_TOKENS, warmup_steps=WARMUP_STEPS)

    def evaluate(self, data, pre: dict, sft_summary: dict) -> dict:
        from moecoder.pipeline.evalrun import EvalRun, EvalSettings

        settings = EvalSettings(
            model=f"native:{self.plan.path('model')}", benchmarks=["humaneval"], out=self.plan.path("eval"),
            mode=self.plan.mode, max_new_tokens=self.plan.max_new_tokens, seed=self.plan.seed, limit=self.plan.limit,
            backend_options={"batch_size": self.plan.eval_batch_size},
            extra_manifest={"notes": [], "training": self.training_manifest(data, pre, sft_summary)},
        )
        return EvalRun(settings, console=self.console).run()

    def training_manifest(self, data, pre: dict, sft_summary: dict) -> dict:
        """What the report shows about training: logs to plot and the numbers a nano model can be judged by."""
        out = self.plan.out
        metrics = {
            "corpus": f"{data.report['kept']} training files, {data.report['heldout']} held-out files "
                      f"({data.report['train_tokens']:,} tokens); removed: "
                      + ", ".join(f"{k} {v}" for k, v in data.report["removed"].items()),
            "pre-training": f"{_count(pre['steps'], 'step')}, {pre['tokens']:,} tokens, {pre['elapsed_s']:.0f}s; "
                            f"loss {pre['first_loss']:.2f} → {pre['final_loss']:.2f}",
            "held-out loss (pre-training, files kept out of training)":
                f"{pre['heldout_loss']:.3f} nats/token (perplexity {pre['heldout_ppl']:.1f})" if "heldout_loss" in pre else "n/a",
            "instruction tuning": f"{_count(sft_summary['steps'], 'step')}, {sft_summary['elapsed_s']:.0f}s; "
                                  f"loss {sft_summary['first_loss']:.2f} → {sft_summary['final_loss']:.2f}",
            "held-out loss (SFT responses)":
                f"{sft_summary['heldout_loss']:.3f} nats/token" if "heldout_loss" in sft_summary else "n/a",
            "expert load balance (max/mean load − 1 per MoE layer, end of pre-training; 0 = even)":
                expert_balance(out / "pretrain" / "train_log.jsonl"),
        }
        return {"logs": {"pre-training": str(out / "pretrain" / "train_log.jsonl"),
                         "instruction tuning": str(out / "sft" / "train_log.jsonl")},
                "metrics": metrics}

    def finish(self, summaries: dict) -> dict:
        """Add what only the samples can tell (parse share, the plain statement about the score) and rebuild the report."""
        from moecoder.bench.datasets import load_benchmark
        from moecoder.files import read_jsonl, write_json
        from moecoder.pipeline.manifest import read_json
        from moecoder.report.html import write_report

        eval_dir = self.plan.path("eval")
        rows = read_jsonl(eval_dir / "samples-humaneval.jsonl")
        tasks = load_benchmark("humaneval").tasks
        entry_points = {task.task_id: task.entry_point for task in tasks}
        prompts = {task.task_id: task.prompt for task in tasks}
        programs = [program_of(row, prompts) for row in rows]
        parsed = sum(parses(program) for program in programs)
        implemented = sum(implements(program, entry_points[row["task_id"]]) for program, row in zip(programs, rows))
        pass1 = summaries["humaneval"]["pass_at_k"]["pass@1"]
        manifest_path = eval_dir / "manifest.json"
        manifest = read_json(manifest_path)
        metrics = manifest["training"]["metrics"]
        metrics["completions that parse (ast.parse of prompt + completion)"] = _share(parsed, len(rows))
        metrics["... and give the function a body beyond its docstring"] = _share(implemented, len(rows))
        manifest["notes"] = [plain_statement(pass1["value"], self.plan.mode)]
        write_json(manifest_path, manifest)
        report = write_report(eval_dir)
        shutil.copyfile(report, self.plan.path("report.html"))
        self.print_locations()
        return {"humaneval": summaries["humaneval"]["pass_at_k"], "parse_share": parsed / len(rows),
                "implemented_share": implemented / len(rows)}

    def print_locations(self) -> None:
        out = self.plan.out
        where = [
            ("report", out / "report.html"),
            ("model (moecoder.load_model / transformers)", out / "model"),
            ("corpus, tokenizer, token shards", out / "data"),
            ("pre-training run (train_log.jsonl)", out / "pretrain"),
            ("instruction tuning run", out / "sft"),
            ("HumanEval samples, results, summary", out / "eval"),
        ]
        self.console.rule("[bold]done[/bold]")
        for label, path in where:
            self.console.print(f"{label:<45} {path}")
        self.console.print(f"total time {time.monotonic() - self.started:.0f}s")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _share(count: int, total: int) -> str:
    return f"{count}/{total} ({100 * count / total:.0f}%)"


def program_of(row: dict, prompts: dict[str, str]) -> str:
    """The program a sample row stands for: its solution, or the task prompt followed by its completion."""
    return row["solution"] if "solution" in row else prompts[row["task_id"]] + row["completion"]


def parses(program: str) -> bool:
    """Whether a program is valid Python: a nano model's first milestone, long before passing."""
    try:
        ast.parse(program)
    except (SyntaxError, ValueError):
        return False
    return True


def implements(program: str, entry_point: str) -> bool:
    """Whether a program parses and its entry point has a body beyond the docstring."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            return any(not isinstance(stmt, ast.Pass) for stmt in body)
    return False


def expert_balance(log_path: Path) -> str:
    from moecoder.report.html import last_expert_load, load_imbalance
    from moecoder.files import read_jsonl

    load = last_expert_load(read_jsonl(log_path)) if log_path.exists() else None
    return ", ".join(f"{v:.2f}" for v in load_imbalance(load)) if load else "n/a"


def plain_statement(pass1: float, mode: str) -> str:
    return (
        f"This model scored pass@1 = {100 * pass1:.1f}% on HumanEval ({mode} mode). That is expected: it has a few "
        "million parameters and trained for minutes on one CPU, so a score near zero is the right answer. The same "
        "pipeline (`moecoder eval --model hf:deepseek-ai/deepseek-coder-6.7b-instruct --benchmark humaneval`) is how a "
        "real checkpoint is measured; DeepSeek's published pass@1 for those checkpoints is in the table below. What a "
        "model this small can show is under Training: held-out loss, the share of completions that parse, expert balance."
    )


def mbpp_for_decontamination(path: str | None, out: Path, log) -> str:
    """A local MBPP file for decontaminating the corpus: the one given, or moecoder.bench's cached copy.

    Offline with neither, the corpus is decontaminated against HumanEval only (the benchmark the
    quickstart evaluates): an empty file stands in for MBPP, and the log says so.
    """
    if path:
        if not Path(path).is_file():
            raise UserError(f"--mbpp {path}: no such file")
        return path
    from moecoder.bench.datasets import SOURCES
    from moecoder.files import moecoder_home

    cached = moecoder_home() / "datasets" / SOURCES["mbpp"].filename
    if cached.is_file():
        return str(cached)
    log("MBPP is not cached and there may be no internet: decontaminating against HumanEval only "
        "(pass --mbpp PATH to include MBPP)")
    stand_in = out / "no-mbpp.jsonl"
    stand_in.write_text("")
    return str(stand_in)
