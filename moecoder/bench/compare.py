"""HumanEval+'s output comparison: the verdict evalplus 0.3.1 gives one output, reproduced in the judge.

evalplus (`unsafe_execute` in evalplus/eval/__init__.py, its HumanEval branch) checks each output of a
task's inputs, in order, like this:

    exact = out == exp
    find_zero (HumanEval/32):  passes iff abs(poly(*inp, out)) <= atol   (poly(xs, x) = sum(c * x**i))
    otherwise:  if atol == 0 and exp is floats: atol = 1e-6      (kept for the task's later inputs)
                if not exact and atol != 0:  type(out) == type(exp), equal lengths for a list or
                                             tuple exp, and numpy.allclose(out, exp, rtol=1e-7, atol=atol)
                else:                        bool(exact)
    any exception on the way is a mismatch.

"exp is floats" is evalplus's `is_floats`: a float (numpy.float64 included: it subclasses float), a
non-empty list or tuple of floats only, or a float64/float32 array. The rules are kept exactly, odd
corners included: a close `numpy.float64` fails against a float `exp` (types differ), a one-item array
passes against an equal number, a longer array always fails (its truth value raises), and NaN never
matches NaN. `out` and `exp` here come from `plain.decode`, so numpy scalars and arrays keep their types.

The raised atol is the one rule with memory: evalplus keeps it in a local for the rest of that input
list (base inputs and plus inputs are separate lists). `Comparison` carries it the same way;
`outputs_match` is a fresh `Comparison`'s first answer.
"""

import math
import warnings

import numpy as np

__all__ = ["Comparison", "outputs_match"]

ORACLES = (None, "find_zero")
_RTOL = 1e-07  # evalplus passes it explicitly, to match numpy.testing.assert_allclose
_FLOAT_ATOL = 1e-6  # evalplus's tolerance for float outputs of tasks whose atol is 0


class _Mismatch(Exception):
    pass


def _require(condition) -> None:
    # `assert` in evalplus: truth value taken the same way (a numpy array's may raise), and not
    # stripped under `python -O`.
    if not condition:
        raise _Mismatch


def is_floats(x) -> bool:
    """evalplus's test for float-valued outputs: float, non-empty list/tuple of floats, float64/32 array."""
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    if isinstance(x, np.ndarray):
        return x.dtype == np.float64 or x.dtype == np.float32
    return False


def poly(xs, x: float) -> float:
    """xs[0] + xs[1] * x + ... + xs[n] * x**n, computed as HumanEval/32's oracle does (math.pow, summed in order)."""
    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])


class Comparison:
    """evalplus's comparison over one list of inputs of a task, called once per input, in order.

    Call it only for inputs whose call returned an output: in evalplus an input whose call raised
    leaves the tolerance as it was.
    """

    def __init__(self, atol: float, oracle: str | None = None):
        if oracle not in ORACLES:
            raise ValueError(f"unknown oracle {oracle!r}; known: {ORACLES}")
        self.atol = atol
        self.oracle = oracle

    def __call__(self, out, exp, inp) -> bool:
        """True when evalplus would mark this input passed. `inp` is the argument list the call got."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's deprecation and overflow warnings change no verdict
            try:
                self._check(out, exp, inp)
            except Exception:  # evalplus: any exception fails the input
                return False
        return True

    def _check(self, out, exp, inp) -> None:
        exact = out == exp
        if self.oracle == "find_zero":
            _require(abs(poly(*inp, out)) <= self.atol)
            return
        if self.atol == 0 and is_floats(exp):
            self.atol = _FLOAT_ATOL
        if not exact and self.atol != 0:
            _require(type(out) == type(exp))  # noqa: E721 -- evalplus compares the types with ==
            if isinstance(exp, (list, tuple)):
                _require(len(out) == len(exp))
            _require(np.allclose(out, exp, rtol=_RTOL, atol=self.atol))
        else:
            _require(exact)


def outputs_match(out, exp, inp, atol: float, oracle: str | None = None) -> bool:
    """evalplus's verdict on one output `out` for expected `exp` and arguments `inp`, as for the
    first input of a list (see `Comparison` for the tolerance later inputs inherit)."""
    return Comparison(atol, oracle)(out, exp, inp)
