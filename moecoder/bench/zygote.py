"""The jail side of the harness: a warm "zygote" that forks one fresh child per program.

Run inside the jail as `python -I -S -c SOURCE CONTROL_FD MODE TMP MEMORY_BYTES SITE` (MODE "jail" or
"rlimits", TMP its private /tmp, SITE the directory of the allowed packages) where SOURCE is plain.py followed by
this file (both standard library only; the jail cannot import moecoder). Start-up is paid once
per jail; each program then costs one fork.

What runs here decides nothing. The child executes the program, then answers calls from the
judge (judge.py, outside the jail): "call NAME with these arguments", "call NAME on each of
these inputs"; arguments arrive and results leave in plain.py's format, so only built-in
values cross. Whatever the program does to this interpreter (rebinding built-ins, rewriting
this module, tracing frames) changes only its own answers: the tests, the expected values and
the verdict live in the judge, which the program cannot read, trace, signal or write to.

Protocol. Judge -> zygote, on an AF_UNIX socket: a JSON header per job with the two pipe ends
the child uses (calls in, answers out) passed as file descriptors, then {"op": "end"} when
the judge is done with it. Zygote -> judge: JSON lines (ready; per job its end: wait status,
why it was stopped, the child's CPU time, whether /tmp could be cleaned). Judge <-> child: frames
(4-byte little-endian length, then one kind byte and a plain.py payload).

The zygote itself is not dumpable (PR_SET_DUMPABLE 0), so a child cannot open its descriptors
through /proc, and seccomp refuses ptrace and process_vm_*. After each job `kill(-1, SIGKILL)`
removes every process of the job in this PID namespace, and /tmp is emptied iteratively; a jail
that cannot be cleaned says so and the judge replaces it.
"""

import _signal
import errno
import gc
import json
import math
import os
import resource
import select
import signal
import socket
import stat
import struct
import sys
import time
import warnings

# Warm the modules that programs import most, so each fork starts with them loaded. `random` is left
# out: its at-fork hook reseeds it in every child. Everything loaded here makes every fork dearer.
import bisect, cmath, collections, heapq, itertools, operator, re, string, typing  # noqa: E401,F401

