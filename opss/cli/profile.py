"""``opss profile --model NAME``: measure (or look up) a model's per-layer latency table.

Writes ``profiles/<device-tag>/<model>.json`` (a ``package.module:factory`` model's
under ``~/.cache/opss/profiles/``; see :mod:`opss.profile`). A
matching stored table is reported and kept unless ``--force``; a missing
one is measured with a progress bar on stderr. torch is imported inside
``run`` only.
"""

from __future__ import annotations

import argparse
import sys

from opss.cli._args import nonneg_int, positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="measure a model's per-layer latency on this device (profiles/<device-tag>/<model>.json)",
        description=(
            "Time every layer-graph vertex of a model (fx.Interpreter, warm-up then repeats; median and "
            "p10/p90) and store the table under profiles/<device-tag>/ (a package.module:factory model's under "
            "~/.cache/opss/profiles/<device-tag>/). A matching table is kept unless "
            "--force. --model all profiles the whole zoo; a comma list profiles several."
        ),
    )
    parser.add_argument("--model", required=True, help="zoo name, package.module:factory, a comma list, or all")
    parser.add_argument("--role", choices=("client", "server"), default="client",
                        help="default device/threads: client = CPU 1 thread; server = CUDA if present, "
                             "else CPU with half the cores (default client)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="override the role's device")
    parser.add_argument("--threads", type=positive_int, default=None, help="override the role's CPU threads")
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed runs (default 20)")
    parser.add_argument("--warmup", type=nonneg_int, default=3, help="untimed warm-up runs (default 3)")
    parser.add_argument("--method", choices=("interpreter", "profiler"), default="interpreter",
                        help="fx.Interpreter wall-clock per node (default) or torch.profiler ranges")
    parser.add_argument("--force", action="store_true", help="re-measure even if a matching table exists")
    parser.add_argument("--profiles-dir", default=None, metavar="DIR",
                        help="root of the profile tables (default: the repository's profiles/ for zoo models, "
                             "~/.cache/opss/profiles for package.module:factory models)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from opss import models
    from opss.profile import device_settings, load_or_build_profile, measure_profile, profile_path

    names = models.names() if args.model == "all" else [n.strip() for n in args.model.split(",") if n.strip()]
    specs = [models.get_spec(name) for name in names]  # unknown names fail before any work
    device, threads, _ = device_settings(args.role, args.device, args.threads)  # so does a missing GPU
    for spec in specs:
        rm = models.resolve_model(spec)  # built and captured once, handed to the profiler
        if args.method == "interpreter":
            prof = load_or_build_profile(
                rm, role=args.role, device=device, threads=threads, root=args.profiles_dir,
                force=args.force, repeats=args.repeats, warmup=args.warmup, progress=not args.quiet,
            )
        else:
            prof = measure_profile(rm.name, device=device, threads=threads, repeats=args.repeats,
                                   warmup=args.warmup, method=args.method, progress=not args.quiet,
                                   input_shape=rm.input_shape, module=rm.module, graph=rm.graph)
            prof.save(profile_path(rm.name, prof.device_tag, args.profiles_dir, rm.input_shape))
        e2e = prof.meta.get("end_to_end_median", 0.0)
        raw = prof.total(calibrated=False)
        total = prof.total()
        slowest = sorted(prof.vertices.items(), key=lambda kv: -kv[1].median)[:3]
        print(
            f"{rm.name}: {len(prof.vertices)} vertices on {prof.device_tag} ({prof.meta.get('device_description')}), "
            f"sum of medians {raw * 1e3:.2f} ms x load scale {prof.load_scale:.3f} = {total * 1e3:.2f} ms, "
            f"eager forward {e2e * 1e3:.2f} ms ({(total / e2e - 1) * 100 if e2e else 0:+.1f} %), slowest: "
            + ", ".join(f"{v} {st.median * 1e3:.2f} ms" for v, st in slowest)
            + f" -> {profile_path(rm.name, prof.device_tag, args.profiles_dir, rm.input_shape)}"
        )
        sys.stdout.flush()
    return 0
