"""What every harness shares: an in-process server, a session planning several strategies, the measuring loop.

:func:`measure_strategies` is the one loop behind ``opss demo``, the client
worker of ``opss experiment`` and ``scripts/bench_client.py``: every planned
strategy is run through the real :class:`~opss.client.session.ClientSession`
(its runtime, its transport, the server it talks to), round-robin after one
warm-up round so slow drifts of the machine hit every strategy alike; every
output is verified against the local full model, and the measured latencies
are collected beside the plan's prediction. With ``share_identical``, arms
whose plans are identical (:func:`same_plan_groups`: same session or a variant of
it, client set, order, cut and codecs) are run once and the measurement is shared.
:func:`compared_arms` and :func:`raw_variant` set up the side-by-side of the paper's raw
float32 arms (``co@raw``, ``po@raw``, ``joint@raw``) and the codec ones.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from opss.errors import OpssError
from opss.stats import median, p90

__all__ = ["BASELINES", "StrategyResults", "arm_sessions", "compared_arms", "input_shape", "measure_strategies",
           "open_session", "open_variant", "raw_variant", "same_plan_groups", "sample_input", "start_server"]

#: The single-side strategies (all local, all cloud) whose best the reports compare against.
BASELINES = ("lo", "co")
#: Config fields a variant may change and still share identical plans' runs with its base
#: (:func:`same_plan_groups`): they change only the bytes on the wire, which a plan's codecs show.
WIRE_SETTINGS = frozenset({"codecs", "max_error", "image_bytes", "image_decode_s"})


class StrategyResults(dict):
    """``{strategy: {"median_s", "p90_s", "runs_s", "predicted_s", "cut", "cut_bytes", "verified", ...}}``."""


def input_shape(model: str, small: bool) -> tuple[int, ...]:
    """The input shape of a zoo model (its small test shape with ``small``)."""
    from opss import models

    spec = models.get_spec(model)
    return tuple(spec.test_input_shape if small else spec.input_shape)


def _server_threads(device: str) -> int:
    from opss.profile import role_settings

    return role_settings("server")[1] if device == "cpu" else 1


def _server_profile_fn(small: bool, fresh: bool = False):
    """The server's per-vertex times, reported by ListModels (its own profile)."""

    def profile_fn(graph: Any, module: Any, device: Any) -> dict[str, float]:
        from opss.profile import load_or_build_profile, measure_profile

        name = graph.model
        dev = "cuda" if str(device).startswith("cuda") else "cpu"
        if small or fresh:
            prof = measure_profile(name, device=str(device), threads=_server_threads(dev),
                                   repeats=5 if small else 10, warmup=1 if small else 2,
                                   input_shape=input_shape(name, small), progress=False, graph=graph, module=module)
        else:
            prof = load_or_build_profile(name, role="server", progress=True, graph=graph, module=module)
        return prof.costs_for(graph)

    return profile_fn


def start_server(model: str, small: bool = False, seed: int = 0, fresh_profile: bool = False) -> Any:
    """An in-process opss-server for ``model`` on 127.0.0.1, port 0, reporting its own profile."""
    from opss.server.app import build_server
    from opss.server.config import ServerConfig

    return build_server(ServerConfig(host="127.0.0.1", port=0, device="auto", models=(model,), small=small,
                                     seed=seed, warmup_runs=1, max_inflight=2, max_workers=4,
                                     profile_fn=_server_profile_fn(small, fresh_profile)))


def open_session(strategies: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = sys.stderr,
                 client_profile: Any = None, server_profile: Any = None, **config: Any) -> Any:
    """A :class:`~opss.client.session.ClientSession` that plans every one of ``strategies``.

    ``config`` holds the other :class:`~opss.client.session.ClientConfig` fields
    (``model``, ``server``, ``link``, ...); the first strategy is the session's
    current one. ``client_profile`` / ``server_profile`` skip the profile lookups.
    """
    from opss.client.session import ClientConfig, ClientSession

    names = tuple(dict.fromkeys(label.partition("@")[0] for label in strategies))
    cfg = ClientConfig(strategy=names[0], also_plan=names[1:], **config)
    return ClientSession(cfg, out=out, err=err, client_profile=client_profile, server_profile=server_profile)


