"""The operator's own settings, fixed at start-up.

Role: what ``fpgaserve operator`` parses from its command line and hands to the handlers (through
kopf's memo) and to the builders: the default server image, timings of resyncs and retries, and
the cluster's DNS domain for in-cluster URLs and certificates.
"""

from __future__ import annotations

from dataclasses import dataclass

from fpgaserve.api.constants import FULL_IMAGE, OPERATOR_IMAGE

__all__ = ["DEFAULT_IMAGE", "DEFAULT_OPERATOR_IMAGE", "OperatorConfig"]

# Web services run the full image unless told otherwise: a package may carry TensorFlow stages,
# which the slim image cannot run (--image / the chart's serverImage choose the slim one).
DEFAULT_IMAGE = FULL_IMAGE
DEFAULT_OPERATOR_IMAGE = OPERATOR_IMAGE


@dataclass(frozen=True, kw_only=True)
class OperatorConfig:
    """Settings shared by every handler of one operator process."""

    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"
    # How often every object is reconciled again, to correct drift (an owned object edited or
    # deleted by hand) and to refresh the status from the Deployment.
    resync_seconds: float = 60.0
    # First delay before retrying a web service whose model is missing or not ready, or a held
    # model deletion; doubled on every retry up to max_retry_seconds.
    retry_seconds: float = 5.0
    max_retry_seconds: float = 300.0

    def backoff(self, retry: int) -> float:
        """Delay before retry number ``retry`` (0-based) of a failing handler."""
        return float(min(self.retry_seconds * 2 ** min(retry, 16), self.max_retry_seconds))
