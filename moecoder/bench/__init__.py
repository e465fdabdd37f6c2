"""Execution-based benchmarks (HumanEval, HumanEval+, MBPP): datasets, sandbox, executor, pass@k, store."""

from moecoder.bench.datasets import Benchmark, Task, load_benchmark
from moecoder.bench.evaluate import evaluate_samples

__all__ = ["Benchmark", "Task", "evaluate_samples", "load_benchmark"]
