"""A shaped-link testbed: a server network namespace, a veth pair, a shaped uplink.

The seed paper shapes a real Wi-Fi link with ``wondershaper``. Here the "link"
is a veth pair between the root namespace (the client side) and a network
namespace made for the server; the client's egress on its veth end is shaped,
so only the uplink (client → server) is slowed, as on a 3G/4G/Wi-Fi uplink.

Shaping (:mod:`opss.lab.shaping`): ``wondershaper`` is tried first (installed
with apt when missing and apt is there), in whichever syntax it speaks.
Debian's wondershaper 1.1a builds a CBQ tree, and CBQ was removed from Linux
in 6.3, so on current kernels it fails; the testbed then shapes with ``tc``
directly (an HTB class at the rate, which is what wondershaper's newer
releases use) and :attr:`Testbed.shaper` says which one shaped the link.

Everything made is recorded and removed on exit, also on errors and Ctrl-C:
processes started in the namespace, the qdisc, the veth pair, the namespace,
and the CPU cgroup of :class:`CpuQuota`. The namespace and veth are also
recorded in a state file (:func:`opss.lab.shaping.record_state`) that
``opss experiment --cleanup`` uses after a SIGKILL. ``leftovers()`` lists anything whose
name starts with the testbed prefix, for tests that prove the cleanup.

Root is required; :func:`require_root` refuses with one clear line and points
at the application-level throttle of ``opss demo`` instead. Traffic only ever
goes to the namespace this module created.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from opss.lab.shaping import (STATE_DIR, TestbedError, _raise_keyboard_interrupt, _run, record_state,
                              require_root, shape_uplink)

PREFIX = "opss"
_CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
_CGROUP_V2 = Path("/sys/fs/cgroup")


def leftovers(prefix: str = PREFIX) -> list[str]:
    """Namespaces, links and CPU cgroups whose names start with ``prefix``."""
    found: list[str] = []
    ns = _run(["ip", "netns", "list"], check=False).stdout.split()
    found += [f"netns {n}" for n in ns if n.startswith(prefix)]
    for line in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(prefix):
            found.append(f"link {name}")
    for root in (_CGROUP_V1_CPU, _CGROUP_V2):
        if root.is_dir():
            found += [f"cgroup {p}" for p in root.glob(f"{prefix}-*") if p.is_dir()]
    return found


def _apt_install_wondershaper() -> bool:
    if shutil.which("wondershaper"):
        return True
    if not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "-qq", "wondershaper"],
                ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "wondershaper"]):
        subprocess.run(cmd, capture_output=True, env=env)
        if shutil.which("wondershaper"):
            return True
    return False


@dataclass(frozen=True)
class TestbedConfig:
    """Where the link lives. The /30 is used only between our two veth ends."""

    __test__ = False

    rate_bps: float
    subnet: str = "10.77.0.0/30"
    shaper: str = "auto"
    prefix: str = PREFIX
    #: where the namespace and veth are recorded, so ``opss experiment --cleanup`` removes them after a SIGKILL
    state_dir: Path = STATE_DIR

    def addresses(self) -> tuple[str, str]:
        net = ipaddress.ip_network(self.subnet, strict=True)
        hosts = list(net.hosts())
        if len(hosts) < 2:
            raise TestbedError(f"subnet {self.subnet} has fewer than 2 host addresses")
        return str(hosts[0]), str(hosts[1])


class Testbed:
    """Context manager: a server namespace joined to the client by a shaped veth pair."""

    __test__ = False

    def __init__(self, config: TestbedConfig):
        self.config = config
        tag = f"{os.getpid() % 10_000_000}"
        self.ns = f"{config.prefix}-{tag}-srv"
        self.client_if = f"{config.prefix}{tag}c"
        self.server_if = f"{config.prefix}{tag}s"
        self.client_ip, self.server_ip = config.addresses()
        self.shaper = ""
        self.shaper_note = ""
        self._procs: list[subprocess.Popen] = []
        self._made: list[str] = []
        self._old_sigterm = None
        self._state: Path | None = None

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> "Testbed":
        require_root()
        self._old_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _setup(self) -> None:
        prefix = self.config.subnet.split("/")[1]
        self._state = record_state(self.config.state_dir, f"testbed-{self.ns}",
                                   {"netns": [self.ns], "links": [self.client_if]})
        _run(["ip", "netns", "add", self.ns])
        self._made.append("netns")
        _run(["ip", "link", "add", self.client_if, "type", "veth", "peer", "name", self.server_if])
        self._made.append("veth")
        _run(["ip", "link", "set", self.server_if, "netns", self.ns])
        _run(["ip", "addr", "add", f"{self.client_ip}/{prefix}", "dev", self.client_if])
        # one segment per packet, as on a real link: with GSO the veth hands tc 64 kB at once and
        # HTB lets that burst through, so small tensors would appear to arrive instantly
        _run(["ip", "link", "set", "dev", self.client_if, "gso_max_segs", "1"], check=False)
        _run(["ip", "link", "set", self.client_if, "up"])
        _run(["ip", "addr", "add", f"{self.server_ip}/{prefix}", "dev", self.server_if], ns=self.ns)
        _run(["ip", "link", "set", self.server_if, "up"], ns=self.ns)
        _run(["ip", "link", "set", "lo", "up"], ns=self.ns)
        if self.config.shaper != "tc":
            _apt_install_wondershaper()
        self.shaper, self.shaper_note = shape_uplink(self.client_if, self.config.rate_bps, self.config.shaper)

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        if "veth" in self._made:
            _run(["tc", "qdisc", "del", "dev", self.client_if, "root"], check=False)
            _run(["tc", "qdisc", "del", "dev", self.client_if, "ingress"], check=False)
            _run(["ip", "link", "del", self.client_if], check=False)
        if "netns" in self._made:
            _run(["ip", "netns", "del", self.ns], check=False)
        self._made.clear()
        if self._state is not None:
            self._state.unlink(missing_ok=True)
            self._state = None
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # -- use -----------------------------------------------------------------------
    def set_rate(self, rate_bps: float) -> None:
        """Re-shape the uplink to ``rate_bps`` bits/s (same shaper as before when it still works)."""
        want = "tc" if self.shaper == "tc-htb" else "wondershaper"
        self.shaper, _ = shape_uplink(self.client_if, rate_bps, want)

    def spawn_server(self, cmd: list[str], **popen) -> subprocess.Popen:
        """Start ``cmd`` inside the server namespace; it is stopped on close()."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], **popen)
        self._procs.append(proc)
        return proc

    def measure_uplink(self, nbytes: int = 1_000_000, repeats: int = 3, port: int = 5999) -> float:
        """Median goodput client → server in bits/s over ``repeats`` TCP transfers."""
        sink = self.spawn_server([sys.executable, "-c", _SINK, self.server_ip, str(port), str(repeats)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        rates = []
        try:
            for _ in range(repeats):
                conn = _connect(self.server_ip, port, sink)
                with conn:
                    payload = b"\0" * nbytes
                    t0 = time.perf_counter()
                    conn.sendall(payload)
                    conn.shutdown(socket.SHUT_WR)
                    conn.recv(2)  # the sink acks once it has read everything
                    rates.append(nbytes * 8 / (time.perf_counter() - t0))
        finally:
            sink.wait(timeout=30)
        rates.sort()
        return rates[len(rates) // 2]


_SINK = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
for _ in range(int(sys.argv[3])):
    c, _ = s.accept()
    while c.recv(1 << 16):
        pass
    c.sendall(b"ok"); c.close()
"""


def _connect(host: str, port: int, proc: subprocess.Popen, timeout: float = 10.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((host, port), timeout=timeout)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise TestbedError(f"could not reach {host}:{port} in the server namespace: {err.strip()}")
            time.sleep(0.05)


class CpuQuota:
    """A CPU cgroup limiting its processes to ``fraction`` of one core.

    Models a weak client on a shared machine: ``cpu.cfs_quota_us`` (cgroup v1)
    or ``cpu.max`` (v2) over ``period_us`` (100 ms by default; a shorter period
    spreads the throttling more evenly over a short inference). ``add(pid)`` moves a process in;
    the group is removed on close (its processes are moved back to the root).
    """

    def __init__(self, fraction: float, prefix: str = PREFIX, period_us: int = 100_000,
                 state_dir: Path = STATE_DIR):
        if not (0 < fraction <= os.cpu_count()):
            raise TestbedError(f"client CPU share must be in (0, {os.cpu_count()}], got {fraction}")
        if not 1000 <= period_us <= 1_000_000:
            raise TestbedError(f"CFS period must be 1000..1000000 us, got {period_us}")
        if fraction * period_us < 1000:  # the kernel's least quota is 1 ms
            raise TestbedError(f"a {fraction:g}-core quota over a {period_us} us period is "
                               f"{fraction * period_us:.0f} us, below the kernel's 1000 us minimum: "
                               f"use --cpu-period-us {int(-(-1000 // fraction))} or more")
        self.fraction = fraction
        self.period_us = period_us
        self.name = f"{prefix}-{os.getpid()}-client"
        self.path: Path | None = None
        self.state_dir = state_dir
        self._state: Path | None = None

    def __enter__(self) -> "CpuQuota":
        require_root("a client CPU quota")
        quota = int(self.fraction * self.period_us)
        if (_CGROUP_V1_CPU / "cpu.cfs_quota_us").exists():
            self.path = _CGROUP_V1_CPU / self.name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
            self._root_procs = _CGROUP_V1_CPU / "cgroup.procs"
        elif (_CGROUP_V2 / "cgroup.controllers").exists():
            self.path = _CGROUP_V2 / self.name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{quota} {self.period_us}")
            self._root_procs = _CGROUP_V2 / "cgroup.procs"
        else:
            raise TestbedError("no CPU cgroup controller found (need cgroup v1 cpu or v2 cpu.max)")
        self._state = record_state(self.state_dir, f"cgroup-{self.name}", {"cgroups": [str(self.path)]})
        return self

    def add(self, pid: int) -> None:
        assert self.path is not None, "use CpuQuota as a context manager"
        (self.path / "cgroup.procs").write_text(str(pid))

    def __exit__(self, *exc) -> None:
        if self.path is None or not self.path.exists():
            return
        procs = (self.path / "cgroup.procs").read_text().split()
        for pid in procs:
            try:
                self._root_procs.write_text(pid)
            except OSError:
                pass  # the process exited meanwhile
        for _ in range(50):
            try:
                self.path.rmdir()
                break
            except OSError:
                time.sleep(0.02)
        self.path = None
        if self._state is not None:
            self._state.unlink(missing_ok=True)
            self._state = None
