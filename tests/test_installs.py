"""Each image installs one side of pyproject.toml (the API: the core and [api]; a worker: the core and
[worker], [runtimes]): what each side imports must come from the distributions that side installs,
or the image fails at start (deploy/smoke-arm64.sh found the client's `rich`, which only Litestar
brought, missing from the Jetson image)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys

import pytest
import tomllib
from packaging.requirements import Requirement

from tests.helpers import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

#: Imported where installed, never required (each inside a try/except ImportError): found by a
#: meta-path hook that printed each one's importer.
OPTIONAL = {
    "greenlet": "celery/utils/threads.py",
    "charset-normalizer": "numpy/f2py/crackfortran.py",
    "sniffio": "httpcore's _synchronization.py",
    "setuptools": "its distutils-precedence.pth, loaded at every interpreter start",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements install, dependencies included (as installed here)."""
    seen: set[str] = set()
    todo = [(Requirement(r), ()) for r in requirements]
    while todo:
        req, extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (extras or ("",))):
            continue
        name = canonical(req.name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (another platform's), so not imported here either
        if name in seen and not req.extras:
            continue
        seen.add(name)
        todo += [(Requirement(r), tuple(req.extras)) for r in dist.requires or []]
    return seen


def imported_distributions(modules: list[str]) -> set[str]:
    """The installed distributions whose modules importing ``modules`` loads, in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = {"DNNPROF_REDIS_URL": "redis://127.0.0.1:1/0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    owners = importlib.metadata.packages_distributions()
    return {canonical(d) for top in json.loads(out.stdout) for d in owners.get(top, [])} - {"dnnprof"}


@pytest.mark.parametrize(
    ("side", "extras", "modules"),
    [
        ("worker", ["worker", "runtimes"], ["dnnprof.cli", "workers.celery_app", "workers.doctor", "timm"]),
        ("api", ["api"], ["dnnprof.cli", "service.app"]),
    ],
)
def test_each_side_imports_only_what_its_install_brings(side, extras, modules):
    wanted = PYPROJECT["dependencies"] + [r for e in extras for r in PYPROJECT["optional-dependencies"][e]]
    missing = imported_distributions(modules) - closure(wanted) - set(OPTIONAL)
    assert not missing, f"the {side} imports {sorted(missing)}, which its install does not bring"
