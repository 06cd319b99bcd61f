"""The embedded demo (``opss demo``): an in-process server, a shaped uplink, five strategies compared.

:func:`run_demo` starts an ``opss-server`` on 127.0.0.1 (port 0) inside this
process, shapes the client's upload with the sender's token bucket at the
link rate (no root needed), plans ``lo``, ``co``, ``po``, ``opss`` and
``joint`` on the same graph, costs and link, runs each a few times
(round-robin, after one warm-up run each), verifies every output against
the local full model, and prints a table: measured median, predicted,
speedup over ``po`` and over the best of ``lo``/``co``.

Costs: the client's profile is this CPU with one thread (the stored table,
built on the spot if missing); the server reports its own per-vertex times
through ``ListModels`` (its profile, the same machine with all threads, or
the GPU). Client and server share this machine's cores, as a Pi and its PC
would not; the demo says so.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from opss.lab.harness import (
    BASELINES,
    StrategyResults,
    compared_arms,
    input_shape,
    measure_strategies,
    open_session,
    raw_variant,
    sample_input,
    start_server,
)
from opss.plan import STRATEGIES

__all__ = ["format_table", "run_demo", "verdict"]


def format_table(results: dict, link_text: str) -> str:
    """The comparison table (times in ms)."""
    po = results.get("po@raw", results.get("po", {})).get("median_s")  # the paper's partition-only
    base = [r["median_s"] for s, r in results.items() if s.partition("@")[0] in BASELINES]
    best_lo_co = min(base) if base else None
    head = (f"{'strategy':<10}{'client':>7}{'cut':>5}{'upload kB':>11}{'codecs':>11}{'measured':>11}{'predicted':>11}"
            f"{'error':>8}{'vs po':>8}{'vs best lo/co':>15}{'verify':>8}")
    lines = [f"link {link_text}", head, "-" * len(head)]
    for name, r in results.items():
        err = (r["median_s"] - r["predicted_s"]) / r["predicted_s"] * 100 if r["predicted_s"] > 0 else float("nan")
        vs_po = f"{po / r['median_s']:.2f}x" if po else "-"
        vs_best = f"{best_lo_co / r['median_s']:.2f}x" if best_lo_co else "-"
        codecs = "+".join(sorted(set(r.get("codecs", {}).values()))) or ("raw" if r["uploads"] else "-")
        lines.append(
            f"{name:<10}{r['client_vertices']:>7}{len(r['cut']) if r['uploads'] else 0:>5}"
            f"{r.get('wire_bytes', r['cut_bytes']) / 1e3:>11.1f}{codecs:>11}"
            f"{r['median_s'] * 1e3:>9.1f}ms{r['predicted_s'] * 1e3:>9.1f}ms"
            f"{err:>+7.1f}%{vs_po:>8}{vs_best:>15}{'ok' if r['verified'] else 'FAILED':>8}"
            + (f"  (= {r['same_plan_as']} plan, measured once)" if r.get("same_plan_as") else "")
        )
    return "\n".join(lines)


def verdict(results: dict, arm: str = "joint") -> str:
    """How ``arm`` compares with the best of lo/co and with the paper's partition-only,
    as ratios of medians with 95 % bootstrap intervals over the interleaved rounds
    ("n.s.": the interval contains 1.0, the difference is not shown to be real)."""
    from opss.stats import best_ratio_ci, ratio_ci, ratio_text

    if arm not in results:
        return ""
    mine = results[arm]["runs_s"]
    base = [results[s]["runs_s"] for s in results if s.partition("@")[0] in BASELINES]
    parts = []
    if base:
        parts.append(f"vs the best of lo/co {ratio_text(*best_ratio_ci(base, mine))}")
    po = "po@raw" if "po@raw" in results else "po"
    if po in results and po != arm:
        parts.append(f"vs the paper's {po} {ratio_text(*ratio_ci(results[po]['runs_s'], mine))}")
    return f"{arm} speedup (ratio of medians [95% CI]): " + "; ".join(parts) if parts else ""


def _sayer(out: TextIO | None) -> Callable[[str], None]:
    return (lambda m: print(m, file=out, flush=True)) if out is not None else (lambda m: None)


def run_demo(
    model: str = "googlenet",
    link: str = "4g",
    runs: int = 5,
    client_slowdown: float = 1.0,
    small: bool = False,
    *,
    strategies: tuple[str, ...] = STRATEGIES,
    wire_dtype: str = "float32",
    codecs: str = "lossless",
    max_error: float | None = None,
    image: str | None = None,
    out: TextIO | None = sys.stdout,
    err: TextIO | None = sys.stderr,
    seed: int = 0,
    fresh_profiles: bool = True,
) -> StrategyResults:
    """Run the comparison and print the table; returns the numbers per strategy.

    ``link`` is a preset or a rate (planned and enforced by the token bucket); each client
    layer takes ``client_slowdown`` times its profile; the input is the photo ``image``
    (default the sample JPEG matplotlib ships); the paper's raw arms run beside the codec
    ones (:func:`~opss.lab.harness.compared_arms`); ``fresh_profiles`` measures both profiles now.
    """
    from opss import models
    from opss.link import link_from_spec
    from opss.wirecosts import image_decode_seconds

    t_start = time.perf_counter()
    models.get_spec(model)  # unknown model: fail before starting anything
    fixed = link_from_spec(link)
    say = _sayer(out)
    shape = input_shape(model, small)
    photo = _photo(image, shape)
    say(f"opss demo: {model} at {list(shape)}, uplink {link} ({fixed.mbps:.2f} Mbps, "
        f"token bucket in the sender), client {client_slowdown:g}x slower than this CPU (1 thread), "
        f"in-process server on 127.0.0.1; input {image or 'grace_hopper.jpg (matplotlib sample)'}, "
        f"{len(photo[1].data) / 1e3:.1f} kB file; codecs {codecs}; load average {os.getloadavg()[0]:.1f}")
    server = start_server(model, small, seed, fresh_profiles)
    session = raw = None
    arms = compared_arms(strategies, codecs)
    try:
        say(f"server: listening on 127.0.0.1:{server.port} ({server.store.device})")
        session = open_session(
            strategies, out=out, err=err, model=model, server=f"127.0.0.1:{server.port}", link=link,
            throttle=fixed.b, wire_dtype=wire_dtype, small=small, seed=seed,
            client_slowdown=float(client_slowdown), progress=out is not None, fresh_profile=fresh_profiles,
            pace=True, codecs=codecs, max_error=max_error, image_bytes=len(photo[1].data),
            image_decode_s=image_decode_seconds(photo[1].data, shape, codecs=codecs),
        )
        raw = raw_variant(session, arms)
        for name in strategies:
            say(session.describe_plan(name))
        results = measure_strategies(session, arms, runs, seed=seed, say=say, image=photo,
                                     variants={"raw": raw} if raw is not None else None, share_identical=True)
        _report(say, results, f"{link} ({fixed.mbps:.2f} Mbps), {runs} runs each, medians", t_start)
        return results
    finally:
        for sess in (session, raw):
            if sess is not None:
                sess.close()
        server.stop(0).wait(5)


def _photo(image: str | None, shape) -> tuple:
    """``(tensor, ImageSource)`` of ``image`` (a file) or of the sample photo."""
    from opss.client.inputs import load_image_input

    return load_image_input(image, tuple(shape)) if image else sample_input(shape)


def _report(say: Callable[[str], None], results: StrategyResults, link_text: str, t_start: float) -> None:
    """The table and the verdict line after the runs."""
    say("")
    say(format_table(results, link_text))
    if line := verdict(results):
        say(line)
    ok = all(r["verified"] for r in results.values())
    say(f"verify: {'every output equals the local full model' if ok else 'MISMATCH'}; "
        f"client and server share this machine's CPU; {time.perf_counter() - t_start:.0f}s in all")
