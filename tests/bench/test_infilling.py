"""HumanEval single-line infilling: the offline derivation, execution of prompt + middle + suffix, exact match."""

import gzip
import json

import pytest

from moecoder.bench import evaluate_samples, load_benchmark
from moecoder.bench.infilling import NAME, constant_baseline, exact_match

from bench_data import DATA, shared_file

OFFICIAL = DATA / "infilling" / "HumanEval-SingleLineInfilling.jsonl.gz"


def test_the_offline_derivation_reproduces_openais_1033_tasks():
    official = [json.loads(line) for line in gzip.open(shared_file(OFFICIAL), "rt")]
    derived = load_benchmark(NAME)
    from_file = load_benchmark(NAME, str(OFFICIAL))
    assert [task.task_id for task in derived.tasks] == [row["task_id"] for row in official]
    for ours, theirs in zip(derived.tasks, from_file.tasks):
        assert (ours.prompt, ours.completion_suffix, ours.middle, ours.tests) == \
            (theirs.prompt, theirs.completion_suffix, theirs.middle, theirs.tests), ours.task_id


def test_reference_lines_pass_and_match_and_a_wrong_line_fails(moecoder_home):
    tasks = load_benchmark(NAME).tasks
    samples = [{"task_id": task.task_id, "completion": task.middle} for task in tasks]
    samples.append({"task_id": tasks[0].task_id, "completion": "    for idx, elem in enumerate(numbers[:1]):\n"})
    rows, summary = evaluate_samples(NAME, samples, k=(1,))
    assert all(row["passed"] and row["exact_match"] for row in rows[:-1]), \
        [row["result"] for row in rows if not row["passed"]][:5]
    assert not rows[-1]["passed"] and not rows[-1]["exact_match"]
    assert summary["exact_match"]["n"] == len(samples) and "first line" in summary["exact_match"]["what"]


def test_exact_match_scores_only_rows_whose_completion_runs(moecoder_home):
    task = load_benchmark(NAME).tasks[0]
    # The solution runs (and passes); the completion beside it is not what ran, so it is not scored.
    row = {"task_id": task.task_id, "completion": task.middle,
           "solution": task.completion_prefix + task.middle + task.completion_suffix}
    (scored,), summary = evaluate_samples(NAME, [row], k=(1,))
    assert scored["passed"] and "exact_match" not in scored and summary["exact_match"]["n"] == 0


@pytest.mark.parametrize("completion, reference, same", [
    ("    return x\n    more code\n", "        return x\n", True),  # first line, stripped
    ("\n\n  return x", "return x\n", True),
    ("    return y\n", "    return x\n", False),
    ("", "    return x\n", False),
])
def test_exact_match_is_deepseeks_first_line_rule(completion, reference, same):
    assert exact_match(completion, reference) is same


def test_the_constant_baseline_is_the_commonest_line_reindented():
    tasks = load_benchmark(NAME).tasks
    baseline = constant_baseline(tasks)
    assert len(baseline) == len(tasks) and len({row["completion"].strip() for row in baseline}) == 1
    for task, row in zip(tasks, baseline):
        indent = task.middle[:len(task.middle) - len(task.middle.lstrip())]
        assert row["completion"].startswith(indent) and not row["completion"][len(indent)].isspace()
