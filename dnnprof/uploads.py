"""Uploaded models (issue 42), as a service the API provides to its controller: name, caps,
ownership, the entry, and how ``upload:<name>`` resolves for a profile. Torch-free.

A name belongs to the client that uploaded it (its API key, else its address, as the rate limit
and the active-job cap identify a client): another client's upload under it is a 409, and where
keys are set only its uploader may delete it. The same bytes are stored once, whatever their names.
A profile of ``upload:<name>`` is stored under ``upload:<name>.<first 12 hex of its sha256>``, as a
timm tag names its weights: another file under the same name is another model.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass

import msgspec

from dnnprof.catalogue import Resolved, UnknownModelError
from dnnprof.config import MIB, Settings
from dnnprof.contract import DEFAULT_BATCH_SIZES, IMAGENET_CLASSES, ModelInfo, ProfileRecord, ProfileRequest
from dnnprof.runtimes import RUNTIME_SPECS
from dnnprof.store import ProfileStore, RecordGone
from dnnprof.store.uploads import NameTaken, UploadRecord
from dnnprof.upload_contract import OnnxSummary, TensorInfo, UploadRefused

PREFIX = "upload:"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
TAG_HEX = 12
#: The runtimes that run an uploaded file as it is: those the runtime spec prepares from an ONNX
#: file and that are offered (eager and compile need a torch module).
UPLOAD_RUNTIMES = tuple(
    name for name, spec in RUNTIME_SPECS.items() if spec.prepared_from == "onnx" and spec.unavailable is None
)


#: What accuracy needs to know of an upload's preprocessing (with its input size, from the graph):
#: the query parameters of ``POST /v1/models`` that carry it.
PREPROCESSING = ("mean", "std", "crop_pct", "interpolation", "input_space")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def parse_preprocessing(given: dict[str, str | None]) -> dict[str, object]:
    """The preprocessing fields an upload states (``mean=0.485,0.456,0.406`` ...), checked; a 422
    naming the first that is malformed. Those not stated keep ImageNet's defaults, unmarked."""
    out: dict[str, object] = {}
    for field in ("mean", "std"):
        if (text := given.get(field)) is not None:
            try:
                values = tuple(float(v) for v in text.split(","))
            except ValueError:
                values = ()
            if (
                len(values) != 3
                or not all(math.isfinite(v) for v in values)
                or (field == "std" and min(values) <= 0)
            ):
                raise UploadRefused(
                    422, f"{field}: three comma-separated numbers (std above 0), e.g. 0.485,0.456,0.406"
                )
            out[field] = values
    if (text := given.get("crop_pct")) is not None:
        try:
            crop = float(text)
        except ValueError:
            crop = -1.0
        if not 0 < crop <= 1:
            raise UploadRefused(
                422, "crop_pct: the share of the resized image the centre crop keeps, in (0, 1]"
            )
        out["crop_pct"] = crop
    if (text := given.get("interpolation")) is not None:
        if text not in INTERPOLATIONS:
            raise UploadRefused(422, f"interpolation: one of {', '.join(INTERPOLATIONS)}")
        out["interpolation"] = text
    if (text := given.get("input_space")) is not None:
        if text not in ("RGB", "BGR"):
            raise UploadRefused(422, "input_space: RGB or BGR (the channel order the model expects)")
        out["input_space"] = text
    return out


class UploadedModel(ModelInfo, kw_only=True):
    """An uploaded model's entry: a catalogue entry (so it is profiled, listed and analysed as one)
    with what its graph says: the input, outputs, opset, parameters, FLOPs per image, file size."""

    size_bytes: int
    uploaded_at: float
    input: TensorInfo
    outputs: list[TensorInfo]
    opset: int
    ir_version: int
    producer: str
    nodes: int
    params: int
    flops: int | None
    flops_note: str | None = None
    #: The preprocessing fields the upload stated (:data:`PREPROCESSING`); accuracy needs them all.
    preprocessing: list[str] = msgspec.field(default_factory=list)
    #: The runtimes that can profile it.
    runtimes: list[str] = msgspec.field(default_factory=lambda: list(UPLOAD_RUNTIMES))


_entry_decoder = msgspec.json.Decoder(UploadedModel)


def is_upload_name(name: str) -> bool:
    return name.strip().lower().startswith(PREFIX)


def check_name(name: str) -> str:
    """The bare name (``mynet`` for ``upload:mynet`` or ``mynet``), or a 422 saying what is taken."""
    bare = name.strip()
    bare = bare[len(PREFIX) :] if bare.lower().startswith(PREFIX) else bare
    if not re.fullmatch(NAME_PATTERN, bare):
        raise UploadRefused(422, "name: 1-64 letters, digits, '_' or '-', starting with a letter or digit")
    return bare


