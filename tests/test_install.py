"""A fresh checkout as a new user lays it out: cloned into a folder named ``opss``, their
``mymodels.py`` beside it, that parent folder on ``PYTHONPATH``; the installed commands work.

The checkout's sources are copied into ``<tmp>/opss`` and installed editable (``pip install
-e``, no build isolation, no dependencies: the test's own environment lends torch & co.
through a path entry) into a new virtual environment, exactly as ``scripts/bootstrap.sh``
does. Without the build backend's fix (``build_backend/opss_backend.py``) the folder
``<tmp>/opss`` is taken for a namespace package ``opss`` and ``opss`` dies with
``cannot import name '__version__' from 'opss' (unknown location)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "build_backend", "opss", "client", "server")

USER_MODEL = '''
import torch.nn as nn


def make():
    """A two-layer user model."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())


make.input_shape = (1, 3, 16, 16)
'''


@pytest.fixture(scope="module")
def user_layout(tmp_path_factory):
    """``(parent folder, venv bin folder)``: ``parent/opss`` is the checkout, installed editable
    into ``parent/venv``; ``parent/mymodels.py`` is the user's model."""
    parent = tmp_path_factory.mktemp("newuser")
    checkout = parent / "opss"
    checkout.mkdir()
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, checkout / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, checkout / name)
    (parent / "mymodels.py").write_text(USER_MODEL, encoding="utf-8")
    venv = parent / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # torch, grpc, setuptools ... from this environment (a path entry: its .pth files are not run)
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                           "--no-build-isolation", "--disable-pip-version-check", "-e", str(checkout)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return parent, venv / "bin"


def _run(cmd, cwd, pythonpath=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_checkout_folder_named_opss_does_not_shadow_the_installed_package(user_layout):
    parent, bin_dir = user_layout
    # the hazard is real here: on this PYTHONPATH the path finder alone sees a namespace package
    probe = _run([str(bin_dir / "python"), "-S", "-c",
                  "import importlib.machinery as m; s = m.PathFinder.find_spec('opss'); "
                  "print(s.loader is None, list(s.submodule_search_locations))"], cwd="/", pythonpath=parent)
    assert probe.stdout.split()[0] == "True", probe.stdout + probe.stderr
    assert str(parent / "opss") in probe.stdout
    for cmd in (["opss", "--version"], ["opss-client", "--help"], ["opss-server", "--help"]):
        proc = _run([str(bin_dir / cmd[0]), *cmd[1:]], cwd=parent, pythonpath=parent)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr and "Error processing line" not in proc.stderr, proc.stderr
    proc = _run([str(bin_dir / "opss"), "--version"], cwd=parent, pythonpath=parent)
    assert proc.stdout.strip() == "opss 0.1.0"
    where = _run([str(bin_dir / "python"), "-c", "import opss, opss.client; print(opss.__file__); "
                  "print(opss.client.__file__)"], cwd=parent, pythonpath=parent)
    assert where.stdout.split() == [str(parent / "opss" / "opss" / "__init__.py"),
                                    str(parent / "opss" / "client" / "__init__.py")], where.stderr


def test_a_user_model_in_the_current_folder_is_found_without_pythonpath(user_layout):
    parent, bin_dir = user_layout
    proc = _run([str(bin_dir / "opss"), "graph", "--model", "mymodels:make"], cwd=parent)
    assert proc.returncode == 0, proc.stderr
    assert "model: mymodels:make" in proc.stdout and "vertices: 2" in proc.stdout, proc.stdout
    # elsewhere it is not found, and the one line says where it looked and what to do
    proc = _run([str(bin_dir / "opss"), "graph", "--model", "mymodels:make"], cwd=parent / "opss")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "mymodels.py" in proc.stderr and str(parent / "opss") in proc.stderr and "PYTHONPATH" in proc.stderr
