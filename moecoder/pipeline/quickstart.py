"""`moecoder quickstart`: the whole system, small enough for a 2-core laptop with no GPU and no internet.

corpus + tokenizer (standard library, deduplicated, decontaminated) -> nano DeepSeek-style MoE pre-trained
with FIM (the base model) -> instruction tuning (the instruct model) -> evaluation as DeepSeek evaluates:
the base model on HumanEval in completion mode and on HumanEval single-line infilling (PSM prompt) beside
the best constant answer, the instruct model on HumanEval in chat mode -> one report with both models side
by side. The time budget (--minutes) covers data, pre-training and SFT; evaluation comes on top.

Output directory:
    data/ pretrain/ sft/        corpus, tokenizer, shards; the two training runs (train_log.jsonl, model/)
    model/                      the instruct model (moecoder.load_model / transformers)
    eval/base/ eval/instruct/   `moecoder eval` run directories (samples, results, summary, report.html)
    eval/constant-baseline/     the constant answer's infilling samples and verdicts, same tasks
    quickstart.json report.html the numbers of both models and the page built from them
"""

from __future__ import annotations

import ast
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from moecoder.errors import UserError

# Share of the time left after data preparation that goes to pre-training (the rest: SFT), and the time
# kept back for what surrounds a training loop (building the model, scoring held-out files, saving).
PRETRAIN_SHARE = 0.8
STAGE_OVERHEAD_SECONDS = 15
HELDOUT_TOKENS = 16384
# What a run of minutes trains with (measurements: benchmarks/train.md). A few dozen steps cannot spend twenty
# warming up. Documents are the corpus's functions, each on its own (HumanEval-shaped: a signature, a docstring, a
# body that ends at the end-of-document token); on whole files no configuration measured gave a body to more than
# 23% of the base model's completions, on functions 24-48%. The model is the nano MoE at half the width (1.2M
# active / 2.7M total parameters): in the same CPU time it takes twice the steps and reached a lower held-out loss
# than the nano MoE. FIM stays at characters, rate 0.5: line-level FIM gave no more bodies, and its infilling
# answer was most often a lone `"""` line (what starts or ends a docstring), a run of one character.
QUICKSTART_MODEL = {"hidden_size": 128, "intermediate_size": 352, "moe_intermediate_size": 128, "kv_lora_rank": 32,
                    "qk_nope_head_dim": 16, "qk_rope_head_dim": 16, "v_head_dim": 16}
TRAINING = {"warmup_steps": 5, "documents": "functions", "model": QUICKSTART_MODEL}
HELD_OUT = f"the {TRAINING['documents']} of held-out standard-library files"  # what base held-out loss is on
# Greedy decoding of a model trained for minutes loops on one token ("#  #  #", runs of backticks or blank lines):
# the quickstart forbids repeating an 8-gram of the generated text (recorded in each run's manifest; `moecoder
# eval` decodes plainly unless --no-repeat-ngram is given, as DeepSeek evaluates).
NO_REPEAT_NGRAM = 8

# Files of the standard library per minute of budget: data preparation stays near a tenth of the budget.
FILES_PER_MINUTE = 100
# Below this budget (the CI run) the infilling benchmark is scored on every INFILL_STRIDE-th task only.
SHORT_RUN_MINUTES = 5
INFILL_STRIDE = 4

INFILL = "humaneval-fim-single"


@dataclass
class QuickstartPlan:
    """What the quickstart does with its budget, and where it puts everything."""

    out: Path
    minutes: float
    seed: int = 0
    # Completions end at the next top-level statement; a chat reply restates the function in a fenced block.
    max_new_tokens: int = 128
    chat_max_new_tokens: int = 256
    eval_batch_size: int = 32
    limit: int | None = None  # HumanEval tasks to evaluate (None: all 164)
    mbpp_path: str | None = None
    # What --minutes counts: "wall" seconds, or "cpu": this process's CPU seconds / torch threads, the time a
    # dedicated machine would have taken (for a budget on a CPU shared with other work).
    clock: str = "wall"

    @property
    def max_files(self) -> int:
        return max(150, int(FILES_PER_MINUTE * self.minutes))

    @property
    def infill_stride(self) -> int:
        return INFILL_STRIDE if self.minutes < SHORT_RUN_MINUTES else 1

    def path(self, name: str) -> Path:
        return self.out / name


