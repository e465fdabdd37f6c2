"""benchmarks/gpu_check.sh --cpu: the GPU check's own logic, on tiny shapes (no GPU needed)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_every_step_on_cpu(tmp_path):
    pytest.importorskip("transformers")  # its comparisons are part of the logic under test
    env = dict(os.environ, OMP_NUM_THREADS="1", OUT=str(tmp_path), PYTHON=os.environ.get("PYTHON", "python"))
    env["PATH"] = f"{Path(os.sys.executable).parent}:{env['PATH']}"
    result = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu"], env=env, capture_output=True,
                            text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {name: step["result"] for name, step in report["steps"].items()}
    assert steps["parity"]["reference"] == "transformers" and steps["parity"]["ok"]
    assert steps["compile"]["decode_tokens_equal"] and steps["compile"]["forward_rel_error"] <= 1e-4
    assert steps["activations"]["float32"]["ratio"] == pytest.approx(1.0, abs=0.01)
    train = steps["training"]
    for name in ("ours_eager", "ours_compiled", "transformers"):
        assert train[name]["tokens_per_s"] > 0, name
    assert train["peak_flops"] is None and train["ours_eager"]["mfu"] is None  # no published peak for a CPU
    for batch in (1, 4):
        row = steps["decoding"][f"batch_{batch}_tokens_per_s"]
        assert row["ours_eager"] > 0 and row["ours_compiled"] > 0 and row["transformers"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| ours_compiled |" in table and "| batch 4 |" in table and table in result.stdout
