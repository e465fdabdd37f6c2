import json

from selenium.webdriver.common.by import By

from moecoder.report.html import load_imbalance, write_report

from report_fixtures import verdicts_from_pattern, write_run


def train_log(path, steps=20, layers=2, experts=4):
    rows = []
    for step in range(steps):
        row = {"step": step, "loss": 6.0 - 0.2 * step, "lr": 1e-3, "tokens_per_s": 1000.0, "mfu": 0.01,
               "expert_load": [[10 + e + layer for e in range(experts)] for layer in range(layers)]}
        if step % 10 == 9:
            row["val_loss"] = 6.1 - 0.2 * step
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def open_report(browser, path):
    browser.get(path.as_uri())
    return browser


def test_report_shows_scores_grid_published_and_images(tmp_path, browser):
    # 7 passed, 5 failed, 2 timed out, 1 error; the slowest task is HumanEval/3.
    verdicts = verdicts_from_pattern("PPPFFPPTFFPTEFP")
    run = write_run(tmp_path / "run", "humaneval", verdicts, seconds={"HumanEval/3": 2.5, "HumanEval/1": 0.01})
    page = write_report(run)
    assert page == run / "report.html"
    b = open_report(browser, page)

    assert b.find_element(By.ID, "score-humaneval").text == "pass@1 46.7%"
    assert b.find_element(By.ID, "ci-humaneval").text == "95% CI 36.7% – 56.7%"

    cells = b.find_elements(By.CSS_SELECTOR, "#grid-humaneval .cell")
    statuses = [cell.get_attribute("data-status") for cell in cells]
    assert len(cells) == 15
    assert (statuses.count("passed"), statuses.count("failed"), statuses.count("timed out"), statuses.count("error")) == (7, 5, 2, 1)
    legend = {span.get_attribute("data-status"): span.find_element(By.CLASS_NAME, "count").text
              for span in b.find_elements(By.CSS_SELECTOR, "#legend-humaneval > span")}
    assert legend["passed"] == "7" and legend["failed"] == "5" and legend["timed out"] == "2" and legend["error"] == "1"

    published = b.find_element(By.ID, "published-humaneval").text
    for name, score in [("DeepSeek-Coder-Instruct 1.3B", "65.2%"), ("DeepSeek-Coder-Instruct 6.7B", "78.6%"),
                        ("DeepSeek-Coder-Instruct 33B", "79.3%"), ("DeepSeek-Coder-V2-Lite-Instruct", "81.1%"),
                        ("DeepSeek-Coder-V2-Instruct", "90.2%")]:
        assert f"{name} {score}" in published
    assert b.find_element(By.CSS_SELECTOR, "#published-humaneval tr.this-run").text.startswith("this run 46.7%")

    slowest = b.find_elements(By.CSS_SELECTOR, "#slowest-humaneval tbody tr")
    assert slowest[0].text.startswith("HumanEval/3 2.500")
    failures = b.find_element(By.ID, "failures-humaneval").text
    assert "failed: AssertionError 5" in failures and "timed out 2" in failures

    images = b.find_elements(By.TAG_NAME, "img")
    assert {img.get_attribute("id") for img in images} >= {"plot-passk-humaneval", "plot-published-humaneval", "plot-failures-humaneval"}
    for img in images:
        assert img.get_attribute("src").startswith("data:image/png;base64,")
        assert b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0


def test_report_training_section_and_notes(tmp_path, browser):
    run = tmp_path / "run"
    train_log(tmp_path / "train_log.jsonl")
    manifest = {
        "model": {"spec": "native:/x"}, "mode": "completion",
        "notes": ["A model this small scores near zero."],
        "training": {"logs": {"pre-training": str(tmp_path / "train_log.jsonl")},
                     "metrics": {"held-out loss": "3.21 nats/token"}},
    }
    write_run(run, "humaneval", verdicts_from_pattern("FFF"), manifest=manifest)
    write_run(run, "mbpp", {"11": ["passed"], "12": ["failed: x"]}, manifest=manifest)
    b = open_report(browser, write_report(run))
    assert "A model this small scores near zero." in b.find_element(By.CLASS_NAME, "note").text
    assert "held-out loss 3.21 nats/token" in b.find_element(By.ID, "training-metrics").text
    assert b.find_element(By.ID, "score-mbpp").text == "pass@1 50.0%"
    assert "DeepSeek-Coder-Instruct 33B 70.0%" in b.find_element(By.ID, "published-mbpp").text
    for element_id in ("plot-loss", "plot-load-pre-training"):
        img = b.find_element(By.ID, element_id)
        assert b.execute_script("return arguments[0].naturalWidth", img) > 0


def test_load_imbalance():
    assert load_imbalance([[5, 5, 5, 5], [8, 0, 0, 0]]) == [0.0, 3.0]


def test_grid_with_several_samples_per_task(tmp_path, browser):
    verdicts = {"HumanEval/0": ["passed", "passed"], "HumanEval/1": ["passed", "failed: x"],
                "HumanEval/2": ["timed out", "timed out"], "HumanEval/3": ["failed: x", "timed out"]}
    b = open_report(browser, write_report(write_run(tmp_path / "run", "humaneval", verdicts)))
    statuses = [c.get_attribute("data-status") for c in b.find_elements(By.CSS_SELECTOR, "#grid-humaneval .cell")]
    assert statuses == ["passed", "partial", "timed out", "failed"]
    assert b.find_element(By.ID, "score-humaneval").text == "pass@1 37.5%"


def test_infilling_shows_exact_match_beside_execution(tmp_path):
    from moecoder.report.html import render_report

    run = write_run(tmp_path / "run", "humaneval-fim-single", {"SingleLineInfilling/HumanEval/0/L0": ["passed"]})
    summaries = json.loads((run / "summary.json").read_text())
    summaries["humaneval-fim-single"]["exact_match"] = {"value": 0.25, "what": "DeepSeek-Coder's score: first line"}
    (run / "summary.json").write_text(json.dumps(summaries))
    page = render_report(run)
    assert '<p id="exact-humaneval-fim-single">exact match 25.0%: DeepSeek-Coder&#x27;s score: first line</p>' in page
