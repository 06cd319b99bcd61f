"""Per-vertex server compute times for ListModels, from :mod:`opss.profile`.

The planner needs the server's time per vertex. ``profile_source(mode)`` makes the
``ServerConfig.profile_fn`` the CLI uses: ``stored`` reads the committed profile of
this device (``profiles/<device tag>/<model>.json``) and reports nothing when there
is none; ``build`` measures and stores a missing one at start-up (a few seconds
per model on a GPU, longer on a CPU).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("opss.server")

PROFILE_MODES = ("off", "stored", "build")


def profile_source(mode: str, root: str | os.PathLike | None = None, repeats: int = 20
                   ) -> Callable[[Any, Any, Any], Mapping[str, float]] | None:
    """``profile_fn(graph, module, device) -> {vertex id: seconds}`` for a mode (None for off)."""
    if mode not in PROFILE_MODES:
        raise ValueError(f"profile: expected one of {list(PROFILE_MODES)}, got {mode!r}")
    if mode == "off":
        return None

    def profile_fn(graph, module, device) -> Mapping[str, float]:
        from opss.errors import ProfileError
        from opss.profile import load_or_build_profile

        name = graph.model
        shape = tuple(graph.node(graph.input_id).shape)
        try:
            prof = load_or_build_profile(
                name, role="server", device="cuda" if device.type == "cuda" else "cpu",
                root=root, input_shape=shape, build_missing=(mode == "build"), repeats=repeats,
                progress=False, graph=graph, module=module)
        except ProfileError as e:
            if mode == "stored":
                log.info("no stored server profile for %s: %s", name, e)
                return {}
            raise
        return prof.costs_for(graph)

    return profile_fn
