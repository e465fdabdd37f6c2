from math import comb

import pytest

from moecoder.bench.passk import bootstrap_ci, pass_at_k, pass_at_k_summary


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 5), (20, 0, 10), (200, 7, 100)])
def test_pass_at_k_matches_the_combinatorial_definition(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # C(2000, 1000) overflows a float; the product form does not.
    value = pass_at_k(2000, 1, 1000)
    assert value == pytest.approx(0.5, abs=1e-9)


def test_k_larger_than_n_is_refused():
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_summary_and_bootstrap_interval_contain_the_mean():
    counts = {f"t{i}": (10, i % 4) for i in range(40)}
    summary = pass_at_k_summary(counts, (1, 5))
    for entry in summary.values():
        lo, hi = entry["ci95"]
        assert lo <= entry["value"] <= hi
    assert summary["pass@1"]["value"] == pytest.approx(sum(i % 4 for i in range(40)) / 400)
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)
