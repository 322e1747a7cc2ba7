"""Query parameters several controllers share, validated by Litestar (a 400 naming the parameter)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from litestar import Request
from litestar.params import QueryParameter

from dnnprof.contract import DEVICE_PATTERN, PRECISIONS, RUNTIMES, Precision, Runtime

DEVICE_HELP = (
    "a device class (cpu, cuda, jetson: every target of it) or one device target, "
    "e.g. cuda/nvidia-h100-80gb-hbm3 (GET /v1/devices lists them)"
)

#: Filter by a class or a target.
DeviceFilter = Annotated[
    str | None, QueryParameter(pattern=DEVICE_PATTERN, max_length=87, description=DEVICE_HELP)
]
#: One side of a comparison: a class or a target.
DeviceSide = Annotated[str, QueryParameter(pattern=DEVICE_PATTERN, max_length=87, description=DEVICE_HELP)]

#: Analyses also read the paper's published devices (paper, paper/titan-xp, paper/jetson-tx1).
VIEW_DEVICE_PATTERN = DEVICE_PATTERN.replace("(cpu|cuda|jetson)", "(cpu|cuda|jetson|paper)")
VIEW_DEVICE_HELP = DEVICE_HELP + "; or the paper's published devices: paper, paper/titan-xp, paper/jetson-tx1"

#: An analysis filter: a class, a target, or the paper's devices.
ViewDevice = Annotated[
    str | None, QueryParameter(pattern=VIEW_DEVICE_PATTERN, max_length=87, description=VIEW_DEVICE_HELP)
]
#: One side of a comparison, the paper's devices included.
ViewSide = Annotated[
    str, QueryParameter(pattern=VIEW_DEVICE_PATTERN, max_length=87, description=VIEW_DEVICE_HELP)
]
#: Which profile of a (model, target, precision) an analysis uses.
Selection = Annotated[
    Literal["best", "newest"],
    QueryParameter(
        description="best (default): a clean profile over a noisy one, then more fresh processes, then "
        "the newer; newest: the newest whatever its quality"
    ),
]

#: An analysis's precision filter (every precision when omitted).
PrecisionFilter = Annotated[
    Precision | None,
    QueryParameter(description="one of " + ", ".join(PRECISIONS) + "; every one when omitted"),
]

#: An analysis's runtime: eager by default, so that the paper's figures stay the paper's.
RuntimeView = Annotated[
    Runtime,
    QueryParameter(description="what ran the models: one of " + ", ".join(RUNTIMES) + " (default eager)"),
]
#: A listing's runtime filter (every runtime when omitted).
RuntimeFilter = Annotated[
    Runtime | None,
    QueryParameter(description="one of " + ", ".join(RUNTIMES) + "; every one when omitted"),
]

#: A listing's or an export's model filter (resolved like a request's name).
ModelFilter = Annotated[str | None, QueryParameter(max_length=120)]


def next_page_link(request: Request, drop: tuple[str, ...], **then: str) -> dict[str, str]:
    """The ``Link: <...>; rel="next"`` header of a listing: this request's query, less the
    paging parameters in ``drop``, plus ``then`` (the next page's)."""
    query = {k: v for k, v in request.query_params.items() if k not in drop}
    query.update(then)
    return {"Link": f'<{request.url.path}?{urlencode(query)}>; rel="next"'}
