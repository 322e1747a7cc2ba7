"""Reading layer profiles (torch-free: the API and the CLI use it): the module tree collapsed to a
depth, as CSV rows, and two runtimes' layers side by side.

A :class:`~dnnprof.contract.LayerProfile` holds each module's *own* time and FLOPs, so a module
collapsed to depth ``d`` (``depth=1``: ``conv1``, ``layer1`` … ``fc``) is the sum of its own figures
and every descendant's; the model's own forward (path ``""``) stays a row of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
from msgspec import Struct

from dnnprof.contract import LayerProfile, LayerTime

MAX_NODE_NAMES = 12


def truncate(path: str, depth: int | None) -> str:
    """``layer3.4.conv2`` at depth 1 is ``layer3``; the model's own row stays ``""``."""
    if depth is None or not path:
        return path
    return ".".join(path.split(".")[:depth])


def collapse(profile: LayerProfile, depth: int | None) -> LayerProfile:
    """The profile with its layers summed up to ``depth`` (None: every module as measured)."""
    if depth is None:
        return profile
    groups: dict[str, list[LayerTime]] = {}
    for layer in profile.layers:
        groups.setdefault(truncate(layer.path, depth), []).append(layer)
    types = {layer.path: layer.type for layer in profile.layers}
    layers = [
        _sum(path, types.get(path, members[0].type), members, profile) for path, members in groups.items()
    ]
    layers.sort(key=lambda layer: layer.order)
    return msgspec.structs.replace(profile, layers=layers)


def _sum(path: str, type_: str, members: list[LayerTime], profile: LayerProfile) -> LayerTime:
    ms = sum(m.ms_per_image for m in members)
    flops = sum(m.flops for m in members)
    nodes: list[str] = []
    for member in sorted(members, key=lambda m: -m.ms_per_image):
        nodes.extend(n for n in member.nodes if n not in nodes)
    main = max(members, key=lambda m: (m.ms_per_image, m.flops))
    return LayerTime(
        path=path,
        type=type_,
        order=min(m.order for m in members),
        ms_per_image=ms,
        share=ms / profile.forward_ms_per_image if profile.forward_ms_per_image > 0 else 0.0,
        flops=flops,
        params=sum(m.params for m in members),
        flops_per_s=flops / (ms / 1e3) if ms > 0 and flops else None,
        op_type=main.op_type,
        nodes=nodes[:MAX_NODE_NAMES],
    )


CSV_COLUMNS = (
    "order",
    "path",
    "type",
    "op_type",
    "ms_per_image",
    "share",
    "flops",
    "flop_share",
    "params",
    "flops_per_s",
    "nodes",
)


def csv_rows(profile: LayerProfile) -> Iterator[list[str]]:
    """One row per layer, then the unattributed time as a row of its own (never spread)."""
    total = sum(layer.flops for layer in profile.layers) or 1
    for layer in profile.layers:
        yield [
            str(layer.order),
            layer.path,
            layer.type,
            layer.op_type,
            f"{layer.ms_per_image:.6g}",
            f"{layer.share:.6g}",
            str(layer.flops),
            f"{layer.flops / total:.6g}",
            str(layer.params),
            "" if layer.flops_per_s is None else f"{layer.flops_per_s:.6g}",
            "; ".join(layer.nodes),
        ]
    share = (
        profile.unattributed_ms_per_image / profile.forward_ms_per_image
        if profile.forward_ms_per_image
        else 0
    )
    yield [
        "",
        "(unattributed)",
        "",
        "",
        f"{profile.unattributed_ms_per_image:.6g}",
        f"{share:.6g}",
        "0",
        "0",
        "0",
        "",
        "; ".join(profile.unattributed_nodes),
    ]


class LayerComparison(Struct, kw_only=True):
    """One layer in two runtimes: its time per image in each and b over a (below 1: b gains)."""

    path: str
    type: str
    flops: int
    a_ms_per_image: float | None
    b_ms_per_image: float | None
    a_share: float | None
    b_share: float | None
    ratio: float | None
    #: b less a, per image (negative: b is faster on this layer).
    delta_ms: float | None


def compare(a: LayerProfile, b: LayerProfile) -> list[LayerComparison]:
    """The layers of two profiles of one model side by side, in a's order; the largest gains
    of b come first in :func:`gains_first`."""
    b_by = {layer.path: layer for layer in b.layers}
    rows = []
    seen = set()
    for layer in [*a.layers, *(x for x in b.layers if x.path not in {y.path for y in a.layers})]:
        if layer.path in seen:
            continue
        seen.add(layer.path)
        left = next((x for x in a.layers if x.path == layer.path), None)
        right = b_by.get(layer.path)
        a_ms = left.ms_per_image if left else None
        b_ms = right.ms_per_image if right else None
        rows.append(
            LayerComparison(
                path=layer.path,
                type=layer.type,
                flops=layer.flops,
                a_ms_per_image=a_ms,
                b_ms_per_image=b_ms,
                a_share=left.share if left else None,
                b_share=right.share if right else None,
                ratio=b_ms / a_ms if a_ms and b_ms is not None else None,
                delta_ms=b_ms - a_ms if a_ms is not None and b_ms is not None else None,
            )
        )
    return rows


def gains_first(rows: list[LayerComparison]) -> list[LayerComparison]:
    """The layers where b saves the most time first, those where it loses the most last."""
    return sorted(rows, key=lambda r: r.delta_ms if r.delta_ms is not None else 0.0)


def top_layers(profile: LayerProfile, most: int = 15) -> list[LayerTime]:
    """The layers that took the most time, largest first."""
    return sorted(profile.layers, key=lambda layer: -layer.ms_per_image)[:most]
