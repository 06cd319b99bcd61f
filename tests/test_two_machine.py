"""Two-machine mode of ``opss experiment``: shaping a real interface against a remote opss-server.

The remote stand-in is an ``opss-server`` in a network namespace this test
makes, joined by a veth pair; the experiment shapes the host-side veth end as
it would a Raspberry Pi's wlan0. Wondershaper is not installed here: its
syntax detection runs on small scripts on PATH that print each release's help
(and shape with tc, as the real ones do, or fail as Debian's CBQ one does on
this kernel).
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opss.lab.shaping import STATE_DIR, interface_state, root_qdisc, shape_uplink, wondershaper_syntax

HTB_HELP = """USAGE: wondershaper [-hcs] [-a <adapter>] [-d <rate>] [-u <rate>]

Limit the bandwidth of an adapter

OPTIONS:
   -h           Show this message
   -a <adapter> Set the adapter
   -d <rate>    Set maximum download rate (in Kbps) and/or
   -u <rate>    Set maximum upload rate (in Kbps)
   -c           Clear the limits from adapter
   -v           Show the current version
"""

# the new release: -a IFACE -u KBIT builds an HTB root (as wondershaper 1.4 does, less its bands)
FAKE_HTB = f"""#!/bin/sh
case "$1" in
  -h) cat <<'EOF'
{HTB_HELP}EOF
      exit 0;;
  -v) echo "Version 1.4.1"; exit 0;;
