"""Benchmark many clients against opss-server: dynamic batching off/on, 1 vs 3 replicas.

Closed-loop clients (threads of this process, each with its own channel built by
``opss.client.grpc_transport.GrpcTransport``, so round robin and health checking are the
client's own) replay the pipelined client's request stream of one partition (the cut tensors
the client part produces, pre-computed once) for ``--seconds`` per point, after one untimed
call each. Replicas are ``opss-server`` processes on loopback (``--threads`` torch threads
each), reached with an ``ipv4:`` target listing them all. Per configuration and number of
concurrent clients: requests/s, p50 and p99 latency (nearest rank) with bootstrap 95 %
intervals, mean batch size, errors. Every reply is checked against the full model's output.

Then ``kill``: 3 replicas, ``--kill-clients`` clients, one replica SIGKILLed mid-run: requests
lost (errors) must be 0, every reply still correct (gRPC replays the calls the dead replica
dropped on the others; there is no local fallback here to hide a loss).

Targets (this CPU): batching >= 1.3x throughput at 16 clients for cloud-only resnet18 with p99 no
worse; 3 replicas >= 1.8x one replica where the cores allow (each replica needs its own core;
this script says how many cores it had).

    .venv/bin/python scripts/bench_scale.py [--model resnet18] [--cut cloud|mid]
        [--clients 1,2,4,8,16] [--seconds 4] [--configs 1x-off,1x-on,3x-off,3x-on]
        [--max-batch 8] [--max-queue-delay MS] [--device cpu|cuda] [--out docs/results]

Writes bench_scale.csv, bench_scale.md and bench_scale.png into --out.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from _bench import markdown, write_csv

from opss import models
from opss.client.grpc_transport import GrpcTransport
from opss.graph import capture
from opss.split import split
from opss.stats import bootstrap_ci, median, percentile
from opss.wire import infer_requests, tensor_from_proto

ROOT = Path(__file__).resolve().parents[1]


def _p99(xs) -> float:
    return percentile(xs, 99)


class Replicas:
    """``n`` opss-server processes on loopback; :attr:`target` names them all."""

    def __init__(self, n: int, model: str, *, max_batch: int, delay_ms: float, threads: int,
                 device: str, small: bool, max_calls: int) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        cmd = [sys.executable, "-m", "opss.server", "--host", "127.0.0.1", "--port", "0",
               "--device", device, "--models", model, "--profile", "off", "--log-level", "WARNING",
               "--max-inflight", str(max_calls), "--max-inflight-per-peer", str(max_calls),
               "--max-workers", str(2 * max_calls + 16), "--admission-wait", "30",
               "--max-batch", str(max_batch), "--max-queue-delay", str(delay_ms), "--grace", "0"]
        if small:
            cmd.append("--small")
        self.procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, env=env, cwd=ROOT) for _ in range(n)]
        self.ports = [self._port(p) for p in self.procs]
        self.target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @staticmethod
    def _port(proc: subprocess.Popen, timeout: float = 120.0) -> int:
        deadline, seen = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line.strip())
            if "listening on" in line:
                threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain
                return int(line.strip().rpartition(":")[2])
        raise RuntimeError(f"opss-server did not start: {' | '.join(seen[-3:])}")

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


class Workload:
    """The request stream of one partition: the client part's cut tensors and the full output."""

    def __init__(self, model: str, cut: str, small: bool, seed: int) -> None:
        net = models.get_model(model, seed=0)
        shape = models.get_spec(model).shape(small)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        graph = capture(net, x, name=model)
        members = {graph.input_id} if cut == "cloud" else set(graph.ids[: len(graph.ids) // 2])
        s = split(graph, members)
        with torch.no_grad():
            out = s.client.run(x)
            self.reference = net(x)
        self.model, self.fingerprint = model, models.fingerprint(net)
        self.client_set = sorted(s.client_set)
        self.tensors = [(c, out[c]) for c in s.cut]
        self.bytes = sum(t.numel() * t.element_size() for _, t in self.tensors)

    def requests(self):
        return infer_requests(self.model, self.fingerprint, self.tensors, client_set=self.client_set)

    def check(self, reply) -> None:
        torch.testing.assert_close(tensor_from_proto(reply.output), self.reference, rtol=1e-4,
                                   atol=1e-4)


def run_clients(target: str, work: Workload, clients: int, seconds: float,
                during=None) -> dict:
    """``clients`` closed-loop clients for ``seconds``; ``during(elapsed)`` is called meanwhile."""
    lat: list[float] = []
    batch: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    start, stop = threading.Barrier(clients + 1), threading.Event()

    def client() -> None:
        t = GrpcTransport(target)
        try:
            t.stub.Infer(work.requests(), timeout=60)  # untimed: connections, caches
            start.wait()
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    reply = t.stub.Infer(work.requests(), timeout=60)
                    work.check(reply)
                except Exception as e:  # counted: a lost request
                    with lock:
                        errors.append(f"{type(e).__name__}: {str(e)[:160]}")
                    continue
                with lock:
                    lat.append(time.perf_counter() - t0)
                    batch.append(reply.timings.batch_size or 1)
        finally:
            t.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        if during is not None:
            during(elapsed)
        time.sleep(0.02)
    stop.set()
    for th in threads:
        th.join(90)
    wall = time.perf_counter() - t0
    lo50, hi50 = bootstrap_ci(lat, median)
    lo99, hi99 = bootstrap_ci(lat, _p99)
    return {"clients": clients, "requests": len(lat), "errors": len(errors),
            "req_per_s": len(lat) / wall, "p50_ms": median(lat) * 1e3,
            "p50_ci_ms": f"[{lo50 * 1e3:.1f}, {hi50 * 1e3:.1f}]", "p99_ms": _p99(lat) * 1e3,
            "p99_ci_ms": f"[{lo99 * 1e3:.1f}, {hi99 * 1e3:.1f}]",
            "mean_batch": sum(batch) / len(batch) if batch else float("nan"),
            "first_error": errors[0] if errors else ""}


def bench(args, work: Workload) -> list[dict]:
    rows = []
    for config in args.configs.split(","):
        n, _, mode = config.partition("x-")
        on = mode == "on"
        reps = Replicas(int(n), args.model, max_batch=args.max_batch if on else 1,
                        delay_ms=args.max_queue_delay if on else 0, threads=args.threads,
                        device=args.device, small=args.small, max_calls=max(args.clients_list) + 4)
        try:
            for clients in args.clients_list:
                row = {"config": config, "replicas": int(n), "batching": "on" if on else "off",
                       **run_clients(reps.target, work, clients, args.seconds)}
                rows.append(row)
                print(f"{config:>7} clients {clients:>2}: {row['req_per_s']:7.2f} req/s, p50 "
                      f"{row['p50_ms']:7.1f} ms, p99 {row['p99_ms']:7.1f} ms, batch "
                      f"{row['mean_batch']:.2f}, errors {row['errors']}", flush=True)
        finally:
            reps.close()
    return rows


def bench_kill(args, work: Workload) -> dict:
    reps = Replicas(3, args.model, max_batch=1, delay_ms=0, threads=args.threads,
                    device=args.device, small=args.small, max_calls=args.kill_clients + 4)
    killed: list[float] = []

    def during(elapsed: float) -> None:
        if not killed and elapsed >= args.seconds / 2:
            reps.kill(1)
            killed.append(elapsed)

    try:
        row = run_clients(reps.target, work, args.kill_clients, args.seconds, during)
    finally:
        reps.close()
    row = {"config": "3x-off, one SIGKILLed", "killed_at_s": killed[0] if killed else None, **row}
    print(f"kill: {row['requests']} requests, {row['errors']} lost, replica killed at "
          f"{row['killed_at_s']:.1f} s of {args.seconds:g} s", flush=True)
    return row


def _ratios(rows: list[dict], clients: int) -> list[str]:
    """Throughput and p99 of each compared pair at ``clients``; a configuration given several
    times (alternating runs on a shared machine) is paired run by run."""
    at: dict[str, list[dict]] = {}
    for r in rows:
        if r["clients"] == clients:
            at.setdefault(r["config"], []).append(r)
    out = []
    for a, b, what in (("1x-on", "1x-off", "batching"), ("3x-off", "1x-off", "3 replicas"),
                       ("3x-on", "1x-on", "3 replicas, batching on")):
        for x, y in zip(at.get(a, []), at.get(b, [])):
            out.append(f"{what}: {x['req_per_s'] / y['req_per_s']:.2f}x throughput at {clients} "
                       f"clients ({x['req_per_s']:.1f} vs {y['req_per_s']:.1f} req/s), p99 "
                       f"{x['p99_ms']:.0f} vs {y['p99_ms']:.0f} ms")
    return out


def _plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for config in dict.fromkeys(r["config"] for r in rows):
        rs = [r for r in rows if r["config"] == config]
        xs = [r["clients"] for r in rs]
        a.plot(xs, [r["req_per_s"] for r in rs], "-o", label=config)
        b.plot(xs, [r["p50_ms"] for r in rs], "-o", label=f"{config} p50")
        b.plot(xs, [r["p99_ms"] for r in rs], "--", label=f"{config} p99")
    a.set(xscale="log", xlabel="concurrent clients", ylabel="requests / s", title="throughput")
    b.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="ms", title="latency")
    a.legend(fontsize=7)
    b.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--cut", choices=("cloud", "mid"), default="cloud")
    p.add_argument("--clients", default="1,2,4,8,16")
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per point")
    p.add_argument("--configs", default="1x-off,1x-on,3x-off,3x-on",
                   help="REPLICASx-on|off (batching), comma-separated")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-queue-delay", type=float, default=0.0, metavar="MS")
    p.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    p.add_argument("--kill-clients", type=int, default=8)
    p.add_argument("--no-kill", action="store_true")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--small", action="store_true", help="test input shapes (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="suffix of the output files (e.g. _cuda)")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    args = p.parse_args(argv)
    args.clients_list = [int(c) for c in args.clients.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    work = Workload(args.model, args.cut, args.small, args.seed)
    cores = os.cpu_count() or 1
    print(f"{args.model} {args.cut} ({work.bytes / 1024:.0f} KiB per request), {cores} cores, "
          f"{args.threads} torch thread(s) per replica, device {args.device}, "
          f"batching: --max-batch {args.max_batch} --max-queue-delay {args.max_queue_delay:g} ms",
          flush=True)
    t0 = time.perf_counter()
    rows = bench(args, work)
    kill = None if args.no_kill else bench_kill(args, work)
    top = max(args.clients_list)
    notes = _ratios(rows, 16 if 16 in args.clients_list else top)
    if cores < 3 * args.threads + 1:
        notes.append(f"this machine has {cores} cores: 3 replicas of {args.threads} thread(s) "
                     f"plus the clients need {3 * args.threads + 1}, so the replica target "
                     f"(>= 1.8x) cannot be met here; the replicas share the cores")
    cols = ["config", "clients", "requests", "errors", "req_per_s", "p50_ms", "p50_ci_ms", "p99_ms",
            "p99_ci_ms", "mean_batch"]
    md = [f"# bench_scale: {args.model} {args.cut}, {args.device}, {cores} cores\n",
          f"`{' '.join(['scripts/bench_scale.py', *(argv if argv is not None else sys.argv[1:])])}`"
          f" ({time.perf_counter() - t0:.0f} s). Closed-loop clients (threads) replaying the "
          f"{work.bytes / 1024:.0f} KiB request; replicas are opss-server processes with "
          f"{args.threads} torch thread(s); batching: max batch {args.max_batch}, queue delay "
          f"{args.max_queue_delay:g} ms. p50/p99: nearest rank, bootstrap 95 % intervals.\n",
          markdown(rows, cols), "", *[f"- {n}" for n in notes]]
    if kill is not None:
        md += ["", "Replica killed mid-run (SIGKILL):", "",
               markdown([kill], ["config", "clients", "requests", "errors", "req_per_s", "p50_ms",
                                 "p99_ms", "killed_at_s"])]
    print("\n" + "\n".join(md[2:]))
    write_csv(args.out / f"bench_scale{args.tag}.csv", rows + ([kill] if kill else []))
    (args.out / f"bench_scale{args.tag}.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    _plot(args.out / f"bench_scale{args.tag}.png", rows)
    print(f"\nwrote bench_scale{args.tag}.csv, .md, .png into {args.out}/")
    return 0 if (kill is None or kill["errors"] == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
