"""Runs programs against tests on a pool of sandboxed workers, with per-task time limits.

Time limits follow evalplus's max(floor, factor x t_ref), but t_ref is the CPU time of
the reference solution measured in the same sandbox on this machine (cached per
machine and dataset hash), so a loaded server and an idle laptop agree on verdicts.
HumanEval+'s expected outputs come from running the reference solution in the sandbox,
as evalplus does; they stay opaque bytes on the harness side.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import select
import socket
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable

from moecoder.bench.datasets import Benchmark, CodeTests, Task
from moecoder.bench.sandbox import Limits, Worker, WorkerDied, detect_isolation
from moecoder.bench.store import Store
from moecoder.errors import UserError

CPU_FLOOR_SECONDS = 0.1  # HumanEval/MBPP references need 1-3 ms of CPU, fork included: 30x headroom and more
CPU_FACTOR = 10.0
CALIBRATION_LIMITS = Limits(cpu_seconds=120.0, wall_seconds=300.0)


@dataclass(frozen=True)
class Job:
    """One program to run against one task's tests."""

    task_id: str
    program: str
    limits: Limits
    details: bool = False
    collect: bool = False  # return the entry point's outputs instead of a verdict (reference runs)


Callback = Callable[["Job", dict], None]  # (the job as sent, its result)


class Executor:
    """A fixed pool of sandboxed workers, driven from one thread with select().

    Jobs are submitted with a callback for their result; a callback may submit more jobs
    (a calibration when a program timed out, then a rerun) while `wait` runs. Workers start
    together and are kept across runs. One thread owns them all: bubblewrap's
    --die-with-parent follows the thread that started a jail, and there are no locks or
    hand-offs between threads on the path of every job.
    """

    def __init__(self, workers: int | None = None, limits: Limits = Limits()):
        self.limits = limits
        self.isolation = detect_isolation(limits)
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
            return Worker(self.isolation, self.limits)
        except OSError as exc:
            raise RuntimeError(f"cannot start a {self.isolation} sandbox worker: {exc}") from exc

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
            if not worker.ready:  # the zygote's first line: started
                worker.ready = True
                continue
            job, on_result = self._busy.pop(worker)
            on_result(job, json.loads(line))

    def _lost(self, worker: Worker, exc: WorkerDied) -> None:
        """A worker that died or stopped answering: its job's failure, and a fresh worker in its place."""
        self._workers.remove(worker)
        worker.close()
        if not worker.ready:
            raise RuntimeError(f"cannot start a {self.isolation} sandbox worker: {exc}")
        self._workers.append(self._start())
        if worker not in self._busy:
            return
        job, on_result = self._busy.pop(worker)
        # The program killed or stopped its zygote: its own failure.
        stopped = "stopped answering" in str(exc)
        on_result(job, {"outcome": "timed out" if stopped else "failed",
                   "reason": None if stopped else "the sandbox worker was killed", "cpu_seconds": None})

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
        self._workers = []


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
        outputs = self.store.reference_outputs()
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

        def ran(_: Job, result: dict) -> None:
            if result["outcome"] not in ("passed", "collected"):
                raise UserError(f"{self.benchmark.path}: the reference solution of {task_id} does not pass "
                                f"in the sandbox ({result['outcome']}: {result.get('reason')})")
            if result["outcome"] == "collected":
                outputs = base64.b64decode(result["blob"])
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
    """The zygote's view of a task's tests (plain data; expected outputs as opaque pickled bytes)."""
    if isinstance(task.tests, CodeTests):
        return {"kind": "code", "setup": task.tests.setup, "units": list(task.tests.units)}
    return {"kind": "io", "entry_point": task.entry_point, "inputs": task.tests.inputs,
            "atol": task.tests.atol, "oracle": task.tests.oracle, "expected": reference_outputs}
