"""``opss-client``: profile, probe, plan, then compute and upload in parallel.

    opss-client --model googlenet --server HOST:PORT [--strategy lo|co|po|opss|joint]
                [--link auto|3g|4g|wifi|RATE] [--throttle RATE] [--wire-dtype float32|float16|bfloat16]
                [--image FILE] [--runs N] [--verify] [--json OUT] [--timeline]
                [--weights FILE] [--token-file F] [--tls-ca PEM [--tls-cert PEM --tls-key PEM]]
                [--client-slowdown X] [--small] [--fresh-profile]

Also ``python -m opss.client``. Bad arguments (unknown model, bad rate unit,
unreadable image, missing ``--server``) print one line and exit 2. Server
faults never stop a run: it finishes locally and says why (exit 0). A failed
``--verify`` exits 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from opss.cli._args import OneLineParser, add_wire_arguments, positive_int, slowdown
from opss.errors import OpssError
from opss.plan import STRATEGIES
from opss.stats import median, p90

PROG = "opss-client"


def _seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return x


def _server(text: str) -> str:
    from opss.client.grpc_transport import check_target

    try:
        return check_target(text)
    except OpssError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("server: ")) from None


def _link_spec(text: str) -> str:
    from opss.link import link_from_spec

    if text == "auto":
        return text
    try:
        link_from_spec(text)
    except OpssError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _rate(text: str) -> float:
    """--throttle: a preset name or a rate, in bytes/s."""
    from opss.link import link_from_spec

    try:
        return link_from_spec(text).b
    except OpssError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Run a DNN cooperatively with an opss-server: the client computes the first layers "
        "while their outputs upload, the server finishes.",
    )
    p.add_argument("--model", required=True, help="zoo model name or package.module:factory")
    p.add_argument("--server", type=_server, metavar="HOST:PORT",
                   help="opss-server address, or any gRPC target naming replicas (dns:///HOST:PORT, "
                        "ipv4:ADDR:PORT,ADDR:PORT): calls go round robin over the healthy ones "
                        "(required, except with --strategy lo)")
    p.add_argument("--strategy", choices=STRATEGIES, default="opss",
                   help="lo local only, co cloud only, po partition only (no overlap), "
                   "opss po's cut pipelined, joint cut and order together (default opss)")
    p.add_argument("--link", type=_link_spec, default="auto",
                   help="auto (probe the server), a preset 3g|4g|wifi or a rate such as 5.85mbit (default auto)")
    p.add_argument("--throttle", type=_rate, metavar="RATE",
                   help="shape the upload in the sender (token bucket, no root): a preset or a rate")
    p.add_argument("--wire-dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                   help="dtype of the cut tensors on the wire (default float32)")
    p.add_argument("--image", metavar="FILE", help="classify this image (PIL; resized ImageNet-style)")
    p.add_argument("--runs", type=positive_int, default=5, help="inferences to run (default 5)")
    p.add_argument("--verify", action="store_true",
                   help="check each output against the local full model (exit 1 on a mismatch)")
    p.add_argument("--json", metavar="OUT", help="write the plan, every run's timeline and the summary here")
    p.add_argument("--timeline", action="store_true", help="draw each run's compute/upload Gantt chart")
    p.add_argument("--weights", metavar="FILE", help="state dict to load (must match the server's)")
    p.add_argument("--token-file", metavar="F",
                   help="file holding the server's bearer token (sent over plaintext only to a loopback address)")
    p.add_argument("--tls-ca", metavar="PEM", help="talk TLS, trusting the server certificates this CA signed")
    p.add_argument("--tls-cert", metavar="PEM", help="this client's certificate for mutual TLS (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--client-slowdown", type=slowdown, default=1.0, metavar="X",
                   help="emulate a client X times slower (sleeps after each layer; plan scaled alike)")
    p.add_argument("--deadline", type=_seconds, default=30.0, metavar="S",
                   help="per-inference server deadline in seconds (default 30); past it, finish locally")
    p.add_argument("--small", action="store_true",
                   help="use the model's small test input shape (the server must run --small too)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads for the client (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights (no --weights) and the input")
    p.add_argument("--fresh-profile", action="store_true",
                   help="measure this client's profile now instead of using the stored table (not stored; "
                        "for a machine busier or quieter than when it was profiled)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_wire_arguments(p, image=False)
    # --server is required unless --strategy lo (checked in main): the usage line says it is needed
    server = next(a for a in p._actions if a.dest == "server")
    server.required = True
    p.usage = p.format_usage().removeprefix("usage: ").strip()
    server.required = False
    return p


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}ms"


def _pct(measured: float, predicted: float) -> str:
    if predicted <= 0:
        return "n/a"
    return f"{(measured - predicted) / predicted * 100:+.1f}%"


def format_run(rep, runs: int, out: TextIO, timeline: bool) -> None:
    """Print one run: latency beside the prediction, every term, uploads, top-5."""
    from opss.client.timeline import render_gantt

    tl = rep.result.timeline
    pr = rep.predicted
    where = {"cooperative": "cooperative", "local": "local", "fallback": "LOCAL FALLBACK"}[tl.where]
    print(f"run {rep.index}/{runs} [{rep.strategy}, {where}] latency {_ms(tl.total)} "
          f"(predicted {_ms(pr.total)}, {_pct(tl.total, pr.total)})", file=out)
    print(f"  client compute {_ms(tl.client_compute)} (pred {_ms(pr.client_compute)})"
          f" | upload {_ms(tl.upload_time)} of {tl.upload_bytes / 1e3:.1f} kB, hidden {_ms(tl.hidden_upload)} "
          f"(pred {_ms(pr.upload)}, hidden {_ms(pr.hidden_upload)})"
          f" | server compute {_ms(float(tl.server.get('compute', 0.0)))} (pred {_ms(pr.server_compute)})"
          f" | last upload to reply {_ms(tl.after_upload)} (pred server+reply {_ms(pr.server + pr.reply)})",
          file=out)
    if tl.encode:
        codecs = {w["tensor"]: w for w in tl.wire()}
        encs = ", ".join(f"{i.name} {codecs.get(i.name, {}).get('codec', '?')} {i.nbytes / 1e3:.1f}->"
                         f"{codecs.get(i.name, {}).get('wire_bytes', 0) / 1e3:.1f} kB in {_ms(i.seconds)}"
                         for i in tl.encode[:8])
        print(f"  encoded: {encs}", file=out)
    if tl.upload:
        ups = ", ".join(f"{i.name} {_ms(i.start)}-{_ms(i.end)}" for i in tl.upload[:8])
        more = f", +{len(tl.upload) - 8} more" if len(tl.upload) > 8 else ""
        print(f"  uploads: {ups}{more}", file=out)
    for note in rep.notes:
        print(f"  note: {note}", file=out)
    if rep.verify_ok is not None:
        status = "ok" if rep.verify_ok else "FAILED"
        print(f"  verify: {status} (relative error {rep.verify_rel_error:.2g} = max |coop - local| "
              f"{rep.verify_error:.3g} / max |local|, tolerance {rep.verify_tolerance:.0e})", file=out)
    top = ", ".join(f"{name} {p:.3f}" for name, p, _ in rep.top5)
    print(f"  top-5: {top}", file=out)
    if timeline:
        print(render_gantt(tl), file=out)


def summarize(reports, compute: dict | None = None) -> dict:
    """Median, p90 and prediction error over the runs (seconds; error relative).

    Runs that fell back to local compute are left out of the prediction error: the
    prediction was for the cooperative plan they did not run. They are also summarized
    apart (``planned_*`` over the runs that ran as planned, ``fallback_*`` over the
    others): a fallback computes the server's part here, at this machine's speed and
    unpaced, so it is another client than the one ``--client-slowdown`` emulates.
    ``compute`` is the session's :meth:`~opss.client.session.ClientSession.compute_check`.
    """
    lat = [r.latency for r in reports]
    planned = [r.latency for r in reports if not r.result.fell_back]
    fell = [r.latency for r in reports if r.result.fell_back]
    errs = [abs(r.latency - r.predicted.total) / r.predicted.total for r in reports
            if r.predicted.total > 0 and not r.result.fell_back]
    return {
        "runs": len(lat),
        "median_s": median(lat),
        "p90_s": p90(lat),
        "min_s": min(lat),
        "median_predicted_s": median(r.predicted.total for r in reports),
        "median_abs_prediction_error": median(errs) if errs else None,
        "fallbacks": len(fell),
        "verify_failures": sum(r.verify_ok is False for r in reports),
        "planned_runs": len(planned),
        "planned_median_s": median(planned) if planned else None,
        "planned_p90_s": p90(planned) if planned else None,
        "fallback_median_s": median(fell) if fell else None,
        "client_compute": compute,
    }


def summary_lines(summary: dict) -> list[str]:
    """The run summary: the runs as planned, the local fallbacks apart, and the profile check."""
    n, k = summary["runs"], summary["fallbacks"]
    err_txt = (f"{summary['median_abs_prediction_error'] * 100:.1f}%"
               if summary["median_abs_prediction_error"] is not None else "n/a")
    if not k:
        lines = [f"summary over {n} runs: median {_ms(summary['median_s'])}, p90 {_ms(summary['p90_s'])}, "
                 f"predicted {_ms(summary['median_predicted_s'])}, median |prediction error| {err_txt}"]
    elif summary["planned_runs"]:
        lines = [f"summary over the {summary['planned_runs']} of {n} runs that ran as planned: median "
                 f"{_ms(summary['planned_median_s'])}, p90 {_ms(summary['planned_p90_s'])}, predicted "
                 f"{_ms(summary['median_predicted_s'])}, median |prediction error| {err_txt}",
                 f"  {k} local fallbacks apart: median {_ms(summary['fallback_median_s'])} (the server's part "
                 f"computed here, unpaced: not the client the plan is for)"]
    else:
        lines = [f"summary over {n} runs: every run fell back to local compute, median "
                 f"{_ms(summary['fallback_median_s'])} (the server's part computed here, unpaced: not the "
                 f"client the plan is for; predicted {_ms(summary['median_predicted_s'])})"]
    check = summary.get("client_compute")
    if check and check["off"]:
        lines.append(f"  note: {check['message']}")
    return lines


def _read_token(path: str | None) -> str | None:
    """The bearer token in ``--token-file`` (None without one); OpssError if unreadable or empty."""
    if not path:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise OpssError(f"--token-file {path}: cannot read it ({exc.strerror})") from None
    if not token:
        raise OpssError(f"--token-file {path}: expected a token, got an empty file")
    return token


def _input(args: argparse.Namespace) -> tuple[tuple[int, ...], Any, Any]:
    """The input shape, tensor and image source: ``--image`` resized to the model's shape
    (its file and uint8 crop may travel instead of the tensor), else seeded noise (no image)."""
    import torch

    from opss import models
    from opss.client.inputs import load_image_input

    spec = models.get_spec(args.model)  # unknown model: one line before any work
    shape = tuple(spec.test_input_shape if args.small else spec.input_shape)
    if args.image:
        return (shape, *load_image_input(args.image, shape))
    return shape, torch.randn(shape, generator=torch.Generator().manual_seed(args.seed)), None


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from opss.client.session import ClientConfig, ClientSession
    from opss.wirecosts import image_decode_seconds

    token = _read_token(args.token_file)
    shape, x, image = _input(args)
    cfg = ClientConfig(
        model=args.model, server=args.server, strategy=args.strategy, link=args.link, throttle=args.throttle,
        wire_dtype=args.wire_dtype, small=args.small, weights=args.weights, token=token,
        tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
        client_slowdown=args.client_slowdown, timeout=args.deadline, seed=args.seed, threads=args.threads,
        progress=not args.quiet, fresh_profile=args.fresh_profile, codecs=args.codecs,
        max_error=args.max_error, image_bytes=len(image.data) if image is not None else None,
        image_decode_s=None if image is None else image_decode_seconds(image.data, shape, codecs=args.codecs),
    )
    session = ClientSession(cfg, out=out, err=err)
    try:
        print(session.describe_plan(), file=out)
        reports = []
        for _ in range(args.runs):
            rep = session.run(x, verify=args.verify, image=image)
            format_run(rep, args.runs, out, args.timeline)
            reports.append(rep)
    finally:
        session.close()
    summary = summarize(reports, session.compute_check(reports))
    for line in summary_lines(summary):
        print(line, file=out)
    if args.json:
        _write_json(args, shape, session, reports, summary)
        print(f"wrote {args.json}", file=out)
    if summary["verify_failures"]:
        print(f"{PROG}: verify failed on {summary['verify_failures']} of {summary['runs']} runs", file=err)
        return 1
    return 0


def _write_json(args: argparse.Namespace, shape: tuple[int, ...], session: Any, reports: list, summary: dict) -> None:
    """``--json OUT``: the plan, every run's timeline and the summary."""
    doc = {
        "model": args.model,
        "strategy": args.strategy,
        "input_shape": list(shape),
        "wire_dtype": args.wire_dtype,
        "link": session.link.to_json(),
        "plan": session.plan.to_json(),
        "runs": [
            {"index": r.index, "strategy": r.strategy, "predicted": r.predicted.to_json(),
             "timeline": r.result.timeline.to_json(), "top5": [[n, p, i] for n, p, i in r.top5],
             "verify_ok": r.verify_ok, "verify_error": r.verify_error, "notes": list(r.notes)}
            for r in reports
        ],
        "summary": summary,
    }
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.server is None and args.strategy != "lo":
        parser.error("--server HOST:PORT is required (only --strategy lo runs without a server)")
    if args.json:
        # fail before the runs, not after them
        folder = Path(args.json).resolve().parent
        if not folder.is_dir():
            parser.error(f"--json {args.json}: no such folder {str(folder)!r}")
    try:
        return run(args)
    except OpssError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
