"""Dynamic batching of server-part compute (Triton's dynamic batcher, for split models).

Calls of the same model and the same partition (one :class:`~opss.server.store.PartKey`: model,
granularity, client set) whose cut tensors have all arrived are queued in that partition's
*lane*. The lane's thread forms a batch once ``max_batch`` calls wait or the oldest has waited
``max_queue_delay_s`` (0: whatever is queued when the lane looks), then takes a compute slot
(the servicer's semaphore, shared with unbatched calls), takes every call queued by then (up
to ``max_batch``), stacks their tensors on the batch dimension and runs the server part once
(:meth:`opss.split.ServerPart.run_batch`); each call gets its own slice of the output. Calls of
different partitions are never in one batch: they are in different lanes. A lane's thread
ends after a second without calls.

A batched call waits for its whole input before it queues, so its server layers no longer
start while later tensors are on the wire; unbatched calls keep that (see
``docs/architecture.md``, "Many clients").
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

import torch

from .store import synchronize

#: A lane's thread ends after this long without calls.
LANE_IDLE_S = 1.0


@dataclass(eq=False)
class BatchJob:
    """One call's turn in a lane: its inputs, then its output and what the batch cost it
    (monotonic seconds: ``queued`` when it joined, ``started`` when its batch began computing)."""

    inputs: Mapping[str, torch.Tensor]
    queued: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    output: torch.Tensor | None = None
    error: BaseException | None = None
    started: float = 0.0
    compute_s: float = 0.0
    batch_size: int = 0
    formed_s: float = 0.0  #: seconds from joining to the batch being formed (the batching wait)
    cancelled: bool = False


class _Lane:
    def __init__(self) -> None:
        self.jobs: deque[BatchJob] = deque()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None


class DynamicBatcher:
    """Lanes of queued calls, one per partition, computed in batches of at most ``max_batch``
    on ``device`` while holding one of the ``compute`` slots."""

    def __init__(self, max_batch: int, max_queue_delay_s: float, compute: threading.Semaphore,
                 device: torch.device, on_batch: Callable[[str, int], None] | None = None,
                 extra_s: float = 0.0) -> None:
        if max_batch < 1 or not max_queue_delay_s >= 0:
            raise ValueError(f"batching: expected max_batch >= 1 and max_queue_delay_s >= 0, got "
                             f"{max_batch}, {max_queue_delay_s}")
        self.max_batch, self.max_delay_s = max_batch, max_queue_delay_s
        self._compute, self._device, self._on_batch = compute, device, on_batch
        self._extra_s = extra_s  # injected compute delay per batch (tests)
        self._lanes: dict[Hashable, _Lane] = {}
        self._lock = threading.Lock()

    def submit(self, key: Hashable, part, inputs: Mapping[str, torch.Tensor],
               model: str = "") -> BatchJob:
        """Queue one call's inputs in the lane of ``key``; wait on the job's ``done``."""
        job = BatchJob(inputs)
        with self._lock:
            lane = self._lanes.setdefault(key, _Lane())
        with lane.cond:
            lane.jobs.append(job)
            lane.cond.notify_all()
            if lane.thread is None:
                lane.thread = threading.Thread(target=self._run, args=(key, lane, part, model),
                                               name="opss-batch", daemon=True)
                lane.thread.start()
        return job

    def cancel(self, job: BatchJob) -> None:
        """The call is gone: leave it out of any batch not yet formed."""
        job.cancelled = True

    def _run(self, key: Hashable, lane: _Lane, part, model: str) -> None:
        while True:
            with lane.cond:
                if not self._await_batch(lane):
                    lane.thread = None
                    with self._lock:
                        if self._lanes.get(key) is lane:
                            del self._lanes[key]
                    return
            formed = time.perf_counter()
            with self._compute:
                with lane.cond:
                    batch = self._take(lane)
                if batch:
                    self._compute_batch(part, batch, formed)
            if batch and self._on_batch is not None:
                self._on_batch(model, len(batch))

    def _await_batch(self, lane: _Lane) -> bool:
        """Under the lane's lock: wait for a first call, then for a full batch or the oldest
        call's queue delay; False when the lane stayed idle for LANE_IDLE_S."""
        while not self._live(lane):
            if not lane.cond.wait(LANE_IDLE_S) and not self._live(lane):
                return False
        oldest = lane.jobs[0].queued
        while len(lane.jobs) < self.max_batch:
            left = oldest + self.max_delay_s - time.perf_counter()
            if left <= 0:
                break
            lane.cond.wait(left)
        return True

    @staticmethod
    def _live(lane: _Lane) -> bool:
        while lane.jobs and lane.jobs[0].cancelled:
            lane.jobs.popleft().done.set()
        return bool(lane.jobs)

    def _take(self, lane: _Lane) -> list[BatchJob]:
        batch: list[BatchJob] = []
        while lane.jobs and len(batch) < self.max_batch:
            job = lane.jobs.popleft()
            if job.cancelled:
                job.done.set()
            else:
                batch.append(job)
        return batch

    def _compute_batch(self, part, batch: list[BatchJob], formed: float) -> None:
        start = time.perf_counter()
        try:
            with torch.no_grad():
                outputs = part.run_batch([j.inputs for j in batch])
            synchronize(self._device)
            if self._extra_s:
                time.sleep(self._extra_s)
            outputs = [o.detach().to("cpu") for o in outputs]
        except BaseException as e:  # every call of the batch fails the same way
            for j in batch:
                j.error = e
                j.done.set()
            return
        seconds = time.perf_counter() - start
        for j, out in zip(batch, outputs):
            j.output, j.started, j.compute_s, j.batch_size = out, start, seconds, len(batch)
            j.formed_s = max(0.0, formed - j.queued)
            j.done.set()
