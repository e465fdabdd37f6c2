"""DeepSeek-Coder's published pass@1 scores (percent), to place a run's score in context.

Sources: DeepSeek-Coder (arXiv 2401.14196, Table 3 and the repository README; greedy pass@1, HumanEval
Python and MBPP) and DeepSeek-Coder-V2 (arXiv 2406.11931, HumanEval). Only numbers stated there.
"""

PUBLISHED_PASS_AT_1: dict[str, list[tuple[str, float]]] = {
    "humaneval": [
        ("DeepSeek-Coder-Base 1.3B", 34.8),
        ("DeepSeek-Coder-Base 6.7B", 49.4),
        ("DeepSeek-Coder-Base 33B", 56.1),
        ("DeepSeek-Coder-Instruct 1.3B", 65.2),
        ("DeepSeek-Coder-Instruct 6.7B", 78.6),
        ("DeepSeek-Coder-Instruct 33B", 79.3),
        ("DeepSeek-Coder-V2-Lite-Instruct", 81.1),
        ("DeepSeek-Coder-V2-Instruct", 90.2),
    ],
    "mbpp": [
        ("DeepSeek-Coder-Base 1.3B", 46.2),
        ("DeepSeek-Coder-Base 6.7B", 60.6),
        ("DeepSeek-Coder-Base 33B", 66.0),
        ("DeepSeek-Coder-Instruct 1.3B", 49.4),
        ("DeepSeek-Coder-Instruct 6.7B", 65.4),
        ("DeepSeek-Coder-Instruct 33B", 70.0),
    ],
}


def published_for(benchmark: str) -> list[tuple[str, float]]:
    """(model, pass@1 percent) rows for a benchmark; [] where DeepSeek published none we carry."""
    return PUBLISHED_PASS_AT_1.get(benchmark, [])
