"""The judge: runs a task's tests outside the jail, calling into the program's process.

One judge process per worker, started by the executor (`python -c ... judge.main()`), owns one
jail with its zygote (zygote.py) and takes one job at a time. For each job the judge sends the
program to the zygote, which forks a child that executes it; then the judge runs the tests
here: HumanEval's `check(candidate)` and MBPP's asserts execute in this process, with the
dataset's own prompt code (helpers such as HumanEval/32's `poly` or /38's `encode_cyclic`),
and every name the tests take from the program (the entry point, MBPP's function) is a
`Proxy` whose calls travel to the child as plain data (plain.py) and come back the same way.
HumanEval+ sends its inputs in batches and compares each output here (compare.py, evalplus's
rule). The program never holds a test, an expected value or the verdict: it can only answer
calls, and what it answers is decoded as data.

MBPP/367 is the one task whose tests need objects the program defines (its setup code builds
a tree of the program's `Node`): its setup runs in the program's process and the tests refer
to the values it made by name (`plain.Ref`); the call and the comparison still happen here.

Limits. CPU time is read from the jail's cgroup (the whole process tree) while the judge waits
for an answer, and wall time from the judge's clock; without a cgroup the zygote stops the
child at its own CPU limit and rlimits bound its helpers.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from moecoder.bench import plain
from moecoder.bench.jail import Jail, JailPolicy, Limits, harden_self

ZYGOTE_SOURCE = Path(__file__).with_name("plain.py").read_text() + "\n" + Path(__file__).with_name("zygote.py").read_text()
STARTUP_SECONDS = 30.0
GRACE_SECONDS = 2.0  # for the zygote to end a job once told to
CPU_POLL_FLOOR = 0.0005  # seconds: the shortest wait between reads of the cgroup's CPU time
NAME_CHARS, MESSAGE_CHARS = 100, 500  # of a program's exception, as verdicts show it
BATCH_INPUTS = 64  # HumanEval+ inputs per message
ANSWER_CAP = 64 << 20  # bytes of one answer (HumanEval+'s largest honest output is ~8 MB); larger is a failure
# Decoding can cost a multiple of an answer's bytes (a list of empty lists: ~20x), so the judge's own
# heap is capped; an answer that does not fit fails the program, not the judge.
JUDGE_DATA_BYTES = 3 << 30
FRAME = struct.Struct("<I")
CALL, BATCH, SETUP = b"C", b"B", b"S"
RAN, RESULT, RAISED, NOT_PLAIN = b"K", b"R", b"E", b"N"


class Stopped(BaseException):
    """The job ended before the tests did (limit, exit, lost jail): not catchable by test code's `except Exception`."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class ProgramRaised(Exception):
    """The program raised while answering a call; its type name and message are untrusted text,
    cut here (the program's side cuts them too, but it is the program's)."""

    def __init__(self, name: str, message: str):
        name, message = storable(name[:NAME_CHARS]), storable(message[:MESSAGE_CHARS])
        super().__init__(f"{name}: {message}" if message else name)
        self.name, self.message = name, message

    @classmethod
    def from_payload(cls, payload: bytes) -> "ProgramRaised":
        """From a RAISED frame: [type name, message], both str; ValueError for anything else."""
        raised = plain.decode(payload)
        if type(raised) is not list or len(raised) != 2 or not all(type(text) is str for text in raised):
            raise ValueError("a malformed exception")
        return cls(*raised)


class SandboxLost(Exception):
    """The jail or its zygote died or stopped answering."""


# ---------------------------------------------------------------- the jail, seen from here


