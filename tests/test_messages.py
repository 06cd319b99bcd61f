"""What a new user reads (issue 13, item 9): each message one line that names the real problem.

Every test here failed on the message it replaces: the probe of an unthrottled link ("expected
upload time to grow with size", Wi-Fi assumed without a word), gRPC's C-core ``Failed to add
port`` line before ours, argparse's "expected one argument" for ``--link -3mbit``, the usage
line's ``[--server SERVER]``, a co plan called "pipelined", "1 cut points" and a description cut
at its first line break, inception's FutureWarning twice, and "run the same opss version" for a
client at another input shape than its server.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys

import pytest

from opss.errors import LinkModelError, LinkTooFastError
from opss.latency import PlanGraph
from opss.link import LinkModel
from opss.plan import plan_all, plan_for_client_set


def _run(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout)


def _one_error_line(out: subprocess.CompletedProcess, prog: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    lines = [line for line in out.stderr.strip().splitlines() if "measuring a fresh profile" not in line]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"{prog}: error:"), lines[0]
    return lines[0]


# ---- the link ---------------------------------------------------------------------------------


#: what an unthrottled loopback gives: 4 KiB to 1 MiB in about the same 0.3 ms, noise only
FLAT_SAMPLES = [(w, 3.0e-4 - 1e-6 * k) for k, w in enumerate([4096, 4096, 16384, 16384, 65536, 65536,
                                                              262144, 262144, 1048576, 1048576])]


def _ls_slope(pts):
    mx = sum(w for w, _ in pts) / len(pts)
    my = sum(t for _, t in pts) / len(pts)
    return sum((w - mx) * (t - my) for w, t in pts) / sum((w - mx) ** 2 for w, _ in pts)


def test_flat_probe_samples_are_a_link_too_fast_to_measure():
    assert _ls_slope(FLAT_SAMPLES) <= 0  # the oracle: time does not grow with size
    with pytest.raises(LinkTooFastError, match=r"^link too fast to measure: transfer time did not grow with "
                                               r"size over 10 transfers of 4096-1048576 bytes") as info:
        LinkModel.fit(FLAT_SAMPLES)
    assert isinstance(info.value, LinkModelError) and "loopback" in str(info.value)
    rising = [(w, 1e-4 + w / 2e6) for w, _ in FLAT_SAMPLES]  # a real 2 MB/s link still fits
    assert LinkModel.fit(rising).b == pytest.approx(2e6, rel=1e-6)


class _UnthrottledLink:
    """A transport whose probe answers like an unthrottled loopback (FLAT_SAMPLES' times)."""

    def probe(self, sizes, throttle=None, timeout=30.0):
        times = dict(FLAT_SAMPLES)
        return [(int(w), times[w]) for w in sizes]


def test_the_client_says_an_unthrottled_link_is_too_fast_and_why_it_plans_for_wifi():
    from opss.client.session import ClientConfig, ClientSession

    out = io.StringIO()
    session = ClientSession(ClientConfig(model="alexnet", small=True, strategy="co", progress=False),
                            transport=_UnthrottledLink(), out=out, err=None)
    link = session.link  # the session probes as it starts
    session.close()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("link:")]
    assert len(lines) == 1, out.getvalue()
    line = lines[0]
    assert "too fast to measure" in line and "loopback" in line
    assert "wifi, the fastest preset" in line and "18.88 Mbps" in line
    assert "expected upload time to grow" not in line
    assert link.b == pytest.approx(18.88e6 / 8)


@pytest.mark.parametrize("argv,prog", [
    (["-m", "opss", "plan", "--model", "alexnet", "--link", "-3mbit"], "opss plan"),
    (["-m", "opss.client", "--model", "alexnet", "--server", "127.0.0.1:1", "--link", "-3mbit"], "opss-client"),
    (["-m", "opss.client", "--model", "alexnet", "--server", "127.0.0.1:1", "--throttle", "-3mbit"],
     "opss-client"),
])
def test_a_negative_rate_is_named_not_taken_for_an_option(argv, prog):
    line = _one_error_line(_run(*argv), prog)
    assert "negative rate" in line and "'-3mbit'" in line, line
    assert "expected one argument" not in line


# ---- the server's port and the client's usage ------------------------------------------------


def test_a_port_in_use_is_our_one_line_without_grpc_core_logging():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _run("-m", "opss.server", "--host", "127.0.0.1", "--port", str(port), "--small",
                   "--models", "resnet18", "--device", "cpu")
    line = _one_error_line(out, "opss-server")
    assert f"port {port} is already in use" in line, line
    assert "Failed to add port" not in out.stderr and "add_port.cc" not in out.stderr


