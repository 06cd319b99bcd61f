"""Argument helpers shared by ``opss``, ``opss-server`` and ``opss-client``.

:class:`OneLineParser` makes every bad argument one line on stderr and exit
status 2 (argparse's default prints the whole usage block first). The type
functions raise ``argparse.ArgumentTypeError`` with "expected X, got Y".
"""

from __future__ import annotations

import argparse
import math


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (no usage block) and exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def nonneg_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def _factor_above(text: str, low: float, *, inclusive: bool) -> float:
    bound = f"{'>=' if inclusive else '>'} {low:g}"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a factor {bound}, got {text!r}") from None
    if not (math.isfinite(value) and (value >= low if inclusive else value > low)):
        raise argparse.ArgumentTypeError(f"expected a finite factor {bound}, got {text!r}")
    return value


def slowdown(text: str) -> float:
    """A paced client's slowdown factor: finite and >= 1 (1 = as fast as this machine).

    Pacing only adds time, so it cannot make a client faster than its profile.
    """
    return _factor_above(text, 1.0, inclusive=True)


def modelled_slowdown(text: str) -> float:
    """A slowdown that only scales a profile's times (``opss plan``): finite and > 0,
    so a client faster than the profiled machine (< 1) can be modelled too."""
    return _factor_above(text, 0.0, inclusive=False)
