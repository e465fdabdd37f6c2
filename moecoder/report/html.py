"""report.html: one self-contained page (plots embedded as base64 PNG) describing an eval run.

Everything the page shows is read from the run directory (see moecoder.report.runs), so the report
can be rebuilt at any time: scores with 95% confidence intervals, the score beside DeepSeek-Coder's
published numbers, a per-task grid, failure kinds, the slowest tasks and, when the manifest names
training logs (train_log.jsonl), loss curves and the load of every expert in every MoE layer.

Result strings, task ids and failure kinds come from the programs under test: the page shows them as
plain text (HTML-escaped, control characters written out), plots draw them without math text, and a
plot that cannot be drawn becomes a note on the page instead of losing the report.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path

from moecoder.display import visible
from moecoder.files import atomic_write, read_jsonl
from moecoder.report.published import published_for
from moecoder.report.runs import OUTCOME_PASSED, RunDir, TaskResult, outcome_of

STATUS_COLOURS = {
    "passed": "#2e9d4f",
    "partial": "#9ccc65",
    "failed": "#d64541",
    "timed out": "#f0a030",
    "error": "#7b3fa0",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.note { background: #fff6d6; border-left: 4px solid #e0b000; padding: 0.6em 1em; margin: 1em 0; }
.score { font-size: 2em; font-weight: bold; } .ci { color: #555; margin-left: 0.5em; }
table { border-collapse: collapse; margin: 0.8em 0; } td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.this-run { font-weight: bold; background: #eef6ff; }
.grid { display: flex; flex-wrap: wrap; gap: 2px; margin: 0.8em 0; }
.cell { width: 1.1em; height: 1.1em; border-radius: 2px; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; margin-right: 0.3em; vertical-align: middle; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


def _esc(value) -> str:
    """Text for the page, shown as written: HTML-escaped, control and bidi characters written out."""
    return html.escape(visible(value))


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def _img(fig, alt: str, element_id: str) -> str:
    """A matplotlib figure as an <img> with the PNG inlined, so the page needs no other file."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img id="{_esc(element_id)}" alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory only
    import matplotlib.pyplot as plt

    return plt


# Text in plots is never math or LaTeX, whatever the user's matplotlibrc says: an exception message
# "$\foo$" is a label, not a formula matplotlib would fail to parse.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def _drawn(what: str, plot, *args) -> str:
    """`plot(*args)` (an <img>), or a note naming the plot and the error when it cannot be drawn."""
    plt = _pyplot()
    figures = set(plt.get_fignums())
    try:
        with plt.rc_context(PLAIN_TEXT):
            return plot(*args)
    except Exception as error:  # noqa: BLE001 — any failure inside matplotlib costs one plot, not the page
        for number in set(plt.get_fignums()) - figures:
            plt.close(number)
        return (f'<p class="note plot-failed">The {_esc(what)} plot could not be drawn: '
                f"{_esc(type(error).__name__)}: {_esc(visible(error, 300))}</p>")


# ---------------------------------------------------------------------------------------------- plots


def plot_pass_at_k(benchmark: str, pass_at_k: dict) -> str:
    plt = _pyplot()
    names = list(pass_at_k)
    values = [100 * pass_at_k[k]["value"] for k in names]
    lows = [100 * (pass_at_k[k]["value"] - pass_at_k[k]["ci95"][0]) for k in names]
    highs = [100 * (pass_at_k[k]["ci95"][1] - pass_at_k[k]["value"]) for k in names]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(names), 3))
    ax.bar(names, values, yerr=[lows, highs], capsize=6, color="#4a7fc1")
    ax.set_ylabel("% of tasks")
    ax.set_ylim(0, 100)
    ax.set_title(visible(f"{benchmark}: pass@k with 95% CI"))
    return _img(fig, f"{benchmark} pass@k", f"plot-passk-{benchmark}")