class Sandbox:
    """One jail with its zygote, and the socket to talk to it."""

    def __init__(self, policy: JailPolicy, limits: Limits, name: str, namespaced: bool = True):
        self.limits = limits
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

        def command(mode: str, tmp: str, site: str) -> list[str]:
            return [os.path.realpath(sys.executable), "-I", "-S", "-B", "-c", ZYGOTE_SOURCE, str(theirs.fileno()),
                    mode, tmp, str(limits.memory_bytes), site]

        try:
            self.jail = Jail(policy, limits, command, (theirs.fileno(),), name, jailed=namespaced)
        finally:
            theirs.close()
        self.control = ours
        self._buffer = bytearray()
        try:
            ready = self.receive(time.monotonic() + STARTUP_SECONDS)
        except SandboxLost:
            self.close()  # a jail that did not start goes now, with its cgroups
            raise
        self.jail.seal_stderr()
        if not ready.get("ready"):
            self.close()
            raise SandboxLost("the jail's /tmp could not be prepared")

    def receive(self, deadline: float) -> dict:
        """The zygote's next JSON line; SandboxLost if it ends or misses `deadline`."""
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self.control], [], [], max(0.0, deadline - time.monotonic()))
            try:
                data = self.control.recv(1 << 16) if ready else None
            except ConnectionResetError:  # the zygote died with our message unread
                data = b""
            if not data:
                raise SandboxLost(f"the jail stopped answering: {self.jail.stderr_tail()}" if data is None
                                  else f"the jail exited: {self.jail.stderr_tail()}")
            self._buffer += data
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return json.loads(line)

    def send(self, message: dict, fds: tuple[int, ...] = ()) -> None:
        data = json.dumps(message).encode() + b"\n"
        try:
            if fds:
                socket.send_fds(self.control, [data[:1]], list(fds))
                data = data[1:]
            self.control.sendall(data)
        except OSError as exc:
            raise SandboxLost(f"the jail is gone: {exc}") from None

    def cpu_seconds(self) -> float | None:
        if self.jail.cgroup is None:
            return None
        try:
            return self.jail.cgroup.cpu_seconds()
        except OSError:
            return None

    def close(self) -> None:
        self.control.close()
        self.jail.close()


# ------------------------------------------------------------------ one job


class Conversation:
    """The judge's end of one child's pipes, under the job's CPU and wall limits."""

    def __init__(self, sandbox: Sandbox, limits: dict, calls: int, answers: int):
        self.sandbox = sandbox
        self.limits = limits
        self.calls, self.answers = calls, answers
        self.started = time.monotonic()
        self.cpu_start = sandbox.cpu_seconds()
        self.deadline = self.started + limits["wall_seconds"]
        # A process tree cannot use more CPU time than wall time x CPUs: before this moment it cannot
        # have reached its limit, so the cgroup is not read (most jobs end long before).
        self.cpu_unread_until = self.started + limits["cpu_seconds"] / (os.cpu_count() or 1)
        self.stopped: str | None = None
        self._buffer = bytearray()

    def cpu_used(self) -> float | None:
        now = self.sandbox.cpu_seconds()
        return None if now is None or self.cpu_start is None else now - self.cpu_start

    def _check_limits(self) -> float:
        """Raise Stopped past a limit; else how long to wait before looking again."""
        now = time.monotonic()
        if now >= self.deadline:
            self._stop("wall")
        wait = self.deadline - now
        if now < self.cpu_unread_until:
            return min(wait, self.cpu_unread_until - now)
        used = self.cpu_used()
        if used is not None:
            left = self.limits["cpu_seconds"] - used
            if left <= 0:
                self._stop("cpu")
            # The tree cannot use more than `left` before this wait ends; the floor bounds the
            # overshoot at a timeout (floor x CPUs, plus the kill) at the cost of a few more reads.
            wait = min(wait, max(left / (os.cpu_count() or 1), CPU_POLL_FLOOR))
        return wait

    def _stop(self, why: str):
        self.stopped = why
        raise Stopped(why)

    def send(self, kind: bytes, payload: bytes) -> None:
        if self.stopped:
            raise Stopped(self.stopped)
        data = memoryview(FRAME.pack(len(payload) + 1) + kind + payload)
        while data:
            wait = self._check_limits()
            _, writable, _ = select.select([], [self.calls], [], wait)
            if writable:
                try:
                    data = data[os.write(self.calls, data[: 1 << 16]):]
                except BrokenPipeError:
                    self._stop("exited")

    def receive(self) -> tuple[bytes, bytes]:
        """The child's next frame (kind, payload); Stopped at a limit or when the child is gone."""
        if self.stopped:
            raise Stopped(self.stopped)
        while True:
            if len(self._buffer) >= FRAME.size:
                size = FRAME.unpack_from(self._buffer)[0]
                if size > ANSWER_CAP or size == 0:
                    self._stop("answer too large")
                if len(self._buffer) >= FRAME.size + size:
                    frame = bytes(self._buffer[FRAME.size:FRAME.size + size])
                    del self._buffer[:FRAME.size + size]
                    return frame[:1], frame[1:]
            wait = self._check_limits()
            ready, _, _ = select.select([self.answers, self.sandbox.control], [], [], wait)
            if self.sandbox.control in ready:
                self._stop("jail lost")
            if self.answers in ready:
                chunk = os.read(self.answers, 1 << 20)
                if not chunk:
                    self._stop("exited")
                self._buffer += chunk

    def answer(self):
        """The value of the call just made; ProgramRaised if the program raised or answered non-plain data."""
        kind, payload = self.receive()
        try:
            if kind == RESULT:
                try:
                    return plain.decode(payload)
                except MemoryError:
                    payload = None  # free it before anything else runs
                    raise ProgramRaised("AnswerTooLarge", "the answer does not fit in the judge's memory") from None
            if kind == RAISED:
                raise ProgramRaised.from_payload(payload)
            if kind == NOT_PLAIN:
                name = plain.decode(payload)
                raise ProgramRaised("NotPlainData", f"a {name[:NAME_CHARS] if type(name) is str else '?'} "
                                                    "is not plain data")
        except ValueError:
            pass
        raise ProgramRaised("ProtocolError", "the program's process sent a malformed answer")


