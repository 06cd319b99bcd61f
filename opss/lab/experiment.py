"""The bandwidth experiment: the seed's Figures 6 and 7 on a real shaped link.

``opss experiment`` (root) builds the :mod:`opss.lab.testbed` — a server network
namespace joined to the client by a veth pair whose uplink is shaped by
wondershaper or tc — starts ``opss-server`` inside the namespace pinned to
one core, and for every link rate and model runs a client worker process
(this module's :func:`worker_main`) pinned to the other core under a CPU
quota (:class:`opss.lab.testbed.CpuQuota`, ``--client-cpu 0.25`` by default), so
the client is the weak side as on a Raspberry Pi. The worker profiles itself
under that quota, probes the shaped link, plans the compared arms
(:func:`~opss.lab.harness.compared_arms`: every strategy with ``--codecs`` and the paper's
raw float32 ``co@raw``, ``po@raw``, ``joint@raw``) for a sample photo as input, runs them
round-robin with ``--verify`` (identical plans once), and streams one JSON line per run; the
driver appends each to ``runs.csv`` at once, so a crash loses no finished point and a re-run
resumes where it stopped (``experiment.json`` records the settings a folder's runs were made
with; another ``--codecs``, ``--image`` or ``--max-error`` needs another ``--out``).

Outputs under ``--out`` (default ``docs/results/experiment``): ``runs.csv`` (every run:
measured latency and its terms, the prediction, cut and wire bytes, codecs), ``links.csv``
(nominal vs measured rate and the shaper used), ``plans.csv`` (planning time per model, link
and arm), ``wire/`` (per model what the client could send: codec table, codecs, the photo's
size and decode time), ``summary.md`` (median, p90, speedups over po@raw and over the best of
lo, co@raw and co with bootstrap intervals, prediction error, the gap sweep), and PNG plots:
latency bars per link (Fig. 6(a), 6(b), 7(a)), planning-time distribution (Fig. 7(b)),
predicted vs measured, the predicted speedup of opss and joint over po against bandwidth
(1–100 Mbps, from the worker's profiles) and the gap sweep (:mod:`opss.lab.gapsweep`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from opss.errors import OpssError
from opss.lab.harness import (
    BASELINES,
    arm_sessions,
    compared_arms,
    measure_strategies,
    open_session,
    same_plan_groups,
)
from opss.plan import STRATEGIES
from opss.stats import best_ratio_ci, median, p90, ratio_ci, ratio_text

DEFAULT_MODELS = ("alexnet_parallel", "googlenet", "multistream", "randwire", "resnet18", "mobilenet_v2")
DEFAULT_LINKS = ("3g", "4g", "wifi")
SWEEP_MBPS = (1, 1.5, 2, 3, 4, 5.85, 8, 12, 18.88, 25, 35, 50, 70, 100)

RUN_FIELDS = ("model", "link", "nominal_mbps", "strategy", "run", "latency_s", "predicted_s",
              "client_compute_s", "upload_s", "hidden_upload_s", "server_s", "after_upload_s",
              "pred_client_compute_s", "pred_upload_s", "pred_hidden_upload_s", "pred_server_s",
              "pred_reply_s", "cut_bytes", "wire_bytes", "codecs", "cut", "client_vertices", "where", "verified",
              "shared_with", "encode_s", "decode_s", "pred_encode_s", "pred_decode_s")

PLAN_FIELDS = ("model", "link", "strategy", "seconds_to_plan", "predicted_s", "link_b", "link_c", "shared_with",
               "cut_bytes", "wire_bytes", "codecs")
#: what the client may send by default (:func:`opss.codec.parse_codecs`), as opss-client
DEFAULT_CODECS = "lossless"
#: the input photo (matplotlib's sample JPEG, :mod:`opss.samples`), as the demo and bench_wire_latency
DEFAULT_IMAGE = "grace_hopper.jpg"


@dataclass(frozen=True)
class ExperimentConfig:
    models: tuple[str, ...] = DEFAULT_MODELS
    links: tuple[str, ...] = DEFAULT_LINKS
    strategies: tuple[str, ...] = STRATEGIES
    #: codecs of the strategies' arms; beside them run co@raw, po@raw, joint@raw (unless this is raw)
    codecs: str = DEFAULT_CODECS
    image: str = DEFAULT_IMAGE  # the input: a sample photo an installed package ships
    max_error: float | None = None  # admits lossy codecs whose measured output error is within it
    runs: int = 20
    out: Path = Path("docs/results")
    #: cores, a cgroup quota (``--client-cpu``); None: 0.25 on one machine, no quota in two-machine mode
    client_cpu_share: float | None = None
    cpu_period_us: int = 10_000
    subnet: str = "10.77.0.0/30"
    shaper: str = "auto"
    port: int = 50061
    small: bool = False
    server_profile: str = "build"
    timeout_s: float = 120.0
    extra_server_args: tuple[str, ...] = field(default=())
    server: str = ""  # HOST:PORT of a remote opss-server: two-machine mode (``--server``)
    iface: str = ""  # the client's interface towards it, whose egress is shaped (``--iface``)
    state_dir: Path = Path("/run/opss")  # what was changed, for ``--cleanup`` after a SIGKILL


# --------------------------------------------------------------------------- the worker (client side)


def worker_main(argv: list[str] | None = None) -> int:
    """The client process: ``python -m opss.lab.experiment worker JSON``; one JSON line per run on stdout.

    Waits for a line on stdin before it starts, so the driver can move it
    into the CPU cgroup first. The input is a sample photo (``args["image"]``, one that an
    installed package ships), sent as the plan says (its tensor, its uint8 crop or its own
    file); the arms are :func:`~opss.lab.harness.compared_arms`: every strategy with
    ``args["codecs"]`` and the paper's raw float32 ``co@raw``, ``po@raw`` and ``joint@raw``.
    """
    from opss.lab.harness import input_shape, raw_variant, sample_input
    from opss.wirecosts import image_decode_seconds

    args = json.loads((argv or sys.argv[1:])[-1])
    sys.stdin.readline()
    strategies = tuple(args["strategies"])
    codecs = args.get("codecs", DEFAULT_CODECS)
    image = args.get("image", DEFAULT_IMAGE)
    arms = compared_arms(strategies, codecs)
    shape = input_shape(args["model"], args["small"])
    photo = sample_input(shape, image)
    # the server decodes the file form: its time comes from the driver (outside the client's quota)
    decode_s = args["image_decode_s"] if "image_decode_s" in args else image_decode_seconds(
        photo[1].data, shape, codecs=codecs)
    session = open_session(strategies, out=sys.stderr, err=sys.stderr, model=args["model"], server=args["server"],
                           link="auto", small=args["small"], fresh_profile=True, progress=False, threads=1,
                           timeout=args["timeout_s"], codecs=codecs, max_error=args.get("max_error"),
                           image_bytes=len(photo[1].data), image_decode_s=decode_s)
    raw = None
    try:
        if args.get("require_server") and session.server_info is None:
            raise OpssError(f"no opss-server serving {args['model']} answers at {args['server']} "
                            "(start it there with --host 0.0.0.0 --models ...)")
        raw = raw_variant(session, arms)
        variants = {"raw": raw} if raw is not None else {}
        sessions = arm_sessions(session, variants, arms)
        plans = {label: sess.plans[name] for label, (sess, name) in sessions.items()}
        groups = same_plan_groups(sessions)
        print(json.dumps(_meta(session, plans, groups, image)), flush=True)
        def record(name: str, rep) -> None:  # the arm's plan now: a drift re-plan may have changed it
            sess, strategy = sessions[name]
            print(json.dumps(_run_record(sess.plans[strategy], name, rep, groups)), flush=True)

        measure_strategies(session, arms, args["runs"], share_identical=True, image=photo, variants=variants,
                           on_run=record)
    finally:
        for sess in (raw, session):
            if sess is not None:
                sess.close()
    return 0


def _meta(session, plans: dict, groups: dict[str, str], image: str) -> dict:
    """The worker's first line: the link fit, the graph, both profiles, what crosses the wire
    (codec table, codecs, the photo's size and decode time) and every arm's plan."""
    from opss.problem import costs_of

    link = session.link
    costs = costs_of(session.client_profile, session.plan_graph, "client")
    server = costs_of(session.server_profile, session.plan_graph, "server")
    wire = dict(session.wire)
    table = wire.pop("codec_table", None)
    wire = {"codecs": list(wire.get("codecs", ())), "max_error": wire.get("max_error"),
            "image_bytes": wire.get("image_bytes"), "image_decode_s": wire.get("image_decode_s"),
            "image": image, "codec_table": table.to_json() if table is not None else None}
    return {"kind": "meta", "link_b": link.b, "link_c": link.c, "graph": session.plan_graph.to_json(),
            "client_f": costs, "server_s": server, "wire": wire,
            "plans": {name: {"seconds_to_plan": p.seconds_to_plan, "predicted": p.predicted.to_json(),
                             "cut_bytes": p.cut_bytes, "wire_bytes": p.wire_bytes, "client": len(p.client),
                             "codecs": dict(p.codecs), "shared_with": groups[name] if groups[name] != name else ""}
                      for name, p in plans.items()}}


def _run_record(plan, name: str, rep, groups: dict[str, str]) -> dict:
    """One measured run of arm ``name`` (planned as ``plan``) as a line of runs.csv: its terms beside
    the prediction's. An arm whose plan is identical to an earlier one's gets that one's run
    (``shared_with`` names it)."""
    terms = rep.result.timeline.terms()
    wire = rep.result.timeline.wire()
    pred = plan.predicted
    return {
        "kind": "run", "strategy": name, "latency_s": rep.latency, "predicted_s": pred.total,
        "client_compute_s": terms["client_compute"], "upload_s": terms["upload"],
        "hidden_upload_s": terms["hidden_upload"], "server_s": terms["server"],
        "after_upload_s": terms["after_upload"], "pred_client_compute_s": pred.client_compute,
        "pred_upload_s": pred.upload, "pred_hidden_upload_s": pred.hidden_upload,
        "pred_server_s": pred.server, "pred_reply_s": pred.reply, "cut_bytes": plan.cut_bytes,
        "wire_bytes": plan.wire_bytes, "codecs": _codec_text(plan.codecs),
        "cut": " ".join(plan.cut), "client_vertices": len(plan.client),
        "where": rep.result.timeline.where, "verified": bool(rep.verify_ok),
        "shared_with": groups[name] if groups[name] != name else "",
        # the codecs' own seconds: the client's encoding and the server's decoding (the server reports it)
        "encode_s": sum(w["encode_s"] for w in wire), "decode_s": sum(w["decode_s"] for w in wire),
        "pred_encode_s": pred.encode, "pred_decode_s": pred.decode}


def _codec_text(codecs: dict) -> str:
    """A plan's codec per uploaded tensor, ``vertex=codec`` joined by spaces (raw ones left out)."""
    return " ".join(f"{v}={c}" for v, c in sorted(codecs.items()) if c != "raw")


# --------------------------------------------------------------------------- the driver (root)


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _append(path: Path, fields: tuple[str, ...], row: dict) -> None:
    """Append ``row`` to the CSV at ``path``; a file written under an older header (fewer
    columns) is first rewritten under ``fields``, so a resumed run never misaligns columns."""
    new = not path.exists()
    if not new:
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        if tuple(header) != tuple(fields):
            _rewrite(path, fields, _read_rows(path))
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())


