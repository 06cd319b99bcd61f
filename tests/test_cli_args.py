"""The one slowdown validator: ``opss plan``, ``opss demo`` and ``opss-client`` take the same bound."""

import argparse
import subprocess
import sys

import pytest

from opss.cli._args import slowdown


def test_slowdown_bound_and_messages():
    for text in ["1", "2.5", "10"]:
        assert slowdown(text) == float(text)
    for text in ["0.5", "0.999", "0", "-1", "inf", "nan"]:
        with pytest.raises(argparse.ArgumentTypeError,
                           match=rf"^expected a finite factor >= 1 \(times slower than the profiled machine\), "
                                 rf"got '{text}'$"):
            slowdown(text)
    with pytest.raises(argparse.ArgumentTypeError, match="^expected a factor >= 1, got 'potato'$"):
        slowdown("potato")


@pytest.mark.parametrize("argv", [
    ["-m", "opss", "plan", "--model", "alexnet", "--link", "4g"],
    ["-m", "opss", "demo"],
    ["-m", "opss.client", "--model", "alexnet", "--server", "127.0.0.1:1"],
])
def test_every_command_refuses_the_same_slowdown_in_one_line(argv):
    """A factor below 1 was accepted by `opss plan` (> 0) and refused by the client (>= 1)."""
    out = subprocess.run([sys.executable, *argv, "--client-slowdown", "0.5"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--client-slowdown: expected a finite factor >= 1" in lines[0], out.stderr