class Quickstart:
    """Runs the stages in order, each writing into its own folder of the output directory."""

    def __init__(self, plan: QuickstartPlan, console=None):
        from rich.console import Console

        if plan.clock not in ("wall", "cpu"):
            raise UserError(f"--clock must be wall or cpu, got {plan.clock!r}")
        self.plan = plan
        self.console = console or Console(stderr=True)
        self.started = time.monotonic()
        self.cpu_started = time.process_time()

    def elapsed(self) -> float:
        """Seconds of the budget used so far, on the plan's clock."""
        if self.plan.clock == "wall":
            return time.monotonic() - self.started
        import torch

        return (time.process_time() - self.cpu_started) / torch.get_num_threads()

    def seconds_left(self) -> float:
        return self.plan.minutes * 60 - self.elapsed()

    def log(self, message: str) -> None:
        self.console.print(f"[dim]{self.elapsed():6.1f}s[/dim] {message}")

    def stage(self, title: str) -> None:
        self.console.rule(f"[bold]{title}[/bold] ({max(0.0, self.seconds_left()):.0f}s of budget left)")

    def run(self) -> dict:
        plan = self.plan
        if plan.out.exists() and any(plan.out.iterdir()):
            raise UserError(f"{plan.out} is not empty: choose another --out (or delete it) for a fresh quickstart")
        plan.out.mkdir(parents=True, exist_ok=True)
        mbpp = mbpp_for_decontamination(plan.mbpp_path, plan.out, self.log)
        config = self.train_config(mbpp)

        self.stage("1/6 corpus and tokenizer")
        from moecoder.train.pretrain import prepare_data, pretrain

        data = prepare_data(config, plan.path("data"), log=self.log)

        self.stage("2/6 pre-training a nano MoE with fill-in-the-middle (the base model)")
        pretrain_minutes = max(0.2, (self.seconds_left() * PRETRAIN_SHARE - STAGE_OVERHEAD_SECONDS) / 60)
        pre = pretrain(replace(config, minutes=pretrain_minutes), plan.path("pretrain"), log=self.log)

        self.stage("3/6 instruction tuning (the instruct model)")
        sft_summary = self.instruction_tune(data, pre, mbpp)
        shutil.copytree(sft_summary["model_dir"], plan.path("model"))

        self.stage("4/6 base model: HumanEval in completion mode, single-line infilling")
        base_dir = plan.path("eval") / "base"
        base = self.evaluate(pre["model_dir"], "completion", base_dir, "pretrain", plan.max_new_tokens)
        infill = self.evaluate_infilling(pre["model_dir"], base_dir)

        self.stage("5/6 instruct model: HumanEval in chat mode")
        instruct = self.evaluate(str(plan.path("model")), "chat", plan.path("eval") / "instruct", "sft",
                                 plan.chat_max_new_tokens)

        self.stage("6/6 report")
        return self.finish(data, pre, sft_summary, base, instruct, infill)

    def train_config(self, mbpp: str):
        from moecoder.train.config import load_config

        config = load_config(None, (), max_files=self.plan.max_files, seed=self.plan.seed,
                             data_dir=str(self.plan.path("data")), mbpp_path=mbpp, decontaminate=True,
                             eval_tokens=HELDOUT_TOKENS, clock=self.plan.clock, **TRAINING)
        return replace(config, steps=None, minutes=self.plan.minutes, save_every=10**9, clock=self.plan.clock)

    def instruction_tune(self, data, pre: dict, mbpp: str) -> dict:
        """SFT on the built-in instruction set of the already prepared corpus, in the time that is left.

        `sft` takes a step count (its cosine schedule follows steps), so the count comes from the
        pre-training speed: an SFT step has twice the tokens (8 x 512), so about half the steps per second.
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
                   eval_tokens=HELDOUT_TOKENS, warmup_steps=TRAINING["warmup_steps"], clock=self.plan.clock)

    def _settings(self, model_dir: str, mode: str, out: Path, benchmark: str, max_new_tokens: int,
                  limit: int | None, run: str):
        from moecoder.pipeline.evalrun import EvalSettings

        return EvalSettings(
            model=f"native:{model_dir}", benchmarks=[benchmark], out=out, mode=mode, max_new_tokens=max_new_tokens,
            no_repeat_ngram=NO_REPEAT_NGRAM, seed=self.plan.seed, limit=limit, backend_options={"batch_size": self.plan.eval_batch_size},
            extra_manifest={"training": {"logs": {run: str(self.plan.path(run) / "train_log.jsonl")}}})

    def evaluate(self, model_dir: str, mode: str, out: Path, run: str, max_new_tokens: int) -> dict:
        """HumanEval for one model in one mode: its harness summary and the rows with their raw outputs."""
        from moecoder.files import read_jsonl
        from moecoder.pipeline.evalrun import EvalRun

        settings = self._settings(model_dir, mode, out, "humaneval", max_new_tokens, self.plan.limit, run)
        summary = EvalRun(settings, console=self.console).run()["humaneval"]
        return {"summary": summary, "rows": read_jsonl(out / "samples-humaneval.jsonl"), "mode": mode, "dir": out}

    def evaluate_infilling(self, model_dir: str, base_dir: Path) -> dict:
        """Single-line infilling on the base model, the constant answer on the same tasks in the same run,
        and `moecoder compare`'s paired test of the difference."""
        from moecoder.bench.datasets import load_benchmark
        from moecoder.files import read_jsonl
        from moecoder.pipeline.evalrun import EvalRun
        from moecoder.report.compare import compare_runs

        tasks = load_benchmark(INFILL).tasks[::self.plan.infill_stride]
        settings = self._settings(model_dir, "completion", base_dir, INFILL, self.plan.max_new_tokens, None, "pretrain")
        settings.task_ids = [task.task_id for task in tasks] if self.plan.infill_stride > 1 else None
        summary = EvalRun(settings, console=self.console).run()[INFILL]
        baseline_dir = self.plan.path("eval") / "constant-baseline"
        baseline = constant_baseline_run(tasks, baseline_dir)
        comparison = compare_runs(str(baseline_dir), str(base_dir), [INFILL])[0].to_json()
        return {"summary": summary, "baseline": baseline, "comparison": comparison, "n_tasks": len(tasks),
                "rows": read_jsonl(base_dir / f"samples-{INFILL}.jsonl")}

    def finish(self, data, pre: dict, sft_summary: dict, base: dict, instruct: dict, infill: dict) -> dict:
        """quickstart.json (every number the report shows) and report.html."""
        from moecoder.files import write_json
        from moecoder.report.quickstart import write_quickstart_report

        models = {"base": model_numbers(base, heldout_loss=pre.get("heldout_loss"),
                                        heldout_what=f"next-token loss on {HELD_OUT}"),
                  "instruct": model_numbers(instruct, heldout_loss=sft_summary.get("heldout_loss"),
                                            heldout_what="loss on the responses of held-out instruction examples")}
        models["base"]["infilling"] = infilling_numbers(infill)
        result = {
            "minutes": self.plan.minutes, "clock": self.plan.clock,
            "headline": headline(models, pre),
            "models": models,
            "training": self.training_facts(data, pre, sft_summary),
            "examples": examples(base, instruct, infill),
            "runs": {"base": str(base["dir"]), "instruct": str(instruct["dir"]),
                     "constant baseline": str(self.plan.path("eval") / "constant-baseline")},
        }
        write_json(self.plan.path("quickstart.json"), result)
        write_quickstart_report(self.plan.out)
        self.print_locations()
        return {name: {key: numbers[key] for key in ("pass@1", "parse_share", "implemented_share",
                                                     "repeated_character_share")}
                | ({"infilling": numbers["infilling"]} if "infilling" in numbers else {})
                for name, numbers in models.items()}

    def training_facts(self, data, pre: dict, sft_summary: dict) -> dict:
        """What the report shows about training: logs to plot and the numbers that describe the runs."""
        out = self.plan.out
        facts = {
            "corpus": f"{data.report['kept']} training files, {data.report['heldout']} held-out files "
                      f"({data.report['train_tokens']:,} tokens); removed: "
                      + ", ".join(f"{k} {v}" for k, v in data.report["removed"].items()),
            "pre-training": f"{_count(pre['steps'], 'step')}, {pre['tokens']:,} tokens, {pre['elapsed_s']:.0f}s; "
                            f"loss {pre['first_loss']:.2f} → {pre['final_loss']:.2f}",
            "instruction tuning": f"{_count(sft_summary['steps'], 'step')}, {sft_summary['elapsed_s']:.0f}s; "
                                  f"loss {sft_summary['first_loss']:.2f} → {sft_summary['final_loss']:.2f}",
            "expert load balance (max/mean load − 1 per MoE layer, end of pre-training; 0 = even)":
                expert_balance(out / "pretrain" / "train_log.jsonl"),
        }
        return {"logs": {"pre-training": str(out / "pretrain" / "train_log.jsonl"),
                         "instruction tuning": str(out / "sft" / "train_log.jsonl")},
                "metrics": facts}

    def print_locations(self) -> None:
        out = self.plan.out
        where = [
            ("report", out / "report.html"),
            ("model (moecoder.load_model / transformers)", out / "model"),
            ("base model", out / "pretrain" / "model"),
            ("corpus, tokenizer, token shards", out / "data"),
            ("pre-training run (train_log.jsonl)", out / "pretrain"),
            ("instruction tuning run", out / "sft"),
            ("evaluation runs (samples, results, reports)", out / "eval"),
        ]
        self.console.rule("[bold]done[/bold]")
        for label, path in where:
            self.console.print(f"{label:<45} {path}")
        self.console.print(f"total time {time.monotonic() - self.started:.0f}s (wall clock)")


