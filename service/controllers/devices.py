"""``/v1/devices``: every device target seen (by a worker's heartbeat or in a stored profile), with
its live workers, queue depth, profiles and the fingerprint of its newest profile; and the paper's
two devices, published and read-only (:mod:`dnnprof.paper_devices`)."""

from __future__ import annotations

import re

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

from dnnprof.contract import TARGET_PATTERN
from dnnprof.paper import PAPER_DEVICES
from service.deps import Services
from service.errors import error_responses
from service.reads.devices import DeviceReads, DeviceView


class DeviceController(Controller):
    path = "/v1/devices"
    tags = ("devices",)  # type: ignore[assignment]

    @get(
        "/",
        summary="Every device target seen, with live workers, queue depth and stored profiles",
        description="A target is a class and a device (cuda/nvidia-h100-80gb-hbm3): workers derive it "
        "from their device or take DNNPROF_DEVICE_TARGET. Targets whose workers stopped stay listed "
        "as gone, with their profiles.",
        sync_to_thread=True,
    )
    def list_devices(self, services: NamedDependency[Services]) -> list[DeviceView]:
        return DeviceReads(services).views()

    @get(
        "/{target:path}",
        summary="One device target",
        sync_to_thread=True,
        responses=error_responses(404),
    )
    def read_device(self, target: FromPath[str], services: NamedDependency[Services]) -> DeviceView:
        target = target.lstrip("/")
        if not re.match(TARGET_PATTERN, target) and target not in PAPER_DEVICES:
            raise NotFoundException(
                f"{target!r} is not a device target: a class (cpu, cuda, jetson), '/', then lower-case "
                "letters, digits, '.', '-', '_' (GET /v1/devices lists them)"
            )
        view = next((v for v in DeviceReads(services).views() if v.target == target), None)
        if view is None:
            known = ", ".join(v.target for v in DeviceReads(services).views()) or "none yet"
            raise NotFoundException(f"no device target {target!r} seen; known: {known}")
        return view
