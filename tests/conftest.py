from __future__ import annotations

import os

import pytest

from tests.helpers import ROOT, Service, start_service

UNBUILDABLE = ROOT / "tests" / "data" / "catalogue_failures.json"


def pytest_collection_modifyitems(config, items):
    """GPU tests run where torch sees a CUDA device and are skipped, with the reason, elsewhere."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def service(tmp_path_factory) -> Service:
    """The whole service as `dnnprof serve` runs it: embedded Redis, a CPU worker, the API."""
    svc = start_service(
        tmp_path_factory.mktemp("dnnprof-data"),
        # As the catalogue sweep writes it: a model this host cannot build is refused at request time.
        env={"DNNPROF_CATALOGUE_FAILURES": str(UNBUILDABLE)},
    )
    yield svc
    svc.stop()
    if os.environ.get("DNNPROF_TEST_SHOW_LOG"):
        print(svc.log())


@pytest.fixture
def client(service: Service):
    with service.client() as c:
        yield c
