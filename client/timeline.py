"""What happened during one inference: compute and upload intervals, server timings, reply.

Times are seconds relative to the start of the run (``t=0`` when the compute
thread starts). The timeline is plain data: it renders as a terminal Gantt
chart (``--timeline``) and round-trips through JSON (``--json``).

Upload intervals start when the sender began handing the tensor to the
transport and end when its last byte reached the server (reconciled with the
server's per-tensor arrival times, see
:func:`opss.client.runtime.reconcile_uploads`). The link is serial: a tensor
handed over while the previous one is still crossing waits in the transport's
buffers, so the measured upload terms use :meth:`Timeline.link_intervals`,
each tensor's time on the link, never double-counting an overlap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

__all__ = ["Interval", "Timeline", "render_gantt"]


@dataclass(frozen=True)
class Interval:
    """One bar of the chart: ``lane`` is ``"compute"``, ``"encode"`` or ``"upload"``.

    For an upload, ``start`` is when the sender began handing the tensor to the
    transport and ``end`` when its last byte arrived at the server. When the
    server reported per-tensor arrival times, ``pushed_end`` keeps when the
    transport accepted the last chunk (on a real link gRPC's flow-control
    windows and the TCP send buffer accept hundreds of kB at once, so this is
    long before the bytes crossed the link). Without arrival times
    (in-process transport, a server that sends none) ``pushed_end`` is None
    and ``end`` is the push end, which equals the arrival only when the
    sender is paced (the token bucket) or there is no link.
    """

    lane: str
    name: str
    start: float
    end: float
    nbytes: int = 0
    pushed_end: float | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Timeline:
    """The record of one run.

    ``server`` holds the server's own timings in seconds (keys as the server
    reports them, e.g. ``compute``, ``queue``, ``receive``); ``reply_at`` is when
    the client had the result; ``total`` the end-to-end latency; ``where`` is
    ``"local"``, ``"cooperative"`` or ``"fallback"``; ``note`` says why a run
    fell back.
    """

    strategy: str
    compute: tuple[Interval, ...]
    upload: tuple[Interval, ...]
    server: dict = field(default_factory=dict)
    sent_at: float = 0.0
    reply_at: float = 0.0
    total: float = 0.0
    where: str = "local"
    note: str = ""
    #: each encoded tensor's encoding on the sender thread, just before its upload (codecs)
    encode: tuple[Interval, ...] = ()

    # ---- derived terms -------------------------------------------------------------
    @property
    def client_compute(self) -> float:
        """Sum of the client's per-vertex compute intervals."""
        return sum(i.seconds for i in self.compute)

    @property
    def compute_end(self) -> float:
        return max((i.end for i in self.compute), default=0.0)

    def link_intervals(self) -> tuple[Interval, ...]:
        """Each upload's time on the (serial) link, in sending order.

        Tensor ``i`` occupies the link from ``max(start_i, end_{i-1})`` (it was
        handed over, and the previous tensor's last byte has arrived) to
        ``end_i``. Without overlaps (a paced sender) these are the upload
        intervals themselves.
        """
        out = []
        free = float("-inf")
        for iv in self.upload:
            out.append(replace(iv, start=min(iv.end, max(iv.start, free))))
            free = max(free, iv.end)
        return tuple(out)

    @property
    def upload_time(self) -> float:
        """Seconds the link carried this run's tensors (overlapping intervals counted once)."""
        return sum(i.seconds for i in self.link_intervals())

    @property
    def upload_end(self) -> float:
        return max((i.end for i in self.upload), default=0.0)

    @property
    def upload_bytes(self) -> int:
        return sum(i.nbytes for i in self.upload)

    @property
    def hidden_upload(self) -> float:
        """Upload seconds (time on the link) that ran while the client was still computing."""
        end = self.compute_end
        return sum(max(0.0, min(i.end, end) - i.start) for i in self.link_intervals())

    @property
    def after_upload(self) -> float:
        """From the last upload (or the last compute when nothing was sent) to the reply."""
        return max(0.0, self.total - max(self.upload_end, self.compute_end))

    @property
    def encode_time(self) -> float:
        """Seconds the sender spent encoding tensors (codecs other than raw)."""
        return sum(i.seconds for i in self.encode)

    def terms(self) -> dict:
        """The measured terms, in seconds, named as the planner names its predicted ones
        (``upload`` includes the encoding, as the planner's ``g' = enc + c + wire / b``)."""
        return {
            "client_compute": self.client_compute,
            "upload": self.upload_time + self.encode_time,
            "encode": self.encode_time,
            "decode": float(self.server.get("decode", 0.0)),
            "hidden_upload": self.hidden_upload,
            "server": float(self.server.get("compute", 0.0)),
            "after_upload": self.after_upload,
            "total": self.total,
        }

    def wire(self) -> list[dict]:
        """Per uploaded tensor: its codec, raw and wire bytes, encode and (server) decode seconds."""
        arrivals = self.server.get("arrivals", {}) or {}
        encodes = {i.name: i for i in self.encode}
        out = []
        for iv in self.upload:
            a = arrivals.get(iv.name, {})
            enc = encodes.get(iv.name)
            raw = enc.nbytes if enc is not None else int(a.get("decoded_bytes", iv.nbytes))
            out.append({"tensor": iv.name, "codec": a.get("codec", "raw" if enc is None else "?"),
                        "bytes": int(raw), "wire_bytes": iv.nbytes,
                        "encode_s": enc.seconds if enc is not None else 0.0, "decode_s": float(a.get("decode", 0.0))})
        return out

    # ---- JSON ----------------------------------------------------------------------
    def to_json(self) -> dict:
        d = asdict(self)
        d["terms"] = self.terms()
        d["wire"] = self.wire()
        return d

    @classmethod
    def from_json(cls, d: dict) -> Timeline:
        return cls(
            strategy=d["strategy"],
            compute=tuple(Interval(**i) for i in d["compute"]),
            upload=tuple(Interval(**i) for i in d["upload"]),
            server=dict(d.get("server", {})),
            sent_at=float(d.get("sent_at", 0.0)),
            reply_at=float(d.get("reply_at", 0.0)),
            total=float(d.get("total", 0.0)),
            where=d.get("where", "local"),
            note=d.get("note", ""),
            encode=tuple(Interval(**i) for i in d.get("encode", ())),
        )


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f}ms"


