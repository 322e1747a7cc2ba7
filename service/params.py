"""Query parameters several controllers share, validated by Litestar (a 400 naming the parameter)."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

from dnnprof.contract import DEVICE_PATTERN

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