esac
while getopts "a:u:d:c" o; do case $o in a) IF=$OPTARG;; u) UP=$OPTARG;; esac; done
echo "$@" > "$(dirname "$0")/called"
tc qdisc add dev "$IF" root handle 1: htb default 20 || exit 1
tc class add dev "$IF" parent 1: classid 1:20 htb rate "${{UP}}kbit" ceil "${{UP}}kbit"
"""

# Debian's 1.1a: positional IFACE DOWN UP, a CBQ root, which Linux >= 6.3 rejects
FAKE_CBQ = """#!/bin/sh
if [ $# -eq 0 ]; then
  echo Please read the man page for the wondershaper and
  echo the file /usr/share/doc/wondershaper/README.Debian
  exit
fi
if [ $# -eq 1 ]; then tc -s qdisc ls dev $1; tc -s class ls dev $1; exit; fi
echo "$@" > "$(dirname "$0")/called"
tc qdisc del dev $1 root 2> /dev/null > /dev/null
tc qdisc del dev $1 ingress 2> /dev/null > /dev/null
tc qdisc add dev $1 root handle 1: cbq avpkt 1000 bandwidth 10mbit
tc qdisc add dev $1 handle ffff: ingress
"""


def _fake(tmp_path: Path, body: str, monkeypatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    exe = folder / "wondershaper"
    exe.write_text(body)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def test_detects_the_new_htb_syntax(tmp_path, monkeypatch):
    _fake(tmp_path, FAKE_HTB, monkeypatch)
    syntax, why = wondershaper_syntax()
    assert syntax == "htb" and "1.4.1" in why and "-a IFACE -u KBIT" in why


def test_detects_debians_positional_syntax(tmp_path, monkeypatch):
    _fake(tmp_path, FAKE_CBQ, monkeypatch)
    syntax, why = wondershaper_syntax()
    assert syntax == "cbq" and "1.1a" in why


def test_unknown_or_missing_wondershaper(tmp_path, monkeypatch):
    _fake(tmp_path, "#!/bin/sh\necho 'frobnicate 2.0'\n", monkeypatch)
    syntax, why = wondershaper_syntax()
    assert syntax is None and "neither" in why and "frobnicate" in why
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert wondershaper_syntax() == (None, "wondershaper is not installed")


# --------------------------------------------------------------------------- root: a namespace stand-in


class StandIn:
    """A network namespace with an opss-server in it ("the GPU machine"), a veth pair to it."""

    def __init__(self, tag: str, subnet: int):
        pid = os.getpid() % 100_000
        self.ns = f"opsstm{tag}{pid}"
        self.host_if = f"otm{tag}{pid}h"
        self.peer_if = f"otm{tag}{pid}p"
        # a /30 of its own per test (second octet) and per process (third): parallel runs never share one
        self.host_ip, self.server_ip = f"10.{subnet}.{pid % 250}.1", f"10.{subnet}.{pid % 250}.2"
        self.server = None

    def __enter__(self):
        def ip(*a, ns=None):
            subprocess.run([*(["ip", "netns", "exec", ns] if ns else []), "ip", *a], check=True,
                           capture_output=True)

        ip("netns", "add", self.ns)
        try:
            ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
            ip("link", "set", self.peer_if, "netns", self.ns)
            ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            ip("link", "set", self.host_if, "up")
            ip("addr", "add", f"{self.server_ip}/30", "dev", self.peer_if, ns=self.ns)
            ip("link", "set", self.peer_if, "up", ns=self.ns)
            ip("link", "set", "lo", "up", ns=self.ns)
        except BaseException:
            self.__exit__()
            raise
        return self

    def start_server(self, model: str = "resnet18") -> str:
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "opss.server", "--host", self.server_ip,
             "--port", "50051", "--models", model, "--device", "cpu", "--small", "--profile", "build",
             "--log-level", "WARNING"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 180
        for line in self.server.stdout:
            if "listening on" in line:
                return f"{self.server_ip}:50051"
            assert time.monotonic() < deadline, line
        raise AssertionError(f"the stand-in server exited: {self.server.wait()}")

    def __exit__(self, *exc):
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    def gone(self) -> bool:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        return self.ns not in names and not Path("/sys/class/net", self.host_if).exists()


def _experiment(standin, server, out, state, *extra):
    cmd = [sys.executable, "-m", "opss", "experiment", "--server", server, "--iface", standin.host_if,
           "--models", "resnet18", "--links", "4g", "--small", "--out", str(out), "--state-dir", str(state), *extra]
    # Ctrl-C as at a terminal: a shell's background job (scripts/test.sh runs these tests as
    # one) starts with SIGINT ignored, which the child would inherit
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _shaped(iface: str) -> bool:
    return root_qdisc(iface)[0] in ("htb", "cbq")


@pytest.mark.root
def test_two_machine_run_shapes_measures_verifies_and_restores(tmp_path):
    with StandIn("a", 81) as si:
        before = interface_state(si.host_if)
        server = si.start_server()
        proc = _experiment(si, server, tmp_path / "out", tmp_path / "state", "--runs", "2", "--shaper", "tc")
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        assert "two-machine mode" in out and "tc-htb" in out, out
        link = next(csv.DictReader((tmp_path / "out" / "links.csv").open()))
        nominal, measured = float(link["nominal_mbps"]), float(link["measured_mbps"])
        assert link["shaper"] == "tc-htb" and link["measured_by"] == "probe"
        assert abs(measured - nominal) / nominal < 0.15, link
        rows = list(csv.DictReader((tmp_path / "out" / "runs.csv").open()))
        from opss.lab.harness import compared_arms
        from opss.plan import STRATEGIES

        arms = compared_arms(STRATEGIES, "lossless")  # with the paper's raw co@raw, po@raw, joint@raw
        assert {r["strategy"] for r in rows} == set(arms)
        assert all(sum(r["strategy"] == s for r in rows) == 2 for s in arms)
        assert all(r["verified"] == "True" for r in rows), [r for r in rows if r["verified"] != "True"]
        assert any(r["where"] == "cooperative" for r in rows) and all(r["where"] != "fallback" for r in rows)
        after = interface_state(si.host_if)
        assert (after["root_kind"], after["gso_max_segs"]) == (before["root_kind"], before["gso_max_segs"])
        assert not list((tmp_path / "state").glob("*.json"))
    assert si.gone()


@pytest.mark.root
def test_shaped_veth_rate_with_tc_and_the_htb_wondershaper(tmp_path, monkeypatch):
    """The shaped rate measured by a TCP transfer into the stand-in, for tc and for the HTB syntax."""
    from opss.lab.shaping import ShapedInterface
    from opss.lab.testbed import _SINK

    with StandIn("r", 82) as si:
        before = interface_state(si.host_if)
        for shaper in ("tc", "wondershaper"):
            if shaper == "wondershaper":
                bin_dir = _fake(tmp_path, FAKE_HTB, monkeypatch)
            with ShapedInterface(si.host_if, 5.85e6, shaper, state_dir=tmp_path / "state") as sh:
                assert _shaped(si.host_if)
                sink = subprocess.Popen(["ip", "netns", "exec", si.ns, sys.executable, "-c", _SINK, si.server_ip,
                                         "5999", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                rate = _send(si.server_ip, 5999, 700_000)
                sink.wait(timeout=30)
            assert abs(rate - 5.85e6) / 5.85e6 < 0.15, (shaper, rate)
            assert sh.shaper == ("tc-htb" if shaper == "tc" else "wondershaper-htb")
            assert interface_state(si.host_if)["root_kind"] == before["root_kind"]
        assert (bin_dir / "called").read_text().split() == ["-a", si.host_if, "-u", "5850"]


def _send(host: str, port: int, nbytes: int) -> float:
    import socket

    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=10)
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with conn:
        t0 = time.perf_counter()
        conn.sendall(b"\0" * nbytes)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(2)
        return nbytes * 8 / (time.perf_counter() - t0)


@pytest.mark.root
def test_debians_cbq_wondershaper_fails_and_auto_falls_back_to_tc(tmp_path, monkeypatch):
    bin_dir = _fake(tmp_path, FAKE_CBQ, monkeypatch)
    with StandIn("c", 83) as si:
        shaper, note = shape_uplink(si.host_if, 1e6, "auto")
        assert (bin_dir / "called").read_text().split() == [si.host_if, "10000000", "1000"]
        assert shaper == "tc-htb" and "1.1a" in note and "CBQ" in note, note
        assert root_qdisc(si.host_if)[0] == "htb"
        assert not interface_state(si.host_if)["had_ingress"], "the failed run's ingress policer must go"
        from opss.lab.shaping import TestbedError

        with pytest.raises(TestbedError, match="use --shaper tc"):
            shape_uplink(si.host_if, 1e6, "wondershaper")


@pytest.mark.root
def test_a_non_default_root_qdisc_and_an_ingress_qdisc_are_put_back(tmp_path):
    from opss.lab.shaping import ShapedInterface

    with StandIn("q", 86) as si:
        subprocess.run(["tc", "qdisc", "replace", "dev", si.host_if, "root", "handle", "7:", "pfifo_fast"], check=True)
        subprocess.run(["tc", "qdisc", "add", "dev", si.host_if, "handle", "ffff:", "ingress"], check=True)
        before = interface_state(si.host_if)
        assert before["root_kind"] == "pfifo_fast" and before["had_ingress"]
        with ShapedInterface(si.host_if, 2e6, "tc", state_dir=tmp_path):
            assert root_qdisc(si.host_if)[0] == "htb" and interface_state(si.host_if)["gso_max_segs"] == 1
        after = interface_state(si.host_if)
        assert root_qdisc(si.host_if) == ("pfifo_fast", "7:") and after["had_ingress"]
        assert after["gso_max_segs"] == before["gso_max_segs"]


def _wait_for(proc, text: str, timeout: float = 300) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError("".join(seen))


@pytest.mark.root
def test_sigterm_and_ctrl_c_restore_and_sigkill_is_restored_by_cleanup(tmp_path):
    with StandIn("k", 84) as si:
        before = interface_state(si.host_if)["root_kind"]
        server = si.start_server()
        state = tmp_path / "state"
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            proc = _experiment(si, server, tmp_path / f"out{sig}", state, "--runs", "400", "--shaper", "tc")
            said = _wait_for(proc, "link 4g:")  # shaped, probed: the runs have started
            assert _shaped(si.host_if) and len(list(state.glob("shaped-*.json"))) == 1, (sig, said)
            proc.send_signal(sig)
            rest, _ = proc.communicate(timeout=60)
            assert proc.returncode != 0, (sig, said[-1500:], rest[-1500:])
            if sig != signal.SIGKILL:  # SIGTERM and Ctrl-C unwind through the restore
                assert "Traceback" not in rest and "interrupted" in rest, rest
                assert not _shaped(si.host_if) and root_qdisc(si.host_if)[0] == before
                assert not list(state.glob("*.json"))
            else:  # a SIGKILLed run cannot clean up: its state file says what to restore
                assert _shaped(si.host_if) and len(list(state.glob("shaped-*.json"))) == 1
        record = json.loads(next(state.glob("shaped-*.json")).read_text())
        assert record["iface"] == si.host_if and record["root_kind"] == before
        done = subprocess.run([sys.executable, "-m", "opss", "experiment", "--cleanup", "--state-dir", str(state)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and f"{si.host_if} root qdisc {before}" in done.stdout, done
        assert not _shaped(si.host_if) and root_qdisc(si.host_if)[0] == before
        assert not list(state.glob("*.json"))
        again = subprocess.run([sys.executable, "-m", "opss", "experiment", "--cleanup", "--state-dir", str(state)],
                               capture_output=True, text=True, timeout=60)
        assert "nothing to clean up" in again.stdout
    assert si.gone()


@pytest.mark.root
def test_the_next_run_restores_what_a_killed_one_left(tmp_path):
    """A stale state file for the interface is restored before the next run shapes it."""
    from opss.lab.shaping import ShapedInterface, record_state

    with StandIn("n", 85) as si:
        before = interface_state(si.host_if)
        shape_uplink(si.host_if, 1e6, "tc")  # what a SIGKILLed run left behind ...
        stale = record_state(tmp_path, f"shaped-{si.host_if}", before)
        stale.write_text(json.dumps(dict(json.loads(stale.read_text()), pid=2 ** 22 + 1, start="1")))  # ... dead
        with ShapedInterface(si.host_if, 2e6, "tc", state_dir=tmp_path) as sh:
            assert any(si.host_if in line and "restored after pid" in line for line in sh.restored), sh.restored
            assert len(list(tmp_path.glob("*.json"))) == 1
            with pytest.raises(Exception, match="being shaped by another opss experiment"):
                ShapedInterface(si.host_if, 2e6, "tc", state_dir=tmp_path).__enter__()
        assert root_qdisc(si.host_if)[0] == before["root_kind"] and not list(tmp_path.glob("*.json"))


@pytest.mark.root
def test_no_server_at_the_address_is_one_line_and_the_interface_is_restored(tmp_path):
    with StandIn("u", 87) as si:
        before = interface_state(si.host_if)["root_kind"]
        proc = _experiment(si, f"{si.server_ip}:50051", tmp_path / "out", tmp_path / "state", "--runs", "1",
                           "--shaper", "tc")
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 2, out
        errors = [ln for ln in out.splitlines() if "error" in ln]  # the progress bar shares the stream
        assert len(errors) == 1 and errors[0].startswith("opss experiment: error:"), out
        assert f"no opss-server serving resnet18 answers at {si.server_ip}:50051" in errors[0], out
        assert "Traceback" not in out and root_qdisc(si.host_if)[0] == before
        assert not list((tmp_path / "state").glob("*.json")) and not (tmp_path / "out" / "runs.csv").exists()


def test_refuses_a_missing_interface_and_non_root_in_one_line(tmp_path):
    def run(*args, root=True):
        pre = "" if root else "os.geteuid = lambda: 1000; "
        code = (f"import os, sys; {pre}from opss.cli import main; "
                f"sys.exit(main(['experiment', '--out', {str(tmp_path)!r}, *{list(args)!r}]))")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    proc = run("--server", "10.0.0.2:50051", "--iface", "opssnosuch0", root=os.geteuid() == 0)
    lines = proc.stderr.strip().splitlines()
    if os.geteuid() == 0:
        assert proc.returncode == 2 and len(lines) == 1 and "'opssnosuch0' does not exist" in lines[0], proc.stderr
    proc = run("--server", "10.0.0.2:50051", "--iface", "lo", root=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "needs root" in lines[0], proc.stderr
    proc = run("--server", "10.0.0.2:50051")
    assert proc.returncode == 2 and "--server and --iface go together" in proc.stderr
    proc = run("--server", "nohost")
    assert proc.returncode == 2 and "HOST:PORT" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert STATE_DIR == Path("/run/opss")
