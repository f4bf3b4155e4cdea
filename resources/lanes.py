"""A drain's batches applied in worker processes, one lane each, when one process is not enough.

One Python process applies a batch at the speed of one core, and the GIL keeps a second thread
from helping. `ProcessLanes` splits each received batch by a key of its messages (the
conversations drain: the tenant) into lanes, and each lane is one worker process with its own
database connection:

- a key keeps the lane it was first given (the one with the fewest messages so far, so a few
  busy tenants spread evenly, which hashing does not promise), so one worker applies that key's
  messages, in the order they were received, one part after the other; two lanes never write
  rows of the same key, so their transactions do not wait for each other's locks;
- `dispatch` (the drain's `prepare_batch`, run by its background thread as soon as a batch is
  received) hands the parts to the workers at once, so each worker has its next part waiting
  while it applies one; `collect` (the drain's `apply_batch`) waits for them and merges their
  outcomes, and the drain acknowledges as it always does, after the effects committed;
- a part whose worker raised, or died, is failed as a whole (retried by the drain, as any batch
  whose transaction failed); a dead worker is replaced before its lane is used again.

Workers are started with `spawn` (never `fork` from a process that runs threads), so a lane costs
a second or two of start-up: worth it for a backlog, not for a few messages.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from resources.queues import BatchOutcome, Message, failed_whole, kind_of

log = logging.getLogger(__name__)

# What a worker's applier returns for a part: the drain's outcome, and anything the caller wants
# back beside it (the conversations drain: its tally of the part).
LaneResult = tuple[BatchOutcome, Any]
WATCHDOG_SECONDS = 1.0  # how often a worker checks that its drain is still there

_worker_apply: Callable[[list[Message]], LaneResult] | None = None


def _start_worker(make_apply: Callable[[], Callable[[list[Message]], LaneResult]]) -> None:
    global _worker_apply
    parent = os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), name="lane-watchdog", daemon=True).start()
    _worker_apply = make_apply()
    gc.freeze()  # what start-up loaded lives as long as the worker: out of the collector's walks


def _exit_with(parent: int) -> None:
    """A worker outlives a killed drain (its queue's pipe stays open in the worker itself): it
    leaves when its parent is gone. A part it was applying is rolled back with its connection,
    and its messages, never acknowledged, come again."""
    while os.getppid() == parent:
        time.sleep(WATCHDOG_SECONDS)
    os._exit(1)


def _apply_part(messages: list[Message]) -> LaneResult:
    assert _worker_apply is not None, "the lane's worker was not started"
    return _worker_apply(messages)


@dataclass
class LanePart:
    """The messages of one batch that went to one lane, and their pending result."""

    lane: int
    messages: list[Message]
    pool: ProcessPoolExecutor
    future: Future


class ProcessLanes:
    """`count` worker processes, each built by `make_apply()` (a picklable callable: it runs in
    the worker) and given the messages whose `lane_key` hashes to its lane."""

    def __init__(
        self,
        count: int,
        make_apply: Callable[[], Callable[[list[Message]], LaneResult]],
        lane_key: Callable[[Message], str],
    ) -> None:
        if count < 1:
            raise ValueError(f"lanes: count must be at least 1, not {count}")
        self.count = count
        self.lane_key = lane_key
        self._make_apply = make_apply
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()  # dispatch runs in the drain's background thread
        self._lane_of_key: dict[str, int] = {}
        self._assigned = [0] * count  # messages given to each lane
        self._pools = [self._new_pool() for _ in range(count)]

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(self._make_apply,),
        )

    def lane_of(self, message: Message) -> int:
        """The message's lane: the one its key was given first, else the least loaded one."""
        key = self.lane_key(message)
        lane = self._lane_of_key.get(key)
        if lane is None:
            lane = min(range(self.count), key=self._assigned.__getitem__)
            self._lane_of_key[key] = lane
        self._assigned[lane] += 1
        return lane

    def _replace(self, lane: int, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pools[lane] is broken:
                log.warning("lane %d: its worker process died; starting a new one", lane)
                broken.shutdown(wait=False, cancel_futures=True)
                self._pools[lane] = self._new_pool()

    def dispatch(self, messages: list[Message]) -> list[LanePart]:
        """Split a batch into lanes (keeping the received order within each) and hand each part
        to its worker; returns at once."""
        by_lane: dict[int, list[Message]] = {}
        with self._lock:
            for message in messages:
                by_lane.setdefault(self.lane_of(message), []).append(message)
        return [self._submit(lane, part) for lane, part in sorted(by_lane.items())]

    def _submit(self, lane: int, messages: list[Message]) -> LanePart:
        with self._lock:
            pool = self._pools[lane]
        try:
            return LanePart(lane, messages, pool, pool.submit(_apply_part, messages))
        except (BrokenProcessPool, RuntimeError):  # its worker died, or it was just replaced
            self._replace(lane, pool)
        with self._lock:
            pool = self._pools[lane]
        return LanePart(lane, messages, pool, pool.submit(_apply_part, messages))

    def collect(self, parts: Sequence[LanePart]) -> tuple[BatchOutcome, list[Any]]:
        """Wait for the parts of one batch: their merged outcome (a part that raised is failed
        whole, with the error) and what each worker returned beside its outcome."""
        outcome = BatchOutcome()
        extras: list[Any] = []
        for part in parts:
            try:
                part_outcome, extra = part.future.result()
            except Exception as exc:  # the part's transaction rolled back, or its worker died
                if isinstance(exc, BrokenProcessPool):
                    self._replace(part.lane, part.pool)
                log.warning(
                    "lane %d: part of %d failed, will retry: %s",
                    part.lane,
                    len(part.messages),
                    kind_of(exc),
                )
                outcome.failed.update(failed_whole(part.messages, exc))
                continue
            outcome.rejected.update(part_outcome.rejected)
            outcome.failed.update(part_outcome.failed)
            extras.append(extra)
        return outcome, extras

    def close(self) -> None:
        """Stop the workers once they finished what they were given."""
        with self._lock:
            for pool in self._pools:
                pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessLanes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
