"""RandWire: a randomly wired network (a general DAG).

Source: S. Xie, A. Kirillov, R. Girshick, K. He, "Exploring Randomly Wired
Neural Networks for Image Recognition", ICCV 2019. Section 3: a random graph
from the Watts-Strogatz model WS(N, K, P) is made a DAG by orienting every edge
from the lower to the higher node index; a node aggregates its inputs by a
weighted sum with positive weights (``sigmoid`` of a learned parameter), then
applies ReLU - separable 3x3 conv - BN. Nodes without inputs read the stage
input (with stride 2); the stage output is the average of the nodes without
outputs. Table 1 (small regime): conv1 3x3/2 (C/2) - BN, conv2 ReLU-conv 3x3/2
(C)-BN, random stages conv3, conv4, conv5 with C, 2C, 4C channels, then a 1x1
conv, global pooling and a classifier.

Here: WS(N=32, K=4, P=0.75) per stage as in the paper, three random stages;
channels reduced to C = 16 and the final 1x1 conv to 256 (the paper: C = 78,
1280) so the network runs on a 2-core CPU. Graphs come from a local
``random.Random(graph_seed + stage)``, independent of the weight seed, so
every ``get_model(seed=...)`` has the same wiring. Blocks: the nodes.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from opss.models import register


def watts_strogatz(n: int, k: int, p: float, rng: random.Random) -> list[tuple[int, int]]:
    """Undirected WS(n, k, p) edges ``(u, v)``, ``u < v`` (the networkx rewiring rule)."""
    adj: dict[int, set[int]] = {i: set() for i in range(n)}
    for i in range(n):
        for j in range(1, k // 2 + 1):
            adj[i].add((i + j) % n)
            adj[(i + j) % n].add(i)
    for j in range(1, k // 2 + 1):
        for u in range(n):
            v = (u + j) % n
            if rng.random() < p and v in adj[u]:
                w = rng.randrange(n)
                while w == u or w in adj[u]:
                    if len(adj[u]) >= n - 1:
                        break
                    w = rng.randrange(n)
                else:
                    adj[u].discard(v)
                    adj[v].discard(u)
                    adj[u].add(w)
                    adj[w].add(u)
    return sorted({(min(u, v), max(u, v)) for u in adj for v in adj[u]})


class SepConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class Node(nn.Module):
    """Weighted sum of inputs (sigmoid weights) - ReLU - SepConv - BN (a block)."""

    def __init__(self, in_degree: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.in_degree = in_degree
        self.weight = nn.Parameter(torch.zeros(in_degree)) if in_degree > 1 else None
        self.relu = nn.ReLU()
        self.conv = SepConv(cin, cout, stride)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            x = inputs[0]
        else:
            w = torch.sigmoid(self.weight)
            x = inputs[0] * w[0]
            for i in range(1, self.in_degree):
                x = x + inputs[i] * w[i]
        return self.bn(self.conv(self.relu(x)))


class Stage(nn.Module):
    """One random graph: WS(n, k, p) oriented low-to-high index."""

    def __init__(self, cin: int, cout: int, n: int, k: int, p: float, seed: int) -> None:
        super().__init__()
        edges = watts_strogatz(n, k, p, random.Random(seed))
        self.preds = [[u for u, v in edges if v == i] for i in range(n)]
        has_succ = {u for u, _ in edges}
        self.outputs = [i for i in range(n) if i not in has_succ]
        self.nodes = nn.ModuleList(
            Node(max(1, len(ps)), cout if ps else cin, cout, 1 if ps else 2)
            for ps in self.preds
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: list[torch.Tensor] = []
        for i, node in enumerate(self.nodes):
            ins = [out[u] for u in self.preds[i]] or [x]
            out.append(node(*ins))
        y = out[self.outputs[0]]
        for i in self.outputs[1:]:
            y = y + out[i]
        return y / len(self.outputs)


class RandWire(nn.Module):
    """RandWire small regime (Xie et al., ICCV 2019) with reduced channels."""

    def __init__(
        self,
        channels: int = 16,
        nodes: int = 32,
        k: int = 4,
        p: float = 0.75,
        graph_seed: int = 2019,
        head_channels: int = 256,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        c = channels
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, c // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c // 2)
        )
        self.conv2 = nn.Sequential(
            nn.ReLU(), nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c)
        )
        self.conv3 = Stage(c, c, nodes, k, p, graph_seed + 3)
        self.conv4 = Stage(c, 2 * c, nodes, k, p, graph_seed + 4)
        self.conv5 = Stage(2 * c, 4 * c, nodes, k, p, graph_seed + 5)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(4 * c, head_channels, 1, bias=False), nn.BatchNorm2d(head_channels)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))
        return self.fc(torch.flatten(self.pool(self.head(x)), 1))


@register("randwire", test_input_shape=(1, 3, 16, 16), block_types=(Node,))
def randwire() -> nn.Module:
    """RandWire WS(32, 4, 0.75), 3 random stages, C=16 (Xie et al., ICCV 2019)."""
    return RandWire()
