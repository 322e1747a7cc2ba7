"""Which stored profile counts, the one rule every reader uses: the store's counting index, the
analyses and a model's history. Below both the store and the analyses (it reads only records)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dnnprof.contract import ProfileRecord

#: ``best``: a clean profile over a noisy one, then more fresh processes, then the newer;
#: ``newest``: the newest whatever its quality.
SELECTIONS = ("best", "newest")


def is_noisy(record: ProfileRecord) -> bool:
    return any(b.latency.noisy for b in record.result.batches if b.latency is not None)


def quality(record: ProfileRecord) -> tuple[bool, int, float]:
    """Which of two profiles of one model and target counts under ``best``: a clean one over a
    noisy one, then the one over more fresh processes, then the newer."""
    return (not is_noisy(record), record.result.processes, record.created_at)


def order_for(select: str) -> Callable[[ProfileRecord], Any]:
    """The sort key under which the largest record is the one that counts."""
    return quality if select == "best" else (lambda record: record.created_at)
