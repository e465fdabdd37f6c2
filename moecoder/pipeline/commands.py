"""CLI: `moecoder eval` (generate, evaluate, report) and `moecoder quickstart` (the whole pipeline, small)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from moecoder.errors import UserError, exit_on_user_error


def register(app: typer.Typer) -> None:
    app.command(name="eval")(eval_command)
    app.command()(quickstart)


def _parse_datasets(values: list[str]) -> dict[str, str]:
    datasets = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not path:
            raise UserError(f"--dataset {value!r}: expected BENCHMARK=PATH, e.g. mbpp=data/mbpp.jsonl")
        datasets[name] = path
    return datasets


def _parse_ks(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        return tuple(int(k) for k in value.split(","))
    except ValueError:
        raise UserError(f"--k {value!r}: expected comma-separated integers such as 1,10") from None


def _backend_options(model: str, batch_size: int | None, concurrency: int | None) -> dict:
    remote = model.startswith("openai:")
    if batch_size is not None and remote:
        raise UserError("--batch-size applies to native: and hf: models; for openai: use --concurrency")
    if concurrency is not None and not remote:
        raise UserError("--concurrency applies to openai: models; for native: and hf: use --batch-size")
    options = {"batch_size": batch_size, "concurrency": concurrency}
    return {name: value for name, value in options.items() if value is not None}


def eval_command(
    model: str = typer.Option(..., "--model", help="native:PATH, hf:NAME_OR_PATH or openai:MODEL (with --base-url)."),
    benchmark: str = typer.Option("humaneval", "--benchmark", help="Comma-separated: humaneval, humaneval+, mbpp, humaneval-fim-single (infilling, any --mode)."),
    mode: str = typer.Option("chat", "--mode", help="chat (instruct models) or completion (base models)."),
    n: int = typer.Option(1, "-n", help="Samples per task."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p"),
    prompt_boundary: str = typer.Option("strip", "--prompt-boundary", help="Completion prompts: strip (their "
                                        "trailing whitespace, DeepSeek's protocol) or heal (verbatim, token healing)."),
    no_repeat_ngram: int = typer.Option(0, "--no-repeat-ngram", help="Forbid repeating an n-gram of the generated "
                                        "text (native:/hf:; 0 = off, DeepSeek's plain decoding)."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    seed: int = typer.Option(0, "--seed"),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."),
    out: Path = typer.Option(Path("eval-out"), "--out", help="Run directory; the same --out resumes a run."),
    limit: int = typer.Option(None, "--limit", help="Only the first N tasks of each benchmark (smoke tests)."),
    dataset: list[str] = typer.Option([], "--dataset", help="BENCHMARK=PATH: a local copy of a dataset (repeatable)."),
    k: str = typer.Option(None, "--k", help="pass@k values, e.g. 1,10 (default: 1,10,100 where -n allows)."),
    workers: int = typer.Option(None, "--workers", help="Sandbox workers (default: the harness's choice)."),
    batch_size: int = typer.Option(None, "--batch-size", help="native:/hf: prompts generated together (default 8)."),
    concurrency: int = typer.Option(None, "--concurrency", help="openai: requests in flight at once (default 16)."),
) -> None:
    """Generate completions for a benchmark, run them in the sandbox, write results, summary and report.html.

    Resumable: rerun the same command after a crash or Ctrl-C and it continues. The last line of stdout
    is one JSON object keyed by benchmark with pass@k and its 95% confidence interval.
    """
    with exit_on_user_error():
        from moecoder.pipeline.evalrun import EvalRun, EvalSettings, stdout_summary

        settings = EvalSettings(
            model=model, benchmarks=[b.strip() for b in benchmark.split(",") if b.strip()], out=out, mode=mode,
            n=n, temperature=temperature, top_p=top_p, no_repeat_ngram=no_repeat_ngram, prompt_boundary=prompt_boundary,
            max_new_tokens=max_new_tokens, seed=seed,
            base_url=base_url, limit=limit, datasets=_parse_datasets(dataset), k=_parse_ks(k), workers=workers,
            backend_options=_backend_options(model, batch_size, concurrency),
        )
        run = EvalRun(settings)
        try:
            summaries = run.run()
        except KeyboardInterrupt:
            run.console.print(f"interrupted: finished samples are kept in {out}; run the same command to continue")
            raise typer.Exit(130)
        run.console.print(f"report: {out / 'report.html'}")
        print(json.dumps(stdout_summary(summaries)))


def quickstart(
    out: Path = typer.Option(Path("quickstart-out"), "--out", help="Directory for corpus, model, eval and report."),
    minutes: float = typer.Option(10.0, "--minutes", help="Time budget for data, pre-training and SFT (evaluation comes on top)."),
    seed: int = typer.Option(0, "--seed"),
    limit: int = typer.Option(None, "--limit", help="Evaluate only the first N HumanEval tasks."),
    mbpp: str = typer.Option(None, "--mbpp", help="Local mbpp.jsonl, to decontaminate the corpus against MBPP too."),
    clock: str = typer.Option("wall", "--clock", help="What --minutes counts: wall, or cpu (this process's CPU "
                              "time / threads: a dedicated machine's minutes, on a CPU shared with other work)."),
) -> None:
    """The whole pipeline on a laptop: corpus + tokenizer, nano MoE FIM pre-training (base model), SFT (instruct
    model), HumanEval for both (completion and chat mode), single-line infilling against a constant answer, report.

    The last line of stdout is one JSON object: per model pass@1 (95% CI), the shares of completions that parse,
    define a body and are a run of one repeated character; for the base model the infilling scores."""
    with exit_on_user_error():
        from moecoder.pipeline.quickstart import Quickstart, QuickstartPlan

        if minutes <= 0:
            raise UserError(f"--minutes must be positive, got {minutes}")
        plan = QuickstartPlan(out=out, minutes=minutes, seed=seed, limit=limit, mbpp_path=mbpp, clock=clock)
        result = Quickstart(plan).run()
        print(json.dumps(result))
