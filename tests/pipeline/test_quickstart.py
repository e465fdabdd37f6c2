"""The CI check of the whole system: `moecoder quickstart --minutes 3` (the one slow test of this package).

It checks behaviour, not timings: both models evaluated as DeepSeek evaluates them (base in completion mode,
instruct in chat mode), infilling scored beside the constant answer with the paired test, no raw output that
is a run of one repeated character, the report, and the model loading in transformers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moecoder.pipeline.quickstart import repeated_character

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """One `moecoder quickstart --minutes 3` run for the tests below: (the finished process, its --out, its JSON)."""
    tmp_path = tmp_path_factory.mktemp("quickstart")
    out = tmp_path / "qs"
    mbpp = ["--mbpp", str(DATA / "mbpp.jsonl")] if (DATA / "mbpp.jsonl").is_file() else []
    env = {**os.environ, "MOECODER_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", "from moecoder.cli import main; main()", "quickstart",
                           "--out", str(out), "--minutes", "3", *mbpp],
                          capture_output=True, text=True, timeout=1500, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, out, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(1500)  # the whole pipeline on 2 cores: minutes, not the suite's 300 s per test
def test_quickstart_three_minutes(quickstart):
    done, out, result = quickstart
    for model in ("base", "instruct"):
        pass1 = result[model]["pass@1"]
        assert 0.0 <= pass1["ci95"][0] <= pass1["value"] <= pass1["ci95"][1] <= 1.0
        assert 0.0 <= result[model]["implemented_share"] <= result[model]["parse_share"] <= 1.0
    for line in ("report", "model (moecoder.load_model / transformers)", "pre-training run"):
        assert line in done.stderr, f"the quickstart did not say where its {line} is"

    # Both modes, as DeepSeek evaluates: base model in completion mode (prompt stripped), instruct model in chat mode.
    base, instruct = out / "eval" / "base", out / "eval" / "instruct"
    base_manifest, instruct_manifest = (json.loads((d / "manifest.json").read_text()) for d in (base, instruct))
    assert base_manifest["mode"] == "completion" and instruct_manifest["mode"] == "chat"
    assert "stripped" in base_manifest["prompt_template"]["humaneval"]["prompt_trailing_whitespace"]
    assert base_manifest["model_spec"].endswith("pretrain/model") and instruct_manifest["model_spec"].endswith("qs/model")
    for run in (base, instruct):
        samples = _rows(run / "samples-humaneval.jsonl")
        assert len(_rows(run / "results-humaneval.jsonl")) == len(samples) == 164
    assert all("completion" in row or "solution" in row for row in _rows(base / "samples-humaneval.jsonl"))
    assert all("solution" in row for row in _rows(instruct / "samples-humaneval.jsonl"))

    # Infilling on the base model, and the constant answer on the same holes, with the paired test.
    infill = result["base"]["infilling"]
    model_rows = _rows(base / "results-humaneval-fim-single.jsonl")
    baseline_rows = _rows(out / "eval" / "constant-baseline" / "results-humaneval-fim-single.jsonl")
    assert len(model_rows) == len(baseline_rows) == infill["n"] > 200
    assert {r["task_id"] for r in model_rows} == {r["task_id"] for r in baseline_rows}
    assert infill["test"] == "mcnemar-exact" and 0.0 <= infill["p_value"] <= 1.0
    assert infill["baseline_pass@1"]["value"] == sum(r["passed"] for r in baseline_rows) / len(baseline_rows)
    assert infill["pass@1"]["value"] - infill["baseline_pass@1"]["value"] == pytest.approx(infill["difference"])
    assert 0.0 <= infill["exact_match"]["value"] <= 1.0

    page = (out / "report.html").read_text()
    for anchor in ('id="headline-0"', 'id="models"', 'id="infilling"', 'id="infilling-test"', 'id="plot-loss"',
                   "DeepSeek-Coder-Instruct 6.7B", "held-out loss", "completions that parse", "expert load"):
        assert anchor in page, anchor
    log = _rows(out / "pretrain" / "train_log.jsonl")
    assert any("heldout_loss" in row for row in log) and any(row.get("expert_load") for row in log)

    import torch

    from moecoder import load_model

    ids = torch.tensor([[1, 2, 3, 4]])
    transformers = pytest.importorskip("transformers")
    with torch.no_grad():
        ours = load_model(out / "model", dtype=torch.float32).eval()(ids)
        theirs = transformers.AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32).eval()(ids).logits
    assert torch.allclose(theirs, ours, rtol=1e-4, atol=1e-4)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "model")
    assert tokenizer.decode(tokenizer.encode("def f(x):\n    return x\n", add_special_tokens=False)) == "def f(x):\n    return x\n"


@pytest.mark.timeout(1500)
def test_no_raw_output_is_a_run_of_one_repeated_character(quickstart):
    _, out, result = quickstart
    for model, run in (("base", "base"), ("instruct", "instruct")):
        samples = _rows(out / "eval" / run / "samples-humaneval.jsonl")
        assert not [row["raw"] for row in samples if repeated_character(row["raw"])]  # before any post-processing
        assert result[model]["repeated_character_share"] == 0.0
