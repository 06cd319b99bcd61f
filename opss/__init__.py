"""OPSS: pipelined cooperative DNN inference (client computes, uplink streams, server finishes).

Importing ``opss`` imports no torch: the scheduling core (``opss.sched``) is pure
Python. The torch-facing parts live in their own modules (``opss.graph``,
``opss.models``, ``opss.split``, ``opss.profile``, ...) and are imported on use.
"""

from __future__ import annotations

from opss.errors import (
    BudgetExceededError,
    CaptureError,
    FingerprintMismatchError,
    InfeasibleOrderError,
    InvalidGraphError,
    LinkModelError,
    ModelNotFoundError,
    OpssError,
    PartitionError,
    ProfileError,
    ShapeMismatchError,
    WireError,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetExceededError",
    "CaptureError",
    "FingerprintMismatchError",
    "InfeasibleOrderError",
    "InvalidGraphError",
    "LinkModelError",
    "ModelNotFoundError",
    "OpssError",
    "PartitionError",
    "ProfileError",
    "ShapeMismatchError",
    "WireError",
    "__version__",
]
