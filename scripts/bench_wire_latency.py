"""Benchmark what crosses the link: the latency half (predicted and measured), raw vs codecs.

1. **Predicted** (``predicted`` table): every zoo model, links 3G / 4G / Wi-Fi,
   client 10x slower than this CPU (``--client-slowdown``), the committed
   profiles and codec tables; the input is a photo (the sample JPEG that
   matplotlib ships, 61 kB: what a camera would send) or a bare tensor (no
   file exists, so no image forms); codecs ``raw`` (the paper's), ``lossless``
   (the default, exact forms only) and ``lossy`` (every codec, ``--max-error
   0.01``). Per strategy the predicted total; ``joint raw / joint`` is the
   codecs' predicted speedup.
2. **Measured** (``measured`` table): an in-process ``opss-server`` on
   127.0.0.1, the upload shaped by the client's token bucket at the link rate,
   the client paced at 10x its profile (the demo's emulation of a Pi-class
   board); arms ``lo``, ``co@raw`` (the paper's cloud-only), ``co`` (default
   codecs: the photo's own file), ``po@raw`` (the paper's partition-only),
   ``joint@raw`` and ``joint`` (default codecs), run round-robin (one warm-up
   round, then ``--runs`` rounds) and every output verified against the local
   full model; arms with identical plans run once and share their runs.
   Ratios are of medians with their 95 % bootstrap interval (rounds resampled
   together: the arms of a round ran back to back); a ratio whose interval
   contains 1.0 is marked n.s. ``--tensor-models`` adds arms without a photo
   file (``joint@raw`` vs ``joint`` on the photo's tensor: real activations, but
   neither the file nor the uint8 crop may travel).

Writes ``bench_wire_latency.predicted.csv``, ``bench_wire_latency.measured.csv``,
``bench_wire_latency.md`` and ``bench_wire_latency.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _bench

LINKS = ("3g", "4g", "wifi")
ARMS = ("lo", "co@raw", "co", "po@raw", "joint@raw", "joint")


def predicted_rows(models: list[str], links, slowdown: float, photo_bytes: int,
                   photo_decode_s: float | None = None) -> list[dict]:
    from opss.link import link_from_spec
    from opss.plan import STRATEGIES, plan_model
    from opss.profile import capture_model
    from opss.wirecosts import wire_options

    rows = []
    for model in models:
        lg = capture_model(model, "layer")
        for link_name in links:
            link = link_from_spec(link_name)
            for inp in ("photo", "tensor"):
                image_bytes = photo_bytes if inp == "photo" else None
                decode_s = photo_decode_s if inp == "photo" else None
                per = {}
                for label, spec, err in (("raw", "raw", None), ("lossless", "lossless", None),
                                         ("lossy", "all", 0.01)):
                    wire = wire_options(lg, spec, max_error=err, image_bytes=image_bytes, image_decode_s=decode_s,
                                        progress=False,
                                        build_missing=False)  # the committed tables
                    _, plans = plan_model(model, link, STRATEGIES, client_slowdown=slowdown, layer_graph=lg,
                                          wire=wire, progress=False)
                    per[label] = plans
                    row = {"model": model, "link": link_name, "input": inp, "codecs": label}
                    for name, p in plans.items():
                        row[f"{name}_ms"] = p.total * 1e3
                    row["joint_wire_kB"] = plans["joint"].wire_bytes / 1e3
                    row["joint_codecs"] = "+".join(sorted(set(plans["joint"].codecs.values()))) or "-"
                    row["joint_client"] = len(plans["joint"].client)
                    row["joint_raw_over_joint"] = per["raw"]["joint"].total / plans["joint"].total
                    rows.append(row)
    return rows


def measure(model: str, link_name: str, runs: int, slowdown: float, photo, *, tensor: bool) -> dict:
    """One model at one link: every arm interleaved; returns per arm its per-round latencies."""
    from opss.lab.harness import measure_strategies, open_session, open_variant, start_server
    from opss.link import link_from_spec
    from opss.wirecosts import image_decode_seconds

    link = link_from_spec(link_name)
    server = start_server(model)
    sessions = []
    try:
        common = dict(model=model, server=f"127.0.0.1:{server.port}", link=link_name, throttle=link.b,
                      client_slowdown=slowdown, pace=True, progress=False)
        arms = list(ARMS)
        s = open_session(arms, out=None, image_bytes=len(photo[1].data),
                         image_decode_s=image_decode_seconds(photo[1].data, (1, 3, 224, 224)), **common)
        raw = open_variant(s, ("co", "po", "joint"), codecs="raw")
        sessions += [s, raw]
        variants = {"raw": raw}
        rounds: dict[str, list[float]] = {}

        def record(name, rep):
            rounds.setdefault(name, []).append(rep.latency)

        res = measure_strategies(s, arms, runs, image=photo, variants=variants, on_run=record, share_identical=True)
        out = {"photo": res, "rounds": rounds}
        if tensor:
            t = open_variant(s, ("joint",), image_bytes=None, image_decode_s=None)
            sessions.append(t)
            x = photo[0]  # the photo's tensor, sent as a tensor: real activations, but no file to send
            trounds: dict[str, list[float]] = {}
            tres = measure_strategies(t, ("joint", "joint@raw"), runs, image=(x, None), share_identical=True,
                                      variants={"raw": raw}, on_run=lambda n, r: trounds.setdefault(n, []).append(
                                          r.latency))
            out.update(tensor=tres, tensor_rounds=trounds)
        return out
    finally:
        for sess in sessions:
            sess.close()
        server.stop(0).wait(5)


def _ratio(num: list[float], den: list[float]) -> str:
    from opss.stats import ratio_ci, ratio_text

    return ratio_text(*ratio_ci(num, den))


def measured_rows(models, links, runs, slowdown, photo, tensor_models) -> list[dict]:
    from opss.stats import best_ratio_ci, median, ratio_text

    rows = []
    for model in models:
        for link_name in links:
            t = time.perf_counter()
            m = measure(model, link_name, runs, slowdown, photo, tensor=model in tensor_models and link_name == "4g")
            res, rounds = m["photo"], m["rounds"]
            row = {"model": model, "link": link_name, "runs": runs,
                   "verified": all(r["verified"] for r in res.values()),
                   "fallbacks": sum(r["fallbacks"] for r in res.values())}
            for arm in ARMS:
                row[f"{arm}_ms"] = median(rounds[arm]) * 1e3
                row[f"{arm}_pred_ms"] = res[arm]["predicted_s"] * 1e3
            row["joint_codecs"] = "+".join(sorted(set(res["joint"]["codecs"].values()))) or "-"
            row["best_lo_co_over_joint"] = ratio_text(*best_ratio_ci([rounds["lo"], rounds["co"]], rounds["joint"]))
            row["co_over_co_raw"] = _ratio(rounds["co"], rounds["co@raw"])
            row["joint_raw_over_joint"] = _ratio(rounds["joint@raw"], rounds["joint"])
            row["po_raw_over_joint"] = _ratio(rounds["po@raw"], rounds["joint"])
            if "tensor" in m:
                tr = m["tensor_rounds"]
                row["tensor_joint_raw_over_joint"] = _ratio(tr["joint@raw"], tr["joint"])
                row["verified"] = row["verified"] and all(r["verified"] for r in m["tensor"].values())
            row["seconds"] = time.perf_counter() - t
            rows.append(row)
            print(f"{model} {link_name}: " + ", ".join(f"{a} {row[a + '_ms']:.0f}ms" for a in ARMS)
                  + f"; min(lo,co)/joint {row['best_lo_co_over_joint']}", flush=True)
    return rows


def _plot(pred: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    photo = [r for r in pred if r["input"] == "photo"]
    models = sorted({r["model"] for r in photo})
    fig, axes = plt.subplots(1, len(LINKS), figsize=(4 * len(LINKS), 3.6), sharey=True)
    for ax, link in zip(axes, LINKS):
        for k, codecs in enumerate(("raw", "lossless", "lossy")):
            ys = [next(r["joint_ms"] for r in photo if r["model"] == m and r["link"] == link
                       and r["codecs"] == codecs) for m in models]
            ax.bar([i + 0.27 * (k - 1) for i in range(len(models))], ys, width=0.27, label=codecs)
        ax.set_title(f"joint, predicted, {link}")
        ax.set_xticks(range(len(models)), models, rotation=60, fontsize=7)
        ax.set_yscale("log")
    axes[0].set_ylabel("ms (client 10x)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    from opss import models as zoo
    from opss.lab.harness import sample_input
    from opss.wirecosts import image_decode_seconds

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="all")
    p.add_argument("--links", default=",".join(LINKS))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--client-slowdown", type=float, default=10.0)
    p.add_argument("--tensor-models", default="googlenet,resnet50",
                   help="models also measured on a tensor input (the photo's tensor, no file) at 4G "
                        "(default: the two with the largest predicted lossless gain there)")
    p.add_argument("--no-measure", action="store_true", help="the predicted table only")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    args = p.parse_args(argv)
    models = zoo.names() if args.models == "all" else args.models.split(",")
    links = args.links.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    photo = sample_input((1, 3, 224, 224))
    pred = predicted_rows(models, links, args.client_slowdown, len(photo[1].data),
                          image_decode_seconds(photo[1].data, (1, 3, 224, 224)))
    _bench.write_csv(args.out / "bench_wire_latency.predicted.csv", pred)
    md = ["## Predicted (ms, client 10x; photo = the 61 kB sample JPEG)", "",
          _bench.markdown(pred, list(pred[0]))]
    if not args.no_measure:
        meas = measured_rows(models, links, args.runs, args.client_slowdown, photo,
                             set(args.tensor_models.split(",")))
        _bench.write_csv(args.out / "bench_wire_latency.measured.csv", meas)
        md += ["", "## Measured (ms, medians; ratios of medians [95% bootstrap CI], n.s. = contains 1.0)", "",
               _bench.markdown(meas, list(dict.fromkeys(k for r in meas for k in r)))]
    (args.out / "bench_wire_latency.md").write_text("\n".join(md) + "\n")
    _plot(pred, args.out / "bench_wire_latency.png")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
