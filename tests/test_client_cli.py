"""``opss-client`` as a user runs it (subprocess): one clear line for bad input, never a traceback;
an unreachable server still delivers the result locally (exit 0)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from opss.server.app import build_server
from opss.server.config import ServerConfig


def _client(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opss.client", *args], capture_output=True, text=True,
                          timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "nosuchnet", "--server", "127.0.0.1:1"], "unknown model 'nosuchnet'"),
        (["--model", "googlenet", "--server", "127.0.0.1:1", "--throttle", "5mbx"], "unknown unit 'mbx'"),
        (["--model", "googlenet", "--server", "127.0.0.1:1", "--link", "5"], "expected a unit"),
        (["--model", "googlenet"], "--server HOST:PORT is required"),
        (["--model", "googlenet", "--server", "nohostport"], "expected HOST:PORT"),
        (["--model", "googlenet", "--server", "127.0.0.1:1", "--small", "--image", "/no/such.png"],
         "--image /no/such.png: no such file"),
        (["--model", "googlenet", "--server", "127.0.0.1:1", "--small", "--image", __file__],
         "cannot read it as an image"),
        (["--model", "googlenet", "--server", "127.0.0.1:1", "--runs", "0"], "expected a positive integer"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, expected):
    out = _client(*args)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("opss-client: error:") and expected in lines[0], lines[0]


def test_unreachable_server_still_delivers_the_result(tmp_path):
    port = _free_port()  # nothing listens there
    report = tmp_path / "run.json"
    out = _client("--model", "googlenet", "--server", f"127.0.0.1:{port}", "--strategy", "co", "--small",
                  "--runs", "2", "--verify", "--quiet", "--timeline", "--json", str(report))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert f"127.0.0.1:{port} unreachable" in out.stdout
    assert out.stdout.count("top-5:") == 2
    assert "verify: ok" in out.stdout
    doc = json.loads(report.read_text())
    assert [r["timeline"]["where"] for r in doc["runs"]] == ["fallback", "fallback"]
    assert all(r["verify_ok"] for r in doc["runs"])


def test_cooperative_run_prints_terms_timeline_and_writes_json(tmp_path):
    handle = build_server(ServerConfig(host="127.0.0.1", port=0, device="cpu", models=("googlenet",), small=True,
                                       warmup_runs=0, max_inflight=2, max_workers=4))
    try:
        report = tmp_path / "run.json"
        out = _client("--model", "googlenet", "--server", f"127.0.0.1:{handle.port}", "--strategy", "co",
                      "--small", "--runs", "3", "--verify", "--quiet", "--timeline", "--throttle", "2mbit",
                      "--json", str(report))
    finally:
        handle.stop(0).wait(5)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    text = out.stdout
    assert "link: probed" in text and "plan co:" in text
    assert text.count("[co, cooperative]") == 3
    assert "up x" in text  # the Gantt row of the uploaded input
    assert "summary over 3 runs: median" in text
    doc = json.loads(report.read_text())
    assert doc["plan"]["cut"] == ["x"]
    for run in doc["runs"]:
        tl = run["timeline"]
        assert tl["where"] == "cooperative" and run["verify_ok"]
        assert tl["upload"][0]["nbytes"] == 3 * 16 * 16 * 4
        assert tl["total"] >= tl["upload"][0]["end"]
    lat = sorted(r["timeline"]["total"] for r in doc["runs"])
    assert doc["summary"]["median_s"] == pytest.approx(lat[1])
