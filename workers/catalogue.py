"""Building the model catalogue from the installed torchvision, timm and zoo, and publishing it
to the store so that the API can resolve and search names without importing torch.

Run by every worker at start-up (``python -m workers.catalogue``); skipped when the published
version already matches the installed packages.
"""

from __future__ import annotations

import sys
from importlib import metadata

import dnnprof
from dnnprof.config import Settings, require_redis_url
from dnnprof.contract import ModelInfo
from dnnprof.paper import PAPER_MODELS
from dnnprof.store import ProfileStore


def catalogue_version() -> str:
    parts = [f"dnnprof{dnnprof.__version__}"]
    for dist in ("torchvision", "timm"):
        try:
            parts.append(f"{dist}{metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist}-none")
    return "-".join(parts)


def _torchvision_entries() -> list[ModelInfo]:
    import torchvision.models as tvm

    out = []
    for name in tvm.list_models(module=tvm):
        weights = tvm.get_model_weights(name).DEFAULT
        transforms = weights.transforms()
        crop = int(transforms.crop_size[0])
        resize = int(transforms.resize_size[0])
        metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
        out.append(
            ModelInfo(
                name=f"tv:{name}",
                source="tv",
                architecture=name,
                input_size=crop,
                interpolation=transforms.interpolation.value,
                crop_pct=round(crop / resize, 4),
                mean=tuple(transforms.mean),
                std=tuple(transforms.std),
                num_classes=len(weights.meta.get("categories") or []) or 1000,
                pretrained_tags=[w.name for w in tvm.get_model_weights(name)],
                published_params=weights.meta.get("num_params"),
                published_gmacs=weights.meta.get("_ops"),
                published_top1=metrics.get("acc@1"),
                published_top5=metrics.get("acc@5"),
                weights_url=weights.url,
            )
        )
    return out


def _timm_entries() -> list[ModelInfo]:
    import timm
    from timm.models import get_pretrained_cfg

    tags: dict[str, list[str]] = {}
    for full in timm.list_pretrained():
        arch, _, tag = full.partition(".")
        tags.setdefault(arch, []).append(tag)
    out = []
    for arch in timm.list_models():
        cfg = get_pretrained_cfg(arch)
        kwargs = {}
        if cfg is not None:
            kwargs = {
                "input_size": int(cfg.input_size[-1]),
                "interpolation": cfg.interpolation or "bilinear",
                "crop_pct": float(cfg.crop_pct or 0.875),
                "mean": tuple(float(v) for v in cfg.mean),
                "std": tuple(float(v) for v in cfg.std),
                "num_classes": int(cfg.num_classes or 1000),
                "weights_url": cfg.url or (f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else None),
            }
        else:
            kwargs = {"input_size": 224}
        out.append(
            ModelInfo(
                name=f"timm:{arch}",
                source="timm",
                architecture=arch,
                pretrained_tags=tags.get(arch, []),
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


def build_catalogue() -> list[ModelInfo]:
    entries = {e.name: e for e in (*_torchvision_entries(), *_timm_entries(), *_zoo_entries())}
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    store = ProfileStore.from_url(require_redis_url(Settings.from_env()))
    count = publish(store, force="--force" in argv)
    print(f"catalogue: {count} models published" if count else "catalogue: up to date", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
