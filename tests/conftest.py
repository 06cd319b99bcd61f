"""Shared pytest configuration for OPSS.

Root-only tests (``@pytest.mark.root``: network namespaces, tc, cgroups) run
when pytest runs as root — CI does — and are reported as skipped otherwise.
A module that runs small torch convs uses ``one_thread`` (module scope) with
``pytestmark = pytest.mark.usefixtures("one_thread")``.
"""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, tc, cgroups)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Small convs on a shared 2-core box: one intra-op thread is ~10x faster."""
    import torch  # here, so torch-free test modules do not pay for importing it

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
