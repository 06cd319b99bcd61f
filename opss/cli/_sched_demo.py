"""Every scheduling method side by side on the built-in GoogLeNet-like instance (``opss schedule --demo``).

The instance (:func:`opss.sched.demo_instance`) is the stem and inception(3a)
of GoogLeNet on a Raspberry Pi 4, cut at the module's four branch ends, with
uploads over the paper's 4G uplink (5.85 Mbit/s). Pure Python: no torch.
"""

from __future__ import annotations

import json

from opss.sched import METHODS, demo_instance, schedule


def print_demo(as_json: bool = False) -> int:
    graph = demo_instance()
    if as_json:
        print(json.dumps(graph.to_json(), indent=1))
        return 0
    results = [schedule(graph, m) for m in METHODS]
    best = next(r for r in results if r.method == "exact").makespan
    print(
        f"GoogLeNet-like client graph: {len(graph)} layers, {len(graph.sinks())} cut-points, "
        f"compute {graph.total_f() * 1e3:.1f} ms, uploads {graph.total_g() * 1e3:.1f} ms "
        f"(4G 5.85 Mbit/s); no pipelining would take {(graph.total_f() + graph.total_g()) * 1e3:.1f} ms"
    )
    print(f"lower bound {results[0].lower_bound * 1e3:.2f} ms; optimum (exact) {best * 1e3:.2f} ms\n")
    head = f"{'method':<9} {'latency ms':>10} {'gap %':>7} {'proven':>6} {'run ms':>7}  order"
    print(head)
    print("-" * len(head))
    for r in results:
        gap = (r.makespan / best - 1) * 100
        print(
            f"{r.method:<9} {r.makespan * 1e3:>10.2f} {gap:>7.2f} {'yes' if r.optimal else 'no':>6} "
            f"{r.seconds * 1e3:>7.3f}  {' '.join(r.order)}"
        )
    return 0
