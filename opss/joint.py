"""The ``joint`` strategy's search over client sets: its state and its moves.

The search works on client sets as bitmasks over the graph's topological
positions (:meth:`opss.dag.Dag.mask`). It screens each set with a fast
pipelined order (:meth:`PlanningProblem.greedy_order`) and the full latency
model, descends over *chain moves* from the best seeds within an evaluation
budget, and gives the best few sets screened the real scheduler. The
problem it searches (:class:`~opss.problem.PlanningProblem`) is immutable;
everything that changes while searching lives in :class:`JointSearch`.
Pure Python, no torch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from opss.problem import Plan, PlanningProblem

__all__ = ["LAMBDAS", "JointSearch", "joint_plan"]

#: upload-cost scales tried by ``joint`` (1.0 is the ``po`` cut itself)
LAMBDAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)


class JointSearch:
    """The mutable state of one joint search on ``problem``: screened sets and the chains."""

    def __init__(self, problem: PlanningProblem) -> None:
        self.problem = problem
        self.dag = problem.graph.dag
        self.screened: dict[int, float] = {}  # client-set bitmask -> screened total
        self._chains: list[tuple[str, ...]] | None = None

    def screen(self, m: int) -> float:
        """Predicted total of client set ``m`` with the greedy order (memoized)."""
        got = self.screened.get(m)
        if got is None:
            dag = self.dag
            client = frozenset(dag.unmask(m))
            uploads = dag.unmask(dag.cut_mask(m))
            order = self.problem.greedy_order(client, uploads)
            got = self.screened[m] = self.problem.evaluate(client, order, uploads=uploads).total
        return got

    def chains(self) -> list[tuple[str, ...]]:
        """Maximal paths whose inner links are single-successor -> single-predecessor edges
        (the input vertex excluded): a cut can sit anywhere along each of them."""
        if self._chains is None:
            graph = self.problem.graph

            def linked(u: str, w: str) -> bool:
                return graph.succs(u) == (w,) and graph.preds(w) == (u,)

            chains = []
            for v in graph.ids:
                if v == graph.input_id:
                    continue
                preds = graph.preds(v)
                if len(preds) == 1 and preds[0] != graph.input_id and linked(preds[0], v):
                    continue  # not the head of its chain
                chain = [v]
                while len(graph.succs(chain[-1])) == 1 and linked(chain[-1], graph.succs(chain[-1])[0]):
                    chain.append(graph.succs(chain[-1])[0])
                chains.append(tuple(chain))
            self._chains = chains
        return self._chains

    def moves(self, cur: int) -> Iterator[int]:
        """Neighbours of a client set (a bitmask): for every chain, every other cut position.

        Keeping the prefix ``C[:j]`` of chain ``C`` on the client adds the prefix and its
        ancestors and sends ``C[j:]`` and all their descendants to the server; the result is
        again closed under predecessors. Moving a whole chain at once lets the search cross
        the worse intermediate states that one-vertex moves get stuck on (e.g. giving one
        stream of a multi-stream model to the server). Before those, for every cut tensor,
        the move that pulls all its server consumers onto the client (the tensor then no
        longer crosses the link). Chains that touch the current cut come first (the search
        has a budget). Yields bitmasks.
        """
        dag = self.dag
        anc, desc = dag.ancestor_masks(), dag.descendant_masks()
        pos = dag.positions.__getitem__

        def on(v: str) -> bool:
            return bool((cur >> pos(v)) & 1)

        def near(chain: tuple[str, ...]) -> bool:
            head, tail = chain[0], chain[-1]
            if on(head) != on(tail):
                return True  # the cut runs through the chain
            if on(tail):
                return any(not on(w) for w in dag.succs(tail))
            return all(on(p) for p in dag.preds(head))

        seen = {cur}
        # absorb an upload: pull every server consumer of a cut tensor onto the client (with its
        # ancestors), so that tensor no longer crosses the link (e.g. the input feeding two streams)
        for u in dag.topo:
            if not on(u):
                continue
            outside = [w for w in dag.succs(u) if not on(w)]
            if not outside:
                continue
            m = cur
            for w in outside:
                m |= (1 << pos(w)) | anc[pos(w)]
            if m not in seen:
                seen.add(m)
                yield m
        chains = self.chains()
        for chain in [c for c in chains if near(c)] + [c for c in chains if not near(c)]:
            where = [pos(v) for v in chain]
            for j in range(len(chain) + 1):
                m = cur
                for i in where[:j]:
                    m |= (1 << i) | anc[i]
                for i in where[j:]:
                    m &= ~((1 << i) | desc[i])
                if m not in seen:
                    seen.add(m)
                    yield m

    def descend(self, starts: list[int], max_evals: int) -> None:
        """Steepest descent over :meth:`moves` from each start, sharing one evaluation budget."""
        evals = 0
        for start in starts:
            cur, cur_cost = start, self.screened[start]
            while evals < max_evals:
                best_move, best_cost = None, cur_cost
                for cand in self.moves(cur):
                    if cand not in self.screened:
                        if evals >= max_evals:
                            break
                        evals += 1
                    cost = self.screen(cand)
                    if cost < best_cost - 1e-12:
                        best_move, best_cost = cand, cost
                if best_move is None:
                    break
                cur, cur_cost = best_move, best_cost

    def ranked(self, masks) -> list[int]:
        """``masks`` by screened total, then fewer client vertices."""
        return sorted(masks, key=lambda m: (self.screened[m], m.bit_count()))


def joint_plan(problem: PlanningProblem, opss_plan: Plan, *, keep: int = 3, starts_n: int = 4,
               max_evals: int | None = None) -> Plan:
    """Cut and order together for the least pipelined latency; never worse than ``opss_plan``.

    Candidate client sets: ``lo``, ``co``, ``opss``'s and the min-cuts with the
    upload costs scaled by each of :data:`LAMBDAS`. Each is screened; the
    best ``starts_n`` are improved by steepest descent over chain moves
    within ``clamp(12000 / n, 24, 300)`` screenings; the ``keep`` best sets
    screened get the scheduler.
    """
    graph, dag = problem.graph, problem.graph.dag
    t0 = time.perf_counter()
    search = JointSearch(problem)
    seeds = {frozenset(graph.ids), frozenset([graph.input_id]), frozenset(opss_plan.client)}
    for lam in LAMBDAS:
        seeds.add(problem.po_client(lam))
    seed_masks = {dag.mask(c) for c in seeds}
    for m in seed_masks:
        search.screen(m)
    # local search from the best seeds: steepest descent over chain moves, within an
    # evaluation budget that shrinks with the graph (planning stays in tens of milliseconds)
    if max_evals is None:
        max_evals = max(24, min(300, 12000 // max(1, len(graph))))
    search.descend(search.ranked(seed_masks)[:starts_n], max_evals)
    best = opss_plan
    opss_mask = dag.mask(opss_plan.client)
    for m in search.ranked(search.screened)[:keep]:
        if m == opss_mask:
            continue
        client = frozenset(dag.unmask(m))
        order, optimal, pred = problem.best_order(client, [problem.greedy_order(client), problem.topo_order(client)])
        if pred.total < best.total - 1e-12:
            best = problem.make_plan("joint", client, order, pipelined=True, optimal=optimal, t0=t0)
    elapsed = time.perf_counter() - t0 + opss_plan.seconds_to_plan  # includes the po and opss work
    return Plan(
        strategy="joint", client=best.client, cut=best.cut, cut_bytes=best.cut_bytes, order=best.order,
        predicted=best.predicted, seconds_to_plan=elapsed, optimal_order=best.optimal_order,
        pipelined=True, client_slowdown=problem.client_slowdown, link=problem.link, wire=best.wire,
    )
