"""The Dockerfiles pass hadolint (from PyPI), and each ignored rule is explained where it is ignored."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.helpers import ROOT

DOCKERFILES = ["Dockerfile", "Dockerfile.l4t"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_passes_hadolint(name):
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    out = subprocess.run([hadolint, "--no-color", str(ROOT / name)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_ignored_rule_is_explained_and_images_run_as_non_root(name):
    lines = (ROOT / name).read_text().splitlines()
    for i, line in enumerate(lines):
        for rule in re.findall(r"hadolint ignore=([A-Z0-9,]+)", line):
            for code in rule.split(","):
                comments = " ".join(lines[max(0, i - 4) : i])
                assert f"{code}:" in comments, f"{name}:{i + 1} ignores {code} without saying why"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and all(u.isdigit() and u != "0" for u in users)
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert all(
        'CMD ["' in line for line in lines if line.lstrip().startswith("CMD ") and "HEALTHCHECK" not in line
    )


def image_env(name: str, stage: str | None = None) -> dict[str, str]:
    """The ENV of a Dockerfile's stage (the last stage, or the one named ``stage``)."""
    text = (ROOT / name).read_text().replace("\\\n", " ")
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    chosen = (
        stages[-1]
        if stage is None
        else next(s for s in stages if s.split("\n", 1)[0].endswith(f" AS {stage}"))
    )
    env = {}
    for line in chosen.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())
    return env


@pytest.mark.parametrize(
    ("name", "stage"), [("Dockerfile", "api"), ("Dockerfile", "worker"), ("Dockerfile.l4t", None)]
)
def test_images_run_under_an_init_with_a_data_volume_and_listen_beyond_loopback(name, stage):
    """What the containers need that no home provides: a data directory that is a volume, a
    matplotlib config dir, metrics/API reachable through a published port; tini as PID 1."""
    env = image_env(name, stage)
    text = (ROOT / name).read_text()
    assert env["DNNPROF_HOST"] == "0.0.0.0" and env["MPLCONFIGDIR"].startswith("/tmp/")
    assert env["DNNPROF_DATA_DIR"] == "/data" and '"/data"' in text and "chown 10001:10001" in text
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in text and "tini" in text.split("ENTRYPOINT")[0]
    worker_cmds = [line for line in text.splitlines() if line.startswith('CMD ["dnnprof", "worker"')]
    assert all("--device" not in line for line in worker_cmds)  # DNNPROF_WORKER_DEVICE decides
    assert "--mount=type=secret,id=pip.conf,target=/etc/pip.conf pip install" in text.replace("\\\n    ", "")


def worker_pins(machine: str | None = None) -> dict[str, str]:
    """The constraints file's pins for one machine (``platform_machine``; this one unless named)."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = default_environment() | ({"platform_machine": machine} if machine else {})
    pins = {}
    for line in (ROOT / "deploy" / "worker-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                assert req.name not in pins, f"two pins of {req.name} for {machine}"
                pins[req.name] = str(req.specifier).removeprefix("==")
    return pins


def test_the_worker_image_is_on_the_cuda_line_of_its_pinned_torch():
    """One CUDA decision: the base image's CUDA major is that of the torch the constraints pin,
    and `make test` installs the same torch (so torch.version.cuda here is the image's)."""
    import torch

    pins = worker_pins()
    assert torch.__version__.split("+")[0] == pins["torch"], "make test installs the image's torch"
    if worker_pins("x86_64")["torch"] == pins["torch"]:  # this machine gets the CUDA line
        base = re.search(r"ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.", (ROOT / "Dockerfile").read_text()).group(1)
        assert int(base) == int(torch.version.cuda.split(".")[0])
    assert "-c deploy/worker-constraints.txt" in (ROOT / "Makefile").read_text()


def test_the_arm64_worker_is_a_cpu_worker_on_a_cpu_only_torch():
    """On arm64 the worker image pins PyPI's newest CPU-only aarch64 torch (2.11 on are CUDA 13
    builds that require GBs of nvidia-* wheels), with its torchvision; amd64 keeps the CUDA line."""
    amd64, arm64 = worker_pins("x86_64"), worker_pins("aarch64")
    assert set(amd64) == set(arm64) == {"torch", "torchvision"}
    major_minor = tuple(int(x) for x in arm64["torch"].split(".")[:2])
    assert (2, 1) <= major_minor <= (2, 10), "PyPI's aarch64 torch from 2.11 on is a CUDA build"
    # torchvision 0.N pairs with torch 2.(N - 15) from torch 2.x's 0.15 on
    assert int(arm64["torchvision"].split(".")[1]) == major_minor[1] + 15
    assert int(amd64["torchvision"].split(".")[1]) == int(amd64["torch"].split(".")[1]) + 15
    assert arm64["torch"] in (ROOT / "Dockerfile").read_text().split("FROM ", 1)[0]
