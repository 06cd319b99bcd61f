"""What happened during one inference: compute and upload intervals, server timings, reply.

Times are seconds relative to the start of the run (``t=0`` when the compute
thread starts). The timeline is plain data: it renders as a terminal Gantt
chart (``--timeline``) and round-trips through JSON (``--json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

__all__ = ["Interval", "Timeline", "render_gantt"]


@dataclass(frozen=True)
class Interval:
    """One bar of the chart: ``lane`` is ``"compute"`` or ``"upload"``."""

    lane: str
    name: str
    start: float
    end: float
    nbytes: int = 0

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

    # ---- derived terms -------------------------------------------------------------
    @property
    def client_compute(self) -> float:
        """Sum of the client's per-vertex compute intervals."""
        return sum(i.seconds for i in self.compute)

    @property
    def compute_end(self) -> float:
        return max((i.end for i in self.compute), default=0.0)

    @property
    def upload_time(self) -> float:
        return sum(i.seconds for i in self.upload)

    @property
    def upload_end(self) -> float:
        return max((i.end for i in self.upload), default=0.0)

    @property
    def upload_bytes(self) -> int:
        return sum(i.nbytes for i in self.upload)

    @property
    def hidden_upload(self) -> float:
        """Upload seconds that ran while the client was still computing."""
        end = self.compute_end
        return sum(max(0.0, min(i.end, end) - i.start) for i in self.upload)

    @property
    def after_upload(self) -> float:
        """From the last upload (or the last compute when nothing was sent) to the reply."""
        return max(0.0, self.total - max(self.upload_end, self.compute_end))

    def terms(self) -> dict:
        """The measured terms, in seconds, named as the planner names its predicted ones."""
        return {
            "client_compute": self.client_compute,
            "upload": self.upload_time,
            "hidden_upload": self.hidden_upload,
            "server": float(self.server.get("compute", 0.0)),
            "after_upload": self.after_upload,
            "total": self.total,
        }

    # ---- JSON ----------------------------------------------------------------------
    def to_json(self) -> dict:
        d = asdict(self)
        d["terms"] = self.terms()
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
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f}ms"


def render_gantt(tl: Timeline, width: int = 60, max_rows: int = 12) -> str:
    """Draw the run as a terminal Gantt chart.

    One row for the compute lane (each vertex a run of ``#``; rows are merged
    when there are many vertices), one row per uploaded tensor (``=``), and a
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
    uploads = list(tl.upload)
    shown = uploads if len(uploads) <= max_rows else uploads[: max_rows - 1]
    for iv in shown:
        row = bar(iv.start, iv.end, "=")
        lines.append(f"{('up ' + iv.name)[:label_w]:{label_w}} |{row}| {_ms(iv.seconds)} {iv.nbytes / 1e3:.0f}kB")
    if len(uploads) > len(shown):
        rest = uploads[len(shown):]
        row = " " * width
        for iv in rest:
            row = merge(row, bar(iv.start, iv.end, "="))
        lines.append(f"{f'up +{len(rest)} more':{label_w}} |{row}| {_ms(sum(i.seconds for i in rest))}")
    if tl.where != "local" or tl.upload:
        start = max(tl.upload_end, tl.compute_end)
        ch = "!" if tl.where == "fallback" else "s"
        row = bar(start, tl.total, ch)
        name = "fallback (local)" if tl.where == "fallback" else "server+reply"
        lines.append(f"{name:{label_w}} |{row}| {_ms(tl.after_upload)}")
    lines.append(
        f"{'':{label_w}}  # compute  = upload  s server+reply  ! local fallback"
        + (f"  ({tl.note})" if tl.note else "")
    )
    return "\n".join(lines)
