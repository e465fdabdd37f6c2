"""Runs programs against tests on a pool of sandboxed workers, with per-task time limits.

Time limits follow evalplus's max(floor, factor x t_ref), but t_ref is the CPU time of
the reference solution measured in the same sandbox on this machine (cached per
machine and dataset hash), so a loaded server and an idle laptop agree on verdicts.
HumanEval+'s expected outputs come from running the reference solution in the sandbox,
as evalplus does; they stay opaque bytes on the harness side.
"""

from __future__ import annotations

import os
import platform
import queue
import socket
import threading
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


class Executor:
    """A fixed pool of sandboxed workers fed from one queue.

    Each worker lives on its own long-lived thread: bubblewrap's --die-with-parent
    follows the thread that started it, so a worker must outlive every `run`.
    """

    def __init__(self, workers: int | None = None, limits: Limits = Limits()):
        self.limits = limits
        self.isolation = detect_isolation(limits)
        # Two per core by default: a job is mostly pipe round trips and fork/exit in the kernel, which
        # overlap; CPU-time limits keep oversubscription from turning slow programs into timeouts.
        self.size = max(1, workers or 2 * (os.cpu_count() or 1))
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def run(self, jobs: list[Job], suites: dict[str, dict], on_result: Callable[[int, dict], None]) -> None:
        """Run every job; `on_result(index, result)` is called on this thread as results arrive."""
        while len(self._threads) < min(self.size, len(jobs)):
            thread = threading.Thread(target=self._serve, daemon=True)
            thread.start()
            self._threads.append(thread)
        results: queue.SimpleQueue = queue.SimpleQueue()
        for index, job in enumerate(jobs):
            self._jobs.put((index, job, suites[job.task_id], results))
        for _ in jobs:
            index, result = results.get()
            if isinstance(result, BaseException):
                raise result
            on_result(index, result)

    def _serve(self) -> None:
        worker = None
        while (item := self._jobs.get()) is not None:
            index, job, tests, results = item
            try:
                if worker is None:
                    worker = Worker(self.isolation, self.limits)
            except BaseException as exc:  # a worker that cannot start: stop the run, loudly
                results.put((index, RuntimeError(f"cannot start a {self.isolation} sandbox worker: {exc}")))
                continue
            try:
                results.put((index, self._run_one(worker, index, job, tests)))
            except WorkerDied as exc:
                # The program killed or stopped its zygote: its own failure; the next job gets a fresh worker.
                worker.close()
                worker = None
                stopped = "stopped answering" in str(exc)
                results.put((index, {"outcome": "timed out" if stopped else "failed",
                                     "reason": None if stopped else "the sandbox worker was killed",
                                     "cpu_seconds": None}))
            except BaseException as exc:  # a harness bug: stop the run, loudly
                results.put((index, exc))
        if worker is not None:
            worker.close()

    @staticmethod
    def _run_one(worker: Worker, index: int, job: Job, tests: dict) -> dict:
        message = {"id": index, "task": job.task_id, "program": job.program, "limits": job.limits.as_dict(),
                   "details": job.details, "collect": job.collect}
        return worker.run(message, tests)

    def close(self) -> None:
        while True:  # jobs left over by a run that raised are dropped, not run
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []


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
    IO tests (HumanEval+) need the reference's outputs anyway, so their references run first.
    """

    def __init__(self, benchmark: Benchmark, store: Store, executor: Executor):
        self.benchmark = benchmark
        self.store = store
        self.executor = executor
        self.suites: dict[str, dict] = {}
        self.limits: dict[str, Limits] = {}
        self.provisional: set[str] = set()  # tasks whose limit is the floor until calibrated

    def prepare(self, task_ids: set[str]) -> None:
        """Compute (or load) reference outputs and time limits for `task_ids`.

        One reference always runs, as a check that the sandbox can run a right program at all:
        a broken jail must stop the run, not score every sample as failed.
        """
        tasks = [task for task in self.benchmark.tasks if task.task_id in task_ids]
        outputs = self.store.reference_outputs()
        seconds = self.store.calibration(machine_id())
        todo = [task for task in tasks if not isinstance(task.tests, CodeTests)
                and (task.task_id not in seconds or task.task_id not in outputs)]
        measured, collected = self._run_references(todo or tasks[:1])
        outputs.update(collected)
        seconds.update(measured)
        for task in tasks:
            self.suites[task.task_id] = test_suite(task, outputs.get(task.task_id))
        self._set_limits(seconds, [task.task_id for task in tasks])

    def calibrate(self, task_ids: set[str]) -> set[str]:
        """Calibrate provisional tasks; return those whose limit is now above the floor."""
        tasks = [task for task in self.benchmark.tasks if task.task_id in task_ids & self.provisional]
        measured, _ = self._run_references(tasks)
        self._set_limits(measured, list(measured))
        return {task_id for task_id in measured if self.limits[task_id].cpu_seconds > CPU_FLOOR_SECONDS}

    def _set_limits(self, seconds: dict[str, float], task_ids: list[str]) -> None:
        for task_id in task_ids:
            measured = seconds.get(task_id)
            if measured is None:
                self.provisional.add(task_id)
            else:
                self.provisional.discard(task_id)
            cpu = max(CPU_FLOOR_SECONDS, CPU_FACTOR * (measured or 0.0))
            self.limits[task_id] = replace(self.executor.limits, cpu_seconds=cpu, wall_seconds=3 * cpu + 5)

    def _run_references(self, tasks: list[Task]) -> tuple[dict[str, float], dict[str, bytes]]:
        """Run reference solutions: their CPU seconds and (IO tests) outputs, stored for later runs."""
        # Keyed apart from the tasks' own suites: a worker caches suites by key, and these lack outputs.
        keys = [f"{task.task_id}#reference" for task in tasks]
        jobs = [Job(key, task.reference, CALIBRATION_LIMITS, collect=not isinstance(task.tests, CodeTests))
                for key, task in zip(keys, tasks)]
        suites = {key: test_suite(task, None) for key, task in zip(keys, tasks)}
        measured, collected = {}, {}

        def record(index: int, result: dict) -> None:
            task = tasks[index]
            if result["outcome"] not in ("passed", "collected"):
                raise UserError(f"{self.benchmark.path}: the reference solution of {task.task_id} does not pass "
                                f"in the sandbox ({result['outcome']}: {result.get('reason')})")
            measured[task.task_id] = result["cpu_seconds"]
            if result["outcome"] == "collected":
                import base64

                collected[task.task_id] = base64.b64decode(result["blob"])

        self.executor.run(jobs, suites, record)
        self.store.add_reference_outputs(collected)
        self.store.add_calibration(machine_id(), measured)
        return measured, collected

    def job(self, task_id: str, program: str, details: bool) -> Job:
        return Job(task_id, program, self.limits[task_id], details=details)


def test_suite(task: Task, reference_outputs: bytes | None) -> dict:
    """The zygote's view of a task's tests (plain data; expected outputs as opaque pickled bytes)."""
    if isinstance(task.tests, CodeTests):
        return {"kind": "code", "setup": task.tests.setup, "units": list(task.tests.units)}
    return {"kind": "io", "entry_point": task.entry_point, "inputs": task.tests.inputs,
            "atol": task.tests.atol, "oracle": task.tests.oracle, "expected": reference_outputs}