def plot_against_published(benchmark: str, value: float, ci: list[float], published: list[tuple[str, float]]) -> str:
    plt = _pyplot()
    rows = sorted(published, key=lambda row: row[1]) + [("this run", 100 * value)]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1))
    colours = ["#9aa5b1"] * len(published) + ["#4a7fc1"]
    ax.barh([name for name, _ in rows], [score for _, score in rows], color=colours)
    ax.errorbar([100 * value], ["this run"], xerr=[[100 * (value - ci[0])], [100 * (ci[1] - value)]],
                fmt="none", ecolor="black", capsize=4)
    ax.set_xlim(0, 100)
    ax.set_xlabel("pass@1 (%)")
    ax.set_title(visible(f"{benchmark}: this run beside DeepSeek-Coder's published pass@1"))
    return _img(fig, f"{benchmark} against published", f"plot-published-{benchmark}")


def plot_failure_kinds(benchmark: str, kinds: list[tuple[str, int]]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(kinds) + 1))
    ax.barh([visible(label) for label, _ in reversed(kinds)], [count for _, count in reversed(kinds)], color="#d64541")
    ax.set_xlabel("samples")
    ax.set_title(visible(f"{benchmark}: why samples failed"))
    return _img(fig, f"{benchmark} failure kinds", f"plot-failures-{benchmark}")


def plot_loss_curves(logs: dict[str, list[dict]]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, rows in logs.items():
        points = [(row["step"], row["loss"]) for row in rows if "loss" in row and "step" in row]
        if points:
            ax.plot(*zip(*points), label=visible(f"{label} (train)"))
        held_out = [(row["step"], row[key]) for row in rows for key in _held_out_keys(row)]
        if held_out:
            ax.plot(*zip(*held_out), "o--", label=visible(f"{label} (held-out)"))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    ax.set_title("Training loss")
    return _img(fig, "loss curves", "plot-loss")


def plot_expert_load(label: str, load: list[list[float]]) -> str:
    """Heat map: share of routed tokens per expert (columns) in each MoE layer (rows)."""
    plt = _pyplot()
    shares = [[count / (sum(layer) or 1) for count in layer] for layer in load]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(shares) + 1.5))
    image = ax.imshow(shares, aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=ax, label="share of routed tokens")
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    ax.set_xticks(range(len(shares[0])))
    ax.set_yticks(range(len(shares)))
    ax.set_title(visible(f"{label}: expert load (ideal share {1 / len(load[0]):.3f} each)"))
    return _img(fig, f"{label} expert load", f"plot-load-{label}")


def _held_out_keys(row: dict) -> list[str]:
    return [key for key in row if key in ("val_loss", "heldout_loss", "held_out_loss", "eval_loss")]


# ------------------------------------------------------------------------------------------ numbers


def failure_kinds(tasks: dict[str, TaskResult], top: int = 12) -> list[tuple[str, int]]:
    """Most common non-passing result strings (long messages cut), most frequent first."""
    counts = Counter(
        (result if len(result) <= 60 else result[:57] + "...")
        for task in tasks.values()
        for result in task.results
        if outcome_of(result) != OUTCOME_PASSED
    )
    return counts.most_common(top)


def load_imbalance(load: list[list[float]]) -> list[float]:
    """Per layer, the most loaded expert's load over the mean load, minus 1 (0 = perfectly balanced).

    This is the "maximal violation" DeepSeek's auxiliary-loss-free balancing paper reports.
    """
    return [max(layer) / (sum(layer) / len(layer)) - 1 if sum(layer) else 0.0 for layer in load]