def _drop_point(path: Path, fields: tuple[str, ...], model: str, link: str) -> None:
    """Rewrite ``path`` without the rows of (``model``, ``link``), under the current header."""
    if not path.exists():
        return
    _rewrite(path, fields, [r for r in _read_rows(path) if not (r["model"] == model and r["link"] == link)])


def _rewrite(path: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _check_settings(out: Path, cfg: ExperimentConfig) -> None:
    """Record in ``out/experiment.json`` what decides the arms' runs (codecs, photo, error budget,
    input size, the client's CPU quota and the CPU it ran on); refuse, in one line, to add runs made
    otherwise to a folder that has some."""
    from opss.profile import cpu_description

    path = out / "experiment.json"
    mine = {"codecs": cfg.codecs, "image": cfg.image, "max_error": cfg.max_error, "small": cfg.small,
            "client_cpu": client_share(cfg), "cpu": cpu_description()}
    if path.exists():
        theirs = json.loads(path.read_text())
        differ = [f"{k} {theirs.get(k)!r} (now {v!r})" for k, v in mine.items() if theirs.get(k) != v]
        if differ:
            raise OpssError(f"{out} holds runs made with {', '.join(differ)}: give another --out, "
                            f"or remove its runs.csv and {path.name} to start again")
        return
    path.write_text(json.dumps(mine, indent=1) + "\n")


def client_share(cfg: ExperimentConfig) -> float | None:
    """The client's CPU quota in cores: ``--client-cpu``, else 0.25 on one machine and none in
    two-machine mode (the client is a real weak board)."""
    return cfg.client_cpu_share or (None if cfg.server else 0.25)


def _done(rows: list[dict], model: str, link: str, strategies, runs: int) -> bool:
    count = defaultdict(int)
    for r in rows:
        if r["model"] == model and r["link"] == link:
            count[r["strategy"]] += 1
    return all(count[s] >= runs for s in strategies)


def _wait_for_server(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line.rstrip())
        if "listening on" in line:
            return line.strip()
    tail = " | ".join(lines[-3:]) or "no output"
    raise OpssError(f"opss-server did not start in the server namespace within {timeout:.0f}s: {tail}")


def _pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if (os.cpu_count() or 1) > 1 else []


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_experiment(cfg: ExperimentConfig, say=_say, gaps: tuple[float, ...] | None = None) -> Path:
    """Run every (link, model) point not yet in ``runs.csv``; then summarize. Returns the out dir.

    With ``cfg.server`` (two-machine mode) the client runs here against that
    remote opss-server, shaping ``cfg.iface``; otherwise the namespace testbed
    stands in for both machines."""
    from opss.link import link_from_spec
    from opss.lab.shaping import require_interface, require_root

    require_root("opss experiment")
    if cfg.server:
        require_interface(cfg.iface)
    for name in cfg.strategies:
        if name not in STRATEGIES:
            raise OpssError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {name!r}")
    from opss import models as zoo
    from opss import samples

    if cfg.image not in samples.SAMPLE_NAMES:
        raise OpssError(f"image: expected one of the sample photos {', '.join(samples.SAMPLE_NAMES)}, "
                        f"got {cfg.image!r}")
    arms = compared_arms(cfg.strategies, cfg.codecs)

    for m in cfg.models:
        zoo.get_spec(m)
    rates = {link: link_from_spec(link).b * 8 for link in cfg.links}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, cfg)
    runs_csv = out / "runs.csv"
    rows = _read_rows(runs_csv)
    todo = [(link, m) for link in cfg.links for m in cfg.models
            if not _done(rows, m, link, arms, cfg.runs)]
    if not todo:
        say(f"opss experiment: every point is already in {runs_csv}; summarizing")
        summarize(out, gaps)
        return out
    say(f"opss experiment: {len(todo)} of {len(cfg.links) * len(cfg.models)} (link, model) points to run, "
        f"{cfg.runs} runs x {len(arms)} arms each ({', '.join(arms)}; identical plans run once), input "
        f"{cfg.image}; results append to {runs_csv}")
    with contextlib.ExitStack() as stack:
        bed = stack.enter_context((_RemoteBed if cfg.server else _NamespaceBed)(cfg, rates[todo[0][0]], say))
        bar = _progress(len(todo))
        current = None
        for link, model in todo:
            if link != current:
                current = link
                bed.set_link(link, rates[link])
            bed.check_server()
            _run_point(cfg, bed, model, link, rates[link], bar)
            bed.check_server(f" while {model} ran at {link}: its runs fell back to local and are marked so in runs.csv")
        bar.close()
    summarize(out, gaps)
    return out


