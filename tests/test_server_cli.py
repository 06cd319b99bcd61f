"""``python -m opss.server`` as a real process: port 0, health, a request, SIGTERM with a call
in flight (it finishes, the process exits 0), and one-line errors for bad arguments."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from opss import models
from opss.graph import capture
from opss.split import split
from opss.v1 import opss_pb2_grpc
from opss.wire import infer_requests, tensor_from_proto


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "opss.server", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _read_port(proc: subprocess.Popen, timeout: float = 120.0) -> int:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = got[0] if got else ""
    m = re.fullmatch(r"opss-server listening on 127\.0\.0\.1:(\d+)\n", line)
    assert m, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.poll() else ''}"
    return int(m.group(1))


def test_cli_serves_and_finishes_in_flight_call_on_sigterm() -> None:
    proc = _start("--host", "127.0.0.1", "--port", "0", "--small", "--models", "resnet18",
                  "--device", "cpu", "--grace", "30", "--metrics-port", "0")
    try:
        port = _read_port(proc)
        m = re.fullmatch(r"opss-server metrics on (http://127\.0\.0\.1:\d+/metrics)\n",
                         proc.stdout.readline())
        assert m
        with urllib.request.urlopen(m.group(1), timeout=10) as r:
            assert "opss_server_ready 1.0" in r.read().decode()
        model = models.get_model("resnet18", seed=0)
        x = models.example_input("resnet18", small=True, seed=9)
        graph = capture(model, x, name="resnet18")
        s = split(graph, set(graph.ids[:6]))
        tensors = s.client.run(x)
        reqs = list(infer_requests("resnet18", models.fingerprint(model),
                                   [(c, tensors[c]) for c in s.cut],
                                   client_set=sorted(s.client_set), chunk_bytes=1024))
        release = threading.Event()

        def held():
            yield from reqs[:-1]
            release.wait(60)
            yield reqs[-1]

        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            future = opss_pb2_grpc.OpssStub(ch).Infer.future(held())
            time.sleep(0.5)  # the call is open on the server
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert proc.poll() is None, "exited with a call in flight"
            release.set()
            out = tensor_from_proto(future.result(timeout=60).output)
        with torch.no_grad():
            torch.testing.assert_close(out, model(x))
        assert proc.wait(60) == 0
        log = proc.stderr.read()
        assert "SIGTERM: finishing 1 in-flight calls" in log
        assert re.search(r"infer id=\S+ model=resnet18 .* status=OK", log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("args,message", [
    (["--models", "nope", "--small", "--port", "0"], "opss-server: error: unknown model 'nope'"),
    (["--tls-cert", "x.pem", "--port", "0"], "expected both tls_cert and tls_key"),
    (["--weights", "resnet18"], "expected NAME=VALUE"),
    (["--idle-timeout", "0", "--port", "0"], "idle_timeout_s: expected seconds > 0, got 0.0"),
    (["--admission-wait", "-1", "--port", "0"], "admission_wait_s: expected seconds >= 0"),
    (["--max-inflight-per-peer", "0", "--port", "0"], "max_inflight_per_peer: expected >= 1"),
    (["--tls-ca", "ca.pem", "--port", "0"], "tls_client_ca: expected tls_cert and tls_key too"),
    (["--metrics-port", "70000", "--port", "0"], "metrics_port: expected 0..65535"),
])
def test_cli_bad_arguments_one_line_nonzero(args, message) -> None:
    proc = subprocess.run([sys.executable, "-m", "opss.server", *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
