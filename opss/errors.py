"""The one exception hierarchy of OPSS.

Every error the library raises on bad input derives from :class:`OpssError`,
so the CLI can turn any of them into one clear line and a non-zero exit, and
the server's servicer can map each kind to a gRPC status code. Messages name
the offending thing and say "expected X, got Y" where that applies.
"""

from __future__ import annotations


class OpssError(Exception):
    """Base class of every error OPSS raises on purpose."""


class InvalidGraphError(OpssError, ValueError):
    """A graph is malformed: a cycle, an unknown node, a duplicate id, a bad time."""


class InfeasibleOrderError(OpssError, ValueError):
    """An order is not a permutation of the graph's nodes or breaks precedence."""


class BudgetExceededError(OpssError):
    """An exact search needed more states than its budget allows."""


class ShapeMismatchError(OpssError, ValueError):
    """A tensor's shape, dtype or byte count is not what the receiver expects."""


class PartitionError(OpssError, ValueError):
    """A client set is not closed under predecessors, or names unknown layers."""


class ModelNotFoundError(OpssError, KeyError):
    """A model name is not in the zoo and is not an importable factory."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else ""


class CaptureError(OpssError):
    """torch.fx could not trace a model."""


class FingerprintMismatchError(OpssError):
    """The peer's model weights differ from ours."""


class WireError(OpssError, ValueError):
    """A message on the wire is malformed (bad dtype, byte count, chunk order)."""


class CodecError(WireError):
    """An encoded tensor or image is malformed or cannot be encoded: unknown codec,
    a payload whose size disagrees with what it declares, a decompression bomb,
    a bad scale, an image too large or undecodable (INVALID_ARGUMENT on the server)."""


class LinkModelError(OpssError, ValueError):
    """Link samples or a link specification are unusable (units, NaN, too few)."""


class LinkTooFastError(LinkModelError):
    """Link samples whose transfer time does not grow with their size: the link is faster
    than the probe's sizes can measure (an unthrottled one, such as loopback)."""


class ProfileError(OpssError):
    """A profile table is missing, unreadable or does not match the model."""
