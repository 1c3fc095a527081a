"""The one exception type a command raises for a user's mistake.

Role: shared by both command lines, ``fpgaserve`` (``fpgaserve.cli.main``) and the operator's own
``python -m fpgaserve.operator`` (``fpgaserve.operator.cli``), which each print it as one line and
exit with code 2.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2, no traceback."""
