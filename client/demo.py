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

import statistics
import sys
import time
from typing import Any, TextIO

__all__ = ["DEMO_STRATEGIES", "DemoResult", "format_table", "measure_strategies", "run_demo", "start_server"]

DEMO_STRATEGIES = ("lo", "co", "po", "opss", "joint")


class DemoResult(dict):
    """``{strategy: {"median_s", "predicted_s", "runs", "verified", "cut", "cut_bytes", ...}}``."""


def _server_profile_fn(small: bool, fresh: bool = False):
    """The server's per-vertex times, reported by ListModels (its own profile)."""

    def profile_fn(graph: Any, module: Any, device: Any) -> dict[str, float]:
        from opss.profile import load_or_build_profile, measure_profile

        name = graph.model
        dev = "cuda" if str(device).startswith("cuda") else "cpu"
        if small or fresh:
            prof = measure_profile(name, device=str(device), threads=_server_threads(dev),
                                   repeats=5 if small else 10, warmup=1 if small else 2,
                                   input_shape=_shape(name, small), progress=False, graph=graph, module=module)
        else:
            prof = load_or_build_profile(name, role="server", progress=True, graph=graph, module=module)
        return prof.costs_for(graph)

    return profile_fn


def _server_threads(device: str) -> int:
    from opss.profile import role_settings

    return role_settings("server")[1] if device == "cpu" else 1


def _shape(name: str, small: bool) -> tuple[int, ...]:
    from opss import models

    spec = models.get_spec(name)
    return tuple(spec.test_input_shape if small else spec.input_shape)


def format_table(results: dict, link_text: str) -> str:
    """The comparison table (times in ms)."""
    po = results.get("po", {}).get("median_s")
    base = [results[s]["median_s"] for s in ("lo", "co") if s in results]
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


def start_server(model: str, small: bool = False, seed: int = 0, fresh_profile: bool = False) -> Any:
    """An in-process opss-server for ``model`` on 127.0.0.1, port 0, reporting its own profile."""
    from opss.server.app import build_server
    from opss.server.config import ServerConfig

    return build_server(ServerConfig(host="127.0.0.1", port=0, device="auto", models=(model,), small=small,
                                     seed=seed, warmup_runs=1, max_inflight=2, max_workers=4,
                                     profile_fn=_server_profile_fn(small, fresh_profile)))


