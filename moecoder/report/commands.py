"""CLI: `moecoder compare` (paired test between two eval runs) and `moecoder report` (rebuild report.html)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from moecoder.errors import exit_on_user_error

TASK_ID_WIDTH = 200  # longer task ids are cut in the list of changed tasks (the JSON line has them whole)


def register(app: typer.Typer) -> None:
    app.command()(compare)
    app.command()(report)


def compare(
    dir_a: Path = typer.Argument(..., help="Run directory A (the --out of `moecoder eval`)."),
    dir_b: Path = typer.Argument(..., help="Run directory B."),
    benchmark: str = typer.Option(None, "--benchmark", help="Comma-separated benchmarks (default: all both runs have)."),
    show: int = typer.Option(20, "--show", help="How many changed tasks to list per benchmark."),
) -> None:
    """Per-task differences between two eval runs, with a paired significance test and its p-value.

    One sample per task: exact McNemar test. Several: paired bootstrap over tasks of per-task pass rates.
    A readable table goes to stderr; the last line of stdout is one JSON object keyed by benchmark.
    """
    with exit_on_user_error():
        from rich.table import Table
        from rich.text import Text

        from moecoder.display import console as plain_console, visible
        from moecoder.report.compare import compare_runs

        names = [b.strip() for b in benchmark.split(",")] if benchmark else None
        comparisons = compare_runs(str(dir_a), str(dir_b), names)
        # Task ids and benchmark names come from the runs' files: printed as plain text.
        console = plain_console()
        table = Table(title=visible(f"A = {dir_a}   B = {dir_b}"))
        for column in ("benchmark", "tasks", "A pass rate", "B pass rate", "B − A", "A only", "B only", "test", "p-value"):
            table.add_column(column)
        for c in comparisons:
            result = c.to_json()
            table.add_row(
                visible(c.benchmark), str(result["n_tasks"]), f"{100 * c.pass_rate_a:.1f}%", f"{100 * c.pass_rate_b:.1f}%",
                f"{100 * result['difference']:+.1f} pts", str(len(result["better_in_a"])),
                str(len(result["better_in_b"])), c.test, f"{c.p_value:.4g}",
            )
        console.print(table)
        for c in comparisons:
            changed = c.changed()
            if changed:
                console.print(Text.assemble((visible(c.benchmark), "bold"),
                                            f": {len(changed)} tasks differ (pass rate A → B):"))
                for task_id, a, b in changed[:show]:
                    console.print(f"  {visible(task_id, TASK_ID_WIDTH)}: {a:.2f} → {b:.2f}", soft_wrap=True)
        print(json.dumps({c.benchmark: c.to_json() for c in comparisons}))


def report(
    run_dir: Path = typer.Argument(..., help="Run directory (the --out of `moecoder eval`)."),
    out: Path = typer.Option(None, "--out", help="Where to write the page (default RUN_DIR/report.html)."),
) -> None:
    """Rebuild the self-contained report.html of an eval run from the files in its directory."""
    with exit_on_user_error():
        from moecoder.report.html import write_report

        print(write_report(run_dir, out))
