"""Benchmark what crosses the link: tensor codecs on real activations (the codec half).

For each zoo model (layer graph, its deterministic random weights) the inputs
are the sample photographs (:func:`opss.samples.sample_images`, preprocessed
by :mod:`opss.preprocess`); the candidate cut tensors are every vertex output
except the model's input and output. Three tables:

1. ``codec_table``: per model and codec (:data:`opss.codec.CODECS` less the
   input forms), the wire-bytes ratio (wire bytes / raw bytes, per tensor over
   all photos; median and IQR over the tensors, and the median over the
   post-ReLU tensors: non-negative with at least 1 % exact zeros), the median
   zero fraction, encode and decode MB/s on this CPU (raw MB per second over
   a fixed set of the model's tensors, one encode or decode of each per
   repeat, codecs interleaved in a shuffled order each repeat; median of the
   repeats and its 95 % bootstrap CI), and for the lossy codecs the relative
   output error: the model's output with that one tensor replaced by its
   decoded value (``opss.split`` at the client set "the vertex and its
   ancestors", server part run on the decoded tensor and the other cut
   tensors as they were), ``||y' - y|| / ||y||``, the largest over the error
   photos; median and max over the tensors (at most ``--error-tensors`` of
   them, evenly spaced in topological order). A lossy codec that refuses a
   tensor (fp16 overflow, NaN/Inf for int8) is counted under ``refused``.
2. ``input_table``: the model input as float32, uint8 crop, the lossless
   codecs, and the photograph as a whole-frame JPEG of quality 90 (a camera's
   file) and as shipped.
3. ``compressor_table``: how the lossless compressor was chosen: zstd levels
   1 and 3 and lz4 (block) on the raw bytes, byte-shuffled, and with the zero
   bitmap + shuffle that ``opss.codec`` uses; ratio and MB/s over every model's
   activations on one photograph.

4. ``one_mb_table``: encode + decode time, lossless codecs, of each model's
   activation nearest 1 MiB (the issue's target: <= 5 ms).

Writes ``bench_wire.codecs.csv``, ``bench_wire.input.csv``,
``bench_wire.compressors.csv``, ``bench_wire.1mb.csv``, ``bench_wire.md`` and ``bench_wire.png`` to
``--out`` (default ``docs/results``). ``--quick``: two models, one photo,
fewer repeats. torch runs on one thread (the codecs are single-threaded).
"""

from __future__ import annotations

import argparse
import io
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

import _bench

# codecs of a cut tensor (the input forms are the input table's)
ERROR_STAGES = ("fp16", "bf16", "int8")  # a lossy codec's error is its stage's: +zstd decodes the same


def candidates(graph) -> list[str]:
    """The candidate cut tensors: every vertex but the input and the output."""
    return [v for v in graph.ids if v not in (graph.input_id, graph.output_id)]


def _post_relu(a: np.ndarray) -> bool:
    return a.size > 0 and a.dtype.kind == "f" and bool((a >= 0).all()) and float((a == 0).mean()) >= 0.01


def _subset(items: list, k: int) -> list:
    """At most ``k`` items, evenly spaced (all when k <= 0 or there are fewer)."""
    if k <= 0 or len(items) <= k:
        return list(items)
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)] if k > 1 else [items[0]]


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if not xs:
        return (math.nan,) * 3
    q1, q2, q3 = np.percentile(np.asarray(xs, np.float64), [25, 50, 75])
    return float(q1), float(q2), float(q3)


def _timed_rates(arrays: list[np.ndarray], codecs: list[str], repeats: int, seed: int):
    """``{codec: (encode MB/s per repeat, decode MB/s per repeat)}``, interleaved."""
    from opss.codec import CodecError, decode, encode

    rng = random.Random(seed)
    rates = {c: ([], []) for c in codecs}
    for _ in range(repeats):
        order = list(codecs)
        rng.shuffle(order)
        for c in order:
            te = td = 0.0
            nbytes = 0
            for a in arrays:
                t0 = time.perf_counter()
                try:
                    enc = encode(a, c)
                except CodecError:
                    continue
                t1 = time.perf_counter()
                decode(enc, expect_dtype=enc.dtype, expect_shape=enc.shape)
                t2 = time.perf_counter()
                te += t1 - t0
                td += t2 - t1
                nbytes += a.nbytes
            if nbytes:
                rates[c][0].append(nbytes / te / 1e6)
                rates[c][1].append(nbytes / td / 1e6)
    return rates


