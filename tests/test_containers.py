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
