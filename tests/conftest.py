"""Suite-wide hooks."""

from __future__ import annotations

import sys

# Before anything imports Feast: importing feast sets PROMETHEUS_MULTIPROCESS_DIR, after which every
# prometheus_client imported later shares counter values across all registries of the process, and
# the service's per-app metrics would count the requests of other tests. (`pctr serve` imports
# prometheus_client before Feast too.)
import prometheus_client  # noqa: F401
import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the shared Spark session while logging still works (py4j logs from its finalizers otherwise)."""
    if "pyspark" in sys.modules:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