PROCESS_COUNT_INTERVAL = 0.05  # seconds between process counts while a job runs (fork storms)
MIN_WAIT = 0.0005
CLEAN_SECONDS = 2.0  # longer than this to empty /tmp: give up, the judge replaces the jail
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
CHILD_DEFAULT_SIGNALS = tuple(int(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE))
FRAME = struct.Struct("<I")
RLIMITS = tuple(getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_"))

# Frame kinds. Judge -> child: CALL, BATCH, SETUP. Child -> judge: RAN (the program ran),
# RESULT, RAISED (exception type name and message), NOT_PLAIN (type name of a value that may not cross).
CALL, BATCH, SETUP = b"C", b"B", b"S"
RAN, RESULT, RAISED, NOT_PLAIN = b"K", b"R", b"E", b"N"


# ---------------------------------------------------------------- child side


def _write_frame(fd, kind, payload=b""):
    data = memoryview(FRAME.pack(len(payload) + 1) + kind + payload)
    while data:
        data = data[os.write(fd, data):]


def _read_frame(fd):
    header = read_exact(fd, FRAME.size)
    return None if header is None else read_exact(fd, FRAME.unpack(header)[0])


def _text(value, limit=500):
    """A str for the judge, whatever the program made of its exception (custom __str__ included)."""
    try:
        text = value if type(value) is str else str(value)
    except BaseException:
        return ""
    return text[:limit] if type(text) is str else ""


def _answer(answers, function, args, kwargs):
    try:
        value = function(*args, **kwargs)
    except BaseException as exc:  # SystemExit too: exiting is not answering
        name = type(exc).__name__
        _write_frame(answers, RAISED, encode([name if type(name) is str else "?", _text(exc)]))
        return
    try:
        payload = encode(value)
    except BaseException:  # NotPlain, or a value too deep or too strange to walk
        _write_frame(answers, NOT_PLAIN, encode(_text(type(value).__name__, 100)))
        return
    _write_frame(answers, RESULT, payload)


def _serve(namespace, calls, answers):
    """Answer the judge's calls until it closes the pipe."""
    while (frame := _read_frame(calls)) is not None:
        kind, body = frame[:1], decode(frame[1:], refs=namespace)
        if kind == SETUP:  # test setup that builds the program's own objects (MBPP/367)
            try:
                exec(body, namespace)
                _write_frame(answers, RAN)
            except BaseException as exc:
                _write_frame(answers, RAISED, encode([type(exc).__name__, _text(exc)]))
            continue
        name, inputs = body[0], (body[1:] if kind == CALL else body[1])
        function = namespace.get(name)
        if not callable(function):
            missing = encode(["NameError", f"name '{name}' is not defined"])
            for _ in range(1 if kind == CALL else len(inputs)):
                _write_frame(answers, RAISED, missing)
            continue
        if kind == CALL:
            _answer(answers, function, inputs[0], inputs[1])
        else:
            for args in inputs:  # one answer per input, sent at once: the judge stops at the first wrong one
                _answer(answers, function, args, {})


def _set_limits(limits):
    # Per-process backstops; with cgroups the judge limits the whole tree. RLIMIT_CPU counts whole seconds.
    cpu = int(math.ceil(limits["cpu_seconds"])) + 1
    for name, value in (
        ("RLIMIT_CPU", (cpu, cpu + 1)),
        ("RLIMIT_AS", (limits["memory_bytes"],) * 2),
        ("RLIMIT_FSIZE", (limits["file_bytes"],) * 2),
        ("RLIMIT_NOFILE", (limits["open_files"],) * 2),
        ("RLIMIT_NPROC", (limits["processes"],) * 2),
        ("RLIMIT_CORE", (1, 1)),  # 1, not 0: the kernel then skips a piped core_pattern (apport...) too
    ):
        try:
            resource.setrlimit(getattr(resource, name), value)
        except (ValueError, OSError):
            pass  # above the inherited hard limit: the stricter one stays


def _child(job, code, calls, answers):
    """Runs in the forked child: never returns."""
    for signum in CHILD_DEFAULT_SIGNALS:
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.set_wakeup_fd(-1)
    os.close(CHILD_EXITED)
    os.close(CHILD_EXITED_WRITER)
    os.setsid()
    try:
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")  # out of memory, the kernel kills the program, not the zygote
    except OSError:
        pass
    os.chdir(WORKDIR)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    _set_limits(job["limits"])
    namespace = {}
    try:
        exec(code, namespace)
    except BaseException as exc:
        _write_frame(answers, RAISED, encode([type(exc).__name__, _text(exc)]))
        os._exit(0)
    _write_frame(answers, RAN)
    _serve(namespace, calls, answers)
    os._exit(0)


# --------------------------------------------------------------- zygote side


def _compile(source):
    """The program's code object, compiled here before forking: a syntax error costs no fork."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile(source, "<program>", "exec")


def _process_cpu_clock(pid):
    """The clock id of a process's CPU time, as glibc's clock_getcpuclockid builds it (Linux ABI)."""
    return (~pid << 3) | 2


def _clock_seconds(clock):
    try:
        return time.clock_gettime(clock)
    except OSError:
        return 0.0


def _process_count():
    """Processes in this PID namespace besides the zygote (its init: bubblewrap runs it as pid 1)."""
    return sum(name.isdigit() for name in os.listdir("/proc")) - 1


def _kill_job(pid):
    """Send SIGKILL to every process of the job: in the jail, kill(-1) from its init reaches every other
    process of its PID namespace; without one (--sandbox rlimits), first the child's process group."""
    try:
        if NAMESPACED:
            os.kill(-1, signal.SIGKILL)
        else:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(job_pid=None):
    """Collect every child that has exited: orphans of a job become the zygote's children (it is the
    jail's init, and a subreaper without a jail), and their zombies would count against the job's
    process limit. (status, rusage) of `job_pid` if it was among them."""
    ended = None
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        if pid == job_pid:
            ended = (status, usage)


def _drain(fd):
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _children():
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as listing:
            return [int(pid) for pid in listing.read().split()]
    except OSError:
        return []


def _sigkill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # gone already
        pass


def _kill_the_rest():
    """After the child is reaped: kill and reap until no process but the zygote is left (a process
    forking as fast as it is killed needs several rounds); False if some remain after 5,000 rounds.
    In the jail kill(-1) reaches them all; without one, a process in a session of its own escapes the
    process group, but as the zygote is a subreaper every descendant of the job becomes its child
    once its parent is killed."""
    for _ in range(5000):
        _reap()
        if NAMESPACED:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                return True
        else:
            children = _children()
            if not children:
                return True
            for pid in children:
                _sigkill(pid)
        time.sleep(0.001)
    return False


def _inherited():
    """What every program inherits from the zygote and a program could try to change in it (its limits,
    priority, scheduling, CPUs); seccomp refuses that in the jail, and a change replaces the jail."""
    limits = [resource.getrlimit(kind) for kind in RLIMITS]
    return limits, os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0), os.sched_getaffinity(0)


