"""OPSS's build backend: setuptools' own, with one fix to editable installs.

Why. ``client/`` and ``server/`` install as ``opss.client`` and
``opss.server`` (``package-dir`` in ``pyproject.toml``), so setuptools
cannot make an editable install by putting the checkout on ``sys.path``; it
installs a meta-path finder instead (``__editable___opss_*_finder.py``) and
*appends* it to ``sys.meta_path``, after the standard path finder. When the
checkout's folder is itself named ``opss`` and the folder above it is on
``sys.path`` (``git clone ... opss`` and ``PYTHONPATH=.`` or a script run
from there), the path finder sees that folder as a namespace package
``opss`` and answers first: the installed package is shadowed and ``opss``
has no ``__version__``, no ``opss.cli`` (``ImportError: cannot import name
'__version__' from 'opss' (unknown location)``).

The fix. :func:`build_editable` builds setuptools' editable wheel and
rewrites the one line of its ``__editable__.opss-*.pth`` so that the finder
setuptools installs goes to the *front* of ``sys.meta_path``: the installed
``opss`` (this checkout) is found before any folder that happens to be
called ``opss`` on ``sys.path``. The finder only answers for ``opss``,
``opss.client``, ``opss.server`` and their direct children, so nothing else
changes. A regular (non-editable) install needs no fix: a package in
site-packages beats a namespace folder. Everything else is setuptools'.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import zipfile

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every hook not overridden here)

#: the line setuptools writes: ``import <finder>; <finder>.install()``
_INSTALL_LINE = re.compile(r"^import (__editable___\w+_finder); \1\.install\(\)\s*$")


def front_line(finder: str) -> str:
    """The ``.pth`` line that installs ``finder`` and moves what it appended to the front of
    ``sys.meta_path`` (one statement line: ``site`` execs it; no comprehension, which could not
    see the line's own names there)."""
    return (f"import sys, {finder} as _opss_finder; _opss_n = len(sys.meta_path); _opss_finder.install(); "
            f"sys.meta_path[:] = sys.meta_path[_opss_n:] + sys.meta_path[:_opss_n]\n")


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    _put_finder_first(os.path.join(wheel_directory, name))
    return name


def _put_finder_first(wheel: str) -> None:
    """Rewrite the wheel's ``__editable__.*.pth`` finder line (and its RECORD entry) in place."""
    with zipfile.ZipFile(wheel) as zf:
        entries = [(info, zf.read(info)) for info in zf.infolist()]
    changed: dict[str, bytes] = {}
    for info, data in entries:
        if re.fullmatch(r"__editable__\.[^/]+\.pth", info.filename):
            match = _INSTALL_LINE.match(data.decode())
            if match:  # another strategy (a plain path entry) needs no fix
                changed[info.filename] = front_line(match.group(1)).encode()
    if not changed:
        return
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            if info.filename in changed:
                data = changed[info.filename]
            elif info.filename.endswith(".dist-info/RECORD"):
                data = _record(data.decode(), changed).encode()
            zf.writestr(info, data)
    with open(wheel, "wb") as fh:
        fh.write(out.getvalue())


def _record(text: str, changed: dict[str, bytes]) -> str:
    """RECORD with the hash and size of every changed file recomputed."""
    lines = []
    for line in text.splitlines():
        path = line.split(",", 1)[0]
        if path in changed:
            data = changed[path]
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            line = f"{path},sha256={digest},{len(data)}"
        lines.append(line)
    return "\n".join(lines) + "\n"