def constant_baseline_run(tasks: list, out: Path) -> dict:
    """The constant answer's samples evaluated on `tasks`, written as a run directory `compare` can read."""
    from moecoder.bench import evaluate_samples
    from moecoder.bench.infilling import constant_baseline
    from moecoder.files import write_json, write_jsonl
    from moecoder.report.runs import results_path, samples_path

    out.mkdir(parents=True, exist_ok=True)
    samples = constant_baseline(tasks)
    rows, summary = evaluate_samples(INFILL, samples, k=(1,))
    write_jsonl(samples_path(out, INFILL), samples)
    write_jsonl(results_path(out, INFILL), rows)
    write_json(out / "summary.json", {INFILL: summary})
    answer = Counter(task.middle.strip() for task in tasks).most_common(1)[0][0]
    write_json(out / "manifest.json", {"model": {"spec": f"constant answer: {answer}"}})
    return summary | {"constant": answer}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def program_of(row: dict, prompts: dict[str, str]) -> str:
    """The program a sample row stands for: its solution, or the task prompt followed by its completion."""
    return row["solution"] if "solution" in row else prompts[row["task_id"]] + row["completion"]


def parses(program: str) -> bool:
    """Whether a program is valid Python (it compiles): a nano model's first milestone, long before passing."""
    try:
        compile(program, "<completion>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def implements(program: str, entry_point: str) -> bool:
    """Whether a program parses and its entry point has a body beyond its docstring: a statement other than
    pass or a bare constant (a repeated docstring, `...`)."""
    if not parses(program):
        return False
    for node in ast.walk(ast.parse(program)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            return any(not (isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)))
                       for stmt in node.body)
    return False


