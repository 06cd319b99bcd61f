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

import sys
import time
from collections.abc import Callable
from typing import TextIO

from opss.lab.harness import BASELINES, StrategyResults, input_shape, measure_strategies, open_session, start_server
from opss.plan import STRATEGIES

__all__ = ["format_table", "run_demo"]


def format_table(results: dict, link_text: str) -> str:
    """The comparison table (times in ms)."""
    po = results.get("po", {}).get("median_s")
    base = [results[s]["median_s"] for s in BASELINES if s in results]
    best_lo_co = min(base) if base else None
    head = (f"{'strategy':<9}{'client':>8}{'cut':>5}{'upload kB':>11}{'measured':>11}{'predicted':>11}"
            f"{'error':>8}{'vs po':>8}{'vs best lo/co':>15}{'verify':>8}")
    lines = [f"link {link_text}", head, "-" * len(head)]
    for name, r in results.items():
        err = (r["median_s"] - r["predicted_s"]) / r["predicted_s"] * 100 if r["predicted_s"] > 0 else float("nan")
        vs_po = f"{po / r['median_s']:.2f}x" if po else "-"
        vs_best = f"{best_lo_co / r['median_s']:.2f}x" if best_lo_co else "-"
        lines.append(
            f"{name:<9}{r['client_vertices']:>8}{len(r['cut']) if r['uploads'] else 0:>5}"
            f"{r['cut_bytes'] / 1e3:>11.1f}{r['median_s'] * 1e3:>9.1f}ms{r['predicted_s'] * 1e3:>9.1f}ms"
            f"{err:>+7.1f}%{vs_po:>8}{vs_best:>15}{'ok' if r['verified'] else 'FAILED':>8}"
        )
    return "\n".join(lines)


def _sayer(out: TextIO | None) -> Callable[[str], None]:
    return (lambda m: print(m, file=out, flush=True)) if out is not None else (lambda m: None)


def run_demo(
    model: str = "googlenet",
    link: str = "4g",
    runs: int = 3,
    client_slowdown: float = 1.0,
    small: bool = False,
    *,
    strategies: tuple[str, ...] = STRATEGIES,
    wire_dtype: str = "float32",
    out: TextIO | None = sys.stdout,
    err: TextIO | None = sys.stderr,
    seed: int = 0,
    fresh_profiles: bool = True,
) -> StrategyResults:
    """Run the comparison and print the table; returns the numbers per strategy.

    ``link`` is a preset (``3g``, ``4g``, ``wifi``) or a rate (``5.85mbit``):
    the planners use it and the token bucket enforces it on the upload.
    ``client_slowdown`` emulates a client that many times slower than this CPU
    (1: as fast; a Raspberry Pi class board is several times slower): each
    client layer then takes ``client_slowdown`` times its profiled time (the
    compute thread sleeps out the rest after the real computation).
    ``small`` uses the models' small test inputs. Raises OpssError on a bad
    model name or link. ``fresh_profiles`` measures both profiles now (a few
    seconds) instead of using the stored tables: client and server share this
    machine, so its current load is what both will see.
    """
    from opss import models
    from opss.link import link_from_spec

    t_start = time.perf_counter()
    models.get_spec(model)  # unknown model: fail before starting anything
    fixed = link_from_spec(link)
    say = _sayer(out)
    say(f"opss demo: {model} at {list(input_shape(model, small))}, uplink {link} ({fixed.mbps:.2f} Mbps, "
        f"token bucket in the sender), client {client_slowdown:g}x slower than this CPU (1 thread), "
        f"in-process server on 127.0.0.1")
    server = start_server(model, small, seed, fresh_profiles)
    session = None
    try:
        say(f"server: listening on 127.0.0.1:{server.port} ({server.store.device})")
        session = open_session(
            strategies, out=out, err=err, model=model, server=f"127.0.0.1:{server.port}", link=link,
            throttle=fixed.b, wire_dtype=wire_dtype, small=small, seed=seed,
            client_slowdown=float(client_slowdown), progress=out is not None, fresh_profile=fresh_profiles,
            pace=True,
        )
        for name in strategies:
            say(session.describe_plan(name))
        results = measure_strategies(session, strategies, runs, seed=seed, say=say)
        _report(say, results, f"{link} ({fixed.mbps:.2f} Mbps), {runs} runs each, medians", t_start)
        return results
    finally:
        if session is not None:
            session.close()
        server.stop(0).wait(5)


def _report(say: Callable[[str], None], results: StrategyResults, link_text: str, t_start: float) -> None:
    """The table and the verdict line after the runs."""
    say("")
    say(format_table(results, link_text))
    ok = all(r["verified"] for r in results.values())
    say(f"verify: {'every output equals the local full model' if ok else 'MISMATCH'}; "
        f"client and server share this machine's CPU; {time.perf_counter() - t_start:.0f}s in all")
