"""Execution-based benchmarks (HumanEval, HumanEval+, MBPP): datasets, sandbox, executor, pass@k, store.

Names are loaded on first use, so that importing `moecoder.bench.commands` (as `moecoder --help`
does) stays cheap.
"""

__all__ = ["Benchmark", "Task", "evaluate_samples", "load_benchmark"]


def __getattr__(name):
    if name in ("Benchmark", "Task", "load_benchmark"):
        from moecoder.bench import datasets

        return getattr(datasets, name)
    if name == "evaluate_samples":
        from moecoder.bench.evaluate import evaluate_samples

        return evaluate_samples
    raise AttributeError(f"module 'moecoder.bench' has no attribute {name!r}")