def repeated_character(text: str) -> bool:
    """Whether generated text is a run of one repeated character (blank lines only, or "`" runs between
    newlines): the degenerate output of a model that learned nothing of the prompt's shape."""
    visible = text.replace(" ", "").replace("\t", "").replace("\n", "")
    return len(text) >= 3 and len(set(visible)) <= 1 and (not visible or len(visible) >= 3)


def model_numbers(evaluation: dict, heldout_loss: float | None, heldout_what: str) -> dict:
    """One model's column of the report. For chat, "parses" means code was extracted from the reply and parses
    (an empty program parses trivially and does not count)."""
    from moecoder.bench.datasets import load_benchmark

    tasks = {task.task_id: task for task in load_benchmark("humaneval").tasks}
    rows = evaluation["rows"]
    prompts = {task_id: task.prompt for task_id, task in tasks.items()}
    programs = [program_of(row, prompts) for row in rows]
    chat = evaluation["mode"] == "chat"
    parsed = sum(parses(p) and (not chat or bool(p.strip())) for p in programs)
    implemented = sum(implements(p, tasks[row["task_id"]].entry_point) for p, row in zip(programs, rows))
    repeated = sum(repeated_character(row["raw"]) for row in rows)
    return {"mode": evaluation["mode"], "heldout_loss": heldout_loss, "heldout_what": heldout_what,
            "n": len(rows), "pass@1": evaluation["summary"]["pass_at_k"]["pass@1"],
            "parse_share": parsed / len(rows), "implemented_share": implemented / len(rows),
            "repeated_character_share": repeated / len(rows)}


