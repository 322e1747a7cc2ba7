"""Parameters and FLOPs of models no published table covers, counted on the meta device.

``python -m workers.counts NAME ...`` (qualified catalogue names): the worker runs it in a fresh
interpreter when the API has asked (:meth:`ProfileStore.request_count`), holding the device lock so
that no measurement runs beside it. The model is built with its parameters on the meta device
(:func:`workers.engine.models.empty_weights`): no weights, no memory, milliseconds for any size;
FLOPs are counted as a profile counts them (:mod:`workers.engine.flops`).
"""

from __future__ import annotations

import sys
import time

import torch

from dnnprof.catalogue import Catalogue, UnknownModelError
from dnnprof.config import Settings, require_redis_url
from dnnprof.contract import ModelCounts
from dnnprof.store import ProfileStore
from workers.engine.flops import count_model_flops
from workers.engine.models import build_model, count_params, empty_weights

METHOD = "meta device: parameters of the model as built; FLOPs by torch.utils.flop_counter, batch 1"


def count(catalogue: Catalogue, qualified: str) -> ModelCounts:
    """Never raises: a model that cannot be built or followed gets its reason in ``note``."""
    try:
        resolved = catalogue.resolve(qualified)
    except UnknownModelError:
        return ModelCounts(params=None, flops=None, input_size=0, method=METHOD, note="not in the catalogue")
    info = resolved.info
    try:
        with empty_weights():
            model = build_model(info, tag=resolved.tag)
        model = model.to("meta")
        params = count_params(model)
    except Exception as exc:  # noqa: BLE001 - the reason is the answer
        note = f"could not build it: {type(exc).__name__}: {str(exc)[:300]}"
        return ModelCounts(params=None, flops=None, input_size=info.input_size, method=METHOD, note=note)
    flops = count_model_flops(model, info.input_size, info.published_gmacs)
    return ModelCounts(
        params=params,
        flops=flops.flops,
        input_size=info.input_size,
        method=METHOD,
        note=flops.note,
        counted_at=time.time(),
    )


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(1)  # nothing here is heavy; leave the cores alone
    store = ProfileStore.from_url(require_redis_url(Settings.from_env()))
    catalogue = Catalogue(store.load_catalogue())
    for name in names:
        counts = count(catalogue, name)
        store.put_model_counts(name, counts)
        outcome = counts.note or "ok"
        print(f"counted {name}: params {counts.params}, flops {counts.flops}, {outcome}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
