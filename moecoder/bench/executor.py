"""Runs programs against tests on a pool of judges, each with its jail, with per-task time limits.

Time limits follow evalplus's max(floor, factor x t_ref), but t_ref is the CPU time of the
reference solution measured in the same jail on this machine (cached per machine and dataset
hash), so a loaded server and an idle laptop agree on verdicts. The floor (1 CPU-second) is far
above what any HumanEval or MBPP reference needs, so a one-off cost such as importing numpy
inside the function never decides a verdict. HumanEval+'s expected outputs come from running
the reference solution in the jail, as evalplus does; they live only in the judges and the store.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import pickle
import platform
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Callable

from moecoder.bench.datasets import Benchmark, CodeTests, Task
from moecoder.bench.jail import JailPolicy, Limits, harden_self, missing_tools
from moecoder.bench.store import Store
from moecoder.errors import UserError

CPU_FLOOR_SECONDS = 1.0  # numpy's import costs ~0.15 CPU-s; HumanEval/MBPP references need a few ms
CPU_FACTOR = 10.0
CALIBRATION_LIMITS = Limits(cpu_seconds=120.0, wall_seconds=300.0)
STARTUP_TIMEOUT = 60.0
GRACE_SECONDS = 10.0  # the judge ends a job itself at its limits; the executor waits this much longer
REFERENCE_RETRIES = 2  # a reference whose jail was lost runs again on a fresh one
SANDBOXES = ("bwrap", "rlimits")
PLAIN_HEADER = b"PL\x01"  # plain.py's messages start so; stores written before it hold pickles, never read


@dataclass(frozen=True)
class Job:
    """One program to run against one task's tests."""

    task_id: str
    program: str
    limits: Limits
    details: bool = False
    collect: bool = False  # return the entry point's outputs instead of a verdict (reference runs)


Callback = Callable[["Job", dict], None]  # (the job as sent, its result)


class WorkerDied(Exception):
    """The judge exited or stopped answering, or never started."""