def open_variant(base: Any, strategies: Sequence[str], **changes: Any) -> Any:
    """Another session on ``base``'s model, server, profiles and link (the one ``base`` planned with), planning
    ``strategies`` with ``changes`` to its config (e.g. ``codecs="raw"``): the arms of
    a side-by-side comparison."""
    import dataclasses

    from opss.client.session import ClientSession

    cfg = dataclasses.replace(base.config, strategy=strategies[0], also_plan=tuple(strategies[1:]), **changes)
    sess = ClientSession(cfg, out=None, err=base.err, resolved=base.resolved, client_profile=base.client_profile,
                         server_profile=base.server_profile, link_model=base.link)
    if set(changes) <= WIRE_SETTINGS:  # only what crosses the wire differs, which the plan key covers
        sess.variant_of = _family(base)  # so identical plans may share runs
    return sess


def compared_arms(strategies: Sequence[str], codecs: str) -> tuple[str, ...]:
    """The compared arms: every strategy with ``codecs``, and beside them the paper's raw
    float32 ``co``, ``po`` and ``joint`` (``name@raw``) unless ``codecs`` is raw already."""
    from opss.codec import parse_codecs

    strategies = tuple(strategies)
    if parse_codecs(codecs) == ("raw",):
        return strategies
    raw = tuple(f"{s}@raw" for s in ("co", "po", "joint") if s in strategies)
    return tuple(dict.fromkeys((*strategies[:2], *raw, *strategies[2:])))


def raw_variant(session: Any, arms: Sequence[str]) -> Any:
    """The session planning the ``@raw`` arms of ``arms`` (codecs raw) on ``session``'s server,
    profiles and link settings, or None when there are none."""
    names = tuple(a.partition("@")[0] for a in arms if a.endswith("@raw"))
    return open_variant(session, names, codecs="raw") if names else None