def infilling_numbers(infill: dict) -> dict:
    rows = infill["rows"]
    comparison = infill["comparison"]
    return {"n": infill["n_tasks"], "pass@1": infill["summary"]["pass_at_k"]["pass@1"],
            "exact_match": infill["summary"]["exact_match"],
            "baseline_pass@1": infill["baseline"]["pass_at_k"]["pass@1"],
            "baseline_exact_match": infill["baseline"]["exact_match"],
            "baseline_answer": infill["baseline"].get("constant") or "",
            "difference": comparison["difference"], "test": comparison["test"], "p_value": comparison["p_value"],
            "repeated_character_share": sum(repeated_character(row["raw"]) for row in rows) / len(rows)}


def headline(models: dict, pre: dict) -> dict:
    """One sentence on what the model learned and one on what it did not, from the numbers."""
    base, instruct = models["base"], models["instruct"]
    infill = base["infilling"]
    beat = infill["pass@1"]["value"] > infill["baseline_pass@1"]["value"]
    significant = infill["p_value"] < 0.05
    writes = "the base model writes Python" if base["parse_share"] >= 0.5 else "the base model does not yet write Python"
    learned = (f"Pre-training took the loss from {pre['first_loss']:.2f} (untrained) to "
               f"{pre.get('heldout_loss', float('nan')):.2f} nats/token on {HELD_OUT}; {writes}: "
               f"{100 * base['parse_share']:.0f}% of its HumanEval completions parse and "
               f"{100 * base['implemented_share']:.0f}% give the function a body")
    infill_text = (f"single-line infilling pass@1 {100 * infill['pass@1']['value']:.1f}% against "
                   f"{100 * infill['baseline_pass@1']['value']:.1f}% for the best constant answer "
                   f"({infill['test']} p = {infill['p_value']:.3g}, "
                   f"{'significant' if significant else 'not significant'} at 5%)")
    if beat:
        learned += f", and it fills in single lines better than a constant answer: {infill_text}."
    else:
        learned += "."
    not_learned = (f"It does not solve HumanEval problems: pass@1 {100 * base['pass@1']['value']:.1f}% for the base "
                   f"model in completion mode and {100 * instruct['pass@1']['value']:.1f}% for the instruct model in "
                   f"chat mode (DeepSeek-Coder-Base 1.3B: 34.8%), as expected of a few million parameters trained "
                   f"for minutes on a CPU")
    not_learned += "." if beat else f"; nor does it beat a constant answer at infilling: {infill_text}."
    return {"learned": learned, "did not learn": not_learned}


def examples(base: dict, instruct: dict, infill: dict, count: int = 3) -> list[dict]:
    """The raw outputs of both models on the first tasks, as generated (before any post-processing)."""
    from moecoder.bench.datasets import load_benchmark

    prompts = {task.task_id: task.prompt for task in load_benchmark("humaneval").tasks}
    shown = []
    for row_base, row_instruct in list(zip(base["rows"], instruct["rows"]))[:count]:
        shown.append({"task_id": row_base["task_id"], "prompt": prompts[row_base["task_id"]],
                      "base (completion)": row_base["raw"], "instruct (chat)": row_instruct["raw"]})
    for row in infill["rows"][:count]:
        shown.append({"task_id": row["task_id"], "infilled line": row["raw"]})
    return shown


def expert_balance(log_path: Path) -> str:
    from moecoder.files import read_jsonl
    from moecoder.report.html import last_expert_load, load_imbalance

    load = last_expert_load(read_jsonl(log_path)) if log_path.exists() else None
    return ", ".join(f"{v:.2f}" for v in load_imbalance(load)) if load else "n/a"


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
