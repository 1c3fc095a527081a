"""``python -m fpgaserve.operator``: the operator process (see ``fpgaserve.operator.cli``)."""

from __future__ import annotations

import sys

from fpgaserve.operator.cli import main

sys.exit(main())