def entry_for(
    name: str, summary: OnnxSummary, sha256: str, size: int, preprocessing: dict[str, object] | None = None
) -> UploadedModel:
    stated = preprocessing or {}
    return UploadedModel(
        **stated,  # type: ignore[arg-type]
        preprocessing=[f for f in PREPROCESSING if f in stated],
        name=PREFIX + name,
        source="upload",
        architecture=name,
        input_size=int(summary.input.shape[2]),
        num_classes=summary.num_classes or 0,
        published_params=summary.params,
        published_gmacs=summary.flops / 2e9 if summary.flops is not None else None,
        notes=f"uploaded ONNX file ({summary.producer or 'unknown producer'}); FLOPs counted from its graph",
        sha256=sha256,
        size_bytes=size,
        uploaded_at=time.time(),
        **{f: getattr(summary, f) for f in OnnxSummary.__struct_fields__ if f != "num_classes"},
    )


@dataclass
class UploadService:
    store: ProfileStore
    settings: Settings

    def precheck(self, client: str) -> None:
        """Before the body is read: a client at its count cap uploads nothing more."""
        cap = self.settings.max_uploads_per_client
        if cap > 0 and len(self.store.uploads_of(client)) >= cap:
            raise self._count_refusal(cap)

    def create(
        self,
        name: str,
        summary: OnnxSummary,
        data: bytes,
        sha256: str,
        client: str,
        preprocessing: dict[str, object] | None = None,
    ) -> tuple[UploadedModel, bool]:
        """Store the file (once per hash) and its entry: (entry, created). Refusals: 409 for a name
        taken, 429 for a client's caps, 507 for the total cap."""
        entry = entry_for(name, summary, sha256, len(data), preprocessing)
        record = UploadRecord(
            name=name,
            sha256=sha256,
            size_bytes=len(data),
            owner=client,
            entry=msgspec.Raw(msgspec.json.encode(entry)),
            stated=msgspec.json.encode(dict(sorted((preprocessing or {}).items()))).decode(),
        )
        existing = self.store.upload(name)
        if existing is not None:
            self._taken_or_same(existing, record)
        self._check_caps(self.store.uploads_of(client), record)
        for _ in range(3):
            written = self.store.put_blob(sha256, data)
            try:
                stored, created = self.store.register_upload(
                    record, lambda mine: self._check_caps(mine, record)
                )
            except LookupError:  # the file was deleted between the two: store it again
                continue
            except (NameTaken, UploadRefused) as exc:
                if written:
                    self.store.drop_blob_if_unused(sha256)
                if isinstance(exc, NameTaken):
                    self._taken_or_same(exc.existing, record)
                raise
            return _entry_decoder.decode(stored.entry), created
        raise UploadRefused(409, "the file was deleted while it was uploaded; send it again")

    def _taken_or_same(self, existing: UploadRecord, record: UploadRecord) -> None:
        if existing.same_as(record):
            return
        mine = existing.owner == record.owner
        whose = (
            (
                "yours, with another file"
                if existing.sha256 != record.sha256
                else "yours, with other preprocessing"
            )
            if mine
            else "another client's"
        )
        raise UploadRefused(
            409,
            f"the name {PREFIX}{record.name} is taken ({whose}, sha256 {existing.sha256[:12]}…): "
            "choose another name" + (", or delete it first" if mine else ""),
        )

    def _count_refusal(self, cap: int) -> UploadRefused:
        return UploadRefused(
            429,
            f"you have {cap} uploaded models, the most one client may keep "
            "(DNNPROF_MAX_UPLOADS_PER_CLIENT): delete one (DELETE /v1/models/upload:<name>) first",
        )

    def _check_caps(self, mine: list[UploadRecord], record: UploadRecord) -> None:
        """The client's count and bytes (its distinct files), and the store's total (every distinct
        file): what the new file would add where it is not stored already."""
        s = self.settings
        if any(r.name == record.name for r in mine):
            return  # the same name and file again: nothing is added
        if s.max_uploads_per_client > 0 and len(mine) >= s.max_uploads_per_client:
            raise self._count_refusal(s.max_uploads_per_client)
        files = {r.sha256: r.size_bytes for r in mine}
        if record.sha256 not in files and s.max_upload_client_mb > 0:
            total = sum(files.values()) + record.size_bytes
            if total > s.max_upload_client_mb * MIB:
                raise UploadRefused(
                    429,
                    f"your uploads would hold {total / MIB:.1f} MB, over the {s.max_upload_client_mb} MB "
                    "one client may keep (DNNPROF_MAX_UPLOAD_CLIENT_MB): delete some first",
                )
        stored = self.store.blob_sizes()
        if record.sha256 not in stored and s.max_uploads_total_mb > 0:
            total = sum(stored.values()) + record.size_bytes
            if total > s.max_uploads_total_mb * MIB:
                raise UploadRefused(
                    507,
                    f"the store would hold {total / MIB:.1f} MB of uploaded files, over its "
                    f"{s.max_uploads_total_mb} MB (DNNPROF_MAX_UPLOADS_TOTAL_MB): nothing was stored",
                )

    def get(self, name: str) -> UploadedModel:
        """The entry of ``upload:<name>``, or of ``upload:<name>.<tag>`` (as profiles name it) while
        the name holds that file."""
        bare, _, tag = name.partition(".")
        record = self.store.upload(check_name(bare))
        if record is None or not record.sha256.startswith(tag):
            raise UploadRefused(404, f"no uploaded model {name[:80]} (GET /v1/models?source=upload)")
        return _entry_decoder.decode(record.entry)

    def list(self) -> list[UploadedModel]:
        return [_entry_decoder.decode(r.entry) for r in self.store.uploads()]

    def delete(self, name: str, client: str) -> UploadedModel:
        """Forget a name; where API keys are set only its uploader may."""
        bare = check_name(name)
        record = self.store.upload(bare)
        if record is None:
            raise UploadRefused(404, f"no uploaded model {PREFIX}{bare}")
        if self.settings.api_keys and record.owner != client:
            raise UploadRefused(
                403, f"{PREFIX}{bare} was uploaded by another client: only its uploader may delete it"
            )
        if not self.store.delete_upload(record):
            raise UploadRefused(409, f"{PREFIX}{bare} changed while it was deleted; retry")
        self.mark_gone(record)
        return _entry_decoder.decode(record.entry)

    def mark_gone(self, record: UploadRecord) -> int:
        """The profiles measured from a deleted upload stay, their model marked ``unavailable``
        with why (a request for the name now is a 404; these say where their model went)."""
        qualified = f"{PREFIX}{record.name}.{record.sha256[:TAG_HEX]}"
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        why = f"its uploaded file (sha256 {record.sha256}) was deleted at {when}"

        def mark(profile: ProfileRecord) -> ProfileRecord:
            profile.model = msgspec.structs.replace(profile.model, unavailable=why)
            return profile

        marked = self.store.list(model=qualified, limit=100_000)
        for profile in marked:
            with contextlib.suppress(RecordGone):  # deleted meanwhile
                self.store.update(profile.id, mark)
        return len(marked)

    def resolve(self, name: str) -> Resolved:
        """``upload:<name>`` (or ``upload:<name>.<tag>``, the stored form) as a profile request sees
        it: the entry as a catalogue entry, tagged with its file's hash."""
        bare, _, tag = name.strip()[len(PREFIX) :].partition(".")
        record = self.store.upload(bare) if re.fullmatch(NAME_PATTERN, bare) else None
        if record is None or (tag and not record.sha256.startswith(tag)):
            raise UnknownModelError(name, [f"{PREFIX}{r.name}" for r in self.store.uploads()][:5])
        return Resolved(_entry_decoder.decode(record.entry), record.sha256[:TAG_HEX])


