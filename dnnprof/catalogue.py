"""Resolving a user's model name against the catalogue the workers publish (no torch here)."""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass

import msgspec

from dnnprof.contract import ModelInfo
from dnnprof.paper import PAPER_MODELS, normalise, paper_name_for, paper_tag
from dnnprof.store import ProfileStore

SOURCE_PREFIXES = {"tv": "tv", "torchvision": "tv", "timm": "timm", "dnnprof": "dnnprof"}
#: A plain name present in both packages resolves to torchvision's (the paper's zoo), then timm's.
SOURCE_PREFERENCE = ("tv", "timm", "dnnprof")


class UnknownModelError(LookupError):
    def __init__(self, name: str, suggestions: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.suggestions = suggestions


@dataclass
class Resolved:
    info: ModelInfo
    #: A pretrained tag: timm's "resnet50.a1_in1k" -> "a1_in1k", torchvision's "IMAGENET1K_V1".
    tag: str | None = None

    @property
    def qualified(self) -> str:
        """The name profiles and imported results are stored under: "timm:resnet50.a1_in1k",
        "tv:resnet50.IMAGENET1K_V1" (the paper's ResNet-50)."""
        return self.info.name + (f".{self.tag}" if self.tag else "")


class Catalogue:
    def __init__(self, entries: dict[str, ModelInfo]) -> None:
        self.entries = entries
        self._by_arch: dict[str, dict[str, ModelInfo]] = {}
        self._by_norm: dict[str, list[ModelInfo]] = {}
        for info in entries.values():
            self._by_arch.setdefault(info.architecture, {})[info.source] = info
            self._by_norm.setdefault(normalise(info.architecture), []).append(info)

    def __len__(self) -> int:
        return len(self.entries)

    def _prefer(self, candidates: dict[str, ModelInfo]) -> ModelInfo:
        for source in SOURCE_PREFERENCE:
            if source in candidates:
                return candidates[source]
        raise AssertionError("empty candidate set")

    def resolve(self, name: str, *, suggest: bool = True) -> Resolved:
        """Paper names, ``tv:``/``timm:`` qualified names, plain names and timm ``arch.tag`` names.
        An unknown name raises with close matches, unless ``suggest`` is False: the fuzzy match
        costs ~2.5 ms a name, which a bulk import of unknown names must not pay per row."""
        raw = name.strip()
        source, sep, rest = raw.partition(":")
        if sep and source.lower() in SOURCE_PREFIXES:
            qualified = f"{SOURCE_PREFIXES[source.lower()]}:{rest.strip()}"
            arch, _, tag = rest.strip().partition(".")
            hit = self.entries.get(qualified) or self.entries.get(f"{SOURCE_PREFIXES[source.lower()]}:{arch}")
            if hit is not None:
                return self._with_tag(hit, tag or None)
            raise UnknownModelError(name, self.suggest(rest) if suggest else [])
        paper = paper_name_for(raw)
        if paper is not None and raw.partition(".")[0] not in self._by_arch:  # "resnet50" is a plain name
            qualified, _ = PAPER_MODELS[paper]
            if qualified in self.entries:
                entry = self.entries[qualified]
                return self._with_tag(entry, paper_tag(entry))  # the paper's weights
        arch, _, tag = raw.partition(".")
        if arch in self._by_arch:
            candidates = self._by_arch[arch]
            tv = candidates.get("tv")
            if tag and tv is not None and tag in tv.pretrained_tags:  # torchvision's weights names
                return self._with_tag(tv, tag)
            if tag and "timm" in candidates:  # "arch.tag" is timm's spelling of pretrained weights
                return self._with_tag(candidates["timm"], tag)
            return self._with_tag(self._prefer(candidates), tag or None)
        forgiving = self._by_norm.get(normalise(arch))
        if forgiving:
            return self._with_tag(self._prefer({i.source: i for i in forgiving}), tag or None)
        raise UnknownModelError(name, self.suggest(raw) if suggest else [])

    def _with_tag(self, info: ModelInfo, tag: str | None) -> Resolved:
        """The entry as ``tag`` feeds it. The paper's name stays only on the paper's weights: plain
        ``resnet50`` is torchvision's default (V2), not the paper's ResNet-50 (V1)."""
        paper = paper_tag(info)
        if paper is not None and tag != paper:
            info = msgspec.structs.replace(info, paper_name=None)
        if tag is None:
            return Resolved(info)
        if info.source not in ("timm", "tv") or tag not in info.pretrained_tags:
            raise UnknownModelError(
                f"{info.name}.{tag}", [f"{info.name}.{t}" for t in info.pretrained_tags[:5]]
            )
        return Resolved(info.for_tag(tag), tag)

    def suggest(self, name: str, n: int = 5) -> list[str]:
        key = normalise(name)
        pool = {normalise(p): p for p in PAPER_MODELS}
        pool.update({normalise(i.architecture): i.architecture for i in self.entries.values()})
        close = difflib.get_close_matches(key, list(pool), n=n, cutoff=0.6)
        return [pool[c] for c in close]

    def search(self, query: str = "", *, paper_only: bool = False, limit: int = 50) -> list[ModelInfo]:
        key = normalise(query)
        hits = [
            info
            for info in self.entries.values()
            if (not paper_only or info.paper_name)
            and (
                not key
                or key in normalise(info.architecture)
                or (info.paper_name is not None and key in normalise(info.paper_name))
            )
        ]
        hits.sort(key=lambda i: (i.paper_name is None, len(i.architecture), i.name))
        return hits[:limit]


class CatalogueCache:
    """The API's copy of the published catalogue, re-read only when its version changes."""

    def __init__(self, store: ProfileStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._version: str | None = None
        self._catalogue = Catalogue({})

    def get(self) -> Catalogue:
        version = self._store.catalogue_version()
        if version != self._version:
            with self._lock:
                if version != self._version:
                    self._catalogue = Catalogue(self._store.load_catalogue())
                    self._version = version
        return self._catalogue