def _tmp_is_clean():
    try:
        return (os.listdir(TMP) == ["work"] and not os.listdir(WORKDIR)
                and os.lstat(WORKDIR).st_mode == stat.S_IFDIR | 0o700)
    except OSError:
        return False


def _clear(top, deadline):
    """Empty `top` without recursion (a hostile tree can be thousands deep); False if it could not
    (too slow, a path too long, an entry it may not remove)."""
    stack = [top]
    while stack:
        if time.monotonic() > deadline:
            return False
        directory = stack[-1]
        try:
            os.chmod(directory, 0o700)  # a program may leave directories it cannot list
            subdirectories = []
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        subdirectories.append(entry.path)
                    else:
                        os.unlink(entry.path)
            if subdirectories:
                stack.extend(subdirectories)
                continue
            stack.pop()
            if directory != top:
                os.rmdir(directory)
        except OSError:
            return False
    return True


def _fresh_tmp():
    """/tmp holding only an empty, private work directory, both with the mode and times they had when
    the jail started (a program may change those of /tmp, and the next one could read them); False when
    it cannot be made so."""
    if not _tmp_is_clean():
        if not _clear(TMP, time.monotonic() + CLEAN_SECONDS):
            return False
        os.mkdir(WORKDIR, 0o700)
        if not _tmp_is_clean():
            return False
    try:
        os.chmod(TMP, TMP_MODE)
        for path in (TMP, WORKDIR):
            os.utime(path, ns=(0, 0))
    except OSError:
        return False
    return True


