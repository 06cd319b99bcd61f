"""What each codec costs on each vertex's output: wire bytes, encode and decode time, output error.

A :class:`CodecTable` is measured once per model and device (like a
profile, stored beside it as ``<model>.codecs.json``) by running the model on
the sample photos that installed packages ship (:mod:`opss.samples`) and
encoding every vertex's real output with every codec
(:func:`measure_codec_table`). The planner reads it through
:meth:`CodecTable.choose`: for each tensor that may cross the link, the
allowed codec with the least ``encode + c + wire / b + decode``.

Where the time goes: the client's sender thread encodes a tensor before it
uploads it, so the upload time of a cut tensor becomes
``g'(v) = enc(v) + c + wire(v) / b`` and the two-stage pipeline of
Proposition 1 (and the exact scheduler) stay exactly as they are; the
server decodes a tensor as its last byte arrives, before the layers that
read it can start, so the decode delays that tensor's arrival at the
server's compute. Encode times are this device's, scaled by the client
slowdown like every client time; decode times are also measured here (the
server is at least as fast, so this errs on the slow side).

The image forms of the input: ``uint8`` (the crop before normalization,
exactly a quarter of the float32 bytes; the client has it anyway, the server
normalizes) and ``file`` (the image file's own bytes; nothing to encode, the
server decodes, resizes, crops and normalizes). The table holds their decode
times measured on a sample JPEG; the planner takes the file's real size from
the image being classified.

This module is torch-free except :func:`measure_codec_table`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opss.errors import OpssError, ProfileError

__all__ = ["CodecCost", "CodecTable", "WireChoice", "codec_table_path", "load_or_build_codec_table",
           "image_decode_seconds", "measure_codec_table", "vertex_outputs",
           "wire_options"]

FORMAT = "opss-codecs/1"


@dataclass(frozen=True)
class CodecCost:
    """One codec on one tensor: wire bytes / raw bytes, seconds to encode and decode,
    and (lossy codecs, when measured) the relative error of the model output."""

    ratio: float
    encode_s: float
    decode_s: float
    error: float | None = None

    def to_json(self) -> list:
        return [self.ratio, self.encode_s, self.decode_s, self.error]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> CodecCost:
        ratio, enc, dec, err = (list(data) + [None])[:4]
        return cls(float(ratio), float(enc), float(dec), None if err is None else float(err))


@dataclass(frozen=True)
class WireChoice:
    """The codec chosen for one tensor: raw ``bytes`` travel as ``wire_bytes``."""

    tensor: str
    codec: str
    bytes: int
    wire_bytes: int
    encode_s: float = 0.0
    decode_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "codec": self.codec, "bytes": self.bytes, "wire_bytes": self.wire_bytes,
                "encode_s": self.encode_s, "decode_s": self.decode_s}


@dataclass(frozen=True)
class CodecTable:
    """Per vertex and codec, a :class:`CodecCost` (raw is implicit: ratio 1, no time)."""

    model: str
    device_tag: str
    costs: Mapping[str, Mapping[str, CodecCost]]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def choose(self, vertex: str, nbytes: int, allowed: Iterable[str], link: Any, *,
               client_slowdown: float = 1.0, max_error: float | None = None,
               file_bytes: int | None = None, file_decode_s: float | None = None) -> WireChoice:
        """The allowed codec with the least predicted ``encode + link.g(wire) + decode`` for
        ``vertex``'s output of ``nbytes`` (raw is always a candidate). A lossy codec is
        allowed only with a measured output error <= ``max_error``. ``file_bytes`` is the
        size of the image file when the input comes from one (the ``file`` form) and
        ``file_decode_s`` its preprocessing time when measured on that very file
        (:func:`image_decode_seconds`; else the table's, from the sample photos)."""
        from opss.codec import CODECS

        best = WireChoice(vertex, "raw", nbytes, nbytes)
        best_t = link.g(nbytes)
        for name, cost in self.costs.get(vertex, {}).items():
            if name not in allowed or name == "raw" or name not in CODECS:
                continue
            if not CODECS[name].exact and (max_error is None or cost.error is None or cost.error > max_error):
                continue
            if name == "file":
                if file_bytes is None:
                    continue
                wire = int(file_bytes)
            else:
                wire = int(math.ceil(cost.ratio * nbytes))
            enc = cost.encode_s * client_slowdown
            dec = file_decode_s if name == "file" and file_decode_s is not None else cost.decode_s
            t = enc + link.g(wire) + dec
            if t < best_t - 1e-15:
                best, best_t = WireChoice(vertex, name, nbytes, wire, enc, dec), t
        return best

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": self.model, "device_tag": self.device_tag, "meta": dict(self.meta),
                "costs": {v: {c: cost.to_json() for c, cost in per.items()} for v, per in self.costs.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CodecTable:
        if data.get("format") != FORMAT:
            raise ProfileError(f"codec table: expected format {FORMAT!r}, got {data.get('format')!r}")
        try:
            costs = {v: {c: CodecCost.from_json(x) for c, x in per.items()} for v, per in data["costs"].items()}
            return cls(str(data["model"]), str(data["device_tag"]), costs, dict(data.get("meta", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"codec table: malformed ({exc!r})") from None

    def save(self, path: str | os.PathLike) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))
        os.replace(tmp, p)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CodecTable:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ProfileError(f"codec table {str(path)!r}: cannot read it ({exc})") from None


def codec_table_path(model: str, tag: str, root: str | os.PathLike | None = None,
                     input_shape: Sequence[int] = ()) -> Path:
    """Where the codec table of ``model`` at ``input_shape`` on device ``tag`` lives: beside
    its profile, the shape in the name (a table holds one shape's tensors)."""
    from opss.profile import profile_path

    p = profile_path(model, tag, root)
    shape = "x".join(str(int(d)) for d in input_shape)
    return p.with_name(f"{p.stem}.{shape}.codecs.json" if shape else f"{p.stem}.codecs.json")


# --------------------------------------------------------------------------- measuring (torch)


def vertex_outputs(graph: Any, x: Any) -> dict[str, Any]:
    """Every vertex's output on input ``x``, as C-contiguous numpy arrays (one fx run)."""
    import torch
    import torch.fx as fx

    wanted = {graph.output_node[v]: v for v in graph.ids}
    out: dict[str, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            value = super().run_node(n)
            v = wanted.get(n.name)
            if v is not None and isinstance(value, torch.Tensor):
                out[v] = value.detach().contiguous().numpy().copy()
            return value

    with torch.no_grad():
        Recorder(graph.gm).run(x)
    return out


def _timed(fn, repeats: int) -> tuple[Any, float]:
    times, result = [], None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return result, statistics.median(times)


def _tensor_costs(array: Any, codecs: Sequence[str], repeats: int) -> dict[str, tuple[float, float, float]]:
    from opss import codec as cd

    out = {}
    raw = max(1, array.nbytes)
    for name in codecs:
        if name in ("raw", "uint8", "file"):
            continue
        try:
            enc, enc_s = _timed(lambda: cd.encode(array, name), repeats)
        except OpssError:  # this codec refuses this tensor (e.g. fp16 overflow): not a candidate
            continue
        _, dec_s = _timed(lambda: cd.decode(enc), repeats)
        out[name] = (len(enc.payload) / raw, enc_s, dec_s)
    return out


def image_decode_seconds(image: bytes, shape: Sequence[int], repeats: int = 3, *,
                         codecs: str | None = None) -> float | None:
    """Median seconds of :func:`opss.preprocess.image_tensor` on this image file (decode,
    resize, crop, normalize: what the server does with the ``file`` form), after one
    warm-up call. The codec table's figure is the sample photos' (some are large PNGs:
    20 ms against 4.5 ms for the 61 kB sample JPEG), so a client that has its image
    measures it (a few milliseconds, once). None, measuring nothing, when the
    ``codecs`` spec (:func:`opss.codec.parse_codecs`) does not allow the ``file`` form."""
    from opss import preprocess
    from opss.codec import parse_codecs

    if codecs is not None and "file" not in parse_codecs(codecs):
        return None
    preprocess.image_tensor(image, tuple(shape))  # the first call pays the decoder's set-up
    return _timed(lambda: preprocess.image_tensor(image, tuple(shape)), repeats)[1]


def _input_form_costs(image: bytes, shape: Sequence[int], repeats: int) -> dict[str, tuple[float, float, float]]:
    import numpy as np

    from opss import preprocess

    full = math.prod(shape) * 4
    crop = preprocess.crop(preprocess.decode_image(image), int(shape[2]), int(shape[3]))
    _, norm_s = _timed(lambda: preprocess.normalize(np.ascontiguousarray(crop)), repeats)
    _, file_s = _timed(lambda: preprocess.image_tensor(image, tuple(shape)), repeats)
    return {"uint8": (crop.nbytes / full, 0.0, norm_s), "file": (len(image) / full, 0.0, file_s)}


def _output_errors(graph: Any, x: Any, outputs: Mapping[str, Any], lossy: Sequence[str],
                   vertices: Sequence[str]) -> dict[str, dict[str, float]]:
    """Relative error of the model output (max |y' - y| / max |y|) when one vertex's output
    alone goes through a lossy codec and back."""
    import numpy as np
    import torch

    from opss import codec as cd
    from opss.split import split

    ref = outputs[graph.output_id]
    scale = float(np.max(np.abs(ref))) or 1.0
    # a lossy codec's error is its lossy stage's ("int8+zstd" decodes to what "int8" does)
    stages = {name: cd.CODECS[name].lossy_stage or name for name in lossy}
    errors: dict[str, dict[str, float]] = {}
    for v in vertices:
        parts = split(graph, graph.dag.closure([v]))
        feed = {c: torch.from_numpy(outputs[c]) for c in parts.server.inputs}
        by_stage: dict[str, float] = {}
        for stage in dict.fromkeys(stages.values()):
            try:
                decoded = cd.decode(cd.encode(outputs[v], stage))
            except OpssError:  # the codec refuses this tensor (e.g. fp16 overflow): never admitted
                by_stage[stage] = math.inf
                continue
            with torch.no_grad():
                y = parts.server.run({**feed, v: torch.from_numpy(np.ascontiguousarray(decoded))})
            by_stage[stage] = float(np.max(np.abs(y.numpy() - ref))) / scale
        errors[v] = {name: by_stage[stage] for name, stage in stages.items()}
    return errors


def measure_codec_table(graph: Any, *, codecs: Sequence[str] | None = None, images: Sequence[bytes] | None = None,
                        repeats: int = 3, errors: bool = False, device_tag: str = "",
                        progress: bool = True) -> CodecTable:
    """Measure every codec on every vertex output of ``graph`` (a layer LayerGraph) over the
    sample photos (``images``: file bytes; default :func:`opss.samples.sample_images`, at most
    three). Per vertex and codec: median ratio and encode / decode seconds over the images
    (median of ``repeats`` each); ``errors`` also measures the lossy codecs' output error."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from opss import codec as cd
    from opss import preprocess

    names = tuple(codecs) if codecs is not None else tuple(cd.CODECS)
    photos = list(images) if images is not None else [data for _, data in _samples()[:3]]
    shape = tuple(graph.node(graph.input_id).shape)
    image_input = len(shape) == 4 and shape[1] == 3
    runs: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    errs: dict[str, dict[str, list[float]]] = {}
    bar = tqdm(total=len(photos) * len(graph.ids), desc=f"codecs {graph.model}", unit="tensor",
               disable=not progress, leave=False)
    for photo in photos:
        x = torch.from_numpy(np.ascontiguousarray(preprocess.image_tensor(photo, shape))) if image_input \
            else torch.randn(shape, generator=torch.Generator().manual_seed(0))
        outputs = vertex_outputs(graph, x)
        candidates = [v for v in graph.ids if v != graph.output_id and v in outputs]
        for v in candidates:
            for name, c in _tensor_costs(outputs[v], names, repeats).items():
                runs.setdefault(v, {}).setdefault(name, []).append(c)
            bar.update(1)
        if image_input and ("uint8" in names or "file" in names):
            for name, c in _input_form_costs(photo, shape, repeats).items():
                runs.setdefault(graph.input_id, {}).setdefault(name, []).append(c)
        lossy = [n for n in names if n in cd.CODECS and not cd.CODECS[n].exact]
        if errors and lossy and photo is photos[0]:  # the error on one photo: a full run per tensor and stage
            for v, per in _output_errors(graph, x, outputs, lossy, candidates).items():
                for name, e in per.items():
                    errs.setdefault(v, {}).setdefault(name, []).append(e)
    bar.close()
    costs = {v: {name: CodecCost(*(statistics.median(col) for col in zip(*cs)),
                                 error=max(errs[v][name]) if name in errs.get(v, {}) else None)
                 for name, cs in per.items()} for v, per in runs.items()}
    meta = {"images": len(photos), "repeats": repeats, "errors": bool(errors), "codecs": list(names),
            "input_shape": list(shape)}
    return CodecTable(graph.model, device_tag, costs, meta)


def _samples() -> list[tuple[str, bytes]]:
    from opss import samples

    return samples.sample_images()


def load_or_build_codec_table(graph: Any, *, tag: str, root: str | os.PathLike | None = None,
                              errors: bool = False, build_missing: bool = True, progress: bool = True,
                              stream: Any = None, store: bool = True) -> CodecTable:
    """The stored codec table of ``graph``'s model on device ``tag``, measured when missing
    (or when lossy errors are wanted and the stored one has none). ``store=False``
    measures a quick one (one photo, one repeat) and keeps it in memory only (test shapes)."""
    import sys

    out = stream if stream is not None else sys.stderr
    shape = list(graph.node(graph.input_id).shape)
    if not store:
        return measure_codec_table(graph, errors=errors, device_tag=tag, progress=False, repeats=1,
                                   images=[data for _, data in _samples()[:1]])
    path = codec_table_path(graph.model, tag, root, shape)
    if path.exists():
        table = CodecTable.load(path)
        if list(table.meta.get("input_shape", [])) == shape:
            if table.meta.get("errors") or not errors:
                return table
            if not build_missing:  # usable: its lossy codecs have no measured error, so none is admitted
                print(f"opss: codec table {path} has no lossy output errors: lossy codecs stay unused",
                      file=out)
                return table
    if not build_missing:
        raise ProfileError(f"no codec table for {graph.model!r} on {tag}: expected {str(path)!r}")
    print(f"opss: measuring codec costs of {graph.model!r} on the sample photos"
          f"{' (with lossy output errors)' if errors else ''}", file=out)
    table = measure_codec_table(graph, errors=errors, device_tag=tag, progress=progress)
    table.save(path)
    print(f"opss: wrote {path}", file=out)
    return table


def wire_options(graph: Any, codecs: str | Sequence[str] = "lossless", *, max_error: float | None = None,
                 image_bytes: int | None = None, image_decode_s: float | None = None,
                 root: str | os.PathLike | None = None, build_missing: bool = True, progress: bool = True,
                 stream: Any = None, store: bool = True) -> dict[str, Any]:
    """What :func:`opss.plan.plan_all` needs to plan the bytes on the wire (its ``wire=``).

    ``graph`` is the layer LayerGraph; ``codecs`` a :func:`opss.codec.parse_codecs` spec
    or names; ``image_bytes`` the size of the image file when the input comes from one
    (without it the image forms ``uint8`` and ``file`` are left out: there is no image to
    send) and ``image_decode_s`` its measured preprocessing time
    (:func:`image_decode_seconds`). The codec table is this client's (:func:`load_or_build_codec_table`; measured
    with the lossy errors only when ``max_error`` admits lossy codecs).
    """
    from opss.codec import CODECS, parse_codecs
    from opss.profile import device_settings
    from opss.wire import IMAGE_CODECS

    names = parse_codecs(codecs) if isinstance(codecs, str) else tuple(codecs)
    if image_bytes is None:
        names = tuple(n for n in names if n not in IMAGE_CODECS)
    if names == ("raw",):
        return {"codecs": names}
    lossy = any(not CODECS[n].exact for n in names)
    if lossy and max_error is None:
        names = tuple(n for n in names if CODECS[n].exact)
    tag = device_settings("client")[2]
    table = load_or_build_codec_table(graph, tag=tag, root=root, errors=lossy and max_error is not None,
                                      build_missing=build_missing, progress=progress, stream=stream, store=store)
    return {"codec_table": table, "codecs": names, "max_error": max_error, "image_bytes": image_bytes,
            "image_decode_s": image_decode_s if image_bytes is not None else None}
