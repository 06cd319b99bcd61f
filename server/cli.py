"""``opss-server``: serve the second half of OPSS-split models over gRPC.

    opss-server [--host H] [--port P] [--device auto|cuda|cpu] [--models a,b,...]
                [--weights NAME=FILE]... [--input-shape NAME=1x3x224x224]... [--small]
                [--max-workers N] [--max-inflight N] [--max-inflight-per-peer N]
                [--max-queued N] [--admission-wait S] [--compute-slots N] [--cache-size N]
                [--max-batch N [--max-queue-delay MS]]
                [--first-message-timeout S] [--idle-timeout S] [--call-timeout S]
                [--keepalive S] [--connection-idle S] [--connection-age S]
                [--tls-cert PEM --tls-key PEM [--tls-ca PEM]] [--token-file F]
                [--metrics-port P [--metrics-host H]] [--profile off|stored|build]
                [--grace S] [--log-level L]

Also ``python -m opss.server``. Prints "opss-server listening on HOST:PORT" once the
models are loaded (port 0 picks a free port). SIGTERM/SIGINT: stop accepting calls,
let in-flight ones finish for --grace seconds, then exit 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from opss.cli._args import OneLineParser

from .config import DEFAULT_MODELS, ServerConfig
from .profiling import profile_source


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, value = _pair(text)
    try:
        shape = tuple(int(d) for d in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=1x3x224x224, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive dimensions, got {text!r}")
    return name, shape


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="opss-server", description=(
        "Serve the server halves of split DNNs: clients stream their cut tensors over gRPC "
        "(opss.v1.Opss) and get the model output back."))
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=50051, help="port; 0 picks a free one (default 50051)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="where server parts run; auto = CUDA when available (default)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma-separated model names (default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--weights", type=_pair, action="append", default=[], metavar="NAME=FILE",
                   help="state dict for a model (repeatable); clients must use the same weights")
    p.add_argument("--input-shape", type=_shape, action="append", default=[],
                   metavar="NAME=1x3xHxW", help="input shape a model is served at (repeatable)")
    p.add_argument("--small", action="store_true",
                   help="serve every model at its small test input shape")
    p.add_argument("--max-workers", type=int, default=32, help="gRPC threads (default 32)")
    _load_arguments(p)
    p.add_argument("--cache-size", type=int, default=32, help="server parts cached (LRU, default 32)")
    p.add_argument("--tls-cert", help="PEM certificate chain (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key (with --tls-cert)")
    p.add_argument("--tls-ca", metavar="PEM",
                   help="CA certificate(s) for client certificates: every client must present one "
                        "it signed (mutual TLS; needs --tls-cert/--tls-key)")
    p.add_argument("--token-file", type=Path,
                   help="file holding a bearer token clients must send ('authorization: Bearer T'); "
                        "health checks need none")
    p.add_argument("--metrics-port", type=int, metavar="P",
                   help="serve Prometheus metrics on http://HOST:P/metrics (0 picks a port; "
                        "no token: bind it to a private address with --metrics-host)")
    p.add_argument("--metrics-host", metavar="H", help="address of the metrics exporter (default --host)")
    p.add_argument("--profile", choices=("off", "stored", "build"), default="stored",
                   help="per-vertex server times for ListModels: the stored profile of this "
                        "device (default), also measure missing ones at start (build), or none")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds in-flight calls may finish on shutdown (default 10)")
    p.add_argument("--log-level", default="INFO",
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="default INFO")
    return p


def _load_arguments(p: argparse.ArgumentParser) -> None:
    """Admission, stream timeouts and connection limits (seconds, counts)."""
    p.add_argument("--max-inflight", type=int, default=8,
                   help="Infer/Probe calls holding a slot at once (default 8)")
    p.add_argument("--max-inflight-per-peer", type=int, metavar="N",
                   help="slots one client address may hold (default half of --max-inflight)")
    p.add_argument("--max-queued", type=int, metavar="N",
                   help="calls that may wait for a slot, in arrival order (default: the spare "
                        "threads, --max-workers - --max-inflight - 1)")
    p.add_argument("--admission-wait", type=float, default=2.0, metavar="S",
                   help="longest wait for a slot before RESOURCE_EXHAUSTED with a retry hint "
                        "(default 2)")
    p.add_argument("--compute-slots", type=int, default=1,
                   help="server parts computing at once on the device (default 1)")
    p.add_argument("--max-batch", type=int, default=1, metavar="N",
                   help="compute up to N calls of one model and partition together, once their "
                        "tensors have all arrived (dynamic batching; default 1: off)")
    p.add_argument("--max-queue-delay", type=float, default=0.0, metavar="MS",
                   help="longest a batch waits for more calls, milliseconds (default 0: batch only "
                        "the calls already waiting)")
    p.add_argument("--inject-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--first-message-timeout", type=float, default=5.0, metavar="S",
                   help="an Infer/Probe call must send its first message within S (default 5)")
    p.add_argument("--idle-timeout", type=float, default=10.0, metavar="S",
                   help="longest silence between a call's messages (default 10)")
    p.add_argument("--call-timeout", type=float, default=300.0, metavar="S",
                   help="longest an Infer/Probe call may stay open (default 300)")
    p.add_argument("--keepalive", type=float, default=60.0, metavar="S",
                   help="ping a connection quiet for S; close it without an answer in 20 s (default 60)")
    p.add_argument("--connection-idle", type=float, default=120.0, metavar="S",
                   help="close a connection without calls for S (default 120)")
    p.add_argument("--connection-age", type=float, default=3600.0, metavar="S",
                   help="close any connection after S, letting its calls finish (default 3600)")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    token = None
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
        if not token:
            raise ValueError(f"token file {args.token_file}: expected a token, got an empty file")
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    return ServerConfig(host=args.host, port=args.port, device=args.device, models=models,
                        weights=dict(args.weights), input_shapes=dict(args.input_shape),
                        small=args.small, max_workers=args.max_workers,
                        max_inflight=args.max_inflight,
                        max_inflight_per_peer=args.max_inflight_per_peer,
                        max_queued=args.max_queued, admission_wait_s=args.admission_wait,
                        compute_slots=args.compute_slots, cache_size=args.cache_size,
                        max_batch=args.max_batch, max_queue_delay_s=args.max_queue_delay / 1e3,
                        inject_delay_s=args.inject_delay_ms / 1e3,
                        first_message_timeout_s=args.first_message_timeout,
                        idle_timeout_s=args.idle_timeout, stream_timeout_s=args.call_timeout,
                        keepalive_s=args.keepalive, connection_idle_s=args.connection_idle,
                        connection_age_s=args.connection_age, tls_cert=args.tls_cert,
                        tls_key=args.tls_key, tls_client_ca=args.tls_ca, token=token,
                        metrics_port=args.metrics_port, metrics_host=args.metrics_host,
                        grace_s=args.grace, profile_fn=profile_source(args.profile))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as e:
        parser.error(str(e))
    from opss.errors import OpssError

    from .app import build_server

    try:
        handle = build_server(config)
    except KeyboardInterrupt:
        return 130
    except (OpssError, ValueError, OSError) as e:
        print(f"opss-server: error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"opss-server listening on {config.host}:{handle.port}", flush=True)
    if handle.metrics_port is not None:
        print(f"opss-server metrics on http://{config.metrics_host or config.host}:"
              f"{handle.metrics_port}/metrics", flush=True)
    while not stop.wait(0.5):
        pass
    logging.getLogger("opss.server").info(
        "%s: finishing %d in-flight calls (grace %.1f s)", signal.Signals(received[0]).name,
        handle.servicer.inflight, config.grace_s)
    handle.stop().wait()
    logging.getLogger("opss.server").info("stopped: %d calls served, %d failed",
                                          handle.servicer.served, handle.servicer.failed)
    return 0
