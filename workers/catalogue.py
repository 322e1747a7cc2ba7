"""Building the model catalogue from the installed torchvision, timm and zoo, and publishing it
to the store so that the API can resolve and search names without importing torch.

Run by every worker at start-up (``python -m workers.catalogue``); skipped when the published
version already matches the installed packages.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from importlib import metadata
from pathlib import Path

import dnnprof
from dnnprof.catalogue import Catalogue
from dnnprof.config import Settings, require_redis_url
from dnnprof.contract import ModelInfo, TagConfig
from dnnprof.paper import PAPER_MODELS
from dnnprof.published import SHIPPED_TABLES, load_shipped, resolve_rows, shipped_version
from dnnprof.store import ProfileStore

#: Bump when what an entry holds changes, so workers republish a catalogue of the same packages.
CATALOGUE_FORMAT = 5  # 2: timm default tag, per-tag configs; 3: reparameterizable; 4: unavailable; 5: tv tags


def catalogue_version() -> str:
    parts = [f"dnnprof{dnnprof.__version__}", f"format{CATALOGUE_FORMAT}"]
    for dist in ("torchvision", "timm"):
        try:
            parts.append(f"{dist}{metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist}-none")
    failures = known_failures_path()
    if failures.exists():
        parts.append("failures" + hashlib.sha256(failures.read_bytes()).hexdigest()[:8])
    return "-".join(parts)


def _tv_weights_config(weights) -> dict:
    """How one torchvision weights entry feeds its model, and what it publishes."""
    transforms = weights.transforms()
    crop = int(transforms.crop_size[0])
    resize = int(transforms.resize_size[0])
    metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
    return {
        "input_size": crop,
        "interpolation": transforms.interpolation.value,
        "crop_pct": round(crop / resize, 4),
        "mean": tuple(transforms.mean),
        "std": tuple(transforms.std),
        "num_classes": len(weights.meta.get("categories") or []) or 1000,
        "weights_url": weights.url,
        "published_top1": metrics.get("acc@1"),
        "published_top5": metrics.get("acc@5"),
    }


def _torchvision_entries() -> list[ModelInfo]:
    import torchvision.models as tvm

    out = []
    for name in tvm.list_models(module=tvm):
        every = tvm.get_model_weights(name)
        default = every.DEFAULT
        feeding = _tv_weights_config(default)
        tag_configs: dict[str, TagConfig] = {}
        for weights in every:
            differ = {k: v for k, v in _tv_weights_config(weights).items() if v != feeding[k]}
            if weights is not default and differ:
                tag_configs[weights.name] = TagConfig(**differ)
        out.append(
            ModelInfo(
                name=f"tv:{name}",
                source="tv",
                architecture=name,
                pretrained_tags=[w.name for w in every],
                default_tag=default.name,
                tag_configs=tag_configs,
                published_params=default.meta.get("num_params"),
                published_gmacs=default.meta.get("_ops"),
                **feeding,
            )
        )
    return out


def _timm_feeding(cfg) -> dict:
    """How timm's pretrained config feeds the model: the fields of :class:`TagConfig`."""
    return {
        "input_size": int(cfg.input_size[-1]),
        "interpolation": cfg.interpolation or "bilinear",
        "crop_pct": float(cfg.crop_pct or 0.875),
        "crop_mode": getattr(cfg, "crop_mode", None) or "center",
        "mean": tuple(float(v) for v in cfg.mean),
        "std": tuple(float(v) for v in cfg.std),
        # 0 is a headless (feature) checkpoint; timm builds the model with this head.
        "num_classes": int(cfg.num_classes) if cfg.num_classes is not None else 1000,
    }


#: What timm calls on a module to fuse it for inference (``timm.utils.reparameterize_model``).
REPARAMETERIZE_METHODS = ("fuse", "reparameterize", "switch_to_deploy")


def _reparameterizable_timm_modules() -> set[str]:
    """timm model modules (files) defining a module class that fuses for inference."""
    import importlib
    import inspect

    import timm
    from torch import nn

    out = set()
    for name in timm.list_modules():
        module = importlib.import_module(f"timm.models.{name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                cls.__module__ == module.__name__
                and issubclass(cls, nn.Module)
                and any(hasattr(cls, m) for m in REPARAMETERIZE_METHODS)
            ):
                out.add(name)
                break
    return out


