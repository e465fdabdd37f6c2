"""The CI check of the whole system: `moecoder quickstart --minutes 3` (the one slow test of this package)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.timeout(1500)  # the whole pipeline on 2 cores: minutes, not the suite's 300 s per test
def test_quickstart_three_minutes(tmp_path):
    out = tmp_path / "qs"
    mbpp = ["--mbpp", str(DATA / "mbpp.jsonl")] if (DATA / "mbpp.jsonl").is_file() else []
    env = {**os.environ, "MOECODER_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", "from moecoder.cli import main; main()", "quickstart",
                           "--out", str(out), "--minutes", "3", *mbpp],
                          capture_output=True, text=True, timeout=1500, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    pass1 = result["humaneval"]["pass@1"]
    assert 0.0 <= pass1["ci95"][0] <= pass1["value"] <= pass1["ci95"][1] <= 1.0
    assert 0.0 <= result["implemented_share"] <= result["parse_share"] <= 1.0
    for line in ("report", "model (moecoder.load_model / transformers)", "pre-training run"):
        assert line in done.stderr, f"the quickstart did not say where its {line} is"

    results = (out / "eval" / "results-humaneval.jsonl").read_text().splitlines()
    assert len(results) == 164
    page = (out / "report.html").read_text()
    assert "near zero" in page and "DeepSeek-Coder-Instruct 6.7B" in page and 'id="plot-loss"' in page
    assert "held-out loss" in page and "completions that parse" in page and "expert load" in page
    log = [json.loads(line) for line in (out / "pretrain" / "train_log.jsonl").read_text().splitlines()]
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