def measure_strategies(session: Any, x: Any, strategies: tuple[str, ...], runs: int,
                       say: Any = None) -> DemoResult:
    """Run every strategy ``runs`` times, round-robin after one warm-up round; verify every output.

    Returns per strategy the measured median, p90 and every latency (seconds), the
    prediction, the cut, and whether every output matched the local full model.
    """
    times: dict[str, list[float]] = {name: [] for name in strategies}
    verified = {name: True for name in strategies}
    fallbacks = {name: 0 for name in strategies}
    for rnd in range(runs + 1):  # round 0 warms up every path
        for name in strategies:
            session.use(name)
            rep = session.run(x, verify=True)
            verified[name] &= bool(rep.verify_ok)
            if rep.result.fell_back:
                fallbacks[name] += 1
                if say is not None:
                    say(f"  {name}: {rep.notes[0] if rep.notes else rep.result.timeline.note}")
            if rnd > 0:
                times[name].append(rep.latency)
    results = DemoResult()
    for name in strategies:
        p = session.plans[name]
        lat = sorted(times[name])
        results[name] = {
            "median_s": statistics.median(lat),
            "p90_s": lat[min(len(lat) - 1, max(0, -(-9 * len(lat) // 10) - 1))],
            "runs_s": times[name],
            "predicted_s": p.predicted.total,
            "predicted": p.predicted.to_json(),
            "client_vertices": len(p.client),
            "cut": list(p.cut),
            "uploads": bool(p.cut_bytes),
            "cut_bytes": p.cut_bytes,
            "verified": verified[name],
            "fallbacks": fallbacks[name],
        }
    return results


def run_demo(
    model: str = "googlenet",
    link: str = "4g",
    runs: int = 3,
    client_cpu: float | None = None,
    small: bool = False,
    *,
    strategies: tuple[str, ...] = DEMO_STRATEGIES,
    wire_dtype: str = "float32",
    out: TextIO | None = sys.stdout,
    err: TextIO | None = sys.stderr,
    seed: int = 0,
    fresh_profiles: bool = True,
) -> DemoResult:
    """Run the comparison and print the table; returns the numbers per strategy.

    ``link`` is a preset (``3g``, ``4g``, ``wifi``) or a rate (``5.85mbit``):
    the planners use it and the token bucket enforces it on the upload.
    ``client_cpu`` emulates a client that many times slower than this CPU
    (``None``: as fast; a Raspberry Pi class board is several times slower):
    each client layer then takes ``client_cpu`` times its profiled time (the
    compute thread sleeps out the rest after the real computation).
    ``small`` uses the models' small test inputs. Raises OpssError on a bad
    model name or link. ``fresh_profiles`` measures both profiles now (a few
    seconds) instead of using the stored tables: client and server share this
    machine, so its current load is what both will see.
    """
    import torch

    from opss import models
    from opss.client.session import ClientConfig, ClientSession
    from opss.link import link_from_spec

    t_start = time.perf_counter()
    models.get_spec(model)  # unknown model: fail before starting anything
    fixed = link_from_spec(link)
    say = (lambda m: print(m, file=out, flush=True)) if out is not None else (lambda m: None)
    say(f"opss demo: {model} at {list(_shape(model, small))}, uplink {link} ({fixed.mbps:.2f} Mbps, "
        f"token bucket in the sender), client {client_cpu or 1:g}x slower than this CPU (1 thread), "
        f"in-process server on 127.0.0.1")
    server = start_server(model, small, seed, fresh_profiles)
    session = None
    try:
        say(f"server: listening on 127.0.0.1:{server.port} ({server.store.device})")
        cfg = ClientConfig(
            model=model, server=f"127.0.0.1:{server.port}", strategy=strategies[0], also_plan=strategies[1:],
            link=link, throttle=fixed.b, wire_dtype=wire_dtype, small=small, seed=seed,
            client_slowdown=float(client_cpu or 1.0), progress=out is not None, fresh_profile=fresh_profiles,
            pace=True,
        )
        session = ClientSession(cfg, out=out, err=err)
        x = torch.randn(_shape(model, small), generator=torch.Generator().manual_seed(seed))
        for name in strategies:
            say(session.describe_plan(name))
        results = measure_strategies(session, x, strategies, runs, say)
        say("")
        say(format_table(results, f"{link} ({fixed.mbps:.2f} Mbps), {runs} runs each, medians"))
        ok = all(r["verified"] for r in results.values())
        say(f"verify: {'every output equals the local full model' if ok else 'MISMATCH'}; "
            f"client and server share this machine's CPU; {time.perf_counter() - t_start:.0f}s in all")
        return results
    finally:
        if session is not None:
            session.close()
        server.stop(0).wait(5)


def main(argv: list[str] | None = None) -> int:
    """``python -m opss.client.demo [--model M] [--link L] [--runs N] [--client-cpu X] [--small]``."""
    import argparse

    from opss.errors import OpssError

    p = argparse.ArgumentParser(prog="opss-demo", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="googlenet")
    p.add_argument("--link", default="4g", help="preset 3g|4g|wifi or a rate such as 5.85mbit (default 4g)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--client-cpu", type=float, default=None, metavar="X",
                   help="emulate a client X times slower than this CPU")
    p.add_argument("--small", action="store_true", help="small test inputs")
    args = p.parse_args(argv)
    try:
        results = run_demo(args.model, args.link, args.runs, args.client_cpu, args.small)
    except OpssError as exc:
        print(f"opss demo: error: {exc}", file=sys.stderr)
        return 2
    return 0 if all(r["verified"] for r in results.values()) else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
