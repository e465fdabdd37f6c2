"""Hostile programs: none may pass, none may harm the machine, the harness survives each.

Every program here gets a wrong (or no) `f`, tries one trick, and must not be reported
as passed. Limits are small (1 s CPU, 4 s wall, 512 MiB) so that even a broken sandbox
cannot run away with the machine; tricks that would be dangerous without namespaces
run only where bubblewrap isolation is in force.
"""

import pickle
import socket
import threading
import zlib

import pytest

from moecoder.bench.executor import Executor, Job
from moecoder.bench.sandbox import ISOLATION_BWRAP, Limits

LIMITS = Limits(cpu_seconds=1.0, wall_seconds=4.0, memory_bytes=512 << 20, file_bytes=1 << 20,
                processes=16, tmpfs_bytes=8 << 20)
SUITE = {"kind": "code", "setup": "", "units": ["assert f(2) == 4", "assert f(3) == 6"]}
IO_SUITE = {"kind": "io", "entry_point": "f", "inputs": [(2,), (3,)], "atol": 0, "oracle": None,
            "expected": zlib.compress(pickle.dumps({"outputs": [4, 6], "digests": {}}))}  # as the harness ships them


@pytest.fixture(scope="module")
def executor():
    pool = Executor(workers=1, limits=LIMITS)
    yield pool
    pool.close()


def run(executor, program: str, suite: dict = SUITE) -> dict:
    results = {}
    key = "io" if suite is IO_SUITE else "code"
    executor.run([Job(key, program, LIMITS)], {key: suite}, results.__setitem__)
    return results[0]


def needs_namespaces(executor):
    if executor.isolation != ISOLATION_BWRAP:
        pytest.skip("needs bubblewrap isolation; too dangerous with rlimits only")


def test_a_correct_program_passes_and_a_wrong_one_fails(executor):
    assert run(executor, "def f(x):\n    return 2 * x\n")["outcome"] == "passed"
    wrong = run(executor, "def f(x):\n    return x + 2\n")
    assert (wrong["outcome"], wrong["reason"]) == ("failed", "AssertionError")


@pytest.mark.parametrize("trick", [
    "import sys\nsys.exit(0)",
    "import os\nos._exit(0)",
    "def f(x):\n    import sys; sys.exit(0)",
    "def f(x):\n    import os; os._exit(0)",
    "import atexit, os\natexit.register(lambda: os._exit(0))\ndef f(x):\n    raise SystemExit(0)",
    "import atexit\natexit.register(lambda: print('passed'))\ndef f(x):\n    return 0",
    "print('passed')\nprint('{\"outcome\": \"passed\"}')\nimport os\nos._exit(0)",
    "def f(x):\n    import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    "def f(x):\n    import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
    "import os\nfor fd in range(3, 5000):\n    try: os.write(fd, b'passed\\n' * 4)\n    except OSError: pass\nos._exit(0)",
    "def f(x):\n    raise KeyboardInterrupt",
])
def test_exiting_printing_or_killing_itself_is_not_passing(executor, trick):
    result = run(executor, trick)
    assert result["outcome"] != "passed", result