class Worker:
    """One judge process (judge.py) with its jail; never blocks on the judge's answers.

    A worker is started, becomes ready when the judge's first line arrives, and then takes one job
    at a time: `send` a job, wait until `fileno()` is readable, `receive` the lines. The executor
    runs many workers from one thread with select(). The judge is trusted code: jobs go to it as
    pickles; what it sends back is JSON.
    """

    def __init__(self, policy: JailPolicy, limits: Limits, sandbox: str, name: str):
        self.known_tasks: dict[str, str] = {}  # the suites the judge holds: task -> kind
        self.ready = False
        self.resources = None
        self.deadline = time.monotonic() + STARTUP_TIMEOUT
        self._pending = bytearray()
        to_judge_r, self._to_judge = os.pipe()
        self._from_judge, from_judge_w = os.pipe()
        setup = {"policy": asdict(policy), "limits": limits.as_dict(), "name": name,
                 "namespaced": sandbox == "bwrap"}
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from moecoder.bench.judge import main; main()", str(to_judge_r),
             str(from_judge_w), json.dumps(setup)],
            pass_fds=(to_judge_r, from_judge_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._stderr)
        os.close(to_judge_r)
        os.close(from_judge_w)

    def fileno(self) -> int:
        return self._from_judge

    def send(self, job: dict, tests: dict | None) -> None:
        """Start one job; `tests` is sent the first time this worker sees the task."""
        message = {"job": job}
        if job["task"] not in self.known_tasks:
            message["suite"] = tests
            if tests["kind"] == "io":  # the judge keeps one IO suite (expected outputs can be large)
                self.known_tasks = {task: kind for task, kind in self.known_tasks.items() if kind != "io"}
            self.known_tasks[job["task"]] = tests["kind"]
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            _write_all(self._to_judge, struct.pack("<Q", len(payload)) + payload)
        except OSError:
            raise WorkerDied("the judge is gone") from None
        self.deadline = time.monotonic() + job["limits"]["wall_seconds"] + GRACE_SECONDS

    def receive(self) -> list[bytearray]:
        """The complete lines the judge has written (call when readable); WorkerDied at its end."""
        chunk = os.read(self._from_judge, 1 << 20)
        if not chunk:
            raise WorkerDied(f"the judge exited: {self.stderr_tail()}")
        self._pending += chunk
        if b"\n" not in chunk:
            return []
        *lines, self._pending = self._pending.split(b"\n")
        return lines

    def stderr_tail(self) -> str:
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - 2000))
        return self._stderr.read().decode("utf-8", "replace").strip()

    def close(self) -> None:
        self.hang_up()
        self.wait_closed()

    def hang_up(self) -> None:
        """Close the pipes: the judge then closes its jail and the jail's cgroups, and exits."""
        for fd in (self._to_judge, self._from_judge):
            try:
                os.close(fd)
            except OSError:
                pass

    def wait_closed(self) -> None:
        """Wait for the judge to exit after `hang_up`; mid-job, tell it to stop, then kill it."""
        for stop, seconds in ((None, 2), (self.process.terminate, 10), (self.process.kill, None)):
            if stop:
                stop()
            try:
                self.process.wait(timeout=seconds)
                break
            except subprocess.TimeoutExpired:
                continue
        self._stderr.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Executor:
    """A fixed pool of judges with their jails, driven from one thread with select().

    Jobs are submitted with a callback for their result; a callback may submit more jobs
    (a calibration when a program timed out, then a rerun) while `wait` runs. Workers start
    together and are kept across runs. Before the first worker starts, the jail is probed
    (probe.py) and refused if it does not hold; `sandbox="rlimits"` runs without a jail, as
    `nobody` when root, and says so in `isolation`. `verify=False` skips the probe: only for
    the tests that show an attack succeeds against a deliberately weakened `policy`.
    """

    def __init__(self, workers: int | None = None, limits: Limits = Limits(), sandbox: str = "bwrap",
                 policy: JailPolicy = JailPolicy(), verify: bool = True, sentinels: tuple[str, ...] = ()):
        if sandbox not in SANDBOXES:
            raise UserError(f"unknown sandbox {sandbox!r}; choose one of {', '.join(SANDBOXES)}")
        missing = missing_tools() if sandbox == "bwrap" else []
        if missing:
            raise UserError(f"the sandbox needs {' and '.join(missing)}, which this machine lacks: install it "
                            f"(Debian/Ubuntu: apt-get install {' '.join(TOOL_PACKAGES[t] for t in missing)}), "
                            "or pass --sandbox rlimits to run without a jail (unsafe)")
        harden_self()
        self.limits, self.sandbox, self.policy = limits, sandbox, policy
        self.isolation = _verified(policy, sandbox, sentinels) if verify else f"unverified {sandbox} {policy}"
        self._names = (f"moecoder-{os.getpid()}-{id(self) % 10000}-{n}" for n in itertools.count())
        # Two per core by default: a job is mostly pipe round trips and fork/exit in the kernel, which
        # overlap; CPU-time limits keep oversubscription from turning slow programs into timeouts.
        self.size = max(1, workers or 2 * (os.cpu_count() or 1))
        self._workers: list[Worker] = []
        self._waiting: deque[tuple[Job | Callable[[], Job], dict, Callback]] = deque()
        self._busy: dict[Worker, tuple[Job, Callback]] = {}

    def submit(self, job: Job | Callable[[], Job], tests: dict, on_result: Callback, first: bool = False) -> None:
        """Queue a job, or a function that makes it when a worker is free (so it gets the limits known
        then); `first`: ahead of the others, for work that unblocks results."""
        (self._waiting.appendleft if first else self._waiting.append)((job, tests, on_result))

    def run(self, jobs: list[Job], suites: dict[str, dict], on_result: Callable[[int, dict], None]) -> None:
        """Run every job; `on_result(index, result)` is called as results arrive."""
        for index, job in enumerate(jobs):
            self.submit(job, suites[job.task_id], lambda _, result, index=index: on_result(index, result))
        self.wait()

    def wait(self) -> None:
        """Run until every submitted job (including those submitted meanwhile) has its result."""
        while self._waiting and len(self._workers) < self.size:  # all at once: later runs reuse them
            self._workers.append(self._start())
        try:
            while self._waiting or self._busy:
                for worker in list(self._workers):
                    if self._waiting and worker.ready and worker not in self._busy:
                        self._send(worker, *self._waiting.popleft())
                timeout = max(0.0, min(worker.deadline for worker in self._workers) - time.monotonic())
                readable, _, _ = select.select(self._workers, [], [], timeout)
                for worker in readable:
                    self._collect(worker)
                for worker in [w for w in self._workers if w.deadline < time.monotonic() and w not in readable]:
                    self._lost(worker, WorkerDied("the sandbox worker stopped answering"))
        except BaseException:
            self._waiting.clear()
            for worker in self._busy:  # their answers would be taken for the next run's
                self._workers.remove(worker)
                worker.close()
            self._busy.clear()
            raise

    def _start(self) -> Worker:
        try:
            return Worker(self.policy, self.limits, self.sandbox, next(self._names))
        except OSError as exc:
            raise RuntimeError(f"cannot start a judge: {exc}") from exc

    def _send(self, worker: Worker, job: Job | Callable[[], Job], tests: dict, on_result: Callback) -> None:
        job = job if isinstance(job, Job) else job()
        message = {"task": job.task_id, "program": job.program, "limits": job.limits.as_dict(),
                   "details": job.details, "collect": job.collect}
        self._busy[worker] = (job, on_result)
        try:
            worker.send(message, tests)
        except WorkerDied as exc:
            self._lost(worker, exc)

    def _collect(self, worker: Worker) -> None:
        try:
            lines = worker.receive()
        except WorkerDied as exc:
            self._lost(worker, exc)
            return
        for line in lines:
            worker.deadline = float("inf")
            if not worker.ready:  # the judge's first line: its jail started (or not)
                ready = json.loads(line)
                if not ready["ready"]:
                    raise RuntimeError(f"cannot start a jail: {ready['error']}")
                worker.ready = True
                continue
            job, on_result = self._busy.pop(worker)
            on_result(job, json.loads(line))

    def _lost(self, worker: Worker, exc: WorkerDied) -> None:
        """A worker that died or stopped answering: its job's failure, and a fresh worker in its place."""
        self._workers.remove(worker)
        worker.close()
        if not worker.ready:
            raise RuntimeError(f"cannot start a judge: {exc}")
        self._workers.append(self._start())
        if worker not in self._busy:
            return
        job, on_result = self._busy.pop(worker)
        # The judge ends every job at its limits itself: a judge that died or hung is the harness's
        # failure, not the program's. The job is reported lost, so that the caller can retry it.
        on_result(job, {"outcome": "failed", "reason": "the sandbox worker was killed", "lost": str(exc),
                        "cpu_seconds": None})

    def close(self) -> None:
        for worker in self._workers:  # every judge cleans up at once
            worker.hang_up()
        for worker in self._workers:
            worker.wait_closed()
        self._workers = []


