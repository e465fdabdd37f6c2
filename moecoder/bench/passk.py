"""pass@k: the unbiased estimator of Chen et al. (2021) and a bootstrap interval over tasks."""

from __future__ import annotations

import random


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k), as a product so large n neither overflows nor loses precision."""
    if not 0 < k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n (n={n})")
    if n - c < k:
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def bootstrap_resamples(size: int, resamples: int = 1000, seed: int = 0) -> list[list[int]]:
    """Task indices of `resamples` bootstrap resamples (with replacement) of `size` tasks."""
    rng = random.Random(seed)
    indices = range(size)
    return [rng.choices(indices, k=size) for _ in range(resamples)]


def bootstrap_ci(values: list[float], resamples: list[list[int]] | None = None) -> tuple[float, float]:
    """95% percentile interval of the mean over bootstrap resamples of the tasks."""
    resamples = resamples or bootstrap_resamples(len(values))
    size = len(values)
    means = sorted(sum(map(values.__getitem__, picks)) / size for picks in resamples)
    return means[int(0.025 * len(means))], means[int(0.975 * len(means)) - 1]


def pass_at_k_summary(counts: dict[str, tuple[int, int]], ks: tuple[int, ...]) -> dict:
    """{"pass@k": {"value", "ci95"}} over tasks, from per-task (n samples, c correct).

    Every k is resampled with the same task draws: the intervals are paired, and drawn once.
    """
    resamples = bootstrap_resamples(len(counts))
    summary = {}
    for k in ks:
        per_task = [pass_at_k(n, c, k) for n, c in counts.values()]
        lo, hi = bootstrap_ci(per_task, resamples)
        summary[f"pass@{k}"] = {"value": sum(per_task) / len(per_task), "ci95": [lo, hi]}
    return summary
