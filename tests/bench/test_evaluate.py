"""`evaluate_samples` and `moecoder evaluate`: reference solutions, formats, errors, resume."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from moecoder.bench import evaluate_samples, load_benchmark
from moecoder.bench.jail import Limits
from moecoder.errors import UserError

from bench_data import HUMANEVAL_PLUS, MBPP, read_jsonl, shared_file, write_jsonl


def moecoder(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-c", "from moecoder.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, **kwargs)


def humaneval_references():
    return [{"task_id": t.task_id, "completion": t.reference[len(t.prompt):]} for t in load_benchmark("humaneval").tasks]


def test_humaneval_references_pass_164_of_164():
    rows, summary = evaluate_samples("humaneval", humaneval_references(), k=(1,))
    assert all(row["passed"] for row in rows), [row["result"] for row in rows if not row["passed"]]
    assert summary["pass_at_k"]["pass@1"]["value"] == 1.0
    assert summary["n_tasks"] == 164 and summary["outcomes"]["passed"] == 164


def test_humaneval_plus_references_pass_base_and_plus_inputs():
    path = shared_file(HUMANEVAL_PLUS)
    samples = [{"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]} for r in read_jsonl(path)]
    # Right on every input but the large ones, whose expected outputs (megabytes) are kept as digests.
    off_by_one = ("def string_sequence(n: int) -> str:\n"
                  "    return ' '.join(str(x) for x in range(n + 1 if n < 100000 else n))\n")
    rows, summary = evaluate_samples("humaneval+", samples + [{"task_id": "HumanEval/15", "solution": off_by_one}],
                                     dataset=str(path), k=(1,), details=True)
    *references, wrong = rows
    assert [row["result"] for row in references if not row["passed"]] == []
    by_task = {r["task_id"]: len(r["base_input"]) + len(r["plus_input"]) for r in read_jsonl(path)}
    assert all(len(row["details"]) == by_task[row["task_id"]] for row in rows)  # every input ran
    assert summary["outcomes"]["passed"] == 164
    inputs = next(r["base_input"] + r["plus_input"] for r in read_jsonl(path) if r["task_id"] == "HumanEval/15")
    assert [item is True for item in wrong["details"]] == [n < 100000 for (n,) in inputs]


def test_mbpp_references_pass_500_of_500():
    path = shared_file(MBPP)
    samples = [{"task_id": r["task_id"], "completion": r["code"]} for r in read_jsonl(path) if 11 <= r["task_id"] <= 510]
    rows, summary = evaluate_samples("mbpp", samples, dataset=str(path), k=(1,))
    assert [row["result"] for row in rows if not row["passed"]] == []
    assert summary["n_tasks"] == 500


def test_humaneval_plus_catches_what_humaneval_misses():
    path = shared_file(HUMANEVAL_PLUS)
    # Passes HumanEval's few tests for truncate_number but is wrong on HumanEval+'s extra inputs.
    wrong = "def truncate_number(number: float) -> float:\n    return number - int(number) if number < 1e6 else 0.0\n"
    (row,), _ = evaluate_samples("humaneval+", [{"task_id": "HumanEval/2", "solution": wrong}], dataset=str(path), k=(1,))
    (base,), _ = evaluate_samples("humaneval", [{"task_id": "HumanEval/2", "solution": wrong}], k=(1,))
    assert base["passed"] and not row["passed"] and row["result"].startswith("failed: wrong output")


def test_rows_keep_fields_and_order_and_identical_programs_run_once():
    refs = humaneval_references()[:3]
    samples = [{**refs[2], "extra": 1}, {"task_id": "HumanEval/0", "completion": "    return None\n"}, refs[0], refs[0]]
    rows, summary = evaluate_samples("humaneval", samples, k=(1,))
    assert [row["task_id"] for row in rows] == ["HumanEval/2", "HumanEval/0", "HumanEval/0", "HumanEval/0"]
    assert rows[0]["extra"] == 1 and rows[0]["isolation"] == summary["isolation"]
    assert [row["passed"] for row in rows] == [True, False, True, True]
    assert summary["programs"]["distinct"] == 3
    assert summary["pass_at_k"]["pass@1"]["value"] == pytest.approx((2 / 3 + 1) / 2)


def test_a_verdict_is_reused_only_under_the_same_limits(moecoder_home):
    # Needs about 100 MB: fails under 64 MiB, passes under the default 4 GiB. A verdict stored under the
    # small limit must not be served to a run with the large one.
    hungry = {"task_id": "HumanEval/0", "completion": "    hog = bytearray(100 << 20)\n    return any(\n"
              "        abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"}
    (small,), _ = evaluate_samples("humaneval", [hungry], k=(1,), limits=Limits(memory_bytes=64 << 20))
    (large,), summary = evaluate_samples("humaneval", [hungry], k=(1,))
    assert (small["passed"], large["passed"]) == (False, True), (small["result"], large["result"])
    assert summary["programs"]["reused_from_store"] == 0


def test_a_timeout_at_the_floor_is_final_only_under_the_calibrated_limit(monkeypatch, moecoder_home):
    # HumanEval/75's reference needs far more CPU than a tiny floor: it times out there first,
    # its task is calibrated, and it runs again under the grown limit. An endless loop stays timed out.
    monkeypatch.setattr("moecoder.bench.executor.CPU_FLOOR_SECONDS", 0.02)
    references = {row["task_id"]: row for row in humaneval_references()}
    samples = [references["HumanEval/75"], {"task_id": "HumanEval/0", "completion": "    while True:\n        pass\n"},
               references["HumanEval/0"]]
    rows, summary = evaluate_samples("humaneval", samples, k=(1,), workers=2)
    assert [row["result"] for row in rows] == ["passed", "timed out", "passed"]
    with sqlite3.connect(moecoder_home / "harness.sqlite3") as db:
        verdicts = db.execute("SELECT task_id, outcome FROM verdicts ORDER BY task_id, outcome").fetchall()
        calibrated = {task for (task,) in db.execute("SELECT task_id FROM calibration")}
    assert verdicts == [("HumanEval/0", "passed"), ("HumanEval/0", "timed out"), ("HumanEval/75", "passed")]
    assert {"HumanEval/0", "HumanEval/75"} <= calibrated
    assert summary["limits"]["cpu_seconds"]["max"] > 0.02


def test_a_sandbox_that_fails_a_reference_stops_the_run_and_stores_nothing(monkeypatch, moecoder_home):
    # As a jail that cannot run a right program would: the first reference fails. No sample's
    # verdict may be kept, though other workers ran samples meanwhile.
    import dataclasses

    import moecoder.bench.evaluate as evaluate

    real = load_benchmark("humaneval")
    slow_failure = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\nraise SystemExit(0)"
    broken = dataclasses.replace(real, tasks=[dataclasses.replace(real.tasks[0], reference=slow_failure),
                                              *real.tasks[1:]])
    monkeypatch.setattr(evaluate, "load_benchmark", lambda name, path=None: broken)
    with pytest.raises(UserError, match="reference solution of HumanEval/0 does not pass in the sandbox"):
        evaluate_samples("humaneval", humaneval_references(), k=(1,))  # the others run while it fails
    with sqlite3.connect(moecoder_home / "harness.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM verdicts").fetchone()[0] == 0


def test_a_worker_gets_an_io_suite_again_after_switching_tasks():
    # A zygote keeps one HumanEval+ suite (expected outputs can be large): one worker, tasks A, B, A.
    path = shared_file(HUMANEVAL_PLUS)
    solutions = {r["task_id"]: r["prompt"] + r["canonical_solution"] for r in read_jsonl(path)
                 if r["task_id"] in ("HumanEval/2", "HumanEval/4")}
    samples = [{"task_id": "HumanEval/2", "solution": solutions["HumanEval/2"]},
               {"task_id": "HumanEval/4", "solution": solutions["HumanEval/4"]},
               {"task_id": "HumanEval/2", "solution": solutions["HumanEval/2"] + "\n# same, and a new program\n"},
               {"task_id": "HumanEval/2", "solution": "def truncate_number(number):\n    return 0.5\n"}]
    rows, _ = evaluate_samples("humaneval+", samples, dataset=str(path), k=(1,), workers=1)
    assert [row["passed"] for row in rows] == [True, True, True, False]


def test_k_larger_than_a_task_n_is_refused_unless_defaulted():
    samples = humaneval_references()[:2]
    with pytest.raises(UserError, match="pass@10 needs at least 10 samples"):
        evaluate_samples("humaneval", samples, k=(1, 10))
    _, summary = evaluate_samples("humaneval", samples, k=(1, 10, 100), strict_k=False)
    assert list(summary["pass_at_k"]) == ["pass@1"] and "pass@10,100 left out" in summary["note"]


def test_the_rlimits_fallback_runs_only_when_asked_and_warns_everywhere(capfd):
    samples = humaneval_references()[:2] + [{"task_id": "HumanEval/1", "completion": "    import os; os._exit(0)\n"}]
    rows, summary = evaluate_samples("humaneval", samples, k=(1,), sandbox="rlimits")
    assert [row["passed"] for row in rows] == [True, True, False]
    assert summary["isolation"].startswith("rlimits only (NO namespaces")
    assert {row["isolation"] for row in rows} == {summary["isolation"]}
    assert "WITHOUT a jail" in summary["warning"] and all(row["warning"] == summary["warning"] for row in rows)
    assert "warning: --sandbox rlimits" in capfd.readouterr().err


def test_without_bubblewrap_the_harness_stops_with_one_line_naming_it(tmp_path):
    samples = write_jsonl(tmp_path / "s.jsonl", humaneval_references()[:1])
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    (bare_path / "setpriv").symlink_to("/usr/bin/setpriv")
    done = moecoder("evaluate", "--benchmark", "humaneval", "--samples", str(samples),
                    env=dict(os.environ, PATH=str(bare_path)))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "bwrap" in done.stderr and "apt-get install bubblewrap" in done.stderr and "--sandbox rlimits" in done.stderr
    assert not (tmp_path / "s.jsonl_results.jsonl").exists()


def test_cli_writes_results_and_prints_the_summary_last(tmp_path):
    samples = write_jsonl(tmp_path / "samples.jsonl", humaneval_references()[:4])
    done = moecoder("evaluate", "--benchmark", "humaneval", "--samples", str(samples))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["n_samples"] == 4 and "pass@1" in summary["pass_at_k"] and "pass@10" not in summary["pass_at_k"]
    assert "pass@1" in done.stderr  # the table
    results = read_jsonl(tmp_path / "samples.jsonl_results.jsonl")
    assert [r["result"] for r in results] == ["passed"] * 4
    explicit = moecoder("evaluate", "--benchmark", "humaneval", "--samples", str(samples), "--k", "1,10")
    assert explicit.returncode == 2 and "pass@10" in explicit.stderr


@pytest.mark.parametrize("content,message", [
    ('{"task_id": "HumanEval/0", "completion": "x"}\n{not json\n', "line 2: not valid JSON"),
    ('\n{"task_id": "HumanEval/999", "completion": "x"}\n', "line 2: unknown humaneval task_id"),
    ('{"task_id": "HumanEval/0", "answer": "x"}\n', "line 1: the sample has neither"),
    ("", "has no samples"),
    (b'{"task_id": "HumanEval/0", "completion": "x"}\n{"task_id": "HumanEval/0", "completion": "\xff"}\n',
     "line 2: not UTF-8"),
])
def test_cli_bad_input_is_one_line_and_no_results(tmp_path, content, message):
    samples = tmp_path / "samples.jsonl"
    samples.write_bytes(content if isinstance(content, bytes) else content.encode())
    done = moecoder("evaluate", "--benchmark", "humaneval", "--samples", str(samples))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "samples.jsonl_results.jsonl").exists()


def test_cli_directories_where_files_belong_are_named_as_such(tmp_path):
    samples = write_jsonl(tmp_path / "samples.jsonl", humaneval_references()[:1])
    for args, message in (
            (("--samples", str(tmp_path)), f"samples file {tmp_path} is a directory, not a file"),
            (("--samples", str(samples), "--results", str(tmp_path)), f"--results {tmp_path} is a directory"),
            (("--samples", str(samples), "--dataset", str(tmp_path)), f"dataset file {tmp_path} is a directory")):
        done = moecoder("evaluate", "--benchmark", "humaneval", *args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_cli_missing_samples_file(tmp_path):
    done = moecoder("evaluate", "--benchmark", "humaneval", "--samples", str(tmp_path / "none.jsonl"))
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_evaluate_does_not_import_torch(tmp_path):
    samples = write_jsonl(tmp_path / "s.jsonl", humaneval_references()[:1])
    code = ("import sys\nfrom moecoder.cli import app\n"
            f"app(['evaluate', '--benchmark', 'humaneval', '--samples', {str(samples)!r}], standalone_mode=False)\n"
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_killed_run_resumes_with_identical_results(tmp_path, moecoder_home):
    refs = humaneval_references()
    # 60 distinct programs, each sleeping 0.03 s per call (wall time, not CPU) so the run is still going when killed.
    samples = [{"task_id": refs[i % 20]["task_id"],
                "completion": f"    __import__('time').sleep(0.03 + {i} * 1e-6)\n" +
                (refs[i % 20]["completion"] if i % 3 else "    return None\n")} for i in range(60)]
    path = write_jsonl(tmp_path / "samples.jsonl", samples)
    command = [sys.executable, "-c", "from moecoder.cli import main; main()",
               "evaluate", "--benchmark", "humaneval", "--samples", str(path), "--workers", "2"]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    database = moecoder_home / "harness.sqlite3"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _stored_verdicts(database) < 5:
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    stored = _stored_verdicts(database)
    assert 5 <= stored < 60, "the run should be killed midway"
    assert not (tmp_path / "samples.jsonl_results.jsonl").exists()

    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["programs"]["reused_from_store"] >= stored
    resumed_rows = read_jsonl(tmp_path / "samples.jsonl_results.jsonl")

    fresh = dict(os.environ, MOECODER_HOME=str(tmp_path / "fresh-home"))
    uninterrupted = subprocess.run(command + ["--results", str(tmp_path / "fresh.jsonl")], env=fresh,
                                   capture_output=True, text=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert resumed_rows == read_jsonl(tmp_path / "fresh.jsonl")
    assert [row["passed"] for row in resumed_rows] == [i % 3 != 0 for i in range(60)]


def _stored_verdicts(database) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database, timeout=1) as db:
            return db.execute("SELECT count(*) FROM verdicts").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