def upload_refusal(info: ModelInfo, data: ProfileRequest) -> tuple[str, str] | None:
    """(field, why) where an uploaded model cannot be profiled as ``data`` asks, else None (and
    None for a catalogue model)."""
    if not isinstance(info, UploadedModel):
        return None
    if data.runtime not in info.runtimes:
        return "runtime", (
            f"{info.name} is an uploaded ONNX file: it can be profiled in {', '.join(info.runtimes)}, "
            f"not {data.runtime} (that needs a torch module, which an ONNX file does not convert to here)"
        )
    opset = data.runtime_options.opset if data.runtime_options is not None else None
    if opset is not None and opset != info.opset:
        return (
            "runtime_options",
            f"{info.name} is run at its own opset, {info.opset}: it is not exported again",
        )
    missing = [f for f in PREPROCESSING if f not in info.preprocessing]
    if data.accuracy and missing and info.num_classes == IMAGENET_CLASSES:  # else: not ImageNet's head
        return "accuracy", (
            f"{info.name} was uploaded without its preprocessing ({', '.join(missing)} missing; its "
            f"input size, {info.input_size}, is its graph's): its top-1 on ImageNet cannot be measured "
            "without it. Upload it with them (POST /v1/models?name=...&mean=...&std=...&crop_pct=...&"
            "interpolation=...&input_space=...), under another name or after deleting this one"
        )
    if data.input_size is not None and data.input_size != info.input_size:
        return (
            "input_size",
            f"{info.name} takes {info.input_size}×{info.input_size} images only (input {info.input.shape})",
        )
    batch = info.input.shape[0]
    if isinstance(batch, int) and any(b != batch for b in (data.batch_sizes or DEFAULT_BATCH_SIZES)):
        return "batch_sizes", f"{info.name}'s batch axis is fixed at {batch}: ask for batch_sizes [{batch}]"
    return None


def resolve_upload(store: ProfileStore, settings: Settings, name: str) -> Resolved:
    return UploadService(store, settings).resolve(name)
