"""The slowdown validators: one rule, two lower bounds, one message shape."""

import argparse

import pytest

from opss.cli._args import modelled_slowdown, slowdown


@pytest.mark.parametrize("check,bound,ok,bad", [
    (slowdown, ">= 1", ["1", "2.5"], ["0.5", "0", "-1", "inf", "nan"]),
    (modelled_slowdown, "> 0", ["0.5", "1", "2.5"], ["0", "-1", "inf", "nan"]),
])
def test_slowdown_bounds_and_messages(check, bound, ok, bad):
    for text in ok:
        assert check(text) == float(text)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=f"^expected a finite factor {bound}, got '{text}'$"):
            check(text)
    with pytest.raises(argparse.ArgumentTypeError, match=f"^expected a factor {bound}, got 'potato'$"):
        check("potato")
