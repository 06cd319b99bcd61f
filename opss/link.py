"""The link model: upload time ``g(w) = c + w / b`` (the paper's Section III-B).

``c`` is the per-message delay in seconds (propagation plus the cost of
starting a message), ``b`` the bandwidth in bytes per second. The model is
either fixed from the command line (``--link 4g``, ``--link 5.85mbit --rtt
20ms``) or fitted from measured ``(bytes, seconds)`` samples, e.g. the
client's probe RPCs of predefined sizes.

Fitting uses scikit-learn's ``LinearRegression`` (imported inside
:meth:`LinkModel.fit`, so importing this module and the planning core stays
light). It is made robust to outliers by trimming: fit, compute the
residuals, drop every sample whose absolute residual exceeds
``k * 1.4826 * MAD`` (``MAD`` = median absolute residual, ``1.4826`` makes it
a standard-deviation estimate under Gaussian noise, ``k = 3.5`` by default),
refit, and repeat until no sample is dropped (at most 5 rounds). A
retransmission or a scheduler hiccup produces a few samples that are far too
slow; trimming removes them while leaving Gaussian-like jitter alone, and
unlike a Huber loss it gives a plain least-squares fit (and R^2) on the kept
samples. Dropped samples are counted in ``LinkModel.n_outliers``.

Because the network changes, :class:`LinkEstimator` keeps a sliding window of
the most recent transfers, refits as samples arrive and says when the
bandwidth drifted beyond a relative threshold from the model the current
plan was made with.

Units (:func:`parse_rate`, :func:`parse_duration`): rates in bit/s as
``bit``, ``kbit``, ``mbit``, ``gbit`` (tc style) or ``bps``, ``kbps``,
``Mbps``, ``Gbps`` (networking style: ``Mbps`` = 10^6 bit/s, unlike tc where
``mbps`` means megabytes), and in bytes/s as ``B/s``, ``KB/s``, ``MB/s``,
``GB/s`` (10^3 multiples) or ``KiB/s``, ``MiB/s``, ``GiB/s``; the ``/s`` is
optional. Durations as ``s``, ``ms``, ``us`` (or ``µs``), ``ns``. A number
without a unit is rejected: ``5.85`` could be anything.

Presets from the paper: ``3g`` = 1.1 Mbps, ``4g`` = 5.85 Mbps, ``wifi`` =
18.88 Mbps, all with ``c = 0`` unless an RTT is given.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from opss.errors import LinkModelError, LinkTooFastError

__all__ = [
    "PRESETS",
    "LinkEstimator",
    "LinkModel",
    "link_from_spec",
    "parse_duration",
    "parse_rate",
]

#: Preset uplink rates in bit/s (the paper's Section VI, after Zhang et al.).
PRESETS: dict[str, float] = {"3g": 1.1e6, "4g": 5.85e6, "wifi": 18.88e6}

_MIN_SAMPLES = 3
_MAD_TO_SIGMA = 1.4826


def _finite_nonneg(name: str, value: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise LinkModelError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise LinkModelError(f"{name}: expected a finite number >= 0, got {value!r}")
    return x


@dataclass(frozen=True)
class LinkModel:
    """Upload time ``g(w) = c + w / b``: ``c`` seconds, ``b`` bytes per second.

    ``r2``, ``n_samples`` and ``n_outliers`` describe the fit that produced the
    model (``None``/0 for a fixed link); they do not take part in equality.
    """

    c: float
    b: float
    r2: float | None = field(default=None, compare=False)
    n_samples: int = field(default=0, compare=False)
    n_outliers: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        c = _finite_nonneg("link delay c (seconds)", self.c)
        b = _finite_nonneg("link bandwidth b (bytes/s)", self.b)
        if b <= 0:
            raise LinkModelError(f"link bandwidth b: expected > 0 bytes/s, got {self.b!r}")
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "b", b)

    def __repr__(self) -> str:
        fit = ""
        if self.n_samples:
            fit = f", r2={self.r2:.4f}, n_samples={self.n_samples}, n_outliers={self.n_outliers}"
        return f"LinkModel(c={self.c:.6g}s, b={self.b:.6g}B/s [{self.mbps:.4g} Mbps]{fit})"

    @property
    def mbps(self) -> float:
        """Bandwidth in Mbit/s (10^6 bit/s)."""
        return self.b * 8 / 1e6

    def g(self, nbytes: float) -> float:
        """Seconds to upload one message of ``nbytes`` bytes."""
        return self.c + float(nbytes) / self.b

    def to_json(self) -> dict:
        out: dict = {"c": self.c, "b": self.b}
        if self.n_samples:
            out.update(r2=self.r2, n_samples=self.n_samples, n_outliers=self.n_outliers)
        return out

    @classmethod
    def from_json(cls, data: dict) -> LinkModel:
        try:
            return cls(
                c=data["c"],
                b=data["b"],
                r2=data.get("r2"),
                n_samples=int(data.get("n_samples", 0)),
                n_outliers=int(data.get("n_outliers", 0)),
            )
        except (KeyError, TypeError) as exc:
            raise LinkModelError(f"link JSON: expected keys 'c' and 'b', got {data!r}") from exc

    @classmethod
    def fit(
        cls,
        samples: Iterable[tuple[float, float]],
        *,
        k: float = 3.5,
        max_rounds: int = 5,
        min_samples: int = _MIN_SAMPLES,
    ) -> LinkModel:
        """Fit ``c`` and ``b`` from ``(bytes, seconds)`` samples, trimming outliers.

        Raises :class:`LinkModelError` for NaN/negative samples, fewer than
        ``min_samples`` samples, fewer than two distinct sizes, or a fit whose
        slope is not positive (time does not grow with size). A slightly
        negative intercept (noise around ``c = 0``) becomes 0 and ``b`` is refitted
        through the origin.
        """
        pts = _check_samples(samples, min_samples)
        import numpy as np
        from sklearn.linear_model import LinearRegression

        x = np.array([p[0] for p in pts], dtype=float).reshape(-1, 1)
        y = np.array([p[1] for p in pts], dtype=float)
        keep = np.ones(len(pts), dtype=bool)
        reg = LinearRegression()
        for _ in range(max_rounds):
            reg.fit(x[keep], y[keep])
            resid = np.abs(y - reg.predict(x))
            mad = float(np.median(resid[keep]))
            if mad <= 0:
                break
            new_keep = resid <= k * _MAD_TO_SIGMA * mad
            if new_keep.sum() < max(min_samples, 2) or len(np.unique(x[new_keep, 0])) < 2:
                break
            if np.array_equal(new_keep, keep):
                break
            keep = new_keep
        reg.fit(x[keep], y[keep])
        slope = float(reg.coef_[0])
        if not math.isfinite(slope) or slope <= 0:
            sizes = x[keep, 0]
            raise LinkTooFastError(
                f"link too fast to measure: transfer time did not grow with size over {int(keep.sum())} "
                f"transfers of {sizes.min():.0f}-{sizes.max():.0f} bytes (slope {slope:.3g} s/byte; "
                "an unthrottled link such as loopback)"
            )
        r2 = float(reg.score(x[keep], y[keep]))
        c = float(reg.intercept_)
        if c < 0:
            # noise around c = 0: refit through the origin so the slope is not biased by the clamp
            origin = LinearRegression(fit_intercept=False).fit(x[keep], y[keep])
            slope = float(origin.coef_[0])
            r2 = float(origin.score(x[keep], y[keep]))
            c = 0.0
        return cls(c=c, b=1.0 / slope, r2=r2, n_samples=int(keep.sum()),
                   n_outliers=int(len(pts) - keep.sum()))


def _check_samples(samples: Iterable[tuple[float, float]], min_samples: int) -> list[tuple[float, float]]:
    pts: list[tuple[float, float]] = []
    for i, sample in enumerate(samples):
        try:
            w, t = sample
        except (TypeError, ValueError):
            raise LinkModelError(f"link sample {i}: expected a (bytes, seconds) pair, got {sample!r}") from None
        w = _finite_nonneg(f"link sample {i} bytes", w)
        t = _finite_nonneg(f"link sample {i} seconds", t)
        pts.append((w, t))
    if len(pts) < min_samples:
        raise LinkModelError(f"link fit: expected at least {min_samples} samples, got {len(pts)}")
    if len({w for w, _ in pts}) < 2:
        raise LinkModelError(
            "link fit: expected samples of at least 2 distinct sizes to separate c from b, "
            f"got only size {pts[0][0]:g} bytes"
        )
    return pts


class LinkEstimator:
    """Sliding-window link model refreshed from real transfers.

    ``add(nbytes, seconds)`` records one transfer and refits on the last
    ``window`` samples once ``min_samples`` are there. When the window holds
    fewer than two distinct sizes (a runtime often sends the same cut
    tensors every run), ``c`` is kept from the baseline and only ``b`` is
    re-estimated: ``b = sum(w) / sum(t - c)``. ``drift`` is the relative
    change of ``b`` against the baseline (the model the current plan was
    made with); ``drifted`` says whether it exceeds ``threshold``;
    ``rebase()`` makes the current model the new baseline (after re-planning).
    """

    def __init__(
        self,
        baseline: LinkModel | None = None,
        *,
        window: int = 32,
        threshold: float = 0.25,
        min_samples: int = 4,
    ) -> None:
        if window < 2:
            raise LinkModelError(f"LinkEstimator window: expected >= 2 samples, got {window}")
        if not (threshold > 0 and math.isfinite(threshold)):
            raise LinkModelError(f"LinkEstimator threshold: expected a finite value > 0, got {threshold}")
        if min_samples < 1 or min_samples > window:
            raise LinkModelError(f"LinkEstimator min_samples: expected 1..{window}, got {min_samples}")
        self.window = window
        self.threshold = threshold
        self.min_samples = min_samples
        self.baseline = baseline
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)
        self._model = baseline

    @property
    def samples(self) -> tuple[tuple[float, float], ...]:
        return tuple(self._samples)

    @property
    def model(self) -> LinkModel | None:
        """The latest estimate (the baseline until enough samples arrived)."""
        return self._model

    def add(self, nbytes: float, seconds: float) -> LinkModel | None:
        w = _finite_nonneg("transfer bytes", nbytes)
        t = _finite_nonneg("transfer seconds", seconds)
        self._samples.append((w, t))
        if len(self._samples) >= self.min_samples:
            self._model = self._refit()
        return self._model

    def extend(self, samples: Iterable[tuple[float, float]]) -> LinkModel | None:
        for w, t in samples:
            self.add(w, t)
        return self._model

    def _refit(self) -> LinkModel:
        pts = list(self._samples)
        if len({w for w, _ in pts}) >= 2 and len(pts) >= _MIN_SAMPLES:
            try:
                return LinkModel.fit(pts)
            except LinkModelError:
                pass  # e.g. a non-positive slope from a noisy window: fall back below
        c = self.baseline.c if self.baseline is not None else 0.0
        w_sum = sum(w for w, _ in pts)
        t_sum = sum(max(t - c, 0.0) for _, t in pts)
        if w_sum <= 0 or t_sum <= 0:
            raise LinkModelError(
                f"link estimate: expected transfers of > 0 bytes taking > c={c:g}s, got {pts!r}"
            )
        return LinkModel(c=c, b=w_sum / t_sum, n_samples=len(pts))

    @property
    def drift(self) -> float:
        """Relative bandwidth change ``|b_now - b_base| / b_base`` (0 without both)."""
        if self.baseline is None or self._model is None:
            return 0.0
        return abs(self._model.b - self.baseline.b) / self.baseline.b

    @property
    def drifted(self) -> bool:
        return self.drift > self.threshold

    def rebase(self, model: LinkModel | None = None) -> None:
        """Take ``model`` (default: the current estimate) as the new baseline."""
        self.baseline = model if model is not None else self._model


_NUM = r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
_RATE_RE = re.compile(rf"^\s*{_NUM}\s*([A-Za-zµ/]*)\s*$")

# bit/s multipliers, matched case-insensitively on units without a capital 'B'
_BIT_UNITS = {
    "bit": 1.0, "bps": 1.0, "bit/s": 1.0, "b/s": 1.0,
    "kbit": 1e3, "kbps": 1e3, "kbit/s": 1e3, "kb/s": 1e3,
    "mbit": 1e6, "mbps": 1e6, "mbit/s": 1e6, "mb/s": 1e6,
    "gbit": 1e9, "gbps": 1e9, "gbit/s": 1e9, "gb/s": 1e9,
}
# byte/s multipliers, case-sensitive (capital B = bytes)
_BYTE_UNITS = {
    "B": 1.0, "KB": 1e3, "kB": 1e3, "MB": 1e6, "GB": 1e9,
    "KiB": 1024.0, "MiB": 1024.0**2, "GiB": 1024.0**3,
}
_DURATION_UNITS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_rate(text: str | float) -> float:
    """Parse a rate such as ``"5.85mbit"``, ``"10Mbps"``, ``"2MB/s"``; returns bytes/s."""
    m = _RATE_RE.match(str(text))
    if not m:
        raise LinkModelError(f"rate: expected a number with a unit such as '5.85mbit' or '2MB/s', got {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    if not unit:
        raise LinkModelError(
            f"rate: expected a unit (bit, kbit, mbit, gbit, kbps, Mbps, B/s, KB/s, MB/s ...), got {text!r}"
        )
    if "B" in unit:
        base = unit[:-2] if unit.endswith("/s") else unit
        if base not in _BYTE_UNITS:
            raise LinkModelError(f"rate: unknown byte unit {unit!r} in {text!r}; expected B/s, KB/s, MB/s, GB/s, KiB/s, MiB/s")
        bytes_per_s = value * _BYTE_UNITS[base]
    else:
        mult = _BIT_UNITS.get(unit.lower())
        if mult is None:
            raise LinkModelError(
                f"rate: unknown unit {unit!r} in {text!r}; expected bit, kbit, mbit, gbit, bps, kbps, Mbps, Gbps"
            )
        bytes_per_s = value * mult / 8.0
    if value < 0:
        raise LinkModelError(f"rate: negative rate: expected a rate > 0 such as '5.85mbit', got {text!r}")
    if not math.isfinite(bytes_per_s) or bytes_per_s <= 0:
        raise LinkModelError(f"rate: expected a finite rate > 0, got {text!r}")
    return bytes_per_s


def parse_duration(text: str | float) -> float:
    """Parse a duration such as ``"20ms"``, ``"0.5s"``, ``"300us"``; returns seconds."""
    m = _RATE_RE.match(str(text))
    if not m:
        raise LinkModelError(f"duration: expected a number with a unit such as '20ms', got {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    if not unit:
        raise LinkModelError(f"duration: expected a unit (s, ms, us), got {text!r}")
    mult = _DURATION_UNITS.get(unit if unit == "µs" else unit.lower())
    if mult is None:
        raise LinkModelError(f"duration: unknown unit {unit!r} in {text!r}; expected s, ms, us or ns")
    seconds = value * mult
    if not math.isfinite(seconds) or seconds < 0:
        raise LinkModelError(f"duration: expected a finite duration >= 0, got {text!r}")
    return seconds


def link_from_spec(spec: str, rtt: str | float | None = None) -> LinkModel:
    """A fixed link from a preset name (``3g``, ``4g``, ``wifi``) or a rate (``5.85mbit``).

    ``rtt`` (a duration string or seconds) becomes the per-message delay ``c``;
    without it ``c = 0``.
    """
    key = str(spec).strip().lower()
    if key in PRESETS:
        b = PRESETS[key] / 8.0
    else:
        try:
            b = parse_rate(spec)
        except LinkModelError as exc:
            m = _RATE_RE.match(str(spec))
            if m and float(m.group(1)) <= 0:  # meant as a rate (no preset is a number <= 0): say only that
                raise LinkModelError(f"link {spec!r}: {exc}") from None
            raise LinkModelError(f"link {spec!r}: expected a preset ({', '.join(PRESETS)}) or a rate; {exc}") from None
    if rtt is None:
        c = 0.0
    elif isinstance(rtt, (int, float)):
        c = _finite_nonneg("rtt (seconds)", rtt)
    else:
        c = parse_duration(rtt)
    return LinkModel(c=c, b=b)

