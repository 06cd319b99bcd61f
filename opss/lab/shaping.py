"""Shaping an interface's egress, and putting the interface back as it was.

Two shapers:

``wondershaper``
    in whichever syntax the installed one speaks, found by
    :func:`wondershaper_syntax`: the current releases (1.2 and later, HTB
    since 1.3) take ``wondershaper -a IFACE -u KBIT [-d KBIT]`` and print a
    usage naming ``-a <adapter>`` for ``-h``; Debian's 1.1a takes positional
    ``wondershaper IFACE DOWNLINK UPLINK`` and builds CBQ queues, which Linux
    removed in 6.3, so it fails on current kernels (Raspberry Pi OS included).
    Only the uplink is shaped (the new syntax without ``-d``; the old with an
    unlimited downlink).
``tc``
    an HTB root with one class at the rate (what wondershaper's HTB releases
    build, less their priority bands).

``auto`` tries wondershaper and falls back to tc when it is missing, speaks
neither syntax, fails, or leaves no shaping qdisc behind; the shaper that
shaped the link is reported (``wondershaper-htb``, ``wondershaper-cbq``,
``tc-htb``) with the reason of any fallback.

:class:`ShapedInterface` saves the interface's state first (its root qdisc
kind and handle, whether it had an ingress qdisc, the full ``tc qdisc show``
text, ``gso_max_segs``) to a
state file under ``/run/opss`` naming this process, then shapes; on exit —
normal, an error, SIGTERM, SIGHUP or Ctrl-C — it deletes what it added,
restores the root qdisc kind and the GSO setting, and removes the file. A
SIGKILLed process cannot clean up: its state file stays, and
:func:`restore_stale` (run at the start of the next run, and by
``opss experiment --cleanup``) restores every interface whose recorded owner
is gone. The namespace testbed records its namespace and veth the same way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from opss.errors import OpssError

__all__ = ["STATE_DIR", "ShapedInterface", "TestbedError", "interface_state", "record_state", "require_interface",
           "require_root", "restore_stale", "shape_uplink", "wondershaper_syntax"]

STATE_DIR = Path("/run/opss")


class TestbedError(OpssError):
    """The testbed could not be set up (not root, a command failed, ...)."""

    __test__ = False  # not a pytest test class, despite the name


def require_root(what: str = "the shaped-link testbed") -> None:
    if os.geteuid() != 0:
        raise TestbedError(
            f"{what} needs root (network namespaces, tc, cgroups); "
            "without root use `opss demo --link 4g`, which throttles the upload in the application"
        )


def _run(cmd: list[str], check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise TestbedError(f"`{' '.join(cmd)}` failed: {msg[-1] if msg else 'exit ' + str(proc.returncode)}")
    return proc


SHAPERS = ("auto", "wondershaper", "tc")
#: root qdiscs that ``tc qdisc replace dev IFACE root KIND`` can rebuild without parameters
_REBUILDABLE = ("fq_codel", "pfifo_fast", "fq", "sfq", "cake", "pfifo", "bfifo", "mq", "noqueue")


# --------------------------------------------------------------------------- wondershaper


def wondershaper_syntax(exe: str = "wondershaper") -> tuple[str | None, str]:
    """``(syntax, why)``: ``"htb"`` (``-a IFACE -u KBIT``), ``"cbq"`` (Debian 1.1a's positional
    ``IFACE DOWN UP``) or ``None`` (not installed, or neither) with the reason."""
    path = shutil.which(exe)
    if not path:
        return None, "wondershaper is not installed"
    text = _output([path, "-h"])
    if re.search(r"-a\s*<\s*adapter\s*>", text) or ("-a" in text and "-u" in text and "adapter" in text):
        version = re.search(r"(\d+\.\d+(?:\.\d+)?)", _output([path, "-v"]))
        return "htb", f"wondershaper {version.group(1) if version else '>= 1.2'} (-a IFACE -u KBIT)"
    bare = _output([path])
    if "README.Debian" in bare or "man page for the wondershaper" in bare:
        return "cbq", "Debian's wondershaper 1.1a (IFACE DOWN UP, CBQ)"
    first = (text.strip().splitlines() or ["no output"])[0]
    return None, f"{path} speaks neither wondershaper syntax (-h said: {first[:80]})"


def _output(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return proc.stdout + proc.stderr


def root_qdisc(iface: str, ns: str | None = None) -> tuple[str, str]:
    """``(kind, handle)`` of ``iface``'s root qdisc (``("", "")`` when there is none)."""
    for q in _qdiscs(iface, ns):
        if q.get("root"):
            return q.get("kind", ""), q.get("handle", "")
    return "", ""


def _shaping(iface: str) -> bool:
    return root_qdisc(iface)[0] in ("htb", "cbq", "tbf", "hfsc")


def _has_ingress(iface: str) -> bool:
    return any(q.get("kind") == "ingress" for q in _qdiscs(iface))


