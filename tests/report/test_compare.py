import json
from fractions import Fraction
from math import factorial

import numpy as np
import pytest
from typer.testing import CliRunner

from moecoder.cli import app
from moecoder.report.compare import mcnemar_exact, paired_bootstrap

from report_fixtures import verdicts_from_pattern, write_run


def binomial_two_sided(successes: int, trials: int) -> float:
    """Exact two-sided binomial test at p = 1/2, summing every outcome no more likely than the observed one."""
    def probability(k):
        return Fraction(factorial(trials), factorial(k) * factorial(trials - k)) / 2**trials

    observed = probability(successes)
    return float(sum(probability(k) for k in range(trials + 1) if probability(k) <= observed))


@pytest.mark.parametrize("a_only,b_only", [(0, 0), (1, 0), (0, 5), (7, 1), (3, 3), (10, 0), (12, 4), (2, 9), (40, 25)])
def test_mcnemar_matches_exact_binomial(a_only, b_only):
    expected = binomial_two_sided(a_only, a_only + b_only) if a_only + b_only else 1.0
    assert mcnemar_exact(a_only, b_only) == pytest.approx(min(1.0, expected), rel=1e-12)


def test_mcnemar_known_value():
    # 10 discordant tasks all favouring B: p = 2 / 2**10.
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)


def test_bootstrap_identical_runs_give_one():
    rates = np.array([0.0, 0.5, 1.0, 0.25])
    assert paired_bootstrap(rates, rates) == 1.0


def test_bootstrap_separates_clear_difference_from_noise():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 0.5, size=60)
    assert paired_bootstrap(a, a + 0.3) < 0.001
    noise = rng.choice([-0.1, 0.1], size=60)
    assert paired_bootstrap(a, np.clip(a + noise, 0, 1)) > 0.05


def run_compare(*args):
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def test_compare_cli_mcnemar(tmp_path):
    # A passes tasks 0-9, B passes those and 10-19 but fails task 0: 1 A-only, 10 B-only.
    a = write_run(tmp_path / "a", "humaneval", verdicts_from_pattern("P" * 10 + "F" * 10 + "TE"))
    b = write_run(tmp_path / "b", "humaneval", verdicts_from_pattern("F" + "P" * 19 + "TE"))
    result = run_compare(a, b)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])["humaneval"]
    assert report["test"] == "mcnemar-exact"
    assert report["n_tasks"] == 22
    assert report["better_in_a"] == ["HumanEval/0"]
    assert sorted(report["better_in_b"], key=lambda t: int(t.split("/")[1])) == [f"HumanEval/{i}" for i in range(10, 20)]
    assert report["p_value"] == pytest.approx(binomial_two_sided(1, 11))
    assert report["difference"] == pytest.approx((19 - 10) / 22)


def test_compare_cli_bootstrap_for_several_samples(tmp_path):
    a = write_run(tmp_path / "a", "humaneval", {"HumanEval/0": ["passed", "failed: x"], "HumanEval/1": ["failed: x"] * 2})
    b = write_run(tmp_path / "b", "humaneval", {"HumanEval/0": ["passed", "passed"], "HumanEval/1": ["failed: x"] * 2})
    result = run_compare(a, b)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])["humaneval"]
    assert report["test"] == "paired-bootstrap"
    assert report["better_in_b"] == ["HumanEval/0"]
    assert 0 < report["p_value"] <= 1


def test_compare_refuses_different_task_sets(tmp_path):
    a = write_run(tmp_path / "a", "humaneval", verdicts_from_pattern("PPF"))
    b = write_run(tmp_path / "b", "humaneval", verdicts_from_pattern("PP"))
    result = run_compare(a, b)
    assert result.exit_code == 2
    assert "different tasks" in result.stderr and "Traceback" not in result.output


def test_compare_refuses_missing_directory(tmp_path):
    a = write_run(tmp_path / "a", "humaneval", verdicts_from_pattern("P"))
    result = run_compare(a, tmp_path / "nope")
    assert result.exit_code == 2
    assert "not a directory" in result.stderr