LINK_FIELDS = ("link", "nominal_mbps", "measured_mbps", "shaper", "date", "measured_by")


def _link_row(out: Path, link: str, rate: float, measured: float, shaper: str, by: str, say) -> None:
    _append(Path(out) / "links.csv", LINK_FIELDS,
            {"link": link, "nominal_mbps": rate / 1e6, "measured_mbps": measured / 1e6, "shaper": shaper,
             "date": time.strftime("%Y-%m-%d %H:%M"), "measured_by": by})
    say(f"link {link}: nominal {rate / 1e6:.2f} Mbit/s, measured {measured / 1e6:.2f} Mbit/s ({shaper}, {by})")
    if abs(measured - rate) > 0.15 * rate:
        say(f"warning: link {link} measured {100 * (measured / rate - 1):+.0f} % off its nominal rate: another "
            f"bottleneck on the path, or the {by} failed (see the worker's messages)")


class _NamespaceBed:
    """One machine: the server in a network namespace pinned to core 1, the client under a CPU quota."""

    def __init__(self, cfg: ExperimentConfig, rate: float, say):
        self.cfg, self.rate, self.say = cfg, rate, say
        self.stack = contextlib.ExitStack()

    def __enter__(self):
        from opss.lab.testbed import CpuQuota, Testbed, TestbedConfig

        cfg = self.cfg
        with self.stack:
            self.tb = tb = self.stack.enter_context(Testbed(TestbedConfig(
                rate_bps=self.rate, subnet=cfg.subnet, shaper=cfg.shaper, state_dir=cfg.state_dir)))
            share = client_share(cfg)
            self.quota = self.stack.enter_context(CpuQuota(share, period_us=cfg.cpu_period_us,
                                                           state_dir=cfg.state_dir))
            self.say(f"testbed: server namespace {tb.ns} at {tb.server_ip}, client veth {tb.client_if} shaped by "
                     f"{tb.shaper}; client CPU quota {share:g} core, server pinned to core 1")
            server_cmd = [*_pinned(1), sys.executable, "-m", "opss.server", "--host", tb.server_ip,
                          "--port", str(cfg.port), "--models", ",".join(cfg.models), "--device", "cpu",
                          "--profile", cfg.server_profile, "--log-level", "WARNING", *cfg.extra_server_args]
            if cfg.small:
                server_cmd.append("--small")
            self.server = tb.spawn_server(server_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.say(f"server: {_wait_for_server(self.server, cfg.timeout_s * 5)}")
            self.address = f"{tb.server_ip}:{cfg.port}"
            self.stack = self.stack.pop_all()
        return self

    def __exit__(self, *exc):
        self.stack.close()

    def set_link(self, link: str, rate: float) -> None:
        self.tb.set_rate(rate)
        measured = self.tb.measure_uplink(nbytes=max(200_000, int(rate / 8)), repeats=3)
        _link_row(self.cfg.out, link, rate, measured, self.tb.shaper, "tcp", self.say)

    def on_meta(self, rec: dict) -> None:
        pass  # the rate was measured by a TCP transfer into the namespace

    def check_server(self, where: str = " during the experiment") -> None:
        if self.server.poll() is not None:
            raise OpssError(f"opss-server exited (status {self.server.returncode}){where}")


class _RemoteBed:
    """Two machines: this one is the client, ``cfg.server`` the remote opss-server; ``cfg.iface``'s
    egress is shaped (restored on exit) and the rate is the one the worker's probe measured."""

    def __init__(self, cfg: ExperimentConfig, rate: float, say):
        self.cfg, self.rate, self.say = cfg, rate, say
        self.stack = contextlib.ExitStack()
        self.address = cfg.server
        self.pending_link = None

    def __enter__(self):
        from opss.lab.shaping import ShapedInterface
        from opss.lab.testbed import CpuQuota

        cfg = self.cfg
        with self.stack:
            self.shaped = sh = self.stack.enter_context(
                ShapedInterface(cfg.iface, self.rate, cfg.shaper, state_dir=cfg.state_dir))
            for line in sh.restored:
                self.say(f"opss experiment: {line}")
            self.quota = None
            if cfg.client_cpu_share:
                self.quota = self.stack.enter_context(CpuQuota(cfg.client_cpu_share, period_us=cfg.cpu_period_us,
                                                               state_dir=cfg.state_dir))
            cpu = f"client CPU quota {cfg.client_cpu_share:g} core" if self.quota else "client CPU unlimited"
            self.say(f"two-machine mode: server {cfg.server}, {cfg.iface} egress shaped by {sh.shaper}"
                     f"{f' ({sh.note})' if sh.note else ''}; {cpu}")
            self.stack = self.stack.pop_all()
        return self

    def __exit__(self, *exc):
        self.stack.close()
        for line in self.shaped.restored[-1:]:
            self.say(f"opss experiment: restored {line}")

    def set_link(self, link: str, rate: float) -> None:
        self.shaped.set_rate(rate)
        self.pending_link = (link, rate)  # its rate comes from the first worker's probe

    def on_meta(self, rec: dict) -> None:
        if self.pending_link is not None:
            link, rate = self.pending_link
            _link_row(self.cfg.out, link, rate, rec["link_b"] * 8, self.shaped.shaper, "probe", self.say)
            self.pending_link = None

    def check_server(self, where: str = "") -> None:
        pass  # a remote server's failures reach the worker, which reports them


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="points", unit="pt", file=sys.stderr, dynamic_ncols=True)


