"""Every command answers bad input with one line on stderr and a non-zero exit, never a traceback."""

import subprocess
import sys

import pytest

PY = sys.executable

CASES = [
    ([PY, "-m", "opss", "plan", "--model", "resnet18", "--link", "5 potatoes"], "unknown unit 'potatoes'"),
    ([PY, "-m", "opss", "plan", "--model", "nosuchnet", "--link", "4g"], "nosuchnet"),
    ([PY, "-m", "opss", "plan", "--model", "resnet18", "--bandwidth", "5.85mbit", "--rtt", "20 parsecs"], "parsecs"),
    ([PY, "-m", "opss", "graph", "--model", "resnet18", "--granularity", "potato"], "potato"),
    ([PY, "-m", "opss", "graph", "--model", "resnet18", "--small", "--json", "/nonexistent/dir/g.json"],
     "/nonexistent/dir/g.json"),
    ([PY, "-m", "opss", "profile", "--model", "resnet18", "--repeats", "-1"], "positive integer"),
    ([PY, "-m", "opss", "demo", "--runs", "0"], "positive integer"),
    ([PY, "-m", "opss", "demo", "--client-slowdown", "0.5"], "factor >= 1"),
    ([PY, "-m", "opss", "experiment", "--client-cpu", "potato"], "CPU share"),
    ([PY, "-m", "opss", "nosuchcommand"], "invalid choice"),
    ([PY, "-m", "opss.server", "--port", "-1"], "port"),
    ([PY, "-m", "opss.client", "--model", "resnet18", "--server", "nohostport"], "HOST:PORT"),
    ([PY, "-m", "opss.client", "--model", "resnet18", "--strategy", "lo", "--json", "/nonexistent/d/x.json"],
     "no such folder"),
]


@pytest.mark.parametrize("cmd,word", CASES, ids=[" ".join(c[2:5]) for c, _ in CASES])
def test_one_line_error(cmd, word):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert word in lines[0], lines[0]