class Proxy:
    """A program's function as the tests see it: calls go to the program's process."""

    def __init__(self, conversation: Conversation, name: str):
        self._conversation, self._name = conversation, name

    def __call__(self, *args, **kwargs):
        self._conversation.send(CALL, plain.encode([self._name, args, kwargs]))
        return self._conversation.answer()

    def __repr__(self):
        return f"<function {self._name}>"


def describe(exc: BaseException) -> str:
    """'Type: first line of message', as results show failures (the type name of a program's exception is its own)."""
    if isinstance(exc, ProgramRaised):
        name, message = exc.name, exc.message
    else:
        name, message = type(exc).__name__, str(exc)
    first = message.partition("\n")[0][:200]  # a message can be megabytes: only its first line is cut out
    return storable(f"{name}: {first}" if first else name)


def storable(text: str) -> str:
    """`text` with each lone surrogate (no UTF-8 form: SQLite and JSON writers refuse it) as "?"."""
    return text.encode("utf-8", "replace").decode("utf-8")


def run_code_tests(conversation: Conversation, suite: dict, details: bool) -> list:
    """HumanEval's check / MBPP's asserts, here; True or a failure text per unit (stop at the first unless `details`)."""
    namespace: dict = {}
    exec(suite["prelude_code"], namespace)
    if suite["setup_in_program"]:
        conversation.send(SETUP, plain.encode(suite["setup"]))
        kind, _ = conversation.receive()
        if kind != RAN:
            raise ProgramRaised("SetupError", "the test setup failed with the program's own objects")
        namespace.update({name: plain.Ref(name) for name in suite["setup_names"]})
    else:
        exec(suite["setup_code"], namespace)
    namespace.update({name: Proxy(conversation, name) for name in suite["names"]})
    results = []
    for unit in suite["unit_codes"]:
        try:
            exec(unit, namespace)
            results.append(True)
        except Exception as exc:
            results.append(describe(exc))
        if conversation.stopped:
            raise Stopped(conversation.stopped)
        if results[-1] is not True and not details:
            break
    return results


def run_io_tests(conversation: Conversation, suite: dict, details: bool, collect: bool) -> tuple[list, str | None]:
    """HumanEval+: the entry point on each input, compared here with the reference's output.
    (per-input results, the first failure); when `collect`, the results are the outputs themselves
    (the reference's own run) and any failure stops it."""
    from moecoder.bench.compare import Comparison  # numpy: only judges of HumanEval+ pay its import

    inputs, expected, results, first_failure = suite["inputs"], suite.get("expected_values"), [], None
    comparison = Comparison(suite["atol"], suite["oracle"])
    for start in range(0, len(inputs), BATCH_INPUTS):
        batch = inputs[start:start + BATCH_INPUTS]
        conversation.send(BATCH, plain.encode([suite["entry_point"], batch]))
        for number, args in enumerate(batch, start):
            if number == suite["n_base"]:  # evalplus compares the plus inputs as a list of their own
                comparison = Comparison(suite["atol"], suite["oracle"])
            try:
                output = conversation.answer()
            except ProgramRaised as exc:
                result = f"{describe(exc)} on test {number}"
            else:
                if collect:
                    results.append(output)
                    continue
                result = True if comparison(output, expected[number], args) else f"wrong output on test {number}"
            results.append(result)
            if result is not True:
                first_failure = first_failure or result
                if not details or collect:
                    return results, first_failure
    return results, first_failure