def codec_table(
    models: list[str],
    images: list[tuple[str, bytes]],
    *,
    error_images: int = 2,
    error_tensors: int = 60,
    timing_mb: float = 24.0,
    repeats: int = 5,
    seed: int = 0,
    log=print,
) -> tuple[list[dict], dict[str, list[dict]]]:
    """Rows of the codec table (module docstring) and, per model, the activations'
    per-tensor stats (for the compressor table: ``{model: [{vertex, array}]}`` of the first photo)."""
    import torch

    from opss import graph as graph_mod
    from opss import models as zoo
    from opss.codec import CODECS, CodecError, decode, encode, relative_error
    from opss.preprocess import image_tensor
    from opss.split import split
    from opss.stats import bootstrap_ci, median
    from opss.wirecosts import vertex_outputs

    codecs = [c for c, info in CODECS.items() if not info.input_form]
    rows: list[dict] = []
    first_acts: dict[str, list[np.ndarray]] = {}
    for name in models:
        t_model = time.perf_counter()
        shape = zoo.get_spec(name).input_shape
        model = zoo.get_model(name)
        g = graph_mod.capture(model, torch.zeros(shape), name=name)
        cands = candidates(g)
        wire = {c: {v: 0 for v in cands} for c in codecs}
        raw = {v: 0 for v in cands}
        zeros: dict[str, list[float]] = {v: [] for v in cands}
        post_relu = {v: True for v in cands}
        refused = {c: set() for c in codecs}
        err = {s: {} for s in ERROR_STAGES}
        err_vertices = set(_subset(cands, error_tensors))
        splits = {}
        for i, (img_name, data) in enumerate(images):
            x = torch.from_numpy(image_tensor(data, shape))
            acts = vertex_outputs(g, x)  # the codec tables' own recorder
            y = acts[g.output_id]
            if i == 0:
                first_acts[name] = [acts[v] for v in cands]
            for v in cands:
                a = acts[v]
                raw[v] += a.nbytes
                zeros[v].append(float((a == 0).mean()) if a.size else 0.0)
                post_relu[v] = post_relu[v] and _post_relu(a)
                decoded = {}
                for c in codecs:
                    try:
                        enc = encode(a, c)
                    except CodecError:
                        refused[c].add(v)
                        wire[c][v] += a.nbytes  # sent by an exact codec instead
                        continue
                    wire[c][v] += enc.wire_bytes
                    if c in ERROR_STAGES and i < error_images and v in err_vertices:
                        decoded[c] = decode(enc, expect_dtype=enc.dtype, expect_shape=enc.shape)
                if decoded:
                    if v not in splits:
                        splits[v] = split(g, g.dag.closure([v]))
                    s = splits[v]
                    for stage, d in decoded.items():
                        feed = {c: torch.from_numpy(acts[c]) for c in s.cut}
                        feed[v] = torch.from_numpy(d)
                        with torch.no_grad():
                            out = s.server.run(feed).numpy()
                        e = relative_error(y, out)
                        err[stage][v] = max(err[stage].get(v, 0.0), e)
            splits.clear()
        # timing: a fixed, evenly spaced set of the first photo's tensors
        acts0 = first_acts[name]
        per = sum(a.nbytes for a in acts0) / max(1, len(acts0))
        timed = _subset(acts0, max(1, int(timing_mb * 1e6 / max(per, 1))))
        rates = _timed_rates(timed, codecs, repeats, seed)
        relu = [v for v in cands if post_relu[v]]
        for c in codecs:
            ratios = [wire[c][v] / raw[v] for v in cands if raw[v]]
            q1, q2, q3 = _quartiles(ratios)
            enc_r, dec_r = rates[c]
            elo, ehi = bootstrap_ci(enc_r, seed=seed)
            dlo, dhi = bootstrap_ci(dec_r, seed=seed)
            stage = CODECS[c].lossy_stage
            errs = list(err[stage].values()) if stage else []
            rows.append({
                "model": name,
                "codec": c,
                "exact": CODECS[c].exact,
                "tensors": len(cands),
                "ratio_median": q2,
                "ratio_q1": q1,
                "ratio_q3": q3,
                "ratio_post_relu_median": median([wire[c][v] / raw[v] for v in relu]) if relu else math.nan,
                "post_relu_tensors": len(relu),
                "zero_fraction_median": median([median(zeros[v]) for v in cands]),
                "encode_MBps": median(enc_r),
                "encode_MBps_lo": elo,
                "encode_MBps_hi": ehi,
                "decode_MBps": median(dec_r),
                "decode_MBps_lo": dlo,
                "decode_MBps_hi": dhi,
                "timed_MB": sum(a.nbytes for a in timed) / 1e6,
                "refused": len(refused[c]),
                "error_tensors": len(errs),
                "rel_error_median": median(errs) if errs else math.nan,
                "rel_error_max": max(errs) if errs else math.nan,
            })
        log(f"{name}: {len(cands)} tensors, {len(images)} photos, {time.perf_counter() - t_model:.1f} s")
    return rows, first_acts


