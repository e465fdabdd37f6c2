"""`moecoder eval`: generate samples with a backend, evaluate them in the sandbox, write summary and report.

Per benchmark, in the output directory:
    samples-<benchmark>.jsonl   appended task by task as the backend finishes them (resumable)
    results-<benchmark>.jsonl   the harness's verdicts (written whole, atomically)
plus summary.json ({benchmark: harness summary}), manifest.json (see manifest.py) and report.html.
Running the same command again continues where the last run stopped; finished tasks are not regenerated
and the harness reuses its stored verdicts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from moecoder.errors import UserError
from moecoder.files import write_json, write_jsonl
from moecoder.pipeline import manifest as manifests
from moecoder.pipeline.prompting import BOUNDARIES, INFILL_MAX_NEW_TOKENS, MODES, Prompter
from moecoder.pipeline.samples import SampleFile
from moecoder.report.runs import results_path, samples_path

BENCHMARKS = ("humaneval", "humaneval+", "mbpp", "humaneval-fim-single")
DEFAULT_K = (1, 10, 100)


@dataclass
class EvalSettings:
    """One `moecoder eval` invocation."""

    model: str
    benchmarks: list[str]
    out: Path
    mode: str = "chat"
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    no_repeat_ngram: int = 0  # see SamplingParams; 0 = DeepSeek's plain decoding
    prompt_boundary: str = "strip"  # completion prompts: "strip" (DeepSeek's protocol) or "heal" (token healing)
    max_new_tokens: int = 512
    seed: int = 0
    base_url: str | None = None
    limit: int | None = None  # first N tasks of each benchmark
    task_ids: list[str] | None = None  # only these tasks (a subset chosen by the caller), in dataset order
    datasets: dict[str, str] = field(default_factory=dict)  # benchmark -> local dataset file
    k: tuple[int, ...] | None = None  # None: DEFAULT_K where n allows
    workers: int | None = None
    backend_options: dict = field(default_factory=dict)
    extra_manifest: dict = field(default_factory=dict)  # e.g. training logs and notes from the quickstart

    def __post_init__(self):
        unknown = [b for b in self.benchmarks if b not in BENCHMARKS]
        if unknown or not self.benchmarks:
            raise UserError(f"unknown benchmark {unknown[0] if unknown else '(none)'!r}: choose from {', '.join(BENCHMARKS)}")
        if self.mode not in MODES:
            raise UserError(f"--mode must be chat or completion, got {self.mode!r}")
        if self.prompt_boundary not in BOUNDARIES:
            raise UserError(f"--prompt-boundary must be strip or heal, got {self.prompt_boundary!r}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")

    def sampling(self, prompter: Prompter):
        from moecoder.generate import SamplingParams

        max_new_tokens = self.max_new_tokens
        if prompter.mode == "infill":
            max_new_tokens = min(max_new_tokens, INFILL_MAX_NEW_TOKENS)
        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=max_new_tokens, seed=self.seed, stop=prompter.stop,
                              no_repeat_ngram=self.no_repeat_ngram, heal=prompter.heal)

    def ks(self) -> tuple[int, ...]:
        if self.k is None:
            return tuple(k for k in DEFAULT_K if k <= self.n)
        too_big = [k for k in self.k if k > self.n]
        if too_big:
            raise UserError(f"--k {too_big[0]} is larger than -n {self.n}: pass@k needs at least k samples per task")
        return self.k


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


class EvalRun:
    """Generation then evaluation of every requested benchmark into one output directory."""

    def __init__(self, settings: EvalSettings, console=None):
        from moecoder.display import console as plain_console

        self.settings = settings
        self.console = console or plain_console()  # paths and messages print as written, never as markup
        self.out = Path(settings.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.out / "manifest.json"

    def run(self) -> dict[str, dict]:
        """Returns {benchmark: harness summary} for the benchmarks of this invocation."""
        from moecoder.bench.datasets import load_benchmark
        from moecoder.report.html import write_report

        settings = self.settings
        benchmarks = {name: load_benchmark(name, settings.datasets.get(name)) for name in settings.benchmarks}
        manifest = self._start_manifest(benchmarks)
        stores = {name: SampleFile(samples_path(self.out, name), settings.n) for name in benchmarks}
        pending = {name: [t for t in self._tasks(b) if not stores[name].done(t.task_id)] for name, b in benchmarks.items()}
        if any(pending.values()):  # a finished run is re-evaluated without loading the model again
            manifest["model"] = self._generate_all(pending, stores, manifest.get("model", {}))
        summaries = {name: self._evaluate(name, stores[name], self._tasks(b)) for name, b in benchmarks.items()}
        self._finish_manifest(manifest, summaries)
        write_report(self.out)
        return summaries

    def _generate_all(self, pending: dict[str, list], stores: dict[str, SampleFile], described: dict) -> dict:
        """Generate every missing sample; returns the backend's description, merged over an earlier one."""
        from moecoder.generate import make_backend

        backend = make_backend(self.settings.model, base_url=self.settings.base_url, **self.settings.backend_options)
        try:
            for name, tasks in pending.items():
                self._generate(backend, name, tasks, stores[name])
            return {**described, **{k: v for k, v in backend.describe().items() if v is not None}}
        finally:
            backend.close()

    def prompter(self, benchmark: str) -> Prompter:
        return Prompter(self.settings.mode, benchmark, self.settings.prompt_boundary)

    def _tasks(self, benchmark) -> list:
        tasks = list(benchmark.tasks)
        if self.settings.task_ids is not None:
            chosen = set(self.settings.task_ids)
            tasks = [task for task in tasks if task.task_id in chosen]
        return tasks[: self.settings.limit] if self.settings.limit else tasks

    def _start_manifest(self, benchmarks: dict) -> dict:
        settings = self.settings
        # What binds a folder is the samples in it: a run that made none (a mistyped --model) binds nothing.
        held = any(path.is_file() and path.stat().st_size
                   for path in (samples_path(self.out, name) for name in BENCHMARKS))
        previous = manifests.read_json(self.manifest_path) if held else {}
        manifest = {
            **previous,
            "training": manifests.training_logs_of(settings.model),
            **settings.extra_manifest,
            "model_spec": settings.model,
            "model": previous.get("model", {"spec": settings.model}),
            "mode": settings.mode,
            "sampling": settings.sampling(self.prompter("humaneval")).describe(),
            "prompt_template": {name: self.prompter(name).describe() for name in BENCHMARKS},
            "packages": manifests.package_versions(),
            "machine": manifests.machine(),
        }
        manifests.check_resumable(previous, manifest, self.out)
        datasets = dict(previous.get("datasets", {}))
        for name, benchmark in benchmarks.items():
            datasets[name] = {"sha256": benchmark.sha256, "path": settings.datasets.get(name),
                              "tasks": len(benchmark.tasks), "limit": settings.limit,
                              "subset": len(settings.task_ids) if settings.task_ids is not None else None}
        manifest["datasets"] = datasets
        manifest.setdefault("runs", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                "benchmarks": settings.benchmarks})
        write_json(self.manifest_path, manifest)
        return manifest

    def _generate(self, backend, name: str, pending: list, store: SampleFile) -> None:
        """Generate one benchmark's missing samples, recording each task as soon as it is finished."""
        prompter = self.prompter(name)
        params = self.settings.sampling(prompter)
        with _progress(self.console) as progress:
            bar = progress.add_task(f"generating {name}", total=len(pending))

            def record(index: int, outputs: list[str]) -> None:
                task = pending[index]
                store.append(task.task_id, [prompter.row(task, i, output) for i, output in enumerate(outputs)])
                progress.advance(bar)

            inputs = [prompter.model_input(task) for task in pending]
            generate = {"completion": backend.complete, "chat": backend.chat, "infill": backend.infill}[prompter.mode]
            generate(inputs, params, on_result=record)
        missing = [task.task_id for task in pending if not store.done(task.task_id)]
        if missing:
            raise UserError(f"the backend returned no samples for {len(missing)} {name} tasks (e.g. {missing[0]})")

    def _evaluate(self, name: str, store: SampleFile, tasks: list) -> dict:
        from moecoder.bench import evaluate_samples

        samples = store.rows([task.task_id for task in tasks])
        self.console.print(f"evaluating {len(samples)} {name} samples in the sandbox")
        rows, summary = evaluate_samples(name, samples, dataset=self.settings.datasets.get(name),
                                         k=self.settings.ks(), workers=self.settings.workers, progress=True)
        write_jsonl(results_path(self.out, name), rows)
        return summary

    def _finish_manifest(self, manifest: dict, summaries: dict[str, dict]) -> None:
        summary_path = self.out / "summary.json"
        all_summaries = {**manifests.read_json(summary_path), **summaries}
        write_json(summary_path, all_summaries)
        manifest["harness"] = {name: {"isolation": s.get("isolation"), "limits": s.get("limits")}
                               for name, s in all_summaries.items()}
        manifest["runs"][-1]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(self.manifest_path, manifest)


def stdout_summary(summaries: dict[str, dict]) -> dict:
    """The last stdout line of `moecoder eval`: pass@k with its 95% CI, keyed by benchmark."""
    return {name: summary["pass_at_k"] for name, summary in summaries.items()}
