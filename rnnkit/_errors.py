"""The exception types rnnkit raises where torch.nn raises another for the same input
(private).

Code written for torch.nn catches torch.nn's types: a wrong feature size or state shape
is a RuntimeError there, a dtype mismatch a ValueError. rnnkit's errors for those cases
are instances of both rnnkit's type and torch.nn's, and their messages carry torch.nn's
key phrase after rnnkit's own, so that ``except RuntimeError`` and a match on torch's
words keep working while the message says more.
"""

from __future__ import annotations


class ShapeError(ValueError, RuntimeError):
    """An input or state of the wrong shape (torch.nn: RuntimeError)."""


class DTypeError(TypeError, ValueError):
    """An input whose dtype is not the weights' (torch.nn: ValueError)."""
