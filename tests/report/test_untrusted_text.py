"""Reports and comparisons of runs whose programs chose hostile exception messages and task ids.

`moecoder report` and `moecoder compare` must exit 0, keep their output (page, JSON line) and show
the text as written: escaped in HTML (checked in a real Chromium: no script runs), plain in the
terminal, plain in plots. A plot that fails becomes a note on the page.
"""

import json

import pytest
from selenium.webdriver.common.by import By
from typer.testing import CliRunner

from moecoder.cli import app
from moecoder.display import visible
from moecoder.report import html
from moecoder.report.commands import TASK_ID_WIDTH

from report_fixtures import write_run
from untrusted_text import HOSTILE


def hostile_run(run_dir, passing=()):
    """One task per hostile text: its id ends with the text and its sample fails with it as message."""
    verdicts = {f"HumanEval/{text}": ["passed" if text in passing else f"failed: {text}"] for text in HOSTILE}
    return write_run(run_dir, "humaneval", verdicts, seconds={f"HumanEval/{HOSTILE[0]}": 1.0})


def report(*args):
    return CliRunner().invoke(app, ["report", *map(str, args)])


def test_matplotlib_reads_such_messages_as_math_by_default():
    """Positive control: the failure-kinds plot with math text on is what crashed `moecoder report`."""
    plt = html._pyplot()
    with plt.rc_context({"text.parse_math": True}), pytest.raises(ValueError):
        html.plot_failure_kinds("humaneval", [("failed: $\\foo$", 1)])
    plt.close("all")


def test_report_command_survives_hostile_text(tmp_path):
    run = hostile_run(tmp_path / "run")
    result = report(run)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(run / "report.html")
    page = (run / "report.html").read_text()
    assert "<script" not in page and "<img src=x" not in page and "\x1b" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "plot-failed" not in page  # every plot was drawn, $\foo$ included


def test_browser_shows_hostile_text_literally_and_runs_nothing(tmp_path, browser):
    run = hostile_run(tmp_path / "run")
    assert report(run).exit_code == 0
    browser.get((run / "report.html").as_uri())
    assert browser.execute_script("return document.scripts.length") == 0
    assert browser.execute_script("return window.pwned === undefined")
    titles = [cell.get_attribute("title") for cell in browser.find_elements(By.CSS_SELECTOR, "#grid-humaneval .cell")]
    assert titles == [f"{visible(f'HumanEval/{t}')}: 0/1 passed; {visible(f'failed: {t}'[:80])}" for t in HOSTILE]
    failures = browser.find_element(By.ID, "failures-humaneval").text
    for text in HOSTILE[:-1]:  # the long one is cut to 60 characters by the table
        assert visible(f"failed: {text}") in failures
    assert f"failed: {'L' * 49}..." in failures
    slowest = browser.find_element(By.ID, "slowest-humaneval").text
    assert slowest.splitlines()[1].startswith("HumanEval/$\\foo$ 1.000")
    for plot in ("plot-passk-humaneval", "plot-failures-humaneval", "plot-published-humaneval"):
        image = browser.find_element(By.ID, plot)
        assert browser.execute_script("return arguments[0].naturalWidth", image) > 0


def test_a_plot_that_fails_becomes_a_note(tmp_path, monkeypatch, browser):
    def broken(*args):
        html._pyplot().subplots()  # a figure left open, as a real failure mid-plot would
        raise RuntimeError("cannot draw [/] $\\foo$ <b>")

    monkeypatch.setattr(html, "plot_failure_kinds", broken)
    run = hostile_run(tmp_path / "run")
    result = report(run)
    assert result.exit_code == 0, result.output
    assert html._pyplot().get_fignums() == []
    browser.get((run / "report.html").as_uri())
    note = browser.find_element(By.CLASS_NAME, "plot-failed").text
    assert note == "The failure kinds plot could not be drawn: RuntimeError: cannot draw [/] $\\foo$ <b>"
    assert "failed: [/]" in browser.find_element(By.ID, "failures-humaneval").text  # the table stays
    assert browser.find_element(By.ID, "plot-passk-humaneval").get_attribute("src").startswith("data:image/png")


def test_compare_lists_hostile_task_ids_as_written(tmp_path):
    a = hostile_run(tmp_path / "A[bold]")
    b = hostile_run(tmp_path / "B", passing=HOSTILE)
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--show", "20"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])["humaneval"]
    assert sorted(summary["better_in_b"]) == sorted(f"HumanEval/{text}" for text in HOSTILE)
    shown = result.stderr
    assert "A[bold]" in shown and "\x1b" not in shown and "\u202e" not in shown
    for text in HOSTILE:
        assert f"  {visible(f'HumanEval/{text}', TASK_ID_WIDTH)}: 0.00 → 1.00\n" in shown