def last_expert_load(rows: list[dict]) -> list[list[float]] | None:
    """The per-layer expert load summed over the last quarter of training (the balance the model ended with)."""
    loads = [row["expert_load"] for row in rows if row.get("expert_load")]
    if not loads:
        return None
    tail = loads[-max(1, len(loads) // 4):]
    return [[sum(step[layer][e] for step in tail) for e in range(len(tail[0][layer]))] for layer in range(len(tail[0]))]


# ------------------------------------------------------------------------------------------ sections


def _table(headers: list[str], rows: list[list], row_classes: list[str] | None = None, table_id: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(
            f'<td class="num">{_esc(c)}</td>' if isinstance(c, (int, float)) else f"<td>{_esc(c)}</td>" for c in row
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    ident = f' id="{_esc(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _score_section(benchmark: str, summary: dict) -> str:
    pass_at_k = summary.get("pass_at_k", {})
    parts = [f"<h2>{_esc(benchmark)}</h2>"]
    if "pass@1" in pass_at_k:
        p1 = pass_at_k["pass@1"]
        parts.append(
            f'<p><span class="score" id="score-{_esc(benchmark)}">pass@1 {_pct(p1["value"])}</span>'
            f'<span class="ci" id="ci-{_esc(benchmark)}">95% CI {_pct(p1["ci95"][0])} – {_pct(p1["ci95"][1])}</span></p>'
        )
    rows = [[k, _pct(v["value"]), f"{_pct(v['ci95'][0])} – {_pct(v['ci95'][1])}"] for k, v in pass_at_k.items()]
    parts.append(_table(["metric", "value", "95% CI (bootstrap over tasks)"], rows, table_id=f"passk-{benchmark}"))
    if "exact_match" in summary:  # infilling: DeepSeek's score beside execution, saying which is which
        exact = summary["exact_match"]
        parts.append(f'<p id="exact-{_esc(benchmark)}">exact match {_pct(exact["value"])}: {_esc(exact.get("what", ""))}</p>')
    facts = [
        ("tasks", summary.get("n_tasks")),
        ("samples", summary.get("n_samples")),
        ("isolation", summary.get("isolation")),
        ("dataset sha256", summary.get("dataset_sha256")),
    ]
    parts.append("<p>" + " · ".join(f"{_esc(k)}: <code>{_esc(v)}</code>" for k, v in facts if v is not None) + "</p>")
    if pass_at_k:
        parts.append(_drawn("pass@k", plot_pass_at_k, benchmark, pass_at_k))
    return "\n".join(parts)


def _published_section(benchmark: str, summary: dict) -> str:
    published = published_for(benchmark)
    p1 = summary.get("pass_at_k", {}).get("pass@1")
    if not published or not p1:
        return ""
    this_run = ("this run", 100 * p1["value"], f"{_pct(p1['value'])} (95% CI {_pct(p1['ci95'][0])} – {_pct(p1['ci95'][1])})")
    ranked = sorted([(name, score, f"{score:.1f}%") for name, score in published] + [this_run],
                    key=lambda row: row[1], reverse=True)
    rows = [[name, text] for name, _, text in ranked]
    classes = ["this-run" if row is this_run else "" for row in ranked]
    return (
        "<h3>Beside DeepSeek-Coder's published numbers</h3>"
        "<p>Published figures are greedy pass@1 from the DeepSeek-Coder papers (base models prompted in "
        "completion mode, instruct models in chat mode).</p>"
        + _table(["model", "pass@1"], rows, classes, table_id=f"published-{benchmark}")
        + _drawn("published scores", plot_against_published, benchmark, p1["value"], p1["ci95"], published)
    )


def _grid_section(benchmark: str, tasks: dict[str, TaskResult]) -> str:
    counts = Counter(task.status for task in tasks.values())
    legend = "".join(
        f'<span data-status="{status}"><span class="swatch" style="background:{colour}"></span>'
        f'{_esc(status)}: <b class="count">{counts.get(status, 0)}</b></span>'
        for status, colour in STATUS_COLOURS.items()
    )
    cells = "".join(
        f'<div class="cell" data-status="{_esc(task.status)}" style="background:{STATUS_COLOURS[task.status]}" '
        f'title="{_esc(task.task_id)}: {task.n_passed}/{task.n} passed; {_esc(task.results[0][:80])}"></div>'
        for task in tasks.values()
    )
    return (
        f"<h3>Per task ({len(tasks)} tasks)</h3>"
        f'<p class="legend" id="legend-{_esc(benchmark)}">{legend}</p>'
        f'<div class="grid" id="grid-{_esc(benchmark)}">{cells}</div>'
        "<p>Hover a cell for its task and verdict. <i>partial</i>: some but not all samples passed.</p>"
    )


def _failures_section(benchmark: str, tasks: dict[str, TaskResult]) -> str:
    kinds = failure_kinds(tasks)
    if not kinds:
        return "<h3>Failure kinds</h3><p>No sample failed.</p>"
    return (
        "<h3>Failure kinds</h3>"
        + _table(["result", "samples"], [[label, count] for label, count in kinds], table_id=f"failures-{benchmark}")
        + _drawn("failure kinds", plot_failure_kinds, benchmark, kinds)
    )


def _slowest_section(benchmark: str, tasks: dict[str, TaskResult], top: int = 10) -> str:
    timed = [task for task in tasks.values() if task.seconds]
    if timed:
        slowest = sorted(timed, key=lambda task: max(task.seconds), reverse=True)[:top]
        rows = [[t.task_id, f"{max(t.seconds):.3f}", t.status] for t in slowest]
        header = ["task", "slowest sample (s)", "status"]
    else:  # the harness gave no per-sample times: the tasks that hit the time limit are the slowest we know of
        slowest = [task for task in tasks.values() if "timed out" in task.results][:top]
        rows = [[t.task_id, "time limit", t.status] for t in slowest]
        header = ["task", "execution time", "status"]
    if not rows:
        return "<h3>Slowest tasks</h3><p>No per-sample times were recorded and no sample timed out.</p>"
    return "<h3>Slowest tasks</h3>" + _table(header, rows, table_id=f"slowest-{benchmark}")


def _training_section(run: RunDir, training: dict) -> str:
    logs = {}
    for label, path in training.get("logs", {}).items():
        path = Path(path) if Path(path).is_absolute() else run.path / path
        if path.exists():
            logs[label] = read_jsonl(path)
    parts = ["<h2>Training</h2>"]
    metrics = training.get("metrics", {})
    if metrics:
        parts.append(_table(["measure", "value"], [[k, v] for k, v in metrics.items()], table_id="training-metrics"))
    if logs:
        parts.append(_drawn("loss curves", plot_loss_curves, logs))
    for label, rows in logs.items():
        load = last_expert_load(rows)
        if load:
            imbalance = load_imbalance(load)
            parts.append(
                f"<p>{_esc(label)}: max load over mean load − 1, per MoE layer (0 is perfect balance): "
                + ", ".join(f"{v:.2f}" for v in imbalance) + "</p>"
            )
            parts.append(_drawn(f"{label} expert load", plot_expert_load, label, load))
    return "\n".join(parts) if len(parts) > 1 else ""


def _manifest_section(manifest: dict) -> str:
    if not manifest:
        return ""
    model = manifest.get("model", {})
    return (
        "<h2>How this run was made</h2>"
        f"<p>Model <code>{_esc(model.get('spec', '?'))}</code>, mode <code>{_esc(manifest.get('mode', '?'))}</code>, "
        f"sampling <code>{_esc(json.dumps(manifest.get('sampling', {})))}</code>.</p>"
        "<details><summary>Full manifest (model revision, template, datasets, harness, packages, machine)</summary>"
        f"<pre>{html.escape(json.dumps(manifest, indent=2, sort_keys=True))}</pre></details>"
    )


def render_report(run_dir: str | Path) -> str:
    """The report page for a run directory, as an HTML string."""
    run = RunDir(run_dir)
    manifest, summaries = run.manifest, run.summaries
    title = f"moecoder eval: {manifest.get('model', {}).get('spec', run.path.name)}"
    parts = [f"<h1>{_esc(title)}</h1>"]
    parts += [f'<p class="note">{_esc(note)}</p>' for note in manifest.get("notes", [])]
    for benchmark in run.benchmarks:
        tasks = run.tasks(benchmark)
        summary = summaries.get(benchmark, {})
        parts += [
            _score_section(benchmark, summary),
            _published_section(benchmark, summary),
            _grid_section(benchmark, tasks),
            _failures_section(benchmark, tasks),
            _slowest_section(benchmark, tasks),
        ]
    parts.append(_training_section(run, manifest.get("training", {})))
    parts.append(_manifest_section(manifest))
    body = "\n".join(part for part in parts if part)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the run's report to OUT (default RUN_DIR/report.html), atomically."""
    out = Path(out) if out else Path(run_dir) / "report.html"
    page = render_report(run_dir)
    atomic_write(out, page)
    return out
