"""Shared pytest configuration for OPSS.

Root-only tests (``@pytest.mark.root``: network namespaces, tc, cgroups) run
when pytest runs as root — CI does — and are reported as skipped otherwise.
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
