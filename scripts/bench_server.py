"""Benchmark the OPSS wire codec and opss-server.

1. Codec: encode/decode cost per MB of the raw-bytes codec (opss.wire; alone and
   including protobuf serialization) against torch.save/torch.load into BytesIO,
   measured side by side on the same tensors (median over repeats).
2. Server: requests/s and p50/p99 latency of an in-process server (device auto,
   so CUDA when present) with 1, 4 and 16 concurrent clients, for each model at a
   cloud-only and a mid cut. Clients replay pre-computed cut tensors, so the numbers
   are the server side only (decode, server part, reply) plus loopback gRPC.

Prints the tables and writes bench_server.codec.csv (codec), bench_server.csv
(server load) and bench_server.png into --out (default docs/results/).

    .venv/bin/python scripts/bench_server.py [--models googlenet,resnet18] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import threading
import time
from pathlib import Path

import grpc
import torch
from _bench import write_csv

from opss import models
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

MB = 1024 * 1024


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="googlenet,resnet18")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--requests", type=int, default=8, help="requests per client per configuration")
    p.add_argument("--sizes-mb", default="0.0625,0.25,1,4,16")
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--small", action="store_true", help="test input shapes (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    codec = bench_codec([float(s) for s in args.sizes_mb.split(",")], args.repeats, args.seed)
    cols = list(codec[0])
    print("\n".join(_fmt(codec, cols)))
    write_csv(args.out / "bench_server.codec.csv", codec)

    names = [m for m in args.models.split(",") if m]
    clients = [int(c) for c in args.clients.split(",")]
    config = ServerConfig(models=tuple(names), device=args.device, small=args.small,
                          max_inflight=max(clients), max_workers=max(clients) + 8,
                          seed=args.seed, warmup_runs=2)
    handle = build_server(config)
    try:
        load = bench_load(handle, names, clients, args.requests, args.seed)
    finally:
        handle.stop(0)
    print()
    print("\n".join(_fmt(load, list(load[0]))))
    write_csv(args.out / "bench_server.csv", load)
    _plot(args.out / "bench_server.png", codec, load)
    print(f"\nwrote {args.out}/bench_server.codec.csv, bench_server.csv, bench_server.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
