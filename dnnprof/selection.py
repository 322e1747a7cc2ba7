"""Which stored profile counts, the one rule every reader uses: the store's counting index, the
analyses and a model's history. Below both the store and the analyses (it reads only records)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from dnnprof.contract import ProfileRecord
from dnnprof.targets import target_of

SEPARATOR = "\t"


class GroupKey(NamedTuple):
    """What one profile that counts stands for: a model on a device target, in a precision, run
    by a runtime. Every reader groups by it (the store's counting index, the analyses, a model's
    history)."""

    model: str
    target: str
    precision: str
    runtime: str = "eager"

    @classmethod
    def of(cls, record: ProfileRecord) -> GroupKey:
        s = record.settings
        return cls(s.model, target_of(record), s.precision, s.runtime)

    def field(self) -> str:
        """The key as one string (a field of the store's counting hashes)."""
        return SEPARATOR.join(self)

    @classmethod
    def parse(cls, field: str) -> GroupKey:
        return cls(*field.split(SEPARATOR))


def may_count(record: ProfileRecord) -> bool:
    """A finished profile with its result, whose runtime's outputs matched eager's where they
    were checked (a runtime that computes something else is kept and shown, never counted)."""
    if record.status != "succeeded" or record.result is None:
        return False
    runtime = record.result.runtime
    return runtime is None or runtime.outputs is None or runtime.outputs.outputs_match


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
