"""Argument helpers shared by ``opss``, ``opss-server`` and ``opss-client``.

:class:`OneLineParser` makes every bad argument one line on stderr and exit
status 2 (argparse's default prints the whole usage block first). The type
functions raise ``argparse.ArgumentTypeError`` with "expected X, got Y".
"""

from __future__ import annotations

import argparse
import math
import re


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (no usage block) and exit 2.

    A value that starts with a minus and a digit (``--link -3mbit``) is a value, not an
    option, so its own type check names the problem (a negative rate) instead of argparse
    saying "expected one argument". No option of ours is spelled like a negative number.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # argparse's own rule takes only plain negative numbers ("-3", "-.5") as values
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def host_port(text: str) -> str:
    """``HOST:PORT`` of a server (the host is not resolved here)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:50051), got {text!r}")
    return text


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def nonneg_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def slowdown(text: str) -> float:
    """``--client-slowdown`` everywhere (``opss plan``, ``opss demo``, ``opss-client``): how many
    times slower the client is than the machine its profile was measured on; finite and >= 1.

    One bound for every command, so a plan made with ``opss plan`` can be run as it was
    planned: a running client can only be paced slower than its profile, never faster, and a
    client faster than the profiled machine is planned from its own profile (``opss profile``
    on it) rather than by scaling another machine's down.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a factor >= 1, got {text!r}") from None
    if not (math.isfinite(value) and value >= 1.0):
        raise argparse.ArgumentTypeError(
            f"expected a finite factor >= 1 (times slower than the profiled machine), got {text!r}")
    return value


def codecs_spec(text: str) -> str:
    """A ``--codecs`` value: ``raw`` (the paper's: raw float32), ``lossless`` (the exact
    forms: raw, zstd, lz4, and for an image input its uint8 crop and its own file),
    ``all``, or a comma list such as ``int8,fp16,lossless``; checked by opss.codec."""
    from opss.codec import parse_codecs
    from opss.errors import OpssError

    try:
        parse_codecs(text)
    except OpssError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--codecs: ")) from None
    return text


def error_budget(text: str) -> float:
    """A ``--max-error`` value: a relative output error in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a relative error in (0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(f"expected a relative error in (0, 1], got {text!r}")
    return value


def add_wire_arguments(parser: argparse.ArgumentParser, *, image: bool = True) -> None:
    """``--codecs``, ``--max-error`` and (``image``) ``--image``: what may cross the link."""
    parser.add_argument("--codecs", type=codecs_spec, default="lossless", metavar="SPEC",
                        help="codecs each uploaded tensor may use: raw (the paper's raw float32), lossless "
                             "(default: exact forms only, outputs bit-identical), all, or a list such as "
                             "int8,fp16,lossless")
    parser.add_argument("--max-error", type=error_budget, default=None, metavar="E",
                        help="admit a lossy codec for a tensor only if its measured relative output error "
                             "on the sample photos is <= E (default: no lossy codec)")
    if image:
        parser.add_argument("--image", default=None, metavar="FILE",
                            help="the input is this photo (JPEG/PNG): it may cross the link as its own file "
                                 "or its uint8 crop")


def wire_from_args(args: argparse.Namespace, layer_graph, *, root=None) -> dict:
    """``plan_all``'s ``wire=`` from the parsed ``--codecs``/``--max-error``/``--image``."""
    from pathlib import Path

    from opss.errors import OpssError
    from opss.wirecosts import image_decode_seconds, wire_options

    image_bytes = image_decode_s = None
    if getattr(args, "image", None):
        path = Path(args.image)
        if not path.is_file():
            raise OpssError(f"--image {args.image}: no such file")
        data = path.read_bytes()
        image_bytes = len(data)
        image_decode_s = image_decode_seconds(data, layer_graph.node(layer_graph.input_id).shape,
                                              codecs=args.codecs)
    return wire_options(layer_graph, args.codecs, max_error=args.max_error, image_bytes=image_bytes,
                        image_decode_s=image_decode_s,
                        root=root if root is not None else getattr(args, "profiles_dir", None),
                        build_missing=not getattr(args, "no_build", False))


def codec_summary(plan) -> str:
    """The codecs of a plan's uploads, e.g. ``zstd`` or ``file+zstd x2`` (``-``: nothing sent)."""
    if not plan.wire:
        return "-" if not plan.cut_bytes else "raw"
    counts: dict[str, int] = {}
    for w in plan.wire:
        counts[w.codec] = counts.get(w.codec, 0) + 1
    return "+".join(name if k == 1 else f"{name}x{k}" for name, k in counts.items())