def render_gantt(tl: Timeline, width: int = 60, max_rows: int = 12) -> str:
    """Draw the run as a terminal Gantt chart.

    One row for the compute lane (each vertex a run of ``#``; rows are merged
    when there are many vertices), one row per uploaded tensor (``=`` while it
    is on the link, ``.`` while it waited in the transport's buffers behind
    the previous tensor; the seconds shown are its time on the link), and a
    row for the server and the reply (``s`` from the end of the last upload to
    the reply). Marks ``!`` on a row where the run fell back to local compute.
    """
    total = max(tl.total, tl.compute_end, tl.upload_end, 1e-9)
    scale = width / total

    def bar(start: float, end: float, ch: str) -> str:
        a = min(width - 1, int(start * scale))
        b = max(a + 1, min(width, int(round(end * scale))))
        return " " * a + ch * (b - a) + " " * (width - b)

    def merge(a: str, b: str) -> str:
        return "".join(y if y != " " else x for x, y in zip(a, b))

    label_w = 18
    lines = [f"{'t':>{label_w}} |0{_ms(total):>{width - 1}}|"]
    # compute: one row if everything fits on it
    compute_row = " " * width
    for iv in tl.compute:
        compute_row = merge(compute_row, bar(iv.start, iv.end, "#"))
    label = f"compute ({len(tl.compute)})"
    lines.append(f"{label[:label_w]:{label_w}} |{compute_row}| {_ms(tl.client_compute)}")
    uploads = list(zip(tl.upload, tl.link_intervals()))
    queued = any(on.start > iv.start for iv, on in uploads)

    encoded = {iv.name: iv for iv in tl.encode}

    def upload_bar(iv: Interval, on: Interval) -> str:
        row = bar(on.start, on.end, "=")
        row = merge(bar(iv.start, iv.end, "."), row) if on.start > iv.start else row
        enc = encoded.get(iv.name)
        return merge(row, bar(enc.start, enc.end, "e")) if enc is not None else row

    shown = uploads if len(uploads) <= max_rows else uploads[: max_rows - 1]
    for iv, on in shown:
        lines.append(f"{('up ' + iv.name)[:label_w]:{label_w}} |{upload_bar(iv, on)}| {_ms(on.seconds)} "
                     f"{iv.nbytes / 1e3:.0f}kB")
    if len(uploads) > len(shown):
        rest = uploads[len(shown):]
        row = " " * width
        for iv, on in rest:
            row = merge(row, upload_bar(iv, on))
        lines.append(f"{f'up +{len(rest)} more':{label_w}} |{row}| {_ms(sum(on.seconds for _, on in rest))}")
    if tl.where != "local" or tl.upload:
        start = max(tl.upload_end, tl.compute_end)
        ch = "!" if tl.where == "fallback" else "s"
        row = bar(start, tl.total, ch)
        name = "fallback (local)" if tl.where == "fallback" else "server+reply"
        lines.append(f"{name:{label_w}} |{row}| {_ms(tl.after_upload)}")
    lines.append(
        f"{'':{label_w}}  # compute{'  e encode' if tl.encode else ''}  = upload{'  . queued' if queued else ''}"
        "  s server+reply  ! local fallback"
        + (f"  ({tl.note})" if tl.note else "")
    )
    return "\n".join(lines)
