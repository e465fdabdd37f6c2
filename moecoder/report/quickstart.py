"""The quickstart's report.html: the base and the instruct model side by side, read from quickstart.json.

quickstart.json (written by moecoder.pipeline.quickstart) holds every number shown: the headline (what the
model learned, what it did not), per model the held-out loss, the share of HumanEval completions that parse,
that define a body, that are a run of one repeated character, pass@1 with its 95% CI, and for the base model
single-line infilling beside the best constant answer with `moecoder compare`'s paired test; raw outputs of
both models on the first tasks; the training logs (loss curves, expert load). Each evaluation's own report
(every task, failure kinds) sits in its run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from moecoder.files import atomic_write
from moecoder.report.html import STYLE, _esc, _pct, _table, _training_section
from moecoder.report.published import published_for
from moecoder.report.runs import RunDir


def _ci(score: dict) -> str:
    return f"{_pct(score['value'])} (95% CI {_pct(score['ci95'][0])} – {_pct(score['ci95'][1])})"


def _models_table(models: dict) -> str:
    names = list(models)
    rows = [
        ["evaluated as"] + [f"HumanEval, {models[n]['mode']} mode" for n in names],
        ["held-out loss (nats/token)"] + [
            f"{models[n]['heldout_loss']:.3f} ({models[n]['heldout_what']})" if models[n]["heldout_loss"] is not None
            else "n/a" for n in names],
        ["completions that parse"] + [_pct(models[n]["parse_share"]) for n in names],
        ["... and give the function a body beyond its docstring"] + [_pct(models[n]["implemented_share"]) for n in names],
        ["raw outputs that are a run of one repeated character"] + [_pct(models[n]["repeated_character_share"]) for n in names],
        ["HumanEval pass@1"] + [_ci(models[n]["pass@1"]) for n in names],
    ]
    infill = models.get("base", {}).get("infilling")
    if infill:
        rows.append(["single-line infilling pass@1 (execution)"]
                    + [_ci(infill["pass@1"]) if n == "base" else "—" for n in names])
    return _table(["measure"] + [f"{n} model" for n in names], rows, table_id="models")


def _infilling_section(infill: dict) -> str:
    rows = [
        ["base model (PSM prompt)", _ci(infill["pass@1"]), _pct(infill["exact_match"]["value"])],
        [f"constant answer: {infill['baseline_answer']}", _ci(infill["baseline_pass@1"]),
         _pct(infill["baseline_exact_match"]["value"])],
    ]
    verdict = "significant" if infill["p_value"] < 0.05 else "not significant"
    return (
        "<h2>Single-line infilling (HumanEval-SingleLineInfilling)</h2>"
        f"<p>{infill['n']} holes, one line of a canonical HumanEval solution each; the base model sees "
        "<code>&lt;｜fim▁begin｜&gt;prefix&lt;｜fim▁hole｜&gt;suffix&lt;｜fim▁end｜&gt;</code> and its first generated line "
        "fills the hole. <b>pass@1</b> runs prefix + line + suffix against the task's tests (human-eval-infilling's "
        "score); <b>exact match</b> is DeepSeek-Coder's score (first line equals the reference line, "
        "whitespace-stripped). The constant answer, the most common reference line re-indented to each hole, was "
        "scored in the same run on the same holes.</p>"
        + _table(["answer", "pass@1 (execution)", "exact match"], rows, table_id="infilling")
        + f'<p id="infilling-test">Difference in pass@1: {100 * infill["difference"]:+.1f} points; paired test '
          f"({_esc(infill['test'])}, as <code>moecoder compare</code>): p = {infill['p_value']:.3g}, "
          f"{verdict} at 5%.</p>"
    )


def _published_section(models: dict) -> str:
    rows = [[f"this run: {name} model ({numbers['mode']} mode)", _pct(numbers["pass@1"]["value"])]
            for name, numbers in models.items()]
    rows += [[name, f"{score:.1f}%"] for name, score in published_for("humaneval")]
    return ("<h3>Beside DeepSeek-Coder's published HumanEval pass@1</h3><p>Base models are evaluated in "
            "completion mode, instruct models in chat mode, as DeepSeek evaluates them.</p>"
            + _table(["model", "pass@1"], rows, ["this-run"] * len(models) + [""] * (len(rows) - len(models)),
                     table_id="published"))


def _examples_section(shown: list[dict]) -> str:
    parts = ["<h2>What the models wrote</h2><p>Raw generated text, before any post-processing, on the first "
             "tasks.</p>"]
    for example in shown:
        parts.append(f"<h3>{_esc(example['task_id'])}</h3>")
        for key, text in example.items():
            if key != "task_id":
                parts.append(f"<p><b>{_esc(key)}</b></p><pre>{_esc(text)}</pre>")
    return "\n".join(parts)


def render_quickstart_report(out_dir: str | Path) -> str:
    out = Path(out_dir)
    result = json.loads((out / "quickstart.json").read_text())
    models = result["models"]
    parts = [f"<h1>moecoder quickstart ({result['minutes']:g} minutes of training)</h1>"]
    parts += [f'<p class="note" id="headline-{i}"><b>{_esc(k.capitalize())}:</b> {_esc(v)}</p>'
              for i, (k, v) in enumerate(result["headline"].items())]
    parts.append("<h2>Base and instruct model side by side</h2>" + _models_table(models))
    parts.append("<p>Parse: the program (prompt + completion, or the code extracted from a chat reply) is valid "
                 "Python; body: the entry point does more than its docstring. A model this small is not expected "
                 "to pass HumanEval: what it can show is a falling loss, code that parses, single lines it can "
                 "fill in, and balanced experts.</p>")
    parts.append(_published_section(models))
    if "infilling" in models.get("base", {}):
        parts.append(_infilling_section(models["base"]["infilling"]))
    parts.append(_examples_section(result["examples"]))
    parts.append(_training_section(RunDir(out), result["training"]))
    links = "".join(f'<li>{_esc(name)}: <a href="{_esc(Path(path).relative_to(out) / "report.html")}">'
                    f"{_esc(Path(path).relative_to(out))}</a></li>" if (Path(path) / "report.html").exists()
                    else f"<li>{_esc(name)}: {_esc(Path(path).relative_to(out))}</li>"
                    for name, path in result["runs"].items())
    parts.append(f"<h2>Evaluation runs</h2><p>Every task, verdict and manifest:</p><ul>{links}</ul>")
    body = "\n".join(part for part in parts if part)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>moecoder quickstart</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def write_quickstart_report(out_dir: str | Path) -> Path:
    """Render OUT_DIR/report.html from OUT_DIR/quickstart.json, atomically."""
    path = Path(out_dir) / "report.html"
    atomic_write(path, render_quickstart_report(out_dir))
    return path