class Judge:
    """Runs jobs in its sandbox, starting a fresh one whenever the last could not be cleaned or died."""

    def __init__(self, policy: JailPolicy, limits: Limits, name: str, namespaced: bool = True):
        self.policy, self.limits, self.name, self.namespaced = policy, limits, name, namespaced
        self.sandbox: Sandbox | None = None
        self.started = 0

    def ensure_sandbox(self) -> Sandbox:
        if self.sandbox is None:
            self.started += 1
            self.sandbox = Sandbox(self.policy, self.limits, f"{self.name}-{self.started}", self.namespaced)
        return self.sandbox

    def run(self, job: dict, suite: dict) -> dict:
        """One job's verdict: outcome, reason, details, cpu_seconds, wall_seconds (or collected outputs)."""
        started = time.monotonic()
        try:
            sandbox = self.ensure_sandbox()
            verdict = self._run(sandbox, job, suite)
        except SandboxLost as exc:
            self._discard()
            verdict = {"outcome": "failed", "reason": "the sandbox worker was killed", "lost": str(exc),
                       "cpu_seconds": None}
        verdict["wall_seconds"] = round(time.monotonic() - started, 6)
        return verdict

    def call(self, program: str, name: str, args: tuple):
        """(value of `name(*args)` in `program`, or a failure text; the jail's isolation in words;
        host uids of the jail's processes while the call ran)."""
        try:
            isolation = self.ensure_sandbox().jail.isolation
        except SandboxLost as exc:
            return str(exc), None, set()
        verdict = self.run({"program": program, "limits": self.limits.as_dict()},
                           {"kind": "call", "name": name, "args": args})
        if verdict["outcome"] != "collected":
            return f"{verdict['outcome']}: {verdict.get('reason')}", isolation, set()
        return plain.decode(verdict["outputs"]), isolation, set(verdict["host_uids"])

    def close(self) -> None:
        self._discard()

    def _discard(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None

    def _run(self, sandbox: Sandbox, job: dict, suite: dict) -> dict:
        calls_r, calls_w = os.pipe()
        answers_r, answers_w = os.pipe()
        try:
            conversation = Conversation(sandbox, job["limits"], calls_w, answers_r)
            sandbox.send({"program": job["program"], "limits": job["limits"]}, (calls_r, answers_w))
            os.close(calls_r)
            os.close(answers_w)
            calls_r = answers_w = -1
            outcome = self._converse(conversation, job, suite)
            os.close(calls_w)
            calls_w = -1
            sandbox.send({"op": "end"})
            report = sandbox.receive(time.monotonic() + GRACE_SECONDS + 1.0)
        finally:
            for fd in (calls_r, calls_w, answers_r, answers_w):
                if fd >= 0:
                    os.close(fd)
        if not report.get("clean"):
            self._discard()
        cpu = conversation.cpu_used()
        cpu = report.get("cpu_seconds") if cpu is None else cpu
        verdict = outcome if "outcome" in outcome else _failure(outcome["stopped"], report, job["limits"], cpu)
        return {**verdict, "cpu_seconds": round(cpu, 6) if cpu is not None else None}

    def _converse(self, conversation: Conversation, job: dict, suite: dict) -> dict | None:
        """The verdict reached by talking to the child, or {"stopped": why} if it ended early."""
        try:
            kind, payload = conversation.receive()  # the program ran, or raised (did not compile, too)
            if kind == RAISED:
                return {"outcome": "error", "reason": ProgramRaised.from_payload(payload).name, "details": None}
            if suite["kind"] == "call":  # one call, its value returned as is (the start-up probe)
                value = Proxy(conversation, suite["name"])(*suite["args"])
                return {"outcome": "collected", "outputs": plain.encode(value),
                        "host_uids": sorted(conversation.sandbox.jail.host_uids())}
            if suite["kind"] == "code":
                results = run_code_tests(conversation, suite, job.get("details", False))
                failure = next((result for result in results if result is not True), None)
            else:
                results, failure = run_io_tests(conversation, suite, job.get("details", False), job.get("collect", False))
        except Stopped as stop:
            return {"stopped": stop.why}
        except ProgramRaised as exc:  # the program broke a setup that builds its own objects
            return {"outcome": "failed", "reason": describe(exc), "details": None}
        except ValueError:
            return {"outcome": "failed", "reason": "the program's process sent malformed data", "details": None}
        if job.get("collect") and failure is None:
            return {"outcome": "collected", "outputs": plain.encode(results)}
        details = results if job.get("details") and not job.get("collect") else None
        return {"outcome": "failed", "reason": failure, "details": details} if failure else \
            {"outcome": "passed", "reason": None, "details": details}


def _failure(why: str, report: dict, limits: dict, cpu: float | None) -> dict:
    """Why a job ended without a verdict from its tests."""
    status = report.get("status")
    signaled = status is not None and os.WIFSIGNALED(status)
    signum = os.WTERMSIG(status) if signaled else None
    if report.get("why") == "processes":
        return {"outcome": "failed", "reason": f"more than {limits['processes']} processes", "details": None}
    if why in ("cpu", "wall") or report.get("why") == "cpu" or signum == signal.SIGXCPU \
            or (cpu is not None and cpu >= limits["cpu_seconds"]):
        return {"outcome": "timed out", "reason": None, "details": None}
    if why == "answer too large":
        return {"outcome": "failed", "reason": "an answer larger than the harness accepts", "details": None}
    if why == "jail lost":
        return {"outcome": "failed", "reason": "the sandbox worker was killed", "details": None}
    if signaled:
        return {"outcome": "failed", "reason": f"killed by {signal.Signals(signum).name}", "details": None}
    code = os.WEXITSTATUS(status) if status is not None else None
    return {"outcome": "failed", "reason": f"exited with status {code} before the tests finished", "details": None}


# ------------------------------------------------------------ the judge process


def prepare_suite(suite: dict) -> dict:
    """Compile a suite's code once, decode its expected outputs once (each worker keeps its suites)."""
    if suite["kind"] == "code":
        suite["prelude_code"] = compile(suite["prelude"], "<prompt>", "exec")
        suite["setup_code"] = compile(suite["setup"], "<setup>", "exec")
        suite["unit_codes"] = [compile(unit, "<test>", "exec") for unit in suite["units"]]
    elif suite.get("expected") is not None:
        suite["expected_values"] = plain.decode(suite["expected"])
    return suite


def _read_message(fd: int):
    header = plain.read_exact(fd, 8)
    return None if header is None else pickle.loads(plain.read_exact(fd, struct.unpack("<Q", header)[0]))


def main() -> None:
    """The judge process: jobs in (length-prefixed pickles from the trusted executor), one JSON line out per job."""
    jobs_in, results_out = int(sys.argv[1]), int(sys.argv[2])
    setup = json.loads(sys.argv[3])
    harden_self()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the executor's stop: close the jail on the way out
    resource.setrlimit(resource.RLIMIT_DATA, (JUDGE_DATA_BYTES, JUDGE_DATA_BYTES))
    # Python's default bound on int <-> str conversion stays: the tests build messages such as
    # HumanEval/77's `str(candidate(1))`, quadratic in the digits of whatever the program answers.
    judge = Judge(JailPolicy(**{k: tuple(v) if k == "packages" else v for k, v in setup["policy"].items()}),
                  Limits(**setup["limits"]), setup["name"], setup["namespaced"])
    try:
        try:
            judge.ensure_sandbox()
            ready = {"ready": True, "isolation": judge.sandbox.jail.isolation}
        except SandboxLost as exc:
            ready = {"ready": False, "error": str(exc)}
        os.write(results_out, json.dumps(ready).encode() + b"\n")
        _serve(judge, jobs_in, results_out)
    except BrokenPipeError:
        pass  # the executor closed before reading us: nothing left to say
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second stop must not cut the cleanup short
        judge.close()  # its jail and the jail's cgroups go with it


def _serve(judge: Judge, jobs_in: int, results_out: int) -> None:
    suites: dict[str, dict] = {}
    while (message := _read_message(jobs_in)) is not None:
        if "suite" in message:
            if message["suite"]["kind"] == "io":  # expected outputs can be large: keep one IO suite
                suites = {key: suite for key, suite in suites.items() if suite["kind"] != "io"}
            suites[message["job"]["task"]] = prepare_suite(message["suite"])
        verdict = judge.run(message["job"], suites[message["job"]["task"]])
        if "outputs" in verdict:
            verdict["outputs"] = verdict["outputs"].hex()
        data = json.dumps(verdict).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(results_out, view):]
