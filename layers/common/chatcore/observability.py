"""Powertools Logger (JSON) and Metrics (EMF), created on first use, never at import.

Nothing secret is ever passed here: log calls take ids, names and counts, not request bodies
or keys.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

SERVICE = "chat"
NAMESPACE = "ChatBackend"  # local default; in Lambda the template sets POWERTOOLS_METRICS_NAMESPACE


def metrics_namespace() -> str:
    """`POWERTOOLS_METRICS_NAMESPACE` when set (the template's value), else the local default."""
    return os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "").strip() or NAMESPACE


@lru_cache(maxsize=4)
def get_logger(service: str = SERVICE) -> Logger:
    from aws_lambda_powertools import Logger

    return Logger(service=service)


def emit_metrics(service: str, dimensions: dict[str, str], values: dict[str, tuple[float, str]]) -> None:
    """Print one EMF record (CloudWatch turns it into metrics) for the given values."""
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    metrics = Metrics(namespace=metrics_namespace(), service=service)
    for name, dimension in dimensions.items():
        metrics.add_dimension(name=name, value=dimension)
    for name, (amount, unit) in values.items():
        metrics.add_metric(name=name, unit=getattr(MetricUnit, unit), value=amount)
    metrics.flush_metrics()
