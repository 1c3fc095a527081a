"""The one exception type subcommands raise for a user's mistake."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2, no traceback."""