def arm_sessions(session: Any, variants: Mapping[str, Any] | None, labels: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """``{label: (session, strategy)}`` for arm labels ``strategy`` or ``strategy@variant``."""
    return {label: _arm(session, variants or {}, label) for label in labels}


def measure_strategies(session: Any, strategies: Sequence[str], runs: int, *, seed: int = 0,
                       say: Callable[[str], None] | None = None,
                       on_run: Callable[[str, Any], None] | None = None,
                       image: Any = None, variants: Mapping[str, Any] | None = None,
                       share_identical: bool = False) -> StrategyResults:
    """Run every strategy ``runs`` times, round-robin after one warm-up round; verify every output.

    The input is the photo ``image`` (``(tensor, ImageSource)``, e.g. from
    :func:`sample_input`) or else ``torch.randn(session.input_shape)`` from
    ``seed``. ``variants`` adds arms planned by other sessions on the same server
    and input (e.g. ``{"raw": session_with_codecs_raw}``): a strategy named
    ``"joint@raw"`` runs ``joint`` of the ``raw`` session, interleaved with the
    rest. ``say`` hears the reason of every local fallback; ``on_run(strategy,
    report)`` is called after every measured run (not the warm-up), as soon as it
    finished. Returns per strategy the measured median, p90 and every latency
    (seconds), the prediction, the cut, and whether every output matched the
    local full model. ``share_identical`` runs each group of identical plans
    (:func:`same_plan_groups`) once, through its first arm: the others get its
    runs, ``"same_plan_as"`` naming that arm, and ``on_run`` for each of them too.
    """
    import torch

    if image is not None:
        x, source = image
    else:
        x, source = torch.randn(session.input_shape, generator=torch.Generator().manual_seed(seed)), None
    arms = arm_sessions(session, variants, strategies)
    rep_of = same_plan_groups(arms) if share_identical else {name: name for name in arms}
    times: dict[str, list[float]] = {name: [] for name in strategies}
    verified = {name: True for name in strategies}
    fallbacks = {name: 0 for name in strategies}
    for rnd in range(runs + 1):  # round 0 warms up every path
        for name, (sess, strategy) in arms.items():
            if rep_of[name] != name:
                continue
            sess.use(strategy)
            rep = sess.run(x, verify=True, image=source)
            verified[name] &= bool(rep.verify_ok)
            if rep.result.fell_back:
                fallbacks[name] += 1
                if say is not None:
                    say(f"  {name}: {rep.notes[0] if rep.notes else rep.result.timeline.note}")
            if rnd > 0:
                times[name].append(rep.latency)
                if on_run is not None:
                    for other in (o for o in arms if rep_of[o] == name):
                        on_run(other, rep)
    results = StrategyResults()
    for name, (sess, strategy) in arms.items():
        r = rep_of[name]
        results[name] = _result(sess.plans[strategy], times[r], verified[r], fallbacks[r])
        if r != name:
            results[name]["same_plan_as"] = r
    return results


def _plan_key(plan: Any) -> tuple:
    """What decides what a plan runs: client set, client order, cut, each tensor's codec and, when
    there is client work after the first upload could start, whether the uploads overlap it (po's do not)."""
    if not plan.cut_bytes:
        return ("local",)  # uploads nothing: the whole model on the client, in any order alike
    alone_at_end = len(plan.cut) == 1 and tuple(plan.order[-1:]) == tuple(plan.cut)
    overlap = bool(plan.pipelined) if plan.cut_bytes and not alone_at_end else None
    return (frozenset(plan.client), tuple(plan.order), tuple(plan.cut), tuple(sorted(plan.codecs.items())),
            overlap)


def same_plan_groups(arms: Mapping[str, tuple[Any, str]]) -> dict[str, str]:
    """``{arm: the first arm with the identical plan}`` for arms ``{label: (session, strategy)}``.

    Identical: the same session or a variant of it (:func:`open_variant`: the same server,
    model, input and link settings) and the same client set, order, cut, codecs and overlap
    (which only matters when something is uploaded before the client's last vertex); an arm
    that is its own first maps to itself."""
    first: dict[tuple, str] = {}
    out = {}
    for name, (sess, strategy) in arms.items():
        key = (id(_family(sess)), _plan_key(sess.plans[strategy]))
        out[name] = first.setdefault(key, name)
    return out


def _family(session: Any) -> Any:
    """The session ``session`` is a variant of (:func:`open_variant`), else itself."""
    return getattr(session, "variant_of", None) or session


def _arm(session: Any, variants: Mapping[str, Any], label: str) -> tuple[Any, str]:
    """``(session, strategy)`` of an arm label ``strategy`` or ``strategy@variant``."""
    strategy, _, variant = label.partition("@")
    if not variant:
        return session, strategy
    if variant not in variants:
        raise OpssError(f"arm {label!r}: no session for variant {variant!r}, expected one of {sorted(variants)}")
    return variants[variant], strategy


def sample_input(shape: Sequence[int], name: str = "grace_hopper.jpg") -> tuple[Any, Any]:
    """A sample photo that installed packages ship, as ``(tensor, ImageSource)`` at ``shape``:
    its file is what a camera would send (:mod:`opss.samples`)."""
    import tempfile
    from pathlib import Path

    from opss import samples
    from opss.client.inputs import load_image_input

    data = dict(samples.sample_images())[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return load_image_input(path, tuple(shape))


def _result(plan: Any, latencies: list[float], verified: bool, fallbacks: int) -> dict:
    """One strategy's entry of :class:`StrategyResults`: its runs beside its plan."""
    return {
        "median_s": median(latencies),
        "p90_s": p90(latencies),
        "runs_s": latencies,
        "predicted_s": plan.predicted.total,
        "predicted": plan.predicted.to_json(),
        "client_vertices": len(plan.client),
        "cut": list(plan.cut),
        "uploads": bool(plan.cut_bytes),
        "cut_bytes": plan.cut_bytes,
        "wire_bytes": plan.wire_bytes,
        "codecs": dict(plan.codecs),
        "verified": verified,
        "fallbacks": fallbacks,
    }
