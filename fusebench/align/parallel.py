"""Per-document CPU work split over the processes of a run, so no rank waits idle in a collective.

Under `accelerate launch` / torchrun (WORLD_SIZE > 1) each rank takes every W-th unit of work (shard r, r+W, ...);
within a rank, or in a single-process run, a pure per-document function is mapped over local worker processes
(forked, so they share the parent's open stores and tokenizers without pickling them) in document order. The
results are the same whatever the number of ranks or workers: every document is computed by the same pure function.

Workers per rank: `FUSEBENCH_CPU_WORKERS` if set, else the CPUs this process may use divided by the ranks on this
node (LOCAL_WORLD_SIZE).
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# the job a forked worker runs: set by `ordered_map` just before the pool forks, read by `_call`
_FN: Callable | None = None


def world() -> tuple[int, int]:
    """(rank, number of ranks) of this run: (0, 1) outside a distributed launch."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def rank_share(items: list[T]) -> list[T]:
    """This rank's share of `items` (all of them with one rank)."""
    rank, size = world()
    return items[rank::size]


def barrier() -> None:
    """Wait for every rank (nothing with one). The process group's timeout bounds the wait (pipeline/runner.py)."""
    if world()[1] > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def default_workers() -> int:
    if os.environ.get("FUSEBENCH_CPU_WORKERS"):
        return max(1, int(os.environ["FUSEBENCH_CPU_WORKERS"]))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _call(item):
    return _FN(item)


def ordered_map(fn: Callable[[T], R], items: list[T], workers: int, chunksize: int = 4) -> Iterator[R]:
    """fn over items, results in item order, on `workers` forked processes (in this process when workers is 1).

    `fn` must be pure per item (it reads shared, read-only state and returns its result), so the output does not
    depend on `workers`."""
    global _FN
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    _FN = fn
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(items))) as pool:
            yield from pool.imap(_call, items, chunksize=chunksize)
    finally:
        _FN = None
