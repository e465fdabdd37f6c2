"""Per-task comparison of two eval runs with a paired significance test.

Two runs on the same benchmark see the same tasks, so the right test is a paired one: most of the
variation between tasks (some are easy, some hard) cancels out, and what is left is whether one model
solves tasks the other does not.
- one sample per task (n = 1): exact McNemar test on the discordant tasks (A passed and B failed, or
  the reverse); under "no difference" each discordant task is a fair coin flip.
- several samples per task: paired bootstrap over tasks of the mean difference of per-task pass rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

from moecoder.errors import UserError
from moecoder.report.runs import RunDir, TaskResult


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: binomial(a_only + b_only, 1/2) tail at min(a_only, b_only), doubled."""
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    tail = sum(comb(discordant, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**discordant)


def paired_bootstrap(rates_a: np.ndarray, rates_b: np.ndarray, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value for mean(rates_b - rates_a) != 0 by resampling tasks with replacement.

    The p-value is twice the share of resampled mean differences on the far side of zero
    (the percentile bootstrap test); identical per-task rates give 1.
    """
    differences = np.asarray(rates_b, dtype=float) - np.asarray(rates_a, dtype=float)
    if not differences.any():
        return 1.0
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[picks].mean(axis=1)
    below, above = (means <= 0).mean(), (means >= 0).mean()
    return float(min(1.0, 2 * min(below, above)))


@dataclass
class BenchmarkComparison:
    """How run B differs from run A on one benchmark."""

    benchmark: str
    task_ids: list[str]
    rates_a: list[float]  # per-task pass rate (c/n) in run A
    rates_b: list[float]
    samples_per_task: tuple[int, int]  # smallest n in A, in B
    test: str
    p_value: float

    @property
    def pass_rate_a(self) -> float:
        return float(np.mean(self.rates_a))

    @property
    def pass_rate_b(self) -> float:
        return float(np.mean(self.rates_b))

    def changed(self) -> list[tuple[str, float, float]]:
        """(task_id, rate in A, rate in B) for every task whose pass rate differs, biggest change first."""
        rows = [(t, a, b) for t, a, b in zip(self.task_ids, self.rates_a, self.rates_b) if a != b]
        return sorted(rows, key=lambda row: (-abs(row[2] - row[1]), row[0]))

    def to_json(self) -> dict:
        changed = self.changed()
        return {
            "n_tasks": len(self.task_ids),
            "samples_per_task": {"a": self.samples_per_task[0], "b": self.samples_per_task[1]},
            "pass_rate": {"a": self.pass_rate_a, "b": self.pass_rate_b},
            "difference": self.pass_rate_b - self.pass_rate_a,
            "test": self.test,
            "p_value": self.p_value,
            "better_in_a": [t for t, a, b in changed if a > b],
            "better_in_b": [t for t, a, b in changed if b > a],
        }


def compare_tasks(benchmark: str, tasks_a: dict[str, TaskResult], tasks_b: dict[str, TaskResult],
                  resamples: int = 10_000, seed: int = 0) -> BenchmarkComparison:
    """Pair the two runs' tasks and test the difference (McNemar when both have one sample per task)."""
    if set(tasks_a) != set(tasks_b):
        only_a, only_b = sorted(set(tasks_a) - set(tasks_b)), sorted(set(tasks_b) - set(tasks_a))
        raise UserError(
            f"{benchmark}: the runs cover different tasks ({len(only_a)} only in A, e.g. {only_a[:3]}; "
            f"{len(only_b)} only in B, e.g. {only_b[:3]}); a paired test needs the same tasks"
        )
    task_ids = list(tasks_a)
    rates_a = [tasks_a[t].pass_rate for t in task_ids]
    rates_b = [tasks_b[t].pass_rate for t in task_ids]
    n_a = min(task.n for task in tasks_a.values())
    n_b = min(task.n for task in tasks_b.values())
    single = all(tasks_a[t].n == 1 and tasks_b[t].n == 1 for t in task_ids)
    if single:
        a_only = sum(a > b for a, b in zip(rates_a, rates_b))
        b_only = sum(b > a for a, b in zip(rates_a, rates_b))
        test, p_value = "mcnemar-exact", mcnemar_exact(a_only, b_only)
    else:
        test = "paired-bootstrap"
        p_value = paired_bootstrap(np.array(rates_a), np.array(rates_b), resamples=resamples, seed=seed)
    return BenchmarkComparison(benchmark, task_ids, rates_a, rates_b, (n_a, n_b), test, p_value)


def compare_runs(dir_a: str, dir_b: str, benchmarks: list[str] | None = None) -> list[BenchmarkComparison]:
    """Compare every benchmark both runs have (or the ones named)."""
    run_a, run_b = RunDir(dir_a), RunDir(dir_b)
    common = [b for b in run_a.benchmarks if b in run_b.benchmarks]
    if benchmarks:
        missing = [b for b in benchmarks if b not in common]
        if missing:
            raise UserError(f"benchmark {missing[0]!r} has results in only one (or neither) of {dir_a}, {dir_b}")
        common = benchmarks
    if not common:
        raise UserError(f"{dir_a} and {dir_b} share no benchmark with a results-<benchmark>.jsonl file")
    _check_same_dataset(run_a, run_b, common)
    return [compare_tasks(b, run_a.tasks(b), run_b.tasks(b)) for b in common]


def _check_same_dataset(run_a: RunDir, run_b: RunDir, benchmarks: list[str]) -> None:
    summaries_a, summaries_b = run_a.summaries, run_b.summaries
    for benchmark in benchmarks:
        hash_a = summaries_a.get(benchmark, {}).get("dataset_sha256")
        hash_b = summaries_b.get(benchmark, {}).get("dataset_sha256")
        if hash_a and hash_b and hash_a != hash_b:
            raise UserError(f"{benchmark}: the runs used different dataset files (sha256 {hash_a[:12]}… vs {hash_b[:12]}…)")