class Job:
    """One program: fork, watch (CPU of the child, process count) until the judge ends it, clean up."""

    def __init__(self, control, header, fds):
        self.control = control
        self.header = header
        self.calls, self.answers = fds
        self.status = None
        self.why = None

    def run(self):
        try:
            code = _compile(self.header["program"])
        except BaseException as exc:  # SyntaxError, ValueError (null bytes), MemoryError, RecursionError...
            _write_frame(self.answers, RAISED, encode([type(exc).__name__, ""]))
            os.close(self.calls)
            os.close(self.answers)
            if _receive(self.control) is None:  # {"op": "end"}
                sys.exit(0)
            return {"compiled": False, "status": None, "why": None, "cpu_seconds": 0.0, "clean": True}
        pid = os.fork()
        if pid == 0:
            try:
                self.control.close()
                _child(self.header, code, self.calls, self.answers)
            finally:
                os._exit(70)
        os.close(self.calls)
        os.close(self.answers)
        self._watch(pid)
        _kill_job(pid)
        if self.status is None:
            _, self.status, self.usage = os.wait4(pid, 0)
        alone = _kill_the_rest()
        cpu = self.usage.ru_utime + self.usage.ru_stime
        return {"compiled": True, "status": self.status, "why": self.why, "cpu_seconds": cpu,
                "clean": _fresh_tmp() and alone and _inherited() == INHERITED}

    def _watch(self, pid):
        """Until the judge says "end": stop the child at its CPU limit or a fork storm, reap it when it exits."""
        limits = self.header["limits"]
        clock = _process_cpu_clock(pid)
        next_count = time.monotonic() + PROCESS_COUNT_INTERVAL
        waiting = [self.control, CHILD_EXITED]
        while True:
            wait = PROCESS_COUNT_INTERVAL
            if self.status is None and self.why is None:
                wait = min(wait, limits["cpu_seconds"] - _clock_seconds(clock))
                if wait <= 0:
                    self._stop("cpu", pid)
            ready, _, _ = select.select(waiting, [], [], max(wait, MIN_WAIT))
            if CHILD_EXITED in ready:  # the child, or an orphan of the job, exited
                _drain(CHILD_EXITED)
                ended = _reap(pid)
                if ended:
                    self.status, self.usage = ended
            if self.control in ready:
                message = _receive(self.control)
                if message is None:
                    sys.exit(0)  # the judge is gone
                break  # {"op": "end"}
            if NAMESPACED and time.monotonic() >= next_count and self.why is None:
                next_count = time.monotonic() + PROCESS_COUNT_INTERVAL
                if _process_count() > limits["processes"]:
                    self._stop("processes", pid)

    def _stop(self, why, pid):
        self.why = why
        _kill_job(pid)


# ------------------------------------------------------------------- protocol


def _receive(control, fds=None):
    """One JSON message from the judge (and the descriptors sent with it into `fds`), None at its end."""
    buffer = bytearray()
    while not buffer.endswith(b"\n"):
        if fds is not None and not buffer:
            data, received, _, _ = socket.recv_fds(control, 1 << 16, 2)
            fds.extend(received)
        else:
            data = control.recv(1 << 16)
        if not data:
            return None
        buffer += data
    return json.loads(buffer)


def _send(control, message):
    control.sendall(json.dumps(message).encode() + b"\n")


def _harden():
    import ctypes

    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # a job's orphans come to the zygote (see _kill_the_rest)
    for name in [name for name in sys.modules if name.split(".")[0] in ("ctypes", "_ctypes")]:
        del sys.modules[name]  # not needed again: freed, so forks copy less


def main():
    global NAMESPACED, TMP, WORKDIR, TMP_MODE, CHILD_EXITED, CHILD_EXITED_WRITER, INHERITED
    control = socket.socket(fileno=int(sys.argv[1]))
    NAMESPACED, TMP = sys.argv[2] == "jail", sys.argv[3]
    # Compiling a program happens here, before the fork: it counts against the program's memory limit.
    memory = int(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    WORKDIR = os.path.join(TMP, "work")
    sys.path.append(sys.argv[5])  # the allowed packages: /opt/moecoder/site in the jail
    sys.set_int_max_str_digits(0)
    _harden()
    TMP_MODE = stat.S_IMODE(os.stat(TMP).st_mode)
    # SIGCHLD wakes the watch loop through this pipe: the child and the job's orphans are reaped as
    # they exit. SIGINT is ignored: as the jail's init, only signals it handles reach it from a program.
    CHILD_EXITED, CHILD_EXITED_WRITER = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(CHILD_EXITED_WRITER)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ok = _fresh_tmp()
    INHERITED = _inherited()
    gc.collect()
    gc.freeze()  # forks then leave the warm heap alone: no collector pass copies its pages
    _send(control, {"ready": ok})
    while True:
        fds = []
        header = _receive(control, fds)
        if header is None:
            return
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            return
        _send(control, Job(control, header, fds).run())


NAMESPACED, TMP, WORKDIR, TMP_MODE = True, "/tmp", "/tmp/work", 0o755

if __name__ == "__main__":
    try:
        main()
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise
