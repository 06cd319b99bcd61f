"""The OPSS client runtime (installed as ``opss.client``).

``opss-client`` (:mod:`opss.client.cli`) profiles, probes and plans once, then runs
inferences with a compute thread and a sender thread in a pipeline
(:mod:`opss.client.runtime`). The embedded demo, which also starts a server, is
:mod:`opss.lab.demo`. Importing this package imports no torch.
"""

from opss.client.runtime import Execution, InProcessTransport, RunResult, Threads, run_inference
from opss.client.session import ClientConfig, ClientSession, RunReport
from opss.client.throttle import TokenBucket
from opss.client.timeline import Interval, Timeline, render_gantt

__all__ = [
    "ClientConfig",
    "ClientSession",
    "Execution",
    "InProcessTransport",
    "Interval",
    "RunReport",
    "RunResult",
    "Threads",
    "Timeline",
    "TokenBucket",
    "render_gantt",
    "run_inference",
]
