"""Benchmark the OPSS wire codec and opss-server.

1. Codec: encode/decode cost per MB of the raw-bytes codec (opss.wire; alone and
   including protobuf serialization) against torch.save/torch.load into BytesIO,
   measured side by side on the same tensors (median over repeats).
2. Server: requests/s and p50/p99 latency of an in-process server (device auto,
   so CUDA when present) with 1, 4 and 16 concurrent clients, for each model at a
   cloud-only and a mid cut. Clients replay pre-computed cut tensors, so the numbers
   are the server side only (decode, server part, reply) plus loopback gRPC.
3. Hostile: a server with the default limits; ``--good-clients`` well-behaved clients
   (closed loop, the first model's mid cut; a refusal waits the server's retry hint
   with jitter, as opss-client does) alone, then while an attacker process keeps
   ``--idle-streams`` Infer streams open that never send a message (reopened as soon
   as the server ends them), a garbage sender streams random bytes as fast as it can,
   and ``--idle-conns`` TCP connections sit idle (HTTP/2 preface, no call; reopened
   when closed). Alone and attacked phases alternate ``--rounds`` times. Reported:
   p50 and p99 of the good clients' latencies with bootstrap 95 % intervals, and
   each good client's longest refusal (first refusal to the next success).
   Targets: p99 attacked <= 2x p99 alone; no refusal longer than the idle timeout.
4. Fairness: ``--fair-clients`` opss-client sessions (cloud-only, fixed link) x
   ``--fair-requests`` inferences each against a server with the default limits;
   served share per client (cooperative runs / runs; the others ran locally after a
   refusal). Target: no client's share below half the mean.

Prints the tables and writes bench_server.codec.csv (codec), bench_server.csv
(server load), bench_server.hostile.csv, bench_server.fairness.csv and
bench_server.png into --out (default docs/results/).

    .venv/bin/python scripts/bench_server.py [--models googlenet,resnet18] [--out DIR]
        [--sections codec,load,hostile,fairness]
"""

from __future__ import annotations

import argparse
import io
import logging
import multiprocessing
import random
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import grpc
import torch
from _bench import write_csv

from opss import models
from opss.client.session import Backoff, ClientConfig, ClientSession
from opss.graph import capture
from opss.split import split
from opss.v1 import opss_pb2, opss_pb2_grpc
from opss.wire import (
    DEFAULT_CHUNK_BYTES,
    Reassembler,
    chunk_from_proto,
    chunk_to_proto,
    encode_tensor,
    infer_requests,
    tensor_from_proto,
)
from opss.server import ServerConfig, build_server
from opss.server.admission import RETRY_PUSHBACK_KEY
from opss.stats import bootstrap_ci, median, percentile

