"""The shaped-link testbed: refuses without root; as root it shapes and cleans up."""

import os

import pytest

from opss.lab.testbed import CpuQuota, Testbed, TestbedConfig, TestbedError, leftovers


def test_refuses_without_root_with_one_line(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(TestbedError) as err:
        Testbed(TestbedConfig(rate_bps=5.85e6)).__enter__()
    msg = str(err.value)
    assert "needs root" in msg and "opss demo" in msg and "\n" not in msg


def test_config_rejects_tiny_subnet():
    with pytest.raises(TestbedError):
        TestbedConfig(rate_bps=1e6, subnet="10.77.0.0/32").addresses()


@pytest.mark.root
def test_shaped_link_rate_and_cleanup():
    nominal = 5.85e6
    prefix = f"opsst{os.getpid() % 1000}"
    with Testbed(TestbedConfig(rate_bps=nominal, subnet="10.77.1.0/30", prefix=prefix)) as tb:
        assert tb.shaper in ("wondershaper-htb", "wondershaper-cbq", "tc-htb")
        assert leftovers(prefix), "the namespace and veth should exist while the testbed is open"
        measured = tb.measure_uplink(nbytes=700_000, repeats=3)
    # TCP/IP headers take ~4 % of the shaped rate; 15 % is the tolerance.
    assert abs(measured - nominal) / nominal < 0.15, (measured, nominal)
    assert leftovers(prefix) == []


@pytest.mark.root
def test_cleanup_after_error_inside_the_testbed():
    prefix = f"opsse{os.getpid() % 1000}"
    with pytest.raises(RuntimeError):
        with Testbed(TestbedConfig(rate_bps=1e6, subnet="10.77.2.0/30", prefix=prefix)) as tb:
            tb.spawn_server(["sleep", "60"])
            raise RuntimeError("boom")
    assert leftovers(prefix) == []


@pytest.mark.root
def test_cpu_quota_limits_a_busy_process():
    import subprocess
    import sys
    import time

    busy = "import sys, time\nsys.stdin.read()\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
    with CpuQuota(0.25, prefix=f"opssq{os.getpid() % 1000}") as quota:
        proc = subprocess.Popen([sys.executable, "-c", busy],
                                stdin=subprocess.PIPE)
        quota.add(proc.pid)
        t0 = time.perf_counter()
        proc.communicate(b"")
        wall = time.perf_counter() - t0
    # 0.3 s of CPU at a 25 % quota needs >= ~1.2 s of wall time (minus one period of slack).
    assert wall > 0.9, wall
    assert not [x for x in leftovers(f"opssq{os.getpid() % 1000}") if x.startswith("cgroup")]