def input_table(images: list[tuple[str, bytes]], shape=(1, 3, 224, 224)) -> list[dict]:
    """Bytes of the model input per form, per photograph (224 x 224 crop)."""
    from PIL import Image

    from opss.codec import encode
    from opss.preprocess import crop, decode_image, normalize

    rows = []
    h, w = shape[2], shape[3]
    for name, data in images:
        img = decode_image(data)
        chw = crop(img, h, w)
        x = normalize(chw)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        forms = {
            "float32 (raw)": x.nbytes,
            "float32 zstd": len(encode(x, "zstd").payload),
            "float32 lz4": len(encode(x, "lz4").payload),
            "uint8 crop": len(encode(chw, "uint8").payload),
            "uint8 crop zstd": len(encode(chw, "zstd").payload),
            "file: JPEG q90 (whole photo)": len(buf.getvalue()),
            "file: as shipped": len(data),
        }
        for form, nbytes in forms.items():
            rows.append({"image": name, "pixels": img.shape[0] * img.shape[1], "form": form,
                         "bytes": nbytes, "ratio": nbytes / x.nbytes})
    return rows


def compressor_table(acts: dict[str, list[np.ndarray]], repeats: int = 3, seed: int = 0) -> list[dict]:
    """zstd-1, zstd-3, lz4 on raw / shuffled / zero-bitmap + shuffled bytes of
    every float32 activation (all models, one photo): median ratio over the
    tensors, encode and decode MB/s (median of ``repeats``, variants interleaved)."""
    import lz4.block
    import zstandard

    from opss.codec import _transform, _untransform  # the transform the codecs use
    from opss.stats import median

    arrays = [a for lst in acts.values() for a in lst if a.dtype == np.float32 and a.size]
    relu = [a for a in arrays if _post_relu(a)]
    z1, z3 = zstandard.ZstdCompressor(level=1), zstandard.ZstdCompressor(level=3)
    zd = zstandard.ZstdDecompressor()
    compressors = {
        "zstd-1": (z1.compress, lambda p, n: zd.decompress(p, max_output_size=n)),
        "zstd-3": (z3.compress, lambda p, n: zd.decompress(p, max_output_size=n)),
        "lz4": (lambda b: lz4.block.compress(b, store_size=False),
                lambda p, n: lz4.block.decompress(p, uncompressed_size=n)),
    }

    def shuffle(a):
        return a.view(np.uint8).reshape(-1, 4).T.tobytes()

    def unshuffle(b, n):
        planes = np.frombuffer(b, np.uint8).reshape(4, n)
        out = np.empty((n, 4), np.uint8)
        for j in range(4):
            out[:, j] = planes[j]
        return out

    transforms = {
        "none": (lambda a: memoryview(a.reshape(-1).view(np.uint8)), lambda b, a: np.frombuffer(b, np.uint8)),
        "byte shuffle": (shuffle, lambda b, a: unshuffle(b, a.size)),
        "zero bitmap + shuffle": (lambda a: _transform(a.reshape(-1)),
                                  lambda b, a: _untransform(b, a.size, 4, "bench")),
    }
    variants = [(c, t) for c in compressors for t in transforms]
    sizes = {v: [] for v in variants}
    relu_sizes = {v: [] for v in variants}
    enc_rates = {v: [] for v in variants}
    dec_rates = {v: [] for v in variants}
    rng = random.Random(seed)
    total = sum(a.nbytes for a in arrays)
    for r in range(repeats):
        order = list(variants)
        rng.shuffle(order)
        for v in order:
            (comp, decomp), (fwd, inv) = compressors[v[0]], transforms[v[1]]
            te = td = 0.0
            for a in arrays:
                t0 = time.perf_counter()
                content = fwd(a)
                p = comp(content)
                t1 = time.perf_counter()
                n = len(content) if isinstance(content, (bytes, memoryview)) else content.size
                back = inv(decomp(p, n), a)
                t2 = time.perf_counter()
                te += t1 - t0
                td += t2 - t1
                if r == 0:
                    assert np.asarray(back).tobytes() == a.tobytes(), v
                    sizes[v].append(len(p) / a.nbytes)
                    if _post_relu(a):
                        relu_sizes[v].append(len(p) / a.nbytes)
            enc_rates[v].append(total / te / 1e6)
            dec_rates[v].append(total / td / 1e6)
    return [
        {"compressor": c, "transform": t, "tensors": len(arrays), "ratio_median": median(sizes[(c, t)]),
         "post_relu_tensors": len(relu), "ratio_post_relu_median": median(relu_sizes[(c, t)]),
         "encode_MBps": median(enc_rates[(c, t)]), "decode_MBps": median(dec_rates[(c, t)]),
         "ms_per_MB_encode_decode": 1e3 / median(enc_rates[(c, t)]) + 1e3 / median(dec_rates[(c, t)])}
        for c, t in variants
    ]