def test_killing_the_parent_fails_and_the_harness_recovers(executor):
    result = run(executor, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef f(x):\n    return 2 * x")
    assert result["outcome"] == "failed"
    assert run(executor, "def f(x):\n    return 2 * x")["outcome"] == "passed"


def test_loops_that_ignore_signals_time_out(executor):
    program = ("import signal\n"
               "for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGXCPU, signal.SIGINT):\n"
               "    signal.signal(s, signal.SIG_IGN)\n"
               "def f(x):\n    while True: pass\n")
    assert run(executor, program)["outcome"] == "timed out"


def test_sleeping_forever_times_out(executor):
    assert run(executor, "import time\ndef f(x):\n    time.sleep(3600)")["outcome"] == "timed out"


def test_a_segfault_is_a_failure(executor):
    result = run(executor, "import ctypes\ndef f(x):\n    return ctypes.string_at(0)")
    assert (result["outcome"], result["reason"]) == ("failed", "killed by SIGSEGV")


def test_memory_exhaustion_is_a_failure(executor):
    result = run(executor, "def f(x):\n    hog = []\n    while True: hog.append(bytearray(1 << 20))")
    assert result["outcome"] == "failed" and "MemoryError" in result["reason"]


def test_an_output_flood_is_capped(executor):
    result = run(executor, "import sys\ndef f(x):\n    while True: sys.stdout.write('passed ' * 10000)")
    assert result["outcome"] == "timed out"
    assert 0 < len(result["output"]) <= 4096


def test_large_files_hit_the_file_size_limit(executor):
    program = "def f(x):\n    open('big', 'wb').write(b'x' * (64 << 20))\n    return 2 * x"
    assert run(executor, program)["outcome"] != "passed"


def test_the_working_directory_is_private_and_writable(executor):
    program = ("import os\nassert os.listdir('.') == []\nopen('scratch.txt', 'w').write('ok')\n"
               "def f(x):\n    return 2 * x if open('scratch.txt').read() == 'ok' else 0")
    assert run(executor, program)["outcome"] == "passed"
    assert run(executor, program)["outcome"] == "passed"  # the next program starts empty again


def test_what_a_program_leaves_in_tmp_is_gone_for_the_next(executor):
    needs_namespaces(executor)
    # Beside an interpreter installed under /tmp (a CI clone's venv) the jail's tmpfs is writable too.
    beside = "os.path.join(os.path.dirname(sys.prefix), 'stray')"
    messy = (f"import os, sys\nif sys.prefix.startswith('/tmp/'):\n    open({beside}, 'w').write('x')\n"
             "os.makedirs('/tmp/left/deep')\nopen('/tmp/left.txt', 'w').write('x')\n"
             "open('here.txt', 'w').write('x')\nos.chmod('.', 0o777)\n"
             "def f(x):\n    return 2 * x")
    clean = (f"import os, stat, sys\nassert not os.path.exists({beside})\n"
             "assert not os.path.exists('/tmp/left') and not os.path.exists('/tmp/left.txt')\n"
             "assert os.listdir('.') == [] and stat.S_IMODE(os.stat('.').st_mode) == 0o700\n"
             "def f(x):\n    return 2 * x")
    assert run(executor, messy)["outcome"] == "passed"
    assert run(executor, clean)["outcome"] == "passed"


def test_a_clean_tmp_is_what_the_interpreter_mounts_leave(monkeypatch):
    from moecoder.bench import zygote

    monkeypatch.setattr(zygote, "_mounts_below", lambda directory: frozenset({"/tmp/ci/a/venv", "/tmp/ci/py"}))
    supervisor = zygote.Supervisor(namespaced=True, workdir="/tmp/work")
    assert supervisor.expected_tmp == {"/tmp": {"work", "ci"}, "/tmp/ci": {"a", "py"}, "/tmp/ci/a": {"venv"}}


def test_the_cpu_limit_is_exact_and_counts_cpu_not_waiting(executor):
    spin = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
    short = Limits(**{**LIMITS.as_dict(), "cpu_seconds": 0.2})
    results = {}
    executor.run([Job("code", spin + "def f(x):\n    return 2 * x", short),
                  Job("code", spin + "def f(x):\n    return 2 * x", LIMITS)], {"code": SUITE}, results.__setitem__)
    assert results[0]["outcome"] == "timed out" and 0.2 <= results[0]["cpu_seconds"] < 0.25, results[0]
    assert results[1]["outcome"] == "passed" and results[1]["cpu_seconds"] >= 0.4


def test_a_program_that_does_not_compile_is_an_error_without_a_fork(executor):
    result = run(executor, "def f(x)\n    return 2 * x")
    assert (result["outcome"], result["reason"], result["cpu_seconds"]) == ("error", "SyntaxError", 0.0)
    assert run(executor, "x = '\\d'\n" + "def f(x):\n    return 2 * x")["output"] == ""  # warnings are silenced


def test_writes_and_deletes_outside_tmp_do_not_happen(executor, tmp_path):
    needs_namespaces(executor)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    program = (f"import os\n"
               f"for attack in (lambda: os.remove({str(victim)!r}), lambda: open({str(tmp_path / 'new.txt')!r}, 'w'),\n"
               f"               lambda: open({str(victim)!r}, 'w').write('gone')):\n"
               f"    try: attack()\n"
               f"    except OSError: pass\n"
               f"def f(x):\n    return 0")
    assert run(executor, program)["outcome"] == "failed"
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "new.txt").exists()


def test_no_network_reaches_a_listener_on_localhost(executor):
    needs_namespaces(executor)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    program = (f"import socket\nfor _ in range(3):\n"
               f"    try: socket.create_connection(('127.0.0.1', {port}), timeout=0.5).sendall(b'leak')\n"
               f"    except OSError: pass\n"
               f"def f(x):\n    return 0")
    accepted = []

    def accept():
        try:
            accepted.append(listener.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    assert run(executor, program)["outcome"] == "failed"
    thread.join()
    listener.close()
    assert accepted == []


def test_a_fork_storm_is_stopped_and_cleaned_up(executor):
    needs_namespaces(executor)
    program = ("import os\ndef f(x):\n"
               "    while True:\n"
               "        try: os.fork()\n"
               "        except OSError: pass\n")
    result = run(executor, program)
    assert result["outcome"] in ("failed", "timed out") and result["outcome"] != "passed"
    assert run(executor, "def f(x):\n    return 2 * x")["outcome"] == "passed"


def test_children_do_not_outlive_their_program(executor):
    needs_namespaces(executor)
    program = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
               "def f(x):\n    return 2 * x")
    assert run(executor, program)["outcome"] == "passed"
    probe = "import os\nassert sum(p.isdigit() for p in os.listdir('/proc')) == 3\ndef f(x):\n    return 2 * x"
    assert run(executor, probe)["outcome"] == "passed"  # init, zygote, this program: the sleeper is gone