def _server_decode_s(cfg: ExperimentConfig, model: str) -> float | None:
    """The file form's preprocessing time, measured here (the driver: not under the client's quota) on
    the photo the worker sends: on one machine the server's core is as fast as this process's; in
    two-machine mode this is the client machine's time, an overestimate for a faster server."""
    from opss import samples
    from opss.lab.harness import input_shape
    from opss.wirecosts import image_decode_seconds

    data = dict(samples.sample_images())[cfg.image]
    return image_decode_seconds(data, input_shape(model, cfg.small), codecs=cfg.codecs)


def _run_point(cfg, bed, model, link, rate, bar) -> None:
    runs_csv, plans_csv = Path(cfg.out) / "runs.csv", Path(cfg.out) / "plans.csv"
    # a partly done point is rerun whole: its earlier rows are dropped so medians use one session
    for path, fields in ((runs_csv, RUN_FIELDS), (plans_csv, PLAN_FIELDS)):
        _drop_point(path, fields, model, link)
    args = {"model": model, "server": bed.address, "strategies": list(cfg.strategies), "codecs": cfg.codecs,
            "image": cfg.image, "max_error": cfg.max_error, "image_decode_s": _server_decode_s(cfg, model),
            "runs": cfg.runs, "small": cfg.small, "timeout_s": cfg.timeout_s, "require_server": bool(cfg.server)}
    cmd = [*_pinned(0), sys.executable, "-m", "opss.lab.experiment", "worker", json.dumps(args)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if bed.quota is not None:
            bed.quota.add(proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.close()
        count = defaultdict(int)
        bar.set_postfix_str(f"{model} @ {link}")
        for line in proc.stdout:
            rec = json.loads(line)
            if rec["kind"] == "meta":
                bed.on_meta(rec)
                for name, p in rec["plans"].items():
                    _append(plans_csv, PLAN_FIELDS,
                            {"model": model, "link": link, "strategy": name,
                             "seconds_to_plan": p["seconds_to_plan"], "predicted_s": p["predicted"]["total"],
                             "link_b": rec["link_b"], "link_c": rec["link_c"], "shared_with": p["shared_with"],
                             "cut_bytes": p["cut_bytes"], "wire_bytes": p["wire_bytes"],
                             "codecs": _codec_text(p["codecs"])})
                for sub, data in (("profiles", {"client_f": rec["client_f"], "server_s": rec["server_s"]}),
                                  ("graphs", rec["graph"]), ("wire", rec["wire"])):
                    (Path(cfg.out) / sub).mkdir(exist_ok=True)
                    (Path(cfg.out) / sub / f"{model}.json").write_text(json.dumps(data))
                continue
            count[rec["strategy"]] += 1
            rec.update(model=model, link=link, nominal_mbps=rate / 1e6, run=count[rec["strategy"]])
            _append(runs_csv, RUN_FIELDS, rec)
        err = proc.stderr.read()
        if proc.wait() != 0:
            last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["no message"]
            raise OpssError(f"client worker for {model} at {link} failed: {last[0]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bar.update(1)


# --------------------------------------------------------------------------- summary and plots


def summarize(out: Path, gaps: tuple[float, ...] | None = None) -> str:
    """Write summary.md and the plots from runs.csv (and plans.csv, links.csv); return the table.

    ``gaps`` are the client/server gaps of the predicted sweep
    (:mod:`opss.lab.gapsweep`; default :data:`opss.lab.gapsweep.GAPS`)."""
    from opss.lab.gapsweep import GAPS, gap_sweep, gap_table

    out = Path(out)
    rows = _read_rows(out / "runs.csv")
    if not rows:
        raise OpssError(f"no runs in {out / 'runs.csv'}: run the experiment first")
    lat = defaultdict(list)
    plan_of = {}
    pred = {}
    err = defaultdict(list)
    verified = defaultdict(lambda: True)
    fell = defaultdict(int)
    for r in rows:
        key = (r["model"], r["link"], r["strategy"])
        lat[key].append(float(r["latency_s"]))
        pred[key] = float(r["predicted_s"])
        plan_of[key] = (int(r["client_vertices"] or 0), int(float(r["cut_bytes"] or 0)), r["cut"])
        err[key].append(abs(float(r["latency_s"]) - float(r["predicted_s"])) / float(r["predicted_s"]))
        verified[key] &= r["verified"] == "True"
        fell[key] += r["where"] == "fallback"
    models = list(dict.fromkeys(r["model"] for r in rows))
    links = list(dict.fromkeys(r["link"] for r in rows))
    strategies = sorted({k[2] for k in lat}, key=_arm_order)
    ref = _po_ref(strategies)
    link_rows = {r["link"]: r for r in _read_rows(out / "links.csv")}
    shared = {(r["model"], r["link"], r["strategy"]): r.get("shared_with") or r["strategy"] for r in rows}
    wire_of = {(r["model"], r["link"], r["strategy"]): (int(float(r.get("wire_bytes") or r["cut_bytes"] or 0)),
                                                       r.get("codecs") or "") for r in rows}
    lines = [f"| link | model | arm | client vertices | upload kB | on the wire kB | codecs | median ms | p90 ms | "
             f"predicted ms | median abs err | vs {ref} [95 % CI] | vs best lo/co [95 % CI] | verified |",
             "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for link in links:
        for model in models:
            point = {s: lat[(model, link, s)] for s in strategies if (model, link, s) in lat}
            group = {s: shared[(model, link, s)] for s in point}
            for s in point:
                k = (model, link, s)
                nv, nb, _ = plan_of[k]
                wb, codecs = wire_of[k]
                lines.append(f"| {link} | {model} | {s}{_plan_label(s, group, plan_of, model, link, ref)} | {nv} | "
                             f"{nb / 1e3:.1f} | {wb / 1e3:.1f} | {_short_codecs(codecs) if nb else '-'} | "
                             f"{median(point[s]) * 1e3:.1f} | {p90(point[s]) * 1e3:.1f} | "
                             f"{pred[k] * 1e3:.1f} | {median(err[k]) * 100:.1f} % | {_vs_po(s, point, group, ref)} | "
                             f"{_vs_best(s, point, group)} | "
                             f"{'yes' if verified[k] and not fell[k] else f'NO ({fell[k]} fallbacks)'} |")
    link_lines = ["| link | nominal Mbit/s | measured Mbit/s | shaper |", "|---|---:|---:|---|"]
    for link in links:
        lr = link_rows.get(link)
        if lr:
            link_lines.append(f"| {link} | {float(lr['nominal_mbps']):.2f} | {float(lr['measured_mbps']):.2f} | {lr['shaper']} |")
    table = "\n".join(lines)
    text = "# Bandwidth experiment\n\n" + _settings_line(out) + "## Links\n\n" + "\n".join(link_lines) + "\n\n"
    text += ("## Per point (medians, ms)\n\n" + _headline(lat, shared, models, links, strategies, ref)
             + "\n\n**Bold**: the fastest arm of the point. Ratios as in the next table.\n\n")
    text += "## Latency\n\n" + table + "\n"
    text += "\n" + _TABLE_NOTE
    calib = _calibration(lat, rows, models, links, "co@raw" if "co@raw" in strategies else "co")
    if calib:
        text += "\n## Client vs server compute (the slowdown factor)\n\n" + calib + "\n"
    codec = _codec_terms(rows, models, links)
    if codec:
        text += ("\n## Codec terms (medians; the server's decode as it reports it)\n\n" + codec + "\n")
    sweep = gap_sweep(out, models, SWEEP_MBPS, gaps or GAPS)
    if sweep:
        text += (f"\n## Predicted: the client/server gap as a dimension\n\n{_GAP_NOTE}\n"
                 + gap_table(sweep) + "\n\n![gap sweep](experiment_gap_sweep.png)\n")
    (out / "summary.md").write_text(text)
    _plots(out, lat, pred, models, links, strategies)
    return text


def _settings_line(out: Path) -> str:
    """What the runs were made with (``experiment.json``), as a sentence; empty for older folders."""
    path = out / "experiment.json"
    if not path.exists():
        return ""
    st = json.loads(path.read_text())
    quota = st.get("client_cpu")
    parts = [f"the photo {st['image']}" if st.get("image") else "",
             f"codecs {st['codecs']}" if st.get("codecs") else "",
             f"lossy error budget {st['max_error']:g}" if st.get("max_error") is not None else "",
             f"client under a {quota:g}-core CPU quota" if quota else "",
             f"on {st['cpu']}" if st.get("cpu") else ""]
    return "Runs made with " + ", ".join(p for p in parts if p) + ".\n\n" if any(parts) else ""


_TABLE_NOTE = """\
Arms: each strategy with the run's codecs (default lossless: the photo may cross as its own JPEG file
or its uint8 crop, tensors zstd-compressed where that pays) and, '@raw', with the paper's raw float32
tensors; po@raw is the paper's partition-only (po itself in a `--codecs raw` run, which has no
'@raw' arms). 'upload kB' is the raw float32 size of the cut, 'on the
wire kB' what the plan sends.
'(= X plan)': the same client set, order, cut and codecs as arm X (a plan that uploads nothing is
the same as lo's whatever its order). Measured once and shared (runs.csv column `shared_with`), such
a row's ratios against X are '= X' exactly; in older runs without that column it was measured on its
own, so any difference from X is run-to-run noise, not the schedule.
'vs po@raw' is po@raw's median over this arm's, 'vs best lo/co' the smallest of the lo, co@raw and co
(the photo's own JPEG) medians over it: the alternatives a user has without a planner (> 1: this arm
is faster). In brackets the 95 % percentile-bootstrap interval of that ratio of medians, resampling
the interleaved rounds (run i of every arm of a point together, 2000 resamples; for 'best' the
minimum is taken inside every resample); 'n.s.' when the interval contains 1.0, i.e. the runs do not
decide the difference.
"""


_GAP_NOTE = """\
Planned, not measured (`gap_sweep.csv`, `experiment_gap_sweep.png`): each model's graph and the
server's own profile from this experiment, the client made exactly `gap` times slower than the
server on every vertex (`--client-slowdown`), a 2 ms per-message delay, raw float32 tensors; the
'with codecs' columns plan again with what this experiment's client could send (`wire/`: the
codec table, the photo's file and its decode time; codec times brought to the server's speed)
and compare joint with codecs against the paper's raw po. The winner is the least predicted
latency, a tie within 1 % going to the simpler strategy (lo, co, po, opss, joint).
"""


def _headline(lat, shared, models, links, arms, ref) -> str:
    """One row per (link, model): every arm's median, and joint's ratios against ``ref`` and against the
    best of lo, co@raw and co."""
    lines = ["| link | model | " + " | ".join(arms) + f" | joint vs {ref} [95 % CI] | joint vs best lo/co [95 % CI] |",
             "|---|---|" + "---:|" * len(arms) + "---:|---:|"]
    for link in links:
        for model in models:
            point = {s: lat[(model, link, s)] for s in arms if (model, link, s) in lat}
            if not point:
                continue
            group = {s: shared[(model, link, s)] for s in point}
            best = min(median(v) for v in point.values())
            cells = []
            for s in arms:
                m = median(point[s]) * 1e3 if s in point else None
                cells.append("-" if m is None else f"**{m:.0f}**" if median(point[s]) == best else f"{m:.0f}")
            joint = "joint" if "joint" in point else None
            tail = [_vs_po(joint, point, group, ref), _vs_best(joint, point, group)] if joint else ["-", "-"]
            lines.append(f"| {link} | {model} | " + " | ".join(cells) + " | " + " | ".join(tail) + " |")
    return "\n".join(lines)


def _arm_order(label: str) -> tuple:
    """Arms in the order of STRATEGIES, each strategy's paper-faithful ``@raw`` arm first."""
    base, _, variant = label.partition("@")
    return (STRATEGIES.index(base) if base in STRATEGIES else len(STRATEGIES), variant != "raw", label)


def _po_ref(arms) -> str:
    """The partition-only arm the ratios refer to: the paper's (raw float32) when it was run."""
    return "po@raw" if "po@raw" in arms else "po"


def _short_codecs(text: str) -> str:
    """A plan's codecs column: the distinct codecs it uses with their counts (raw when none)."""
    names = [item.partition("=")[2] for item in text.split()]
    if not names:
        return "raw"
    counts = {n: names.count(n) for n in dict.fromkeys(names)}
    return ", ".join(n if c == 1 else f"{n} x{c}" for n, c in counts.items())


def _plan_label(s, group, plan_of, model, link, ref="po") -> str:
    """' (= po plan)' when ``s`` ran (or would run) the ``ref`` arm's plan, ' (= X plan)' when it
    shared X's."""
    if s == ref:
        return f" (= {group[ref]} plan)" if group.get(ref, ref) != ref else ""
    if ref in group and group[s] == group[ref]:
        return f" (= {ref} plan)"
    if group[s] != s:
        return f" (= {group[s]} plan)"
    same_as_po = (model, link, ref) in plan_of and plan_of[(model, link, ref)] == plan_of[(model, link, s)]
    return f" (= {ref} plan)" if same_as_po else ""  # runs.csv from before shared_with: measured apart


def _vs_po(s, point, group, ref="po") -> str:
    """The ``ref`` arm's median over ``s``'s with its interval; '= ref' when ``s`` shared its runs."""
    if ref not in point:
        return "-"
    if s == ref:
        return "ref"
    if group[s] == group[ref]:
        return f"= {ref}"
    return ratio_text(*ratio_ci(point[ref], point[s]))


def _vs_best(s, point, group) -> str:
    """min(lo, co@raw, co medians) over ``s``'s median, the minimum taken inside every resample."""
    base = [b for b in (*BASELINES, "co@raw") if b in point]
    if not base:
        return "-"
    best = min(base, key=lambda b: median(point[b]))
    if group[s] == group[best]:
        return f"= {best}" if s != best else "ref"
    return ratio_text(*best_ratio_ci([point[b] for b in base], point[s]))


def _calibration(lat, rows, models, links, co="co") -> str:
    """Client-under-quota lo latency against the server's measured compute of the whole model (the
    ``co`` arm: co@raw when run, whose server term is the model alone, no photo to decode)."""
    srv = defaultdict(list)
    for r in rows:
        if r["strategy"] == co and r["where"] == "cooperative":
            srv[r["model"]].append(float(r["server_s"]))
    lines = [f"| model | client lo median ms | lo p90/median | server compute ({co}) median ms | {co} server p90/median "
             "| slowdown |", "|---|---:|---:|---:|---:|---:|"]
    any_row = False
    for model in models:
        lo = [x for link in links for x in lat.get((model, link, "lo"), [])]
        if lo and srv[model]:
            c, s = median(lo), median(srv[model])
            lines.append(f"| {model} | {c * 1e3:.1f} | {p90(lo) / c:.2f} | {s * 1e3:.1f} | "
                         f"{p90(srv[model]) / s:.2f} | {c / s:.1f}x |")
            any_row = True
    return "\n".join(lines) if any_row else ""


def _codec_terms(rows, models, links) -> str:
    """Measured against predicted codec seconds per arm that encodes or decodes anything: the
    client's encoding and the server's decoding (its own report); empty for runs without them."""
    terms = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("decode_s") in (None, "") or r["where"] != "cooperative" or r.get("shared_with"):
            continue
        t = terms[(r["link"], r["model"], r["strategy"])]
        for k in ("encode_s", "pred_encode_s", "decode_s", "pred_decode_s"):
            t[k].append(float(r[k] or 0))
    lines = ["| link | model | arm | codecs | encode ms (predicted) | server decode ms (predicted) |",
             "|---|---|---|---|---:|---:|"]
    codecs_of = {(r["link"], r["model"], r["strategy"]): r.get("codecs") or "" for r in rows}
    for link in links:
        for model in models:
            for (lk, m, arm), t in sorted(terms.items(), key=lambda kv: _arm_order(kv[0][2])):
                if (lk, m) != (link, model) or not (max(t["decode_s"]) > 0 or max(t["encode_s"]) > 0):
                    continue
                lines.append(f"| {link} | {model} | {arm} | {_short_codecs(codecs_of[(lk, m, arm)])} | "
                             f"{median(t['encode_s']) * 1e3:.1f} ({median(t['pred_encode_s']) * 1e3:.1f}) | "
                             f"{median(t['decode_s']) * 1e3:.1f} ({median(t['pred_decode_s']) * 1e3:.1f}) |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _plots(out: Path, lat, pred, models, links, strategies) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Fig. 6(a), 6(b), 7(a): latency bars per model and strategy, one panel per link
    fig, axes = plt.subplots(1, len(links), figsize=(5.5 * len(links), 4.2), squeeze=False)
    width = 0.8 / max(1, len(strategies))
    for ax, link in zip(axes[0], links):
        for j, s in enumerate(strategies):
            ys = [median(lat.get((m, link, s), [])) * 1e3 for m in models]
            ax.bar([i + j * width for i in range(len(models))], ys, width, label=s)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))])
        ax.set_xticklabels(models, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("latency (ms, median)")
        ax.set_yscale("log")
        ax.set_title(f"{link}")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "experiment_latency.png", dpi=120)
    plt.close(fig)

    # Fig. 7(b): planning-time distribution per model
    plans = _read_rows(out / "plans.csv")
    if plans:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        data = [[float(p["seconds_to_plan"]) * 1e3 for p in plans if p["model"] == m and p["strategy"] == "opss"]
                for m in models]
        ax.boxplot([d or [float("nan")] for d in data])
        ax.set_xticks(range(1, len(models) + 1))
        ax.set_xticklabels(models, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("opss planning time (ms)")
        ax.set_title("scheduling overhead (opss: po cut + optimal order)")
        fig.tight_layout()
        fig.savefig(out / "experiment_planning_time.png", dpi=120)
        plt.close(fig)

    # predicted vs measured
    fig, ax = plt.subplots(figsize=(5, 5))
    for s in strategies:
        xs = [pred[k] * 1e3 for k in lat if k[2] == s]
        ys = [median(lat[k]) * 1e3 for k in lat if k[2] == s]
        ax.scatter(xs, ys, label=s, s=18)
    lim = [min(min(pred.values()), 1e-3) * 1e3 * 0.8, max(max(pred.values()) * 1e3, 1) * 1.3]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted (ms)")
    ax.set_ylabel("measured median (ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "experiment_predicted_vs_measured.png", dpi=120)
    plt.close(fig)

    _sweep_plot(out, models, lat, links)


def _sweep_plot(out: Path, models, lat, links) -> None:
    """Predicted speedup of opss and joint over po against bandwidth, from the experiment's own profiles."""
    import matplotlib.pyplot as plt

    from opss.latency import PlanGraph  # noqa: F401  (planner core: no torch)
    from opss.link import LinkModel
    from opss.plan import plan_all

    prof_dir = out / "profiles"
    graphs_dir = out / "graphs"
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rows = []
    for model in models:
        pj, gj = prof_dir / f"{model}.json", graphs_dir / f"{model}.json"
        if not (pj.exists() and gj.exists()):
            continue
        prof = json.loads(pj.read_text())
        graph = PlanGraph.from_json(json.loads(gj.read_text()))
        f, s = prof["client_f"], prof["server_s"] or prof["client_f"]
        ys_o, ys_j = [], []
        for mbps in SWEEP_MBPS:
            link = LinkModel(c=0.002, b=mbps * 1e6 / 8)
            plans = plan_all(graph, f, s, link, ("po", "opss", "joint"))
            ys_o.append(plans["po"].predicted.total / plans["opss"].predicted.total)
            ys_j.append(plans["po"].predicted.total / plans["joint"].predicted.total)
            rows.append({"model": model, "mbps": mbps, "po_s": plans["po"].predicted.total,
                         "opss_s": plans["opss"].predicted.total, "joint_s": plans["joint"].predicted.total})
        line, = ax.plot(SWEEP_MBPS, ys_o, marker="o", ms=3, label=f"{model} opss")
        ax.plot(SWEEP_MBPS, ys_j, ls="--", color=line.get_color(), label=f"{model} joint")
    if not rows:
        plt.close(fig)
        return
    ax.set_xscale("log")
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xlabel("uplink (Mbit/s)")
    ax.set_ylabel("predicted speedup over po")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "experiment_speedup_vs_bandwidth.png", dpi=120)
    plt.close(fig)
    with (out / "sweep.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        try:
            raise SystemExit(worker_main(sys.argv[2:]))
        except OpssError as exc:  # the driver reports the worker's last line
            print(exc, file=sys.stderr)
            raise SystemExit(2) from None
    raise SystemExit("usage: python -m opss.lab.experiment worker JSON (started by `opss experiment`)")