def _timm_entries() -> list[ModelInfo]:
    import timm
    from timm.models import get_pretrained_cfg

    fusing = {a for module in _reparameterizable_timm_modules() for a in timm.list_models(module=module)}
    tags: dict[str, list[str]] = {}
    for full in timm.list_pretrained():
        arch, _, tag = full.partition(".")
        tags.setdefault(arch, []).append(tag)
    out = []
    for arch in timm.list_models():
        cfg = get_pretrained_cfg(arch)
        kwargs: dict = {"input_size": 224}
        tag_configs: dict[str, TagConfig] = {}
        if cfg is not None:
            kwargs = _timm_feeding(cfg)
            kwargs["weights_url"] = cfg.url or (f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else None)
            kwargs["default_tag"] = cfg.tag or None
            for tag in tags.get(arch, []):
                tag_cfg = get_pretrained_cfg(f"{arch}.{tag}")
                if tag_cfg is None:
                    continue
                differ = {k: v for k, v in _timm_feeding(tag_cfg).items() if v != kwargs[k]}
                if differ:
                    tag_configs[tag] = TagConfig(**differ)
        out.append(
            ModelInfo(
                name=f"timm:{arch}",
                source="timm",
                architecture=arch,
                pretrained_tags=tags.get(arch, []),
                tag_configs=tag_configs,
                reparameterizable=arch in fusing,
                **kwargs,
            )
        )
    return out


def _zoo_entries() -> list[ModelInfo]:
    from workers import zoo
    from workers.engine.models import count_params

    return [
        ModelInfo(
            name=f"dnnprof:{name}",
            source="dnnprof",
            architecture=name,
            input_size=entry.input_size,
            interpolation=entry.interpolation,
            crop_pct=entry.crop_pct,
            mean=entry.mean,
            std=entry.std,
            input_space=entry.input_space,  # type: ignore[arg-type]
            input_range=entry.input_range,
            weights_url=entry.weights_url,
            notes=entry.notes,
            published_params=count_params(entry.build()),  # the reference implementation's count
        )
        for name, entry in zoo.REGISTRY.items()
    ]


#: Models the catalogue sweep found that cannot be built or run (``bench/catalogue_sweep.py
#: --write-failures``): name -> reason.
KNOWN_FAILURES = Path(__file__).parent / "data" / "catalogue_failures.json"


def known_failures_path() -> Path:
    """The sweep's file, or ``DNNPROF_CATALOGUE_FAILURES`` (a host that knows its own)."""
    return Settings.from_env().catalogue_failures or KNOWN_FAILURES


def known_failures() -> dict[str, str]:
    path = known_failures_path()
    return json.loads(path.read_text()) if path.exists() else {}


def build_catalogue() -> list[ModelInfo]:
    entries = {e.name: e for e in (*_torchvision_entries(), *_timm_entries(), *_zoo_entries())}
    for name, reason in known_failures().items():
        if name in entries:
            entries[name].unavailable = f"cannot be profiled with this worker's packages: {reason}"
    for paper_name, (qualified, input_size) in PAPER_MODELS.items():
        entry = entries.get(qualified)
        if entry is not None:
            entry.paper_name = paper_name
            entry.input_size = input_size
    return list(entries.values())


def publish(store: ProfileStore, *, force: bool = False) -> int:
    version = catalogue_version()
    if not force and store.catalogue_version() == version:
        return 0
    return store.publish_catalogue(build_catalogue(), version)


def import_shipped_tables(store: ProfileStore, *, force: bool = False) -> int:
    """Import the published tables the package ships (:mod:`dnnprof.published`), resolved against
    the published catalogue; once per (tables, catalogue) version, so a fresh store has them with
    no manual step. Returns the rows imported (0: up to date)."""
    version = f"{shipped_version()}-{store.catalogue_version()}"
    if not force and store.shipped_tables_version() == version:
        return 0
    catalogue = Catalogue(store.load_catalogue())
    tables = {}
    for table in SHIPPED_TABLES:
        rows = load_shipped(table, imported_at=time.time())
        resolve_rows(rows, lambda name: catalogue.resolve(name).qualified)
        tables[table.source] = rows
    return store.import_shipped(tables, version)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    store = ProfileStore.from_url(require_redis_url(Settings.from_env()))
    store.ensure_indexes(log=lambda line: print(f"store: {line}", flush=True))  # the sweep reads them
    count = publish(store, force="--force" in argv)
    print(f"catalogue: {count} models published" if count else "catalogue: up to date", flush=True)
    rows = import_shipped_tables(store, force="--force" in argv)
    print(f"published tables: {rows} rows imported" if rows else "published tables: up to date", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
