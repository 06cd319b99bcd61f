"""Bounds on the strings a client sends: identifiers checked, log fields escaped, details capped.

A client controls ``request_id``, ``probe_id``, ``model``, ``fingerprint``,
``graph_hash``, vertex and tensor names. None of them may reach a log line or
an error detail unbounded or unescaped: a megabyte id would be logged (and
echoed) per call, a newline in one would forge log lines, and a status detail
over the client's 16 KiB metadata limit turns the real status into
RESOURCE_EXHAUSTED on the client.
"""

from __future__ import annotations

from opss.errors import WireError

#: Longest identifier (request_id, probe_id, model, fingerprint, graph_hash, vertex and
#: tensor names) a call may carry, in bytes; every byte printable ASCII.
MAX_ID_BYTES = 128

#: Longest error detail sent to a client or logged (characters; the rest is cut).
MAX_DETAIL_CHARS = 1024


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable()


def escape(text: str, limit: int = MAX_ID_BYTES) -> str:
    """``text`` safe for one log line: non-printable and non-ASCII characters escaped
    (a newline becomes ``\\n``), cut to ``limit`` characters with a note of how much was dropped."""
    if _printable(text) and len(text) <= limit:
        return text
    out = text[:limit].encode("unicode_escape").decode("ascii")[:limit]
    dropped = len(text) - min(len(text), limit)
    return out + (f"...(+{dropped} chars)" if dropped else "")


def check_identifier(field: str, value: str, *, required: bool = False) -> str:
    """``value`` if it is at most :data:`MAX_ID_BYTES` printable ASCII bytes, else WireError
    (INVALID_ARGUMENT) naming the field, with the value escaped and cut."""
    if required and not value:
        raise WireError(f"{field}: expected an identifier, got an empty string")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise WireError(f"{field}: expected at most {MAX_ID_BYTES} bytes, got {size} "
                        f"(starting '{escape(value, 32)}')")
    if not _printable(value):
        raise WireError(f"{field}: expected printable ASCII, got '{escape(value, 64)}'")
    return value


def check_identifiers(field: str, values) -> None:
    """:func:`check_identifier` on every entry of a repeated field."""
    for i, v in enumerate(values):
        check_identifier(f"{field}[{i}]", v)


def bound_detail(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """An error detail for a status or a log: one line, printable, at most ``limit`` chars."""
    return escape(text, limit)
