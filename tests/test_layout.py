"""The shape the design card asks for: the API never imports torch, Litestar without deprecations."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers import ROOT


def test_the_api_imports_and_builds_without_torch_or_deprecation_warnings():
    code = textwrap.dedent(
        """
        import sys, warnings
        warnings.simplefilter("error")
        from dnnprof.config import Settings
        from service.app import create_app
        app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))
        app.openapi_schema  # builds the whole schema
        heavy = sorted(m for m in ("torch", "torchvision", "timm", "numpy") if m in sys.modules)
        print("heavy:", heavy)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "heavy: []"


def test_the_worker_parent_does_not_import_torch():
    """The Celery parent forks its pool: CUDA must never be initialised there, so not even torch."""
    code = textwrap.dedent(
        """
        import os, sys
        os.environ["DNNPROF_REDIS_URL"] = "redis://127.0.0.1:1/0"
        os.environ["DNNPROF_WORKER_DEVICE"] = "cpu"
        import workers.celery_app
        print("torch" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_core_imports_neither_the_workers_nor_the_api():
    """Issue 40 (4): dnnprof/ is what both sides share, so it depends on neither. Every module of
    it is imported in a fresh interpreter (the CLI's entry points import the API and the worker
    inside the commands that start them, never at import)."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import dnnprof
        for module in pkgutil.walk_packages(dnnprof.__path__, "dnnprof."):
            importlib.import_module(module.name)
        print(sorted({m.split(".")[0] for m in sys.modules} & {"workers", "service", "torch"}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