def test_the_usage_line_shows_the_server_as_needed():
    out = _run("-m", "opss.client", "--help")
    assert out.returncode == 0
    usage = out.stdout.split("\n\n")[0]
    assert " --server HOST:PORT" in usage and "[--server" not in usage, usage


# ---- plans and graphs ---------------------------------------------------------------------------


def _diamond():
    """x -> a -> {b, c} -> out: f 1 each on the client, the server 10x faster, small tensors."""
    ids = ["x", "a", "b", "c", "out"]
    edges = [("x", "a"), ("a", "b"), ("a", "c"), ("b", "out"), ("c", "out")]
    graph = PlanGraph(ids, edges, {v: 1000 for v in ids}, "x", "out")
    f = {"x": 0.0, "a": 1.0, "b": 1.0, "c": 1.0, "out": 1.0}
    s = {v: t / 10 for v, t in f.items()}
    return graph, f, s


def test_each_plan_says_how_it_runs_and_a_single_upload_is_not_called_pipelined():
    graph, f, s = _diamond()
    link = LinkModel(c=0.0, b=1e6)
    plans = plan_all(graph, f, s, link)
    assert plans["lo"].execution == "local only"
    assert plans["co"].pipelined and plans["co"].execution == "upload only"  # the input, nothing to overlap
    # one tensor cut after the last client layer: pipelined in name, nothing left to overlap
    one = plan_for_client_set(graph, {"x", "a"}, f, s, link)
    assert one.pipelined and one.cut == ("a",) and one.execution == "compute, then upload"
    # two uploads: b's upload runs while c computes
    two = plan_for_client_set(graph, {"x", "a", "b", "c"}, f, s, link)
    assert set(two.cut) == {"b", "c"} and two.execution == "pipelined"


def test_the_client_describes_a_co_plan_as_an_upload_not_a_pipeline():
    from opss.client.session import ClientConfig, ClientSession

    from opss.client.runtime import InProcessTransport

    session = ClientSession(ClientConfig(model="alexnet", small=True, strategy="co", link="wifi", progress=False),
                            transport=InProcessTransport.for_model("alexnet", small=True), out=None, err=None)
    try:
        head = session.describe_plan("co").splitlines()[0]
    finally:
        session.close()
    assert head.endswith("upload only"), head
    assert "pipelined" not in head


def test_graph_counts_in_good_grammar_and_describes_with_the_first_sentence(capsys):
    from opss.cli import main

    assert main(["graph", "--model", "torchvision.models:densenet121", "--small"]) == 0
    text = capsys.readouterr().out
    assert "description: Densenet-121 model from Densely Connected Convolutional Networks.\n" in text
    assert "(7 vertices, 1 cut point): chain" in text, text


def test_docstring_summary_reads_the_first_sentence_across_lines():
    from opss.models import summary

    doc = """Densenet-121 model from
    `Densely Connected Convolutional Networks <https://arxiv.org/abs/1608.06993>`_.

    Args:
        weights: ignored here.
    """
    assert summary(doc) == "Densenet-121 model from Densely Connected Convolutional Networks."
    assert summary("Two-tower AlexNet (Krizhevsky et al., NIPS 2012): towers meet.\n\nMore.") == \
        "Two-tower AlexNet (Krizhevsky et al., NIPS 2012): towers meet."
    assert summary("A net, e.g. this one. Second sentence.") == "A net, e.g. this one."
    assert summary(None) == ""


def test_a_factory_warning_is_printed_once_however_often_the_model_is_built():
    code = ("import warnings\n"
            "from opss import models\n"
            "spec = models.get_spec('torchvision.models:inception_v3')\n"
            "models.build_model(spec)\n"
            "warnings.simplefilter('default')  # any filter change resets Python's once-per-place registry\n"
            "models.build_model(spec)\n")
    out = _run("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("FutureWarning: The default weight initialization of inception_v3") == 1, out.stderr


# ---- a client at another input shape than its server ----------------------------------------------


def test_a_small_client_against_a_full_size_server_is_told_the_shapes_differ():
    from opss.server.app import build_server
    from opss.server.config import ServerConfig

    handle = build_server(ServerConfig(host="127.0.0.1", port=0, device="cpu", models=("alexnet",), small=False,
                                       warmup_runs=0, max_inflight=2, max_workers=4))
    try:
        out = _run("-m", "opss.client", "--model", "alexnet", "--server", f"127.0.0.1:{handle.port}",
                   "--strategy", "co", "--link", "wifi", "--small", "--runs", "1", "--quiet")
    finally:
        handle.stop(0).wait(5)
    line = _one_error_line(out, "opss-client")
    assert "the input shapes differ" in line and "[1, 3, 224, 224]" in line, line
    assert "this client runs --small, the server does not" in line
    assert "same opss version" not in line