TOOL_PACKAGES = {"bwrap": "bubblewrap", "setpriv": "util-linux"}
_verified_jails: dict = {}


def _verified(policy: JailPolicy, sandbox: str, sentinels: tuple[str, ...]) -> str:
    """The probe's verdict on this jail, once per process, policy and sandbox (the machine does not change)."""
    from moecoder.bench.probe import verify_jail

    key = (policy, sandbox, sentinels)
    if key not in _verified_jails:
        _verified_jails[key] = verify_jail(policy, sandbox, sentinels)
    return _verified_jails[key]


def machine_id() -> str:
    """What a CPU-time calibration is valid for: this host, this CPU, this Python."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{socket.gethostname()}|{model}|{platform.python_implementation()} {platform.python_version()}"


class TaskRunner:
    """Prepares tasks for execution: test suites, reference outputs, calibrated limits.

    A task's limit is max(floor, factor x t_ref). Measuring t_ref costs a run of the reference,
    and it matters only for a program that needs more than the floor: so tasks with code tests
    are calibrated lazily. Their programs first run with the floor as limit, which gives every
    verdict reached within it exactly as the calibrated limit would; a program that times out
    there is "provisional" until its task is calibrated, and runs again if the limit grew.
    IO tests (HumanEval+) need the reference's outputs before their programs can run: those
    tasks are "pending" until their reference ran.
    """

    def __init__(self, benchmark: Benchmark, store: Store, executor: Executor):
        self.benchmark = benchmark
        self.store = store
        self.executor = executor
        self.suites: dict[str, dict] = {}
        self.limits: dict[str, Limits] = {}
        self.provisional: set[str] = set()  # tasks whose limit is the floor until calibrated

    def prepare(self, task_ids: set[str]) -> list[str]:
        """Load stored reference outputs and calibrations for `task_ids`; return the pending tasks."""
        tasks = [task for task in self.benchmark.tasks if task.task_id in task_ids]
        outputs = {task: blob for task, blob in self.store.reference_outputs().items() if blob[:3] == PLAIN_HEADER}
        seconds = self.store.calibration(machine_id())
        pending = [task.task_id for task in tasks if not isinstance(task.tests, CodeTests)
                   and (task.task_id not in seconds or task.task_id not in outputs)]
        ready = [task for task in tasks if task.task_id not in pending]
        for task in ready:
            self.suites[task.task_id] = test_suite(task, outputs.get(task.task_id))
        self._set_limits(seconds, [task.task_id for task in ready])
        return pending

    def prepare_later(self, task_id: str, then: Callable[[], None]) -> None:
        """Queue the task's reference, ahead of other jobs; once it ran, set the task's outputs
        (IO tests), calibration and limit, then call `then()`."""
        task = self.benchmark.task(task_id)
        job = Job(f"{task.task_id}#reference", task.reference, CALIBRATION_LIMITS,
                  collect=not isinstance(task.tests, CodeTests))

        def ran(_: Job, result: dict, tries: int = 0) -> None:
            if result.get("lost") and tries < REFERENCE_RETRIES:  # its jail died under it: again, on a fresh one
                self.executor.submit(job, test_suite(task, None), functools.partial(ran, tries=tries + 1), first=True)
                return
            if result["outcome"] not in ("passed", "collected"):
                raise UserError(f"{self.benchmark.path}: the reference solution of {task_id} does not pass "
                                f"in the sandbox ({result['outcome']}: {result.get('reason')})")
            if result["outcome"] == "collected":
                outputs = bytes.fromhex(result["outputs"])
                self.store.add_reference_outputs({task_id: outputs})
                self.suites[task_id] = test_suite(task, outputs)
            self.suites.setdefault(task_id, test_suite(task, None))
            self.store.add_calibration(machine_id(), {task_id: result["cpu_seconds"]})
            self._set_limits({task_id: result["cpu_seconds"]}, [task_id])
            then()

        # Keyed apart from the task's own suite: a worker caches suites by key, and this one lacks outputs.
        self.executor.submit(job, test_suite(task, None), ran, first=True)

    def _set_limits(self, seconds: dict[str, float], task_ids: list[str]) -> None:
        for task_id in task_ids:
            measured = seconds.get(task_id)
            if measured is None:
                self.provisional.add(task_id)
            else:
                self.provisional.discard(task_id)
            cpu = max(CPU_FLOOR_SECONDS, CPU_FACTOR * (measured or 0.0))
            self.limits[task_id] = replace(self.executor.limits, cpu_seconds=cpu, wall_seconds=3 * cpu + 5)

    def job(self, task_id: str, program: str, details: bool) -> Job:
        return Job(task_id, program, self.limits[task_id], details=details)


def test_suite(task: Task, reference_outputs: bytes | None) -> dict:
    """The judge's view of a task's tests (expected outputs in plain.py's format)."""
    tests = task.tests
    if isinstance(tests, CodeTests):
        return {"kind": "code", "prelude": tests.prelude, "setup": tests.setup, "units": list(tests.units),
                "names": list(tests.names), "setup_in_program": tests.setup_in_program,
                "setup_names": list(tests.setup_names)}
    return {"kind": "io", "entry_point": task.entry_point, "inputs": list(tests.inputs), "atol": tests.atol,
            "oracle": tests.oracle, "n_base": tests.n_base, "expected": reference_outputs}
