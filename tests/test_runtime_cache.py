"""The ONNX export cache (issue 44, part 2): a cached file is used only after it is checked (its
digest, the key it was written for, the graph's own signature, no symbolic link followed); a bad
one is set aside with the reason in the log and exported again; the key is what determines the
export, so random weights hit across processes; the folder is bounded and private."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import stat

import pytest
import torch
from torch import nn

from dnnprof.contract import ProfileSettings
from workers.engine.runtimes.onnx import export_onnx
from workers.engine.scenario import run_profile
from workers.runtime_support import available_runtimes

pytestmark = pytest.mark.skipif(
    "onnxruntime" not in available_runtimes("cpu"), reason="the onnxruntime runtime is not installed here"
)


class Tiny(nn.Module):
    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def tiny_settings(name: str = "test:tiny") -> ProfileSettings:
    return ProfileSettings(
        model=name, device="cpu", batch_sizes=(1,), runs=3, precision="fp32", input_size=16,
        runtime="onnxruntime",
    )  # fmt: skip


def export(model: nn.Module, cache, name: str = "test:tiny", **kw):
    return export_onnx(model, tiny_settings(name), cache, 18, **kw)


def runs(path) -> bool:
    """onnxruntime loads the file and runs it on a batch of 2."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 3, 16, 16), np.float32)})[0]
    return out.shape == (2, 10)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), id="truncated"),
        pytest.param(lambda p: p.write_bytes(os.urandom(p.stat().st_size)), id="random-bytes"),
    ],
)
def test_a_damaged_cached_export_is_exported_again_and_set_aside(tmp_path, caplog, damage):
    """Before: ``path.exists()`` was a hit, and every later profile of the model failed on it."""
    cache = tmp_path / "onnx"
    model = Tiny().eval()
    path, _, cached = export(model, cache)
    assert not cached and runs(path)
    damage(path)
    with caplog.at_level(logging.WARNING):
        again, _, cached = export(model, cache)
    assert again == path and not cached and runs(path)
    assert "digest" in caplog.text and "exported again" in caplog.text, caplog.text
    aside = sorted(p.name for p in (tmp_path / "onnx-quarantine").iterdir())
    assert aside == [path.name, f"{path.name}.json"]  # kept for a look, out of the way
    assert export(model, cache)[2]  # and the new one is a hit


def test_a_symbolic_link_in_the_cache_is_never_followed(tmp_path, caplog):
    cache = tmp_path / "onnx"
    model = Tiny().eval()
    path, _, _ = export(model, cache)
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/sh\n")
    path.unlink()
    path.symlink_to(secret)
    with caplog.at_level(logging.WARNING):
        again, _, cached = export(model, cache)
    assert not cached and not again.is_symlink() and runs(again)
    assert "symbolic link" in caplog.text
    assert secret.read_text() == "root:x:0:0:root:/root:/bin/sh\n"  # neither read nor written


def test_another_models_export_under_the_name_is_not_used(tmp_path):
    """Before: another model's valid ONNX copied under the name was timed and stored as succeeded."""
    cache = tmp_path / "onnx"
    model, other = Tiny(4).eval(), Tiny(6).eval()
    path, _, _ = export(model, cache)
    other_path, _, _ = export(other, cache, name="test:other")
    for suffix in ("", ".json"):  # the file and what is written beside it
        shutil.copyfile(f"{other_path}{suffix}", f"{path}{suffix}")
    again, _, cached = export(model, cache)
    assert not cached and runs(again)


def test_random_weights_export_once_whatever_the_process_rng(tmp_path):
    """Before: the key hashed the first 4 KB of each weight tensor, random per process, so every
    worker restart exported again. Random weights are now built from a fixed seed (the
    architecture and the seed determine them), and the key is the weights' content."""
    from tests.test_runtimes import CONFIG, RESNET18, settings

    config = dataclasses.replace(CONFIG, cache_dir=tmp_path)
    reports = []
    for seed in (1, 2):  # what another process's random state would be
        torch.manual_seed(seed)
        reports.append(run_profile(RESNET18, settings("onnxruntime", batch_sizes=(1,)), config).runtime)
    assert [r.export_cached for r in reports] == [False, True]
    assert [r.outputs.outputs_match for r in reports] == [True, True]


def test_the_cache_is_bounded_least_recently_used_first(tmp_path):
    cache = tmp_path / "onnx"
    models = {name: Tiny(channels).eval() for name, channels in (("test:a", 4), ("test:b", 5), ("test:c", 6))}
    a, _, _ = export(models["test:a"], cache, name="test:a")
    limit = int(2.5 * a.stat().st_size)
    b, _, _ = export(models["test:b"], cache, name="test:b", limit_bytes=limit)
    assert export(models["test:a"], cache, name="test:a", limit_bytes=limit)[2]  # a used: b is older
    c, _, _ = export(models["test:c"], cache, name="test:c", limit_bytes=limit)
    assert a.exists() and c.exists() and not b.exists() and not (cache / f"{b.name}.json").exists()
    assert sum(p.stat().st_size for p in cache.glob("*.onnx")) <= limit


def test_the_runtimes_folder_and_its_files_are_private(tmp_path):
    """0700 folders, 0600 files: as run/ and spool/ (another user on the host reads no model)."""
    cache = tmp_path / "runtimes" / "onnx"
    export(Tiny().eval(), cache)
    for folder in (tmp_path / "runtimes", cache):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for file in cache.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_why_a_cached_export_was_set_aside_reaches_the_workers_log(tmp_path, caplog):
    """The measuring process's own log goes with its folder: the job relays the cache's notes."""
    from workers.engine.runtimes.cache import LOGGER
    from workers.jobs import CACHE_LOGGER, relay_cache_notes

    assert CACHE_LOGGER == LOGGER
    child_log = tmp_path / "child.log"
    handler = logging.FileHandler(child_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))  # workers/runner.py's
    logging.getLogger(LOGGER).addHandler(handler)
    try:
        model, cache = Tiny().eval(), tmp_path / "onnx"
        path, _, _ = export(model, cache)
        path.write_bytes(b"not an onnx file")
        export(model, cache)
    finally:
        logging.getLogger(LOGGER).removeHandler(handler)
        handler.close()
    with caplog.at_level(logging.WARNING, logger="workers.jobs"):
        relay_cache_notes(child_log)
    assert f"measuring process: the cached export {path.name} was not used" in caplog.text, caplog.text