MB = 1024 * 1024
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def bench_codec(sizes_mb, repeats: int, seed: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for size in sizes_mb:
        n = int(size * MB) // 4
        x = torch.randn(1, n, generator=gen)
        shape = tuple(x.shape)
        expected = {"t": (shape, "float32")}

        def opss_encode():
            return encode_tensor("t", x, "float32", DEFAULT_CHUNK_BYTES)

        chunks = opss_encode()

        def opss_decode():
            r = Reassembler(expected)
            for c in chunks:
                done = r.add(c)
            r.finish()
            return done[1]

        def proto_encode():
            return [chunk_to_proto(c).SerializeToString() for c in opss_encode()]

        wire = proto_encode()

        def proto_decode():
            r = Reassembler(expected)
            for b in wire:
                done = r.add(chunk_from_proto(opss_pb2.TensorChunk.FromString(b)))
            r.finish()
            return done[1]

        def save():
            buf = io.BytesIO()
            torch.save(x, buf)
            return buf.getvalue()

        blob = save()

        def load():
            return torch.load(io.BytesIO(blob), weights_only=True)

        assert torch.equal(opss_decode(), x) and torch.equal(proto_decode(), x)
        assert torch.equal(load(), x)
        mb = x.numel() * 4 / MB
        fns = {"opss_encode": opss_encode, "opss_decode": opss_decode,
               "proto_encode": proto_encode, "proto_decode": proto_decode,
               "torch_save": save, "torch_load": load}
        # interleaved repeats: a burst of load from other processes hits every method alike
        # each sample times `inner` calls (about 2 MB of tensor) to keep timer overhead out
        inner = max(1, round(2 / mb))
        samples: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for k, f in fns.items():
                t0 = time.perf_counter()
                for _ in range(inner):
                    f()
                samples[k].append((time.perf_counter() - t0) / inner)
        t = {k: statistics.median(v) / mb * 1e3 for k, v in samples.items()}
        rows.append({"mb": round(mb, 3), **{f"{k}_ms_per_mb": round(v, 4) for k, v in t.items()},
                     "speedup_encode": round(t["torch_save"] / t["opss_encode"], 1),
                     "speedup_decode": round(t["torch_load"] / t["opss_decode"], 1),
                     "speedup_roundtrip": round(
                         (t["torch_save"] + t["torch_load"]) / (t["opss_encode"] + t["opss_decode"]), 1),
                     "speedup_roundtrip_with_proto": round(
                         (t["torch_save"] + t["torch_load"]) / (t["proto_encode"] + t["proto_decode"]), 1)})
    return rows


def _cuts(name: str, shape, seed: int):
    """(label, client set, cut tensors, expected output) for cloud-only and a mid cut."""
    model = models.get_model(name, seed=seed)
    x = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(x)
    graph = capture(model, x, name=name)
    ids = [n.id for n in graph.nodes]
    out = []
    for label, members in (("cloud", {graph.input_id}), ("mid", set(ids[: len(ids) // 2]))):
        s = split(graph, members)
        closure = set(s.client_set)
        with torch.no_grad():
            tensors = s.client.run(x)
        sent = sum(t.numel() * t.element_size() for t in tensors.values())
        out.append((label, sorted(closure), [(k, tensors[k]) for k in s.cut], ref, sent))
    return models.fingerprint(model), out


def bench_load(handle, names, concurrencies, requests_per_client: int, seed: int) -> list[dict]:
    rows = []
    address = f"127.0.0.1:{handle.port}"
    for name in names:
        shape = handle.store.get(name).input_shape
        fp, cuts = _cuts(name, shape, seed)
        for label, client_set, tensors, ref, sent in cuts:
            for clients in concurrencies:
                latencies: list[float] = []
                errors: list[str] = []
                lock = threading.Lock()

                def client(idx: int):
                    with grpc.insecure_channel(address) as ch:
                        stub = opss_pb2_grpc.OpssStub(ch)
                        for _ in range(requests_per_client):
                            t0 = time.perf_counter()
                            try:
                                reply = stub.Infer(infer_requests(name, fp, tensors,
                                                                  client_set=client_set))
                                out = tensor_from_proto(reply.output)
                                torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
                            except Exception as e:  # counted, reported
                                with lock:
                                    errors.append(repr(e)[:200])
                                continue
                            with lock:
                                latencies.append(time.perf_counter() - t0)

                # one untimed request per configuration (cache fill, allocator warm-up)
                with grpc.insecure_channel(address) as ch:
                    opss_pb2_grpc.OpssStub(ch).Infer(infer_requests(name, fp, tensors,
                                                                    client_set=client_set))
                threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - t0
                lat = sorted(latencies)
                q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
                rows.append({"model": name, "device": str(handle.store.device), "cut": label,
                             "upload_kb": round(sent / 1024, 1), "clients": clients,
                             "requests": len(lat), "errors": len(errors),
                             "req_per_s": round(len(lat) / wall, 2),
                             "p50_ms": round(q[49] * 1e3, 2), "p99_ms": round(q[98] * 1e3, 2)})
                print(_fmt([rows[-1]], list(rows[-1]))[-1], flush=True)
                if errors:
                    print(f"  errors: {errors[:3]}", file=sys.stderr)
    return rows


def _fmt(rows, cols) -> list[str]:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.rjust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).rjust(widths[c]) for c in cols) for r in rows]
    return lines


def _plot(path: Path, codec: list[dict], load: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    mbs = [r["mb"] for r in codec]
    for key, style in (("opss_encode", "-o"), ("opss_decode", "-s"), ("proto_encode", "--o"),
                       ("proto_decode", "--s"), ("torch_save", ":o"), ("torch_load", ":s")):
        a.plot(mbs, [r[f"{key}_ms_per_mb"] for r in codec], style, label=key)
    a.set(xscale="log", yscale="log", xlabel="tensor MB", ylabel="ms per MB", title="codec cost")
    a.legend(fontsize=7)
    for (model, cut) in sorted({(r["model"], r["cut"]) for r in load}):
        rs = [r for r in load if r["model"] == model and r["cut"] == cut]
        b.plot([r["clients"] for r in rs], [r["req_per_s"] for r in rs], "-o", label=f"{model} {cut}")
    b.set(xscale="log", xlabel="concurrent clients", ylabel="requests / s",
          title=f"server throughput ({load[0]['device']})")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --- hostile load -------------------------------------------------------------------------------

def _attack(port: int, idle_streams: int, idle_conns: int, garbage: bool, ready, stop, counts) -> None:
    """The attacker (its own process, so it shares no interpreter lock with the server): idle
    Infer streams, a garbage sender and idle connections, each kept up until ``stop``."""
    import grpc

    address = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(address)
    infer = channel.stream_unary("/opss.v1.Opss/Infer")
    quiet = threading.Event()

    def silent():
        quiet.wait(3600)
        yield b""

    streams = [infer.future(silent()) for _ in range(idle_streams)]
    conns = []
    for _ in range(idle_conns):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(H2_PREFACE)
        conns.append(c)
    threads = [threading.Thread(target=_garbage, args=(address, stop, counts), daemon=True)] if garbage else []
    for t in threads:
        t.start()
    ready.set()
    while not stop.wait(0.05):
        for i, f in enumerate(streams):
            if f.done():  # the server ended it: open another at once
                streams[i] = infer.future(silent())
                counts["reopened_streams"] += 1
        for i, c in enumerate(conns):
            if _closed(c):
                c.close()
                conns[i] = socket.create_connection(("127.0.0.1", port))
                conns[i].sendall(H2_PREFACE)
                counts["reopened_conns"] += 1
    quiet.set()
    for f in streams:
        f.cancel()
    for c in conns:
        c.close()
    channel.close()
    for t in threads:
        t.join(5)


def _garbage(address: str, stop, counts) -> None:
    import grpc

    rng = random.Random(0)
    with grpc.insecure_channel(address) as ch:
        infer = ch.stream_unary("/opss.v1.Opss/Infer")
        while not stop.is_set():
            blobs = [rng.randbytes(rng.randint(1, 4096)) for _ in range(rng.randint(1, 4))]
            try:
                infer(iter(blobs), timeout=5)
            except grpc.RpcError:
                pass
            counts["garbage_calls"] += 1


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        while True:
            if sock.recv(65536) == b"":
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


class _GoodClient:
    """A well-behaved client: one call after another; after a refusal it waits the server's
    retry hint with jitter (opss.client.session.Backoff) and records how long it was refused."""

    def __init__(self, address: str, name: str, fp: str, client_set, tensors, ref, seed: int) -> None:
        self.address, self.name, self.fp = address, name, fp
        self.client_set, self.tensors, self.ref = client_set, tensors, ref
        self.backoff = Backoff(seed=seed)
        self.latencies: list[float] = []
        self.refusals = 0
        self.errors: list[str] = []
        self.longest_refusal_s = 0.0

    def run(self, until: float) -> None:
        refused_since = None
        with grpc.insecure_channel(self.address) as ch:
            stub = opss_pb2_grpc.OpssStub(ch)
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                try:
                    reply = stub.Infer(infer_requests(self.name, self.fp, self.tensors,
                                                      client_set=self.client_set), timeout=30)
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        self.errors.append(f"{e.code().name}: {e.details()}"[:200])
                        continue
                    self.refusals += 1
                    refused_since = refused_since or t0
                    hint = dict(e.trailing_metadata() or ()).get(RETRY_PUSHBACK_KEY)
                    time.sleep(self.backoff.failed("busy", int(hint) / 1e3 if hint else None))
                    continue
                self.latencies.append(time.perf_counter() - t0)
                if refused_since is not None:
                    self.longest_refusal_s = max(self.longest_refusal_s, time.perf_counter() - refused_since)
                    refused_since = None
                self.backoff.succeeded()
                torch.testing.assert_close(tensor_from_proto(reply.output), self.ref, rtol=1e-3, atol=1e-3)


def _good_phase(clients: list[_GoodClient], seconds: float) -> None:
    until = time.perf_counter() + seconds
    threads = [threading.Thread(target=c.run, args=(until,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)


def _quantiles(lat: list[float]) -> dict:
    p99 = lambda xs: percentile(xs, 99)  # noqa: E731
    lo50, hi50 = bootstrap_ci(lat, median)
    lo99, hi99 = bootstrap_ci(lat, p99)
    ms = lambda x: round(x * 1e3, 2)  # noqa: E731
    return {"p50_ms": ms(median(lat)), "p50_ci_ms": f"{ms(lo50)}-{ms(hi50)}",
            "p99_ms": ms(p99(lat)), "p99_ci_ms": f"{ms(lo99)}-{ms(hi99)}"}


def bench_hostile(handle, name: str, args, seed: int) -> list[dict]:
    """Good clients alone and under attack, alternating; one row per condition."""
    address = f"127.0.0.1:{handle.port}"
    shape = handle.store.get(name).input_shape
    fp, cuts = _cuts(name, shape, seed)
    label, client_set, tensors, ref, sent = cuts[1]  # the mid cut
    groups = {"alone": [], "attacked": []}
    attack_counts: dict[str, int] = {}
    ctx = multiprocessing.get_context("spawn")
    for rnd in range(args.rounds):
        for cond in ("alone", "attacked"):
            clients = [_GoodClient(address, name, fp, client_set, tensors, ref, seed=100 * rnd + i)
                       for i in range(args.good_clients)]
            attacker = None
            if cond == "attacked":
                manager_counts = ctx.Manager().dict(garbage_calls=0, reopened_streams=0, reopened_conns=0)
                ready, stop = ctx.Event(), ctx.Event()
                attacker = ctx.Process(target=_attack, args=(handle.port, args.idle_streams, args.idle_conns,
                                                             True, ready, stop, manager_counts))
                attacker.start()
                if not ready.wait(120):
                    raise RuntimeError("the attacker did not start")
            _good_phase(clients, args.hostile_seconds)
            if attacker is not None:
                stop.set()
                attacker.join(60)
                for k, v in manager_counts.items():
                    attack_counts[k] = attack_counts.get(k, 0) + v
            groups[cond].extend(clients)
            print(f"  round {rnd + 1} {cond}: {sum(len(c.latencies) for c in clients)} calls, "
                  f"{sum(c.refusals for c in clients)} refusals", flush=True)
    rows = []
    for cond, clients in groups.items():
        lat = [x for c in clients for x in c.latencies]
        rows.append({"condition": cond, "model": name, "device": str(handle.store.device), "cut": label,
                     "upload_kb": round(sent / 1024, 1), "good_clients": args.good_clients,
                     "calls": len(lat), **_quantiles(lat),
                     "refusals": sum(c.refusals for c in clients),
                     "longest_refusal_s": round(max(c.longest_refusal_s for c in clients), 3),
                     "errors": sum(len(c.errors) for c in clients),
                     **({k: attack_counts.get(k, 0) for k in ("garbage_calls", "reopened_streams",
                                                              "reopened_conns")}
                        if cond == "attacked" else {"garbage_calls": 0, "reopened_streams": 0,
                                                    "reopened_conns": 0})})
    return rows


def bench_fairness(handle, name: str, n_clients: int, n_requests: int, seed: int) -> list[dict]:
    """``n_clients`` opss-client sessions x ``n_requests`` inferences at once; one row per client."""
    address = f"127.0.0.1:{handle.port}"
    x = torch.randn(tuple(handle.store.get(name).input_shape), generator=torch.Generator().manual_seed(seed))
    sessions = [ClientSession(ClientConfig(model=name, server=address, strategy="co", link="wifi",
                                           small=handle.config.small, progress=False, timeout=30.0,
                                           seed=seed, fresh_profile=False), out=None, err=None,
                              client_profile=_flat_costs(name, x), server_profile=_flat_costs(name, x))
                for _ in range(n_clients)]
    reports: list[list] = [[] for _ in range(n_clients)]
    start = threading.Barrier(n_clients)

    def client(i: int) -> None:
        start.wait(60)
        for _ in range(n_requests):
            reports[i].append(sessions[i].run(x))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for s in sessions:
        s.close()
    rows = []
    for i, reps in enumerate(reports):
        served = [r for r in reps if r.result.timeline.where == "cooperative"]
        rows.append({"client": i, "runs": len(reps), "served": len(served),
                     "share": round(len(served) / max(1, len(reps)), 3),
                     "local_after_refusal": len(reps) - len(served),
                     "p50_ms": round(median(r.latency for r in served) * 1e3, 2) if served else float("nan")})
    return rows


def _flat_costs(name: str, x) -> dict[str, float]:
    """Per-vertex costs for a cloud-only plan (their values do not change it)."""
    graph = capture(models.get_model(name, seed=0), x, name=name)
    return {v: 1e-3 for v in graph.ids}


def _hostile_sections(args, names, sections) -> tuple[list[dict], list[dict]]:
    """Sections 3 and 4, each on a server with the default limits."""
    hostile, fairness = [], []
    config = ServerConfig(models=(names[0],), device=args.device, small=args.small, seed=args.seed,
                          warmup_runs=2)
    if "hostile" in sections:
        handle = build_server(config)
        try:
            hostile = bench_hostile(handle, names[0], args, args.seed)
        finally:
            handle.stop(0).wait(10)
        print()
        print("\n".join(_fmt(hostile, list(hostile[0]))))
        alone, attacked = hostile
        ratio = attacked["p99_ms"] / alone["p99_ms"]
        print(f"target p99 attacked <= 2x alone: {ratio:.2f}x "
              f"({'met' if ratio <= 2 else 'MISSED'}); longest refusal {attacked['longest_refusal_s']} s "
              f"<= idle timeout {config.idle_timeout_s:g} s: "
              f"{'met' if attacked['longest_refusal_s'] <= config.idle_timeout_s else 'MISSED'}")
        write_csv(args.out / "bench_server.hostile.csv", hostile)
    if "fairness" in sections:
        handle = build_server(config)
        try:
            fairness = bench_fairness(handle, names[0], args.fair_clients, args.fair_requests, args.seed)
        finally:
            handle.stop(0).wait(10)
        print()
        print("\n".join(_fmt(fairness, list(fairness[0]))))
        mean = statistics.mean(r["served"] for r in fairness)
        low = min(r["served"] for r in fairness)
        print(f"target every served share >= half the mean ({mean:.1f}): lowest {low} "
              f"({'met' if low >= mean / 2 else 'MISSED'})")
        write_csv(args.out / "bench_server.fairness.csv", fairness)
    return hostile, fairness


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="googlenet,resnet18")
    p.add_argument("--sections", default="codec,load,hostile,fairness")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--requests", type=int, default=8, help="requests per client per configuration")
    p.add_argument("--sizes-mb", default="0.0625,0.25,1,4,16")
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--small", action="store_true", help="test input shapes (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--good-clients", type=int, default=4, help="hostile: well-behaved clients")
    p.add_argument("--idle-streams", type=int, default=8, help="hostile: idle Infer streams")
    p.add_argument("--idle-conns", type=int, default=500, help="hostile: idle TCP connections")
    p.add_argument("--hostile-seconds", type=float, default=8.0, help="hostile: seconds per phase")
    p.add_argument("--rounds", type=int, default=3, help="hostile: alone/attacked rounds")
    p.add_argument("--fair-clients", type=int, default=16)
    p.add_argument("--fair-requests", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    args = p.parse_args(argv)
    sections = set(args.sections.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    # the server logs one line per call (thousands under attack): to a file, not the tables
    server_log = logging.getLogger("opss.server")
    server_log.addHandler(logging.FileHandler(args.out / "bench_server.log", mode="w"))
    server_log.setLevel(logging.INFO)
    server_log.propagate = False
    torch.manual_seed(args.seed)
    names = [m for m in args.models.split(",") if m]

    codec = load = []
    if "codec" in sections:
        codec = bench_codec([float(s) for s in args.sizes_mb.split(",")], args.repeats, args.seed)
        print("\n".join(_fmt(codec, list(codec[0]))))
        write_csv(args.out / "bench_server.codec.csv", codec)
    if "load" in sections:
        clients = [int(c) for c in args.clients.split(",")]
        # every load client is on loopback, one peer: let it use every slot
        config = ServerConfig(models=tuple(names), device=args.device, small=args.small,
                              max_inflight=max(clients), max_inflight_per_peer=max(clients),
                              max_workers=max(clients) + 8, seed=args.seed, warmup_runs=2)
        handle = build_server(config)
        try:
            load = bench_load(handle, names, clients, args.requests, args.seed)
        finally:
            handle.stop(0)
        print()
        print("\n".join(_fmt(load, list(load[0]))))
        write_csv(args.out / "bench_server.csv", load)
    _hostile_sections(args, names, sections)
    if codec and load:
        _plot(args.out / "bench_server.png", codec, load)
    print(f"\nwrote the tables into {args.out}/ (bench_server*.csv, bench_server.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
