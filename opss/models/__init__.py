"""The model zoo: a registry of model factories by name.

``get_model(name, seed=0, weights=None)`` builds a model in ``eval()`` mode with
a deterministic initialization (``torch.manual_seed(seed)`` inside a forked RNG,
so the caller's global RNG is left alone), or loads a state dict from
``weights`` (``torch.load(..., weights_only=True)``).

Registered here:

* from torchvision (``weights=None``): ``googlenet`` (no aux heads, no input
  transform), ``resnet18``, ``resnet50``, ``mobilenet_v2``, ``alexnet``;
* written here, sources in their docstrings: ``alexnet_parallel``
  (:mod:`opss.models.alexnet_parallel`), ``multistream``
  (:mod:`opss.models.multistream`), ``randwire`` (:mod:`opss.models.randwire`).

A user's own model needs no edit here: a name ``"package.module:factory"``
imports ``factory`` (a callable taking no required arguments and returning an
``nn.Module``). The input shape comes from an ``input_shape`` attribute of the
factory or of the module it returns (default ``(1, 3, 224, 224)``), and the
small shape for fast tests from ``test_input_shape`` (default: the input
shape), and optionally ``block_types`` (module classes that are blocks at
``granularity="block"``). Example::

    # mypkg/nets.py
    def make():
        return MyNet()
    make.input_shape = (1, 3, 128, 128)

    opss graph --model mypkg.nets:make

Or call :func:`register` from your own code.

:func:`resolve_model` turns a name (with a seed or weights, the small shape or
not) into one :class:`ResolvedModel`: the spec, the module, the input shape,
the weights fingerprint and the layer graph, captured once. The edge (a CLI
command, the client session) resolves, and hands the object down.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from opss.errors import ModelNotFoundError, OpssError, ShapeMismatchError

__all__ = [
    "ModelSpec",
    "ResolvedModel",
    "build_model",
    "capture_at",
    "check_resolved",
    "example_input",
    "fingerprint",
    "get_model",
    "get_spec",
    "names",
    "register",
    "resolve_model",
]

IMAGENET_SHAPE = (1, 3, 224, 224)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model: its name, the input shape it is meant for, the
    smallest shape that keeps every layer valid (fast tests), a description,
    the factory and, optionally, the module classes that are blocks at
    ``granularity="block"`` (None: the generic rule of :mod:`opss.graph`)."""

    name: str
    input_shape: tuple[int, ...]
    test_input_shape: tuple[int, ...]
    description: str
    factory: Callable[[], nn.Module]
    block_types: tuple[type, ...] | None = None

    def shape(self, small: bool = False, given: Sequence[int] | None = None) -> tuple[int, ...]:
        """The input shape to use: ``given`` when there is one, else the test shape when
        ``small``, else the model's input shape."""
        if given is not None:
            return tuple(given)
        return tuple(self.test_input_shape if small else self.input_shape)


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str,
    *,
    input_shape: Sequence[int] = IMAGENET_SHAPE,
    test_input_shape: Sequence[int] | None = None,
    description: str = "",
    block_types: Sequence[type] | None = None,
) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator registering a factory ``f() -> nn.Module`` under ``name``."""

    def deco(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        _REGISTRY[name] = ModelSpec(
            name=name,
            input_shape=tuple(input_shape),
            test_input_shape=tuple(test_input_shape or input_shape),
            description=description or summary(factory.__doc__),
            factory=factory,
            block_types=tuple(block_types) if block_types is not None else None,
        )
        return factory

    return deco


def summary(doc: str | None) -> str:
    """A one-line description from a docstring: its first sentence, read across line breaks
    (torchvision's ``Densenet-121 model from\n `Densely Connected ...`_.``), with reST links
    ```text <url>`_`` kept as their text and double backquotes dropped; ``""`` for none."""
    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    para = re.sub(r"`([^`<]+?)\s*<[^>]*>`_{1,2}", r"\1", para).replace("``", "")
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z(])", para, maxsplit=1)[0]
    return sentence


def names() -> list[str]:
    """Registered model names (sorted)."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a zoo name or a ``package.module:factory`` path."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return _user_spec(name)
    raise ModelNotFoundError(
        f"unknown model {name!r}: expected one of {', '.join(names())} "
        f"or an import path 'package.module:factory'"
    )


def _import_user_module(name: str, module_name: str) -> Any:
    """Import the module of a ``package.module:factory`` name, also from the current folder.

    Like ``python -m``, the current folder is searched too (a ``mymodels.py`` beside the
    user): when the module is not found on ``sys.path``, the current folder is put first
    on it and the import is tried again (it stays there, so the module's own imports of
    its neighbours work; it is taken off again if that fails too).
    """
    top = module_name.split(".")[0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name not in (top, module_name):
            raise ModelNotFoundError(f"model {name!r}: importing {module_name!r} failed: {exc}") from None
    except ImportError as exc:
        raise ModelNotFoundError(f"model {name!r}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # the user's module raised while it ran
        raise ModelNotFoundError(f"model {name!r}: importing {module_name!r} raised "
                                 f"{type(exc).__name__}: {exc}") from None
    here = os.getcwd()
    on_path = any(os.path.abspath(p or os.curdir) == here for p in sys.path)
    if not on_path:
        sys.path.insert(0, here)
        importlib.invalidate_caches()
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name not in (top, module_name):
                raise ModelNotFoundError(f"model {name!r}: importing {module_name!r} failed: {exc}") from None
        except Exception as exc:
            raise ModelNotFoundError(f"model {name!r}: importing {module_name!r} from {here} raised "
                                     f"{type(exc).__name__}: {exc}") from None
        finally:
            if top not in sys.modules:
                sys.path.remove(here)
    where = module_name.replace(".", "/")
    raise ModelNotFoundError(
        f"model {name!r}: cannot import module {module_name!r}: expected {where}.py (or a package {where}/) "
        f"in the current folder ({here}) or on PYTHONPATH; run from its folder or set "
        f"PYTHONPATH=/path/to/its/folder"
    )


def _user_spec(name: str) -> ModelSpec:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ModelNotFoundError(f"model {name!r}: expected 'package.module:factory', got an empty "
                                 f"{'module' if not module_name else 'factory'} name")
    module = _import_user_module(name, module_name)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelNotFoundError(
            f"model {name!r}: expected a callable {attr!r} in {module_name}, got "
            f"{type(factory).__name__ if factory is not None else 'nothing'}"
        )
    shape = tuple(getattr(factory, "input_shape", IMAGENET_SHAPE))
    return ModelSpec(
        name=name,
        input_shape=shape,
        test_input_shape=tuple(getattr(factory, "test_input_shape", shape)),
        description=summary(factory.__doc__),
        factory=factory,
        block_types=getattr(factory, "block_types", None),
    )


def get_model(name: str, seed: int = 0, weights: str | os.PathLike | None = None) -> nn.Module:
    """Build model ``name`` in eval mode, initialized from ``seed`` or loaded
    from the state-dict file ``weights``."""
    return build_model(get_spec(name), seed=seed, weights=weights)


def build_model(spec: ModelSpec, seed: int = 0, weights: str | os.PathLike | None = None) -> nn.Module:
    """:func:`get_model` for a spec already looked up."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(seed)
        model = spec.factory()
    for w in caught:  # a factory's warning once per process, however often it is built
        _warn_once(str(w.message), w.category, w.filename, w.lineno)
    if not isinstance(model, nn.Module):
        raise ModelNotFoundError(
            f"model {spec.name!r}: expected the factory to return an nn.Module, "
            f"got {type(model).__name__}"
        )
    if weights is not None:
        load_weights(model, weights, spec.name)
    return model.eval()


@functools.cache
def _warn_once(message: str, category: type[Warning], filename: str, lineno: int) -> None:
    """Re-issue a warning the factory raised (the user's warning filters apply), the first
    time only: torchvision's inception_v3 warns about its default initialization on every
    build, and a command may build a model twice (capture, then profile)."""
    warnings.warn_explicit(message, category, filename, lineno)


def load_weights(model: nn.Module, path: str | os.PathLike, name: str = "model") -> None:
    """Load a state dict file into ``model``; any missing or unexpected key or a
    shape mismatch is one clear error line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"weights for {name!r}: file {path!r} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors of many kinds
        raise ShapeMismatchError(
            f"weights for {name!r}: cannot read {path!r} as a state dict ({exc})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ShapeMismatchError(
            f"weights for {name!r}: expected a state dict in {path!r}, got {type(state).__name__}"
        )
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ShapeMismatchError(
            f"weights {path!r} do not fit model {name!r}: "
            f"missing keys {_few(missing)}, unexpected keys {_few(unexpected)}"
        )
    for k, t in own.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise ShapeMismatchError(
                f"weights {path!r} for model {name!r}: {k} expected shape "
                f"{tuple(t.shape)}, got {tuple(state[k].shape)}"
            )
    model.load_state_dict(state, strict=True)


def _few(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "[]"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return "[" + ", ".join(keys[:n]) + "]" + more


def example_input(name: str, small: bool = False, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal input of the model's (or its test) shape."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(get_spec(name).shape(small), generator=gen)


def fingerprint(model: nn.Module) -> str:
    """sha256 (hex) over (name, dtype, shape, raw bytes) of every state-dict
    entry, in order: identifies the exact weights of a model."""
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(key.encode() + b"\0")
        h.update(str(flat.dtype).encode() + b"\0")
        h.update(repr(tuple(tensor.shape)).encode() + b"\0")
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------
# a model resolved once: spec, module, input shape, fingerprint, layer graph
#
# The edge (a CLI command, opss.client.session.ClientSession) resolves what the
# user named into one ResolvedModel and hands that object down: the profile
# lookup (opss.profile.load_or_build_profile), opss.profile.capture_model, the
# planner and the split take the object or its graph and never look the name
# up, build the model or capture it again.


def capture_at(spec: ModelSpec, module: nn.Module, shape: Sequence[int], granularity: str = "layer",
               seed: int = 0) -> Any:
    """:func:`opss.graph.capture` of ``module`` (the model of ``spec``) on a seeded input of ``shape``."""
    from opss.graph import capture

    example = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))
    return capture(module, example, granularity, name=spec.name)


@dataclass(frozen=True, eq=False)
class ResolvedModel:
    """One model, resolved: its name and spec, the module (eval mode), the input
    shape it is used at, the fingerprint of its weights (:func:`fingerprint`),
    its layer-granularity graph at that shape and the graph's hash
    (:func:`opss.profile.graph_hash`). Build it with :func:`resolve_model`."""

    name: str
    spec: ModelSpec
    module: nn.Module = field(repr=False)
    input_shape: tuple[int, ...]
    fingerprint: str
    graph: Any = field(repr=False)  # opss.graph.LayerGraph, granularity "layer"
    graph_hash: str
    seed: int = 0

    def example(self, seed: int | None = None) -> torch.Tensor:
        """A seeded standard-normal input of the model's shape (``seed``: the model's by default)."""
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        return torch.randn(self.input_shape, generator=gen)

    def capture(self, granularity: str = "layer") -> Any:
        """The layer graph itself, or a fresh capture of the module at another granularity."""
        if granularity == "layer":
            return self.graph
        return capture_at(self.spec, self.module, self.input_shape, granularity, seed=self.seed)


def resolve_model(
    model: str | ModelSpec,
    *,
    small: bool = False,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
    weights: str | os.PathLike | None = None,
    module: nn.Module | None = None,
) -> ResolvedModel:
    """Look ``model`` up, build it (from ``seed``, or the state dict ``weights``;
    or take the given ``module``), fingerprint it and capture its layer graph at
    ``input_shape`` (default: the test shape when ``small``, else its input shape).
    Raises :class:`~opss.errors.ModelNotFoundError` for an unknown name and
    :class:`~opss.errors.CaptureError` when it cannot be traced."""
    from opss.profile import graph_hash

    spec = model if isinstance(model, ModelSpec) else get_spec(model)
    shape = spec.shape(small, input_shape)
    net = module if module is not None else build_model(spec, seed=seed, weights=weights)
    graph = capture_at(spec, net, shape, "layer", seed=seed)
    return ResolvedModel(name=spec.name, spec=spec, module=net, input_shape=shape, fingerprint=fingerprint(net),
                         graph=graph, graph_hash=graph_hash(graph), seed=seed)


def check_resolved(rm: ResolvedModel, *, input_shape: Sequence[int] | None = None, module: Any = None,
                   graph: Any = None) -> None:
    """Refuse a shape, module or graph handed in beside a :class:`ResolvedModel` that is not its own."""
    if input_shape is not None and tuple(input_shape) != rm.input_shape:
        raise ShapeMismatchError(f"model {rm.name!r} is resolved at input shape {list(rm.input_shape)}, "
                                 f"got {list(input_shape)}: resolve it again at that shape")
    for what, given, own in (("module", module, rm.module), ("graph", graph, rm.graph)):
        if given is not None and given is not own:
            raise OpssError(f"model {rm.name!r}: expected its resolved {what} or none, got another {what}")


# importing the zoo modules registers them
from opss.models import _torchvision, alexnet_parallel, multistream, randwire  # noqa: E402,F401