def one_mb_table(acts: dict[str, list[np.ndarray]], repeats: int = 21, seed: int = 0) -> list[dict]:
    """Encode + decode time of each model's activation nearest to 1 MiB with the
    lossless codecs (the target: <= 5 ms), codecs interleaved; median and 95 % CI."""
    from opss.codec import LOSSLESS, decode, encode
    from opss.stats import bootstrap_ci, median

    rng = random.Random(seed)
    rows = []
    for name, arrays in acts.items():
        floats = [a for a in arrays if a.dtype == np.float32 and a.size]
        if not floats:
            continue
        a = min(floats, key=lambda t: abs(t.nbytes - (1 << 20)))
        times = {c: [] for c in LOSSLESS}
        for _ in range(repeats):
            order = list(LOSSLESS)
            rng.shuffle(order)
            for c in order:
                t0 = time.perf_counter()
                enc = encode(a, c)
                decode(enc, expect_dtype="float32", expect_shape=a.shape)
                times[c].append(time.perf_counter() - t0)
        for c in LOSSLESS:
            ms = [t * 1e3 for t in times[c]]
            lo, hi = bootstrap_ci(ms, seed=seed)
            rows.append({"model": name, "codec": c, "shape": "x".join(map(str, a.shape)), "MB": a.nbytes / 1e6,
                         "zero_fraction": float((a == 0).mean()), "ratio": len(encode(a, c).payload) / a.nbytes,
                         "encode_decode_ms": median(ms), "ms_lo": lo, "ms_hi": hi,
                         "ms_per_MiB": median(ms) * (1 << 20) / a.nbytes})
    return rows


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _markdown(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    codecs = [c for c in dict.fromkeys(r["codec"] for r in rows) if c != "raw"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(models) + 3), 8), sharex=True)
    width = 0.8 / len(codecs)
    cmap = plt.get_cmap("tab10")
    for j, c in enumerate(codecs):
        got = {r["model"]: r for r in rows if r["codec"] == c}
        xs = [i + (j - len(codecs) / 2 + 0.5) * width for i in range(len(models))]
        med = [got[m]["ratio_median"] for m in models]
        lo = [got[m]["ratio_median"] - got[m]["ratio_q1"] for m in models]
        hi = [got[m]["ratio_q3"] - got[m]["ratio_median"] for m in models]
        ax1.bar(xs, med, width, yerr=[lo, hi], label=c, color=cmap(j % 10), capsize=2)
        if c in ("zstd", "lz4") or c.startswith(ERROR_STAGES):
            ax2.bar(xs, [got[m]["encode_MBps"] for m in models], width, color=cmap(j % 10))
    ax1.set_ylabel("wire bytes / raw bytes\n(median, IQR over cut tensors)")
    ax1.axhline(0.6, color="grey", lw=0.8, ls="--")
    ax1.legend(ncol=5, fontsize=8)
    ax2.set_ylabel("encode MB/s (this CPU)")
    ax2.set_yscale("log")
    ax2.set_xticks(range(len(models)), models, rotation=20)
    fig.suptitle("bench_wire: tensor codecs on real activations (sample photographs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _targets(rows: list[dict], one_mb: list[dict]) -> list[dict]:
    """The issue's two codec targets, per model: lossless (zstd, the default)
    wire bytes <= 0.6 x raw on post-ReLU tensors (median), and encode + decode
    of a 1 MiB activation <= 5 ms."""
    out = []
    for r in rows:
        if r["codec"] == "zstd":
            v = r["ratio_post_relu_median"]
            out.append({"target": "zstd ratio, post-ReLU median <= 0.6", "model": r["model"],
                        "figure": v, "met": bool(v <= 0.6) if not math.isnan(v) else "n/a"})
    for r in one_mb:
        if r["codec"] == "zstd":
            out.append({"target": "zstd encode+decode per MiB <= 5 ms", "model": r["model"],
                        "figure": r["ms_per_MiB"], "met": bool(r["ms_per_MiB"] <= 5.0)})
    return out


CODEC_COLS = ["model", "codec", "exact", "tensors", "ratio_median", "ratio_q1", "ratio_q3",
              "ratio_post_relu_median", "zero_fraction_median", "encode_MBps", "encode_MBps_lo",
              "encode_MBps_hi", "decode_MBps", "decode_MBps_lo", "decode_MBps_hi", "refused",
              "rel_error_median", "rel_error_max"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all", help="comma list of zoo models (default all)")
    ap.add_argument("--images", type=int, default=0, help="use the first N sample photos (default all)")
    ap.add_argument("--error-images", type=int, default=2, help="photos the output error is measured on (default 2)")
    ap.add_argument("--error-tensors", type=int, default=60,
                    help="at most this many tensors per model (evenly spaced) get the error measured (default 60)")
    ap.add_argument("--repeats", type=int, default=5, help="timing repeats (default 5)")
    ap.add_argument("--timing-mb", type=float, default=24.0, help="MB of each model's tensors timed (default 24)")
    ap.add_argument("--quick", action="store_true", help="resnet18 and mobilenet_v2, one photo, 3 repeats")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    args = ap.parse_args(argv)

    import torch

    from opss import models as zoo
    from opss.samples import sample_images

    # one thread: codecs are single-threaded numpy, and on a shared 2-core machine
    # two torch threads make each forward of the error runs 4-5x slower
    torch.set_num_threads(1)
    names = zoo.names() if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    images = sample_images()
    if args.quick:
        if args.models == "all":
            names = ["resnet18", "mobilenet_v2"]
        images, args.error_images, args.repeats, args.error_tensors = images[:1], 1, 3, 30
    elif args.images > 0:
        images = images[: args.images]
    for n in names:
        zoo.get_spec(n)  # an unknown name fails now, with the zoo's one-line error
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, acts = codec_table(names, images, error_images=args.error_images, error_tensors=args.error_tensors,
                             timing_mb=args.timing_mb, repeats=args.repeats, seed=args.seed,
                             log=lambda s: print(s, file=sys.stderr))
    inputs = input_table(images)
    comps = compressor_table(acts, repeats=max(1, args.repeats // 2), seed=args.seed)
    one_mb = one_mb_table(acts, repeats=11 if args.quick else 21, seed=args.seed)
    _bench.write_csv(args.out / "bench_wire.codecs.csv", rows)
    _bench.write_csv(args.out / "bench_wire.input.csv", inputs)
    _bench.write_csv(args.out / "bench_wire.compressors.csv", comps)
    _bench.write_csv(args.out / "bench_wire.1mb.csv", one_mb)
    _plot(rows, args.out / "bench_wire.png")

    forms = list(dict.fromkeys(r["form"] for r in inputs))
    from opss.stats import median

    input_summary = [{"form": f, "median_bytes": median([r["bytes"] for r in inputs if r["form"] == f]),
                      "median_ratio": median([r["ratio"] for r in inputs if r["form"] == f])} for f in forms]
    md = [
        "# bench_wire: what crosses the link (codec half)",
        "",
        f"`python scripts/bench_wire.py {' '.join(argv if argv is not None else sys.argv[1:])}`: "
        f"{len(names)} models, {len(images)} sample photos ({', '.join(n for n, _ in images)}), "
        f"error on {args.error_images} photo(s), {args.repeats} timing repeats, "
        f"{time.perf_counter() - t0:.0f} s. Ratio = wire bytes / raw bytes (median [IQR] over the "
        "candidate cut tensors; post-ReLU: non-negative with >= 1 % exact zeros); MB/s of raw tensor bytes, "
        "median of repeats [95 % bootstrap CI]; rel. error = ||y' - y|| / ||y|| of the model output with the "
        "one tensor decoded (max over the error photos), median and max over tensors.",
        "",
        "## Codecs per model",
        "",
        _markdown(rows, CODEC_COLS),
        "",
        "## Targets",
        "",
        _markdown(_targets(rows, one_mb), ["target", "model", "figure", "met"]),
        "",
        "## Encode + decode of the activation nearest 1 MiB (lossless; median of repeats [95 % CI])",
        "",
        _markdown(one_mb, list(one_mb[0])) if one_mb else "(none)",
        "",
        "## The model input (224 x 224), median over the photos",
        "",
        _markdown(input_summary, ["form", "median_bytes", "median_ratio"]),
        "",
        "## Choosing the lossless compressor (every model's float32 activations, first photo)",
        "",
        _markdown(comps, list(comps[0])),
        "",
    ]
    (args.out / "bench_wire.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
