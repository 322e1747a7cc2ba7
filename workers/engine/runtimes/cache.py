"""The runtimes' export cache (``<data dir>/runtimes/onnx``): checked before it is trusted.

A file found under its name is used only when it is a regular file (no symbolic link is followed),
its SHA-256 is the one written beside it (``<file>.json``) for the same key, and the graph's own
input and output signature is the one recorded at export. Anything else is moved aside to
``<cache>-quarantine`` (a link is removed) with the reason in the log, and the model exported
again. The key is the weights' content (so random weights, built from a fixed seed, hit across
processes), the folder is 0700 and its files 0600, and its size is bounded: the least recently
used exports go first (``DNNPROF_RUNTIME_CACHE_MB``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from pathlib import Path

import torch
from torch import nn

from dnnprof.process import private_dir

#: Its notes (a file set aside, and why) are relayed from the measuring process's log into the
#: worker's by this name (workers/jobs.py, ``relay_cache_notes``).
LOGGER = "dnnprof.runtime_cache"
log = logging.getLogger(LOGGER)


def weights_identity(model: nn.Module) -> str:
    """SHA-256 of every tensor of the model's state (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256(torch.__version__.encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())  # the tensor's memory, not a copy
    return digest.hexdigest()


def signature(data: bytes) -> dict[str, list]:
    """The graph's inputs and outputs: name, element type and dimensions (a name where dynamic)."""
    import onnx

    graph = onnx.load_from_string(data).graph

    def describe(values) -> list:
        return [
            [
                v.name,
                v.type.tensor_type.elem_type,
                [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            ]
            for v in values
        ]

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_no_follow(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError("not a regular file")
        return f.read()


def problem(path: Path, key: str, input_dims: list) -> str | None:
    """Why the cached ``path`` may not be used for ``key`` (None: it may)."""
    if path.is_symlink():
        return "it is a symbolic link"
    try:
        data = _read_no_follow(path)
        meta = json.loads(_read_no_follow(sidecar(path)))
    except (OSError, ValueError) as exc:
        return f"it or the digest beside it is unreadable ({exc})"
    if meta.get("key") != key:
        return "the digest beside it was written for another export"
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        return "its digest does not match the one written beside it (truncated or changed)"
    try:
        found = signature(data)
    except Exception as exc:  # noqa: BLE001 - whatever onnx makes of a bad file
        return f"it is not a readable ONNX graph ({type(exc).__name__})"
    if found != meta.get("signature") or found["inputs"][0][2][1:] != input_dims[1:]:
        return "its graph's input/output signature is not the one recorded at export"
    return None


def set_aside(path: Path, why: str) -> None:
    """Move a cached file and its digest out of the way (a link is only removed), saying why."""
    aside = private_dir(path.parent.with_name(path.parent.name + "-quarantine"))
    for p in (path, sidecar(path)):
        try:
            if p.is_symlink():
                p.unlink()
            elif p.exists():
                os.replace(p, aside / p.name)
        except OSError as exc:
            log.warning("could not set %s aside: %s", p, exc)
    log.warning("the cached export %s was not used: %s; exported again", path.name, why)


def use(path: Path, key: str, input_dims: list) -> bool:
    """True when the cached export at ``path`` may be used (and it counts as used now)."""
    if not path.exists() and not path.is_symlink():
        return False
    why = problem(path, key, input_dims)
    if why is not None:
        set_aside(path, why)
        return False
    os.utime(path)  # most recently used
    return True


def keep(tmp: Path, path: Path, key: str) -> None:
    """Put a fresh export ``tmp`` in place as ``path``, private, with its digest beside it."""
    data = _read_no_follow(tmp)
    os.chmod(tmp, 0o600)
    meta = {"key": key, "sha256": hashlib.sha256(data).hexdigest(), "signature": signature(data)}
    meta_tmp = tmp.with_name(tmp.name + ".json")
    fd = os.open(meta_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f)
    for p in (path, sidecar(path)):  # a link in the way is replaced, never written through
        if p.is_symlink():
            p.unlink()
    os.replace(tmp, path)
    os.replace(meta_tmp, sidecar(path))


def prune(cache: Path, limit_bytes: int, keep_path: Path) -> None:
    """Remove the least recently used exports (and anything set aside) until the cache holds at
    most ``limit_bytes``; ``keep_path``, in use now, stays whatever its size."""
    aside = cache.with_name(cache.name + "-quarantine")
    entries = []
    for folder, rank in ((aside, 0), (cache, 1)):  # what was set aside goes first
        for p in folder.glob("*.onnx") if folder.is_dir() else ():
            try:
                st = p.lstat()
            except OSError:
                continue
            extra = sidecar(p).lstat().st_size if sidecar(p).exists() else 0
            entries.append((rank, st.st_mtime, p, st.st_size + extra))
    total = sum(size for *_, size in entries)
    for _, _, p, size in sorted(entries, key=lambda e: (e[0], e[1])):
        if total <= limit_bytes:
            break
        if p == keep_path:
            continue
        for f in (p, sidecar(p)):
            f.unlink(missing_ok=True)
        total -= size
        log.info("removed the export %s from the cache (least recently used)", p.name)


def prepare_folder(cache: Path) -> None:
    """``runtimes/`` and ``runtimes/onnx``: 0700, as ``run/`` and ``spool/``."""
    private_dir(cache.parent)
    private_dir(cache)