def _qdiscs(iface: str, ns: str | None = None) -> list[dict]:
    try:
        return json.loads(_run(["tc", "-j", "qdisc", "show", "dev", iface], check=False, ns=ns).stdout or "[]")
    except json.JSONDecodeError:
        return []


def shape_uplink(iface: str, rate_bps: float, shaper: str = "auto") -> tuple[str, str]:
    """Limit ``iface``'s egress to ``rate_bps`` bits/s; ``(shaper used, note)``.

    The note says why ``auto`` fell back to tc ('' otherwise). A wondershaper
    run that fails or leaves no shaping qdisc is undone before tc shapes."""
    if shaper not in SHAPERS:
        raise TestbedError(f"unknown shaper {shaper!r}: expected auto, wondershaper or tc")
    kbit = max(1, int(round(rate_bps / 1000)))
    note = ""
    if shaper in ("auto", "wondershaper"):
        syntax, why = wondershaper_syntax()
        had_ingress = _has_ingress(iface)
        if syntax is not None:
            cmd = (["wondershaper", "-a", iface, "-u", str(kbit)] if syntax == "htb"
                   else ["wondershaper", iface, "10000000", str(kbit)])
            proc = _run(cmd, check=False)
            if proc.returncode == 0 and _shaping(iface):
                return f"wondershaper-{syntax}", why
            last = ((proc.stderr or proc.stdout).strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            why = f"{why} failed ({last[:100]})" + (": Linux >= 6.3 has no CBQ" if syntax == "cbq" else "")
            _run(["tc", "qdisc", "del", "dev", iface, "root"], check=False)
            if not had_ingress:  # Debian's adds an ingress policer for the downlink
                _run(["tc", "qdisc", "del", "dev", iface, "ingress"], check=False)
        if shaper == "wondershaper":
            raise TestbedError(f"--shaper wondershaper: {why}; use --shaper tc")
        note = f"{why}; shaped with tc"
    rate = ["rate", f"{kbit}kbit", "ceil", f"{kbit}kbit"]
    if root_qdisc(iface) == ("htb", "1:") and shaper == "tc" and _run(
            ["tc", "class", "change", "dev", iface, "parent", "1:", "classid", "1:10", "htb", *rate],
            check=False).returncode == 0:
        return "tc-htb", note  # ours already: the rate changed in place, never unshaped in between
    _run(["tc", "qdisc", "del", "dev", iface, "root"], check=False)
    _run(["tc", "qdisc", "replace", "dev", iface, "root", "handle", "1:", "htb", "default", "10"])
    _run(["tc", "class", "add", "dev", iface, "parent", "1:", "classid", "1:10", "htb", *rate])
    return "tc-htb", note


# --------------------------------------------------------------------------- saved state


def require_interface(iface: str) -> None:
    """One line when ``iface`` is not a network interface of this machine (namespace)."""
    if not iface or "/" in iface or not Path("/sys/class/net", iface).exists():
        have = sorted(p.name for p in Path("/sys/class/net").iterdir()) if Path("/sys/class/net").is_dir() else []
        raise TestbedError(f"interface {iface!r} does not exist (this machine has: {', '.join(have) or 'none'})")


def _gso_max_segs(iface: str) -> int | None:
    out = _run(["ip", "-d", "-j", "link", "show", "dev", iface], check=False).stdout
    try:
        return int(json.loads(out)[0]["gso_max_segs"])
    except (json.JSONDecodeError, IndexError, KeyError, TypeError, ValueError):
        return None


def interface_state(iface: str) -> dict:
    """What :class:`ShapedInterface` changes on ``iface``, as it is now."""
    kind, handle = root_qdisc(iface)
    return {"iface": iface, "root_kind": kind, "root_handle": handle, "had_ingress": _has_ingress(iface),
            "gso_max_segs": _gso_max_segs(iface),
            "qdisc_show": _run(["tc", "qdisc", "show", "dev", iface], check=False).stdout}


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' if it is gone): pid plus this is unique."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_alive(state: dict) -> bool:
    return bool(state.get("start")) and _start_time(int(state.get("pid", 0))) == state["start"]


def record_state(state_dir: Path, name: str, state: dict) -> Path:
    """Write ``state`` (plus this process's pid and start time) to ``state_dir/name.json``; its path."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(state, pid=os.getpid(), start=_start_time(os.getpid())), indent=1))
    tmp.replace(path)
    return path


def _restore(state: dict) -> str:
    """Undo what the state file's owner made; one line saying what was restored."""
    done = []
    if state.get("iface"):
        iface = state["iface"]
        if not Path("/sys/class/net", iface).exists():
            done.append(f"{iface} is gone")
        else:
            _run(["tc", "qdisc", "del", "dev", iface, "root"], check=False)
            if not state.get("had_ingress", False):
                _run(["tc", "qdisc", "del", "dev", iface, "ingress"], check=False)
            kind, handle = state.get("root_kind", ""), state.get("root_handle", "")
            now = root_qdisc(iface)[0]
            if kind and now != kind and kind in _REBUILDABLE:
                cmd = ["tc", "qdisc", "replace", "dev", iface, "root"]
                cmd += ["handle", handle] if handle and handle != "0:" else []
                _run([*cmd, kind], check=False)
                now = root_qdisc(iface)[0]
            done.append(f"{iface} root qdisc {now or 'none'}" + (f" (was {kind})" if kind and now != kind else ""))
            if state.get("gso_max_segs") is not None and _gso_max_segs(iface) != state["gso_max_segs"]:
                _run(["ip", "link", "set", "dev", iface, "gso_max_segs", str(state["gso_max_segs"])], check=False)
    for link in state.get("links", ()):
        if Path("/sys/class/net", link).exists():
            _run(["ip", "link", "del", link], check=False)
            done.append(f"link {link} deleted")
    for ns in state.get("netns", ()):
        if ns in _run(["ip", "netns", "list"], check=False).stdout.split():
            for pid in _run(["ip", "netns", "pids", ns], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            _run(["ip", "netns", "del", ns], check=False)
            done.append(f"namespace {ns} deleted")
    for group in map(Path, state.get("cgroups", ())):
        if group.is_dir():
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            for _ in range(50):
                try:
                    group.rmdir()
                    done.append(f"cgroup {group.name} removed")
                    break
                except OSError:
                    time.sleep(0.02)
    return ", ".join(done) or "nothing left to restore"


def restore_stale(state_dir: Path = STATE_DIR, only: Callable[[dict], bool] | None = None) -> list[str]:
    """Restore everything recorded by runs that are gone (SIGKILLed, the machine's power cut...).

    Returns one line per state file restored; the files of live owners are
    left alone. ``only`` picks which states to consider."""
    state_dir = Path(state_dir)
    said = []
    for path in sorted(state_dir.glob("*.json")) if state_dir.is_dir() else []:
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if _owner_alive(state) or (only is not None and not only(state)):
            continue
        said.append(f"restored after pid {state.get('pid')} ({path.name}): {_restore(state)}")
        path.unlink(missing_ok=True)
    return said


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class ShapedInterface:
    """Context manager: ``iface``'s egress shaped to a rate, its previous state restored on exit.

    SIGTERM and SIGHUP raise KeyboardInterrupt inside the block, so they
    unwind through ``__exit__`` like Ctrl-C."""

    def __init__(self, iface: str, rate_bps: float, shaper: str = "auto", state_dir: Path = STATE_DIR):
        if shaper not in SHAPERS:
            raise TestbedError(f"unknown shaper {shaper!r}: expected auto, wondershaper or tc")
        self.iface, self.rate_bps, self.requested, self.state_dir = iface, rate_bps, shaper, Path(state_dir)
        self.shaper = ""
        self.note = ""
        self.restored: list[str] = []
        self._path: Path | None = None
        self._old: dict = {}

    def __enter__(self) -> ShapedInterface:
        require_root("opss experiment --server (shaping a real interface)")
        require_interface(self.iface)
        self.restored = restore_stale(self.state_dir, only=lambda s: s.get("iface") == self.iface)
        busy = [s for s in self._states() if s.get("iface") == self.iface and _owner_alive(s)]
        if busy:
            raise TestbedError(f"{self.iface} is being shaped by another opss experiment (pid {busy[0]['pid']})")
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, _raise_keyboard_interrupt)
        try:
            self._path = record_state(self.state_dir, f"shaped-{self.iface}", interface_state(self.iface))
            # one segment per packet: with GSO the NIC hands HTB 64 kB bursts that pass at once
            _run(["ip", "link", "set", "dev", self.iface, "gso_max_segs", "1"], check=False)
            self.set_rate(self.rate_bps)
        except BaseException:
            self.close()
            raise
        return self

    def _states(self) -> list[dict]:
        out = []
        for path in self.state_dir.glob("*.json") if self.state_dir.is_dir() else []:
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError):
                pass
        return out

    def set_rate(self, rate_bps: float) -> None:
        """Re-shape to ``rate_bps`` bits/s, with the shaper that worked before (or the one asked for)."""
        if self.shaper and rate_bps == self.rate_bps:
            return
        want = {"tc-htb": "tc", "": self.requested}.get(self.shaper, "wondershaper")
        self.shaper, note = shape_uplink(self.iface, rate_bps, want)
        self.note = self.note or note
        self.rate_bps = rate_bps

    def close(self) -> None:
        if self._path is not None:
            state = json.loads(self._path.read_text())
            self.restored.append(_restore(state))
            self._path.unlink(missing_ok=True)
            self._path = None
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def __exit__(self, *exc) -> None:
        self.close()