@pytest.mark.parametrize("suite", [SUITE, IO_SUITE], ids=["code-tests", "io-tests"])
@pytest.mark.parametrize("trick", [
    "import builtins\nbuiltins.exec = lambda *args, **kwargs: None\ndef f(x):\n    return 0",
    "import builtins\ndef f(x):\n    builtins.exec = builtins.isinstance = lambda *a, **k: True\n    return 0",
    "import sys\nm = sys.modules['__main__']\nfor name in dir(m):\n"
    "    if name.startswith('_') and callable(getattr(m, name)) and not name.startswith('__'):\n"
    "        setattr(m, name, lambda *a, **k: [True])\ndef f(x):\n    return 0",
    "import sys\ndef f(x):\n    m = sys.modules['__main__']\n"
    "    m._output_matches.__code__ = (lambda *a: True).__code__\n    return 0",
    "import json\njson.dumps = lambda *a, **k: '{\"outcome\": \"passed\"}'\ndef f(x):\n    return 0",
])
def test_rebinding_the_harness_from_inside_is_not_passing(executor, trick, suite):
    result = run(executor, trick, suite)
    assert result["outcome"] != "passed", result


def test_an_object_equal_to_everything_fails_io_tests(executor):
    # (HumanEval's own check functions compare with ==, so there the trick is out of the harness's reach.)
    program = "class Anything:\n    __eq__ = lambda self, other: True\ndef f(x):\n    return [Anything()]"
    assert run(executor, program, IO_SUITE)["outcome"] == "failed"


def test_io_tests_pass_right_outputs_and_name_the_first_wrong_one(executor):
    assert run(executor, "def f(x):\n    return 2 * x", IO_SUITE)["outcome"] == "passed"
    wrong = run(executor, "def f(x):\n    return 4 if x == 2 else 0", IO_SUITE)
    assert (wrong["outcome"], wrong["reason"]) == ("failed", "wrong output on test 1")


@pytest.mark.parametrize("left,right", [(10 ** 400, 10 ** 400), (-(10 ** 400), -(10 ** 400)),
                                        (1, 1.0), (True, 1), ("é" * 5, "é" * 5), (b"ab", b"ab")])
def test_digests_are_equal_for_values_that_compare_equal(left, right):
    from moecoder.bench.zygote import _digest

    assert left == right and _digest(left) == _digest(right) is not None


@pytest.mark.parametrize("left,right", [("a", b"a"), (10 ** 400, 10 ** 400 + 1), (-5, 5), ("ab", "ba"), (0, "")])
def test_digests_differ_for_values_that_compare_unequal(left, right):
    from moecoder.bench.zygote import _digest

    assert left != right and _digest(left) != _digest(right)


def test_only_large_strings_bytes_and_integers_have_digests():
    from moecoder.bench.zygote import _digest

    assert [_digest(v) for v in (1.5, float("nan"), complex(1, 0), [1], ("a",), {"a": 1}, None)] == [None] * 7
    assert _digest("x" * 10, min_bytes=1000) is None and _digest("x" * 1000, min_bytes=1000) is not None


class _Anything:
    __eq__ = lambda self, other: True


class _Int(int):
    pass


@pytest.mark.parametrize("value,plain", [
    ([1, 2.0, "a", None], True), ([[1], [2, (3, {4: frozenset({5})})]], True), (list(range(10 ** 5)), True),
    ([_Anything()], False), ([[[_Anything()]]], False), ({1: _Anything()}, False), ({_Int(1): 1}, False),
    ({"k": [1, [2, [_Int(3)]]]}, False), ((1, {2, _Int(3)}), False),
])
def test_only_outputs_built_of_built_in_types_are_compared(value, plain):
    from moecoder.bench.zygote import _plain

    assert _plain(value) is plain


def test_clearing_the_private_tmp_keeps_the_interpreter_mount_and_removes_the_rest(tmp_path):
    # Inside the jail an interpreter installed under /tmp is a read-only bind at e.g. /tmp/ci/venv: the
    # zygote clears /tmp between programs but must neither walk into that mount nor keep anything else.
    from moecoder.bench.zygote import _clear_directory

    kept = tmp_path / "ci" / "venv"
    (kept / "lib").mkdir(parents=True)
    (kept / "lib" / "site.py").write_text("kept")
    (tmp_path / "ci" / "left-by-a-program").write_text("x")
    (tmp_path / "work" / "deep").mkdir(parents=True)
    (tmp_path / "stray.txt").write_text("x")
    (tmp_path / "link").symlink_to(kept)
    _clear_directory(str(tmp_path), frozenset({str(kept)}))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "ci", "ci/venv", "ci/venv/lib", "ci/venv/lib/site.py"]
